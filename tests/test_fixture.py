"""export.fixture / tokenizer files / `edge-moss fixture`: random checkpoints in the release layout."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors import safe_open

from edge_runtime import model_facts
from edge_runtime.cli import main as cli_main
from edge_runtime.model_config import MossAudioConfig
from edge_moss_export import tokenizer_files
from edge_moss_export.checkpoint import INDEX_FILE, expected_tensors, open_checkpoint
from edge_moss_export.fixture import _plan_shards, fixture_config, float32_to_bf16_bits, write_fixture

torch.set_num_threads(1)


def _shards(d: Path) -> list[str]:
    return sorted(set(json.loads((d / INDEX_FILE).read_text())["weight_map"].values()))


def _digest(d: Path) -> dict[str, str]:
    return {f.name: hashlib.sha256(f.read_bytes()).hexdigest() for f in sorted(d.iterdir())}


# ------------------------------------------------------------- layout


@pytest.mark.parametrize("which", ["tiny_checkpoint", "small_checkpoint"])
def test_fixture_layout_matches_expected_tensors(which, request):
    d: Path = request.getfixturevalue(which)
    ckpt = open_checkpoint(d)
    expected = expected_tensors(ckpt.config)
    assert len(expected) == 901
    index = json.loads((d / INDEX_FILE).read_text())
    assert set(index["weight_map"]) == set(expected)
    shards = _shards(d)
    assert len(shards) > 1  # the sharded path is exercised
    assert shards == [f"model-{i:05d}-of-{len(shards):05d}.safetensors" for i in range(1, len(shards) + 1)]
    seen, total = set(), 0
    for shard in shards:  # read every header with safetensors itself
        with safe_open(d / shard, framework="pt") as f:
            for name in f.keys():
                sl = f.get_slice(name)
                assert sl.get_dtype() == "BF16", name
                assert tuple(sl.get_shape()) == expected[name], name
                assert index["weight_map"][name] == shard
                total += 2 * int(np.prod(sl.get_shape()))
                seen.add(name)
    assert seen == set(expected)
    assert index["metadata"]["total_size"] == total
    assert not (d / "tokenizer.json").exists()


def test_tiny_numpy_equals_safetensors_for_every_tensor(tiny_checkpoint):
    ckpt = open_checkpoint(tiny_checkpoint)
    for shard in _shards(tiny_checkpoint):
        with safe_open(tiny_checkpoint / shard, framework="pt") as f:
            for name in f.keys():
                np.testing.assert_array_equal(ckpt.numpy(name), f.get_tensor(name).float().numpy(), name)


def test_config_files(tiny_checkpoint):
    cfg = json.loads((tiny_checkpoint / "config.json").read_text())
    assert cfg["model_type"] == "moss_audio" and cfg["architectures"] == ["MossAudioModel"]
    assert cfg["dtype"] == "bfloat16" and cfg["tie_word_embeddings"] is False
    assert (cfg["vocab_size"], cfg["bos_token_id"], cfg["eos_token_id"]) == (151936, 151643, 151645)
    assert cfg["deepstack_num_inject_layers"] == 3
    assert cfg["audio_config"]["deepstack_encoder_layer_indexes"] == [8, 16, 24]
    assert cfg["audio_config"]["encoder_attention_window_size"] == 100
    lang = cfg["language_config"]
    assert lang["model_type"] == "qwen3" and lang["hidden_act"] == "silu"
    assert lang["max_position_embeddings"] == 40960 and lang["attention_bias"] is False
    assert lang["tie_word_embeddings"] is False and lang["rope_theta"] == 1e6
    gen = json.loads((tiny_checkpoint / "generation_config.json").read_text())
    assert gen == {"bos_token_id": 151643, "eos_token_id": 151645}
    proc = json.loads((tiny_checkpoint / "processor_config.json").read_text())
    assert proc == {"mel_sr": 16000, "mel_dim": 128, "n_fft": 400, "hop": 160, "enable_time_marker": True,
                    "audio_token_id": 151654, "audio_start_id": 151669, "audio_end_id": 151670}


def test_4b_config_has_release_dims():
    raw = fixture_config("4b")
    cfg = MossAudioConfig.from_dict(raw)
    a, lang = cfg.audio, cfg.language
    assert (a.d_model, a.encoder_attention_heads, a.encoder_ffn_dim, a.downsample_hidden_size) == (
        1280, 20, 5120, 480)
    assert (lang.hidden_size, lang.intermediate_size, lang.num_attention_heads,
            lang.num_key_value_heads, lang.head_dim, lang.num_hidden_layers) == (2560, 9728, 32, 8, 128, 36)
    assert cfg.adapter_hidden_size == 8192
    # transformers reads our language_config as a Qwen3 config with the same numbers.
    from transformers import Qwen3Config

    q = Qwen3Config(**raw["language_config"])
    assert (q.hidden_size, q.num_key_value_heads, q.head_dim, q.vocab_size) == (2560, 8, 128, 151936)


def test_8b_config_has_qwen3_8b_widths_and_the_same_tensor_names():
    cfg8 = MossAudioConfig.from_dict(fixture_config("8b"))
    cfg4 = MossAudioConfig.from_dict(fixture_config("4b"))
    lang = cfg8.language
    assert (lang.hidden_size, lang.intermediate_size, lang.num_attention_heads,
            lang.num_key_value_heads, lang.head_dim, lang.num_hidden_layers) == (4096, 12288, 32, 8, 128, 36)
    shapes8, shapes4 = expected_tensors(cfg8), expected_tensors(cfg4)
    assert list(shapes8) == list(shapes4)
    assert shapes8["language_model.embed_tokens.weight"] == (151936, 4096)
    assert shapes8["audio_adapter.down_proj.weight"] == (4096, 8192)
    backbone = sum(int(np.prod(s)) for n, s in shapes8.items() if n.startswith(("language_model.", "lm_head")))
    assert 8.1e9 < backbone < 8.3e9  # Qwen3-8B: 8.19 B with its separate lm_head


def test_4b_shard_plan_is_about_4gb_each():
    shapes = expected_tensors(MossAudioConfig.from_dict(fixture_config("4b")))
    groups = _plan_shards(shapes, 4 * 10**9)
    sizes = [sum(2 * int(np.prod(shapes[n])) for n in g) for g in groups]
    assert len(groups) == 3 and max(sizes) <= 4 * 10**9
    assert [n for g in groups for n in g] == list(shapes)


# ------------------------------------------------------------- values


def test_bf16_rounding_matches_torch():
    rng = np.random.default_rng(0)
    x = rng.standard_normal(100_000).astype(np.float32) * 10.0 ** rng.integers(-8, 8, 100_000)
    # exact ties (lower 16 bits 0x8000) in both parities
    ties = (np.arange(1000, dtype=np.uint32) << 16 | 0x8000).view(np.float32)
    x = np.concatenate([x, ties, -ties, np.array([0.0, -0.0, 1.0], np.float32)])
    ref = torch.from_numpy(x).to(torch.bfloat16).view(torch.int16).numpy().view(np.uint16)
    np.testing.assert_array_equal(float32_to_bf16_bits(x), ref)


def test_same_seed_is_byte_identical_and_other_seed_differs(tiny_checkpoint, tmp_path):
    again = write_fixture(tmp_path / "again", size="tiny", seed=0)
    assert _digest(again) == _digest(tiny_checkpoint)
    other = write_fixture(tmp_path / "other", size="tiny", seed=1)
    a, b = open_checkpoint(tiny_checkpoint), open_checkpoint(other)
    name = "language_model.layers.0.self_attn.q_proj.weight"
    assert not np.array_equal(a.numpy(name), b.numpy(name))
    assert (tmp_path / "other" / "vocab.json").read_bytes() == (tiny_checkpoint / "vocab.json").read_bytes()


def test_custom_shard_bytes_changes_only_sharding(tiny_checkpoint, tmp_path):
    d = write_fixture(tmp_path / "many", size="tiny", shard_bytes=1 << 20)
    assert len(_shards(d)) > len(_shards(tiny_checkpoint))
    a, b = open_checkpoint(tiny_checkpoint), open_checkpoint(d)
    for name in ("audio_encoder.conv1.weight", "lm_head.weight", "language_model.norm.weight"):
        np.testing.assert_array_equal(a.numpy(name), b.numpy(name))


def test_weight_statistics(small_checkpoint):
    ckpt = open_checkpoint(small_checkpoint)
    w = ckpt.numpy("language_model.layers.4.mlp.down_proj.weight")  # fan_in = 512
    assert abs(w.std() * np.sqrt(512) - 1) < 0.05 and abs(w.mean()) < 0.01
    conv = ckpt.numpy("audio_encoder.conv2.weight")  # fan_in = 32 * 9
    assert abs(conv.std() * np.sqrt(32 * 9) - 1) < 0.05
    ln = ckpt.numpy("audio_encoder.layers.2.final_layer_norm.weight")
    assert abs(ln.mean() - 1) < 0.01 and 0.005 < ln.std() < 0.05
    bias = ckpt.numpy("audio_encoder.layers.2.fc1.bias")
    assert abs(bias.mean()) < 0.01 and bias.std() < 0.05
    # tensors get distinct values (no generator reuse between names)
    a = ckpt.numpy("deepstack_audio_merger_list.0.gate_proj.weight")
    b = ckpt.numpy("deepstack_audio_merger_list.1.gate_proj.weight")
    assert not np.allclose(a, b)


def test_logits_are_not_degenerate_in_transformers_qwen3(tiny_checkpoint):
    """The LLM half loads strictly into transformers' Qwen3 and gives usable logits."""
    from transformers import Qwen3Config, Qwen3ForCausalLM

    ckpt = open_checkpoint(tiny_checkpoint)
    raw = ckpt.config.raw["language_config"]
    model = Qwen3ForCausalLM(Qwen3Config(**raw)).eval()
    state = {}
    for name in ckpt.names():
        if name.startswith("language_model."):
            state["model." + name[len("language_model."):]] = ckpt.torch(name)
    state["lm_head.weight"] = ckpt.torch("lm_head.weight")
    model.load_state_dict(state, strict=True)
    ids = torch.tensor([[151644, 8948, 198, 2610, 525, 264, 10950, 17847, 13, 151645, 198]])
    with torch.no_grad():
        logits = model(input_ids=ids).logits[0]
    assert torch.isfinite(logits).all()
    std = logits.std(dim=-1)
    assert (std > 0.2).all() and (std < 5).all()
    top2 = logits.topk(2, dim=-1).values
    assert ((top2[:, 0] - top2[:, 1]) > 0).float().mean() > 0.5
    assert len(set(logits.argmax(-1).tolist())) > 1  # predictions depend on the input


# ------------------------------------------------------------- tokenizer


def test_tokenizer_files_load_in_qwen2_tokenizer(tiny_checkpoint):
    from tokenizers import Tokenizer
    from transformers import Qwen2Tokenizer

    tok = Qwen2Tokenizer.from_pretrained(str(tiny_checkpoint))
    assert len(tok) == 151669
    assert tok.eos_token == "<|im_end|>" and tok.pad_token == "<|endoftext|>"
    assert [tok.convert_tokens_to_ids(str(d)) for d in range(10)] == list(model_facts.DIGIT_TOKEN_IDS.values())
    assert tok.convert_tokens_to_ids("<think>") == model_facts.THINK_START_ID
    assert tok.convert_tokens_to_ids("<|im_start|>") == model_facts.IM_START_ID
    # Same ids as the package's own fast tokenizer.json (an independent BPE implementation).
    ref = Tokenizer.from_file(str(tokenizer_files.source_dir() / "tokenizer.json"))
    text = "<|im_start|>user\nHello, wörld! 12 34 日本語 transcription<|im_end|>\n"
    assert tok.encode(text, add_special_tokens=False) == ref.encode(text, add_special_tokens=False).ids
    prompt = tok.apply_chat_template([{"role": "system", "content": "You are a helpful assistant."},
                                      {"role": "user", "content": "hi"}],
                                     tokenize=False, add_generation_prompt=True)
    assert prompt == ("<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
                      "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n")


def test_tokenizer_file_details(tiny_checkpoint):
    assert b"\r" not in (tiny_checkpoint / "merges.txt").read_bytes()
    src_lines = (tokenizer_files.source_dir() / "merges.txt").read_text(encoding="utf-8").splitlines()
    assert (tiny_checkpoint / "merges.txt").read_text(encoding="utf-8").splitlines() == src_lines
    cfg = json.loads((tiny_checkpoint / "tokenizer_config.json").read_text())
    assert "chat_template" not in cfg
    assert sorted(int(k) for k in cfg["added_tokens_decoder"]) == list(range(151643, 151669))
    assert cfg["tokenizer_class"] == "Qwen2Tokenizer" and cfg["model_max_length"] > 0
    added = json.loads((tiny_checkpoint / "added_tokens.json").read_text())
    assert added["<|im_end|>"] == 151645 and added["</think>"] == 151668 and len(added) == 26
    special = json.loads((tiny_checkpoint / "special_tokens_map.json").read_text())
    assert special["eos_token"]["content"] == "<|im_end|>"
    template = (tiny_checkpoint / "chat_template.jinja").read_text()
    pkg_cfg = json.loads((tokenizer_files.source_dir() / "tokenizer_config.json").read_text())
    assert template == pkg_cfg["chat_template"]


def test_missing_vocabulary_package_is_a_clear_error(monkeypatch, tmp_path):
    from edge_runtime.errors import MissingExtraError

    monkeypatch.setattr(tokenizer_files.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(MissingExtraError, match="pip install"):
        write_fixture(tmp_path / "x", size="tiny")
    assert not list((tmp_path / "x").glob("*.safetensors"))


# ------------------------------------------------------------- CLI


def test_cli_writes_and_refuses_overwrite(tmp_path, capsys):
    out = tmp_path / "cli"
    assert cli_main(["fixture", str(out), "--size", "tiny", "--seed", "3"]) == 0
    ckpt = open_checkpoint(out)
    assert len(ckpt.names()) == 901
    digest = _digest(out)
    capsys.readouterr()
    assert cli_main(["fixture", str(out), "--size", "tiny"]) == 2
    err = capsys.readouterr().err
    assert "not empty" in err and "--force" in err and len(err.strip().splitlines()) == 1
    assert _digest(out) == digest  # untouched
    assert cli_main(["fixture", str(out), "--size", "tiny", "--seed", "4", "--force"]) == 0
    assert _digest(out) != digest


def test_cli_rejects_unknown_size(tmp_path):
    with pytest.raises(SystemExit):
        cli_main(["fixture", str(tmp_path / "x"), "--size", "huge"])
