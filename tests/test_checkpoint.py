"""export.checkpoint: expected tensor names/shapes and validation of checkpoint directories."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from edge_runtime.errors import CheckpointError
from edge_runtime.model_config import MossAudioConfig
from edge_moss_export.checkpoint import INDEX_FILE, expected_tensors, open_checkpoint
from edge_moss_export.fixture import fixture_config

torch.set_num_threads(1)


# ------------------------------------------------------------- expected tensors


def test_release_config_has_901_tensors_with_release_shapes():
    cfg = MossAudioConfig.from_dict(fixture_config("4b"))
    shapes = expected_tensors(cfg)
    assert len(shapes) == 901
    # Shapes stated in model-facts.md (release 4B dims).
    assert shapes["audio_encoder.conv1.weight"] == (480, 1, 3, 3)
    assert shapes["audio_encoder.conv3.weight"] == (480, 480, 3, 3)
    assert shapes["audio_encoder.stem_proj.weight"] == (1280, 7680)
    assert shapes["audio_encoder.layers.31.fc1.weight"] == (5120, 1280)
    assert "audio_encoder.layers.0.self_attn.k_proj.bias" not in shapes
    assert shapes["audio_adapter.gate_proj.weight"] == (8192, 1280)
    assert shapes["deepstack_audio_merger_list.2.down_proj.weight"] == (2560, 8192)
    assert "deepstack_audio_merger_list.3.down_proj.weight" not in shapes
    assert shapes["language_model.embed_tokens.weight"] == (151936, 2560)
    assert shapes["lm_head.weight"] == (151936, 2560)
    assert shapes["language_model.layers.35.self_attn.q_proj.weight"] == (4096, 2560)
    assert shapes["language_model.layers.35.self_attn.k_proj.weight"] == (1024, 2560)
    assert shapes["language_model.layers.0.self_attn.k_norm.weight"] == (128,)
    assert shapes["language_model.layers.0.mlp.down_proj.weight"] == (2560, 9728)
    # model-facts: about 5.2 B parameters, encoder ~0.64 B, 10.5 GB in bf16.
    total = sum(int(np.prod(s)) for s in shapes.values())
    assert 5.1e9 < total < 5.3e9
    encoder = sum(int(np.prod(s)) for n, s in shapes.items() if n.startswith("audio_encoder."))
    assert 0.6e9 < encoder < 0.68e9


def _reference_names(cfg: MossAudioConfig) -> dict[str, tuple[int, ...]]:
    """State-dict names/shapes of a model assembled from transformers' own Qwen3/Whisper layers."""
    from torch import nn
    from transformers import Qwen3Config, Qwen3Model, WhisperConfig
    from transformers.models.whisper.modeling_whisper import WhisperEncoderLayer

    raw = cfg.raw
    a = raw["audio_config"]
    wcfg = WhisperConfig(d_model=a["d_model"], encoder_attention_heads=a["encoder_attention_heads"],
                         encoder_ffn_dim=a["encoder_ffn_dim"])
    c = a["downsample_hidden_size"]
    with torch.device("meta"):
        enc = nn.Module()
        enc.conv1 = nn.Conv2d(1, c, 3, 2, 1)
        enc.conv2 = nn.Conv2d(c, c, 3, 2, 1)
        enc.conv3 = nn.Conv2d(c, c, 3, 2, 1)
        enc.stem_proj = nn.Linear(c * 16, a["d_model"])
        enc.layers = nn.ModuleList(WhisperEncoderLayer(wcfg) for _ in range(a["encoder_layers"]))
        enc.layer_norm = nn.LayerNorm(a["d_model"])
        lm = Qwen3Model(Qwen3Config(**raw["language_config"]))
        h = raw["language_config"]["hidden_size"]

        def gated():
            m = nn.Module()
            m.gate_proj = nn.Linear(a["output_dim"], raw["adapter_hidden_size"], bias=False)
            m.up_proj = nn.Linear(a["output_dim"], raw["adapter_hidden_size"], bias=False)
            m.down_proj = nn.Linear(raw["adapter_hidden_size"], h, bias=False)
            return m

        top = nn.Module()
        top.audio_encoder = enc
        top.language_model = lm
        top.audio_adapter = gated()
        top.deepstack_audio_merger_list = nn.ModuleList(gated() for _ in range(3))
        top.lm_head = nn.Linear(h, raw["vocab_size"], bias=False)
    return {k: tuple(v.shape) for k, v in top.state_dict().items()}


@pytest.mark.parametrize("size", ["tiny", "4b"])
def test_expected_tensors_match_transformers_layers(size):
    cfg = MossAudioConfig.from_dict(fixture_config(size))
    assert expected_tensors(cfg) == _reference_names(cfg)


# ------------------------------------------------------------- opening checkpoints


def test_open_tiny_checkpoint(tiny_checkpoint):
    ckpt = open_checkpoint(tiny_checkpoint)
    assert ckpt.name == tiny_checkpoint.name
    assert ckpt.tokenizer_dir == ckpt.path
    assert ckpt.config.language.hidden_size == 64
    assert set(ckpt.names()) == set(expected_tensors(ckpt.config))
    assert ckpt.extra_names == []
    assert ckpt.dtype("lm_head.weight") == "BF16"
    assert ckpt.shape("audio_encoder.stem_proj.weight") == (64, 128)
    assert ckpt.processor_config["audio_token_id"] == 151654
    with pytest.raises(CheckpointError, match="no tensor named"):
        ckpt.numpy("nope.weight")


def test_numpy_and_torch_match_safetensors(tiny_checkpoint):
    ckpt = open_checkpoint(tiny_checkpoint)
    for name in ("audio_encoder.conv2.weight", "language_model.layers.7.self_attn.q_norm.weight",
                 "deepstack_audio_merger_list.1.up_proj.weight"):
        with safe_open(ckpt.shard_of(name), framework="pt") as f:
            ref = f.get_tensor(name)
        got = ckpt.numpy(name)
        assert got.dtype == np.float32
        np.testing.assert_array_equal(got, ref.float().numpy())
        t = ckpt.torch(name)
        assert t.dtype == torch.float32 and torch.equal(t, ref.float())
        assert ckpt.torch(name, dtype=torch.bfloat16).dtype == torch.bfloat16
    assert ckpt.numpy("lm_head.weight", dtype=np.float16).dtype == np.float16


def test_missing_processor_config_falls_back_to_defaults(tiny_checkpoint, tmp_path):
    d = _linked_copy(tiny_checkpoint, tmp_path)
    (d / "processor_config.json").unlink()
    pc = open_checkpoint(d).processor_config
    assert pc["audio_start_id"] == 151669 and pc["mel_dim"] == 128 and pc["enable_time_marker"] is True


def _linked_copy(src: Path, tmp_path: Path) -> Path:
    """A checkpoint directory of symlinks to `src`; tests replace the files they break."""
    dst = tmp_path / "ckpt"
    dst.mkdir()
    for f in src.iterdir():
        (dst / f.name).symlink_to(f)
    return dst


def _materialize(path: Path) -> None:
    """Replace a symlink by a real copy so it can be edited."""
    target = path.resolve()
    path.unlink()
    shutil.copyfile(target, path)


def _index(d: Path) -> dict:
    return json.loads((d / INDEX_FILE).read_text())


def _write_index(d: Path, index: dict) -> None:
    (d / INDEX_FILE).unlink()
    (d / INDEX_FILE).write_text(json.dumps(index))


def _rewrite_shard(d: Path, shard: str, edit) -> None:
    tensors = load_file(d / shard)
    edit(tensors)
    (d / shard).unlink()
    save_file(tensors, d / shard, metadata={"format": "pt"})


def test_missing_directory(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        open_checkpoint(tmp_path / "absent")


def test_path_is_a_file(tmp_path):
    (tmp_path / "f").write_text("x")
    with pytest.raises(CheckpointError, match="not a directory"):
        open_checkpoint(tmp_path / "f")


def test_no_config_json(tiny_checkpoint, tmp_path):
    d = _linked_copy(tiny_checkpoint, tmp_path)
    (d / "config.json").unlink()
    with pytest.raises(CheckpointError, match="no config.json"):
        open_checkpoint(d)


def test_config_not_moss_audio(tiny_checkpoint, tmp_path):
    d = _linked_copy(tiny_checkpoint, tmp_path)
    cfg = json.loads((d / "config.json").read_text())
    cfg["model_type"] = "qwen3"
    (d / "config.json").unlink()
    (d / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match="not a MOSS-Audio config.*qwen3"):
        open_checkpoint(d)


def test_missing_shard(tiny_checkpoint, tmp_path):
    d = _linked_copy(tiny_checkpoint, tmp_path)
    shard = sorted(set(_index(d)["weight_map"].values()))[1]
    (d / shard).unlink()
    with pytest.raises(CheckpointError, match=f"shard {shard} named in the index is missing"):
        open_checkpoint(d)


def test_truncated_shard(tiny_checkpoint, tmp_path):
    d = _linked_copy(tiny_checkpoint, tmp_path)
    shard = sorted(set(_index(d)["weight_map"].values()))[-1]
    _materialize(d / shard)
    size = (d / shard).stat().st_size
    with open(d / shard, "r+b") as fh:
        fh.truncate(size - 1000)
    with pytest.raises(CheckpointError, match=f"shard {shard} is truncated"):
        open_checkpoint(d)


def test_shard_with_garbage_header(tiny_checkpoint, tmp_path):
    d = _linked_copy(tiny_checkpoint, tmp_path)
    shard = sorted(set(_index(d)["weight_map"].values()))[0]
    (d / shard).unlink()
    (d / shard).write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00not json at all!" + b"\0" * 64)
    with pytest.raises(CheckpointError, match=f"shard {shard} has an unreadable safetensors header"):
        open_checkpoint(d)


def test_tensor_dropped_from_index(tiny_checkpoint, tmp_path):
    d = _linked_copy(tiny_checkpoint, tmp_path)
    index = _index(d)
    name = "language_model.layers.3.mlp.up_proj.weight"
    del index["weight_map"][name]
    _write_index(d, index)
    with pytest.raises(CheckpointError, match=f"tensor {name} is missing"):
        open_checkpoint(d)


def test_tensor_dropped_from_shard(tiny_checkpoint, tmp_path):
    d = _linked_copy(tiny_checkpoint, tmp_path)
    name = "audio_encoder.layers.5.fc2.bias"
    shard = _index(d)["weight_map"][name]
    _rewrite_shard(d, shard, lambda t: t.pop(name))
    with pytest.raises(CheckpointError, match=f"tensor {name} is in the index but not in shard {shard}"):
        open_checkpoint(d)


def test_wrong_shape(tiny_checkpoint, tmp_path):
    d = _linked_copy(tiny_checkpoint, tmp_path)
    name = "language_model.layers.3.mlp.up_proj.weight"
    shard = _index(d)["weight_map"][name]

    def edit(t):
        t[name] = t[name].reshape(64, 128).contiguous()

    _rewrite_shard(d, shard, edit)
    with pytest.raises(CheckpointError,
                       match=rf"tensor {name} has shape \[64, 128\], expected \[128, 64\]"):
        open_checkpoint(d)


def test_no_vocab_json(tiny_checkpoint, tmp_path):
    d = _linked_copy(tiny_checkpoint, tmp_path)
    (d / "vocab.json").unlink()
    with pytest.raises(CheckpointError, match="tokenizer file vocab.json is missing"):
        open_checkpoint(d)


def test_no_merges_txt(tiny_checkpoint, tmp_path):
    d = _linked_copy(tiny_checkpoint, tmp_path)
    (d / "merges.txt").unlink()
    with pytest.raises(CheckpointError, match="merges.txt is missing"):
        open_checkpoint(d)


def test_broken_index_json(tiny_checkpoint, tmp_path):
    d = _linked_copy(tiny_checkpoint, tmp_path)
    (d / INDEX_FILE).unlink()
    (d / INDEX_FILE).write_text("{not json")
    with pytest.raises(CheckpointError, match=f"{INDEX_FILE} is not valid JSON"):
        open_checkpoint(d)


def test_no_weights_at_all(tiny_checkpoint, tmp_path):
    d = _linked_copy(tiny_checkpoint, tmp_path)
    for f in d.glob("model*"):
        f.unlink()
    with pytest.raises(CheckpointError, match="no weights"):
        open_checkpoint(d)


def test_extra_tensor_is_only_a_warning(tiny_checkpoint, tmp_path, caplog):
    d = _linked_copy(tiny_checkpoint, tmp_path)
    index = _index(d)
    shard = index["weight_map"]["lm_head.weight"]
    _rewrite_shard(d, shard, lambda t: t.__setitem__("audio_encoder.extra.weight", torch.ones(3)))
    index["weight_map"]["audio_encoder.extra.weight"] = shard
    _write_index(d, index)
    with caplog.at_level("WARNING"):
        ckpt = open_checkpoint(d)
    assert ckpt.extra_names == ["audio_encoder.extra.weight"]
    assert "unexpected tensors" in caplog.text
    np.testing.assert_array_equal(ckpt.numpy("audio_encoder.extra.weight"), np.ones(3, np.float32))


def test_single_file_with_f32_f16_bf16(tiny_checkpoint, tmp_path):
    """An unsharded model.safetensors with mixed dtypes reads back the same values."""
    src = open_checkpoint(tiny_checkpoint)
    d = tmp_path / "single"
    d.mkdir()
    for f in tiny_checkpoint.iterdir():
        if not f.name.startswith("model"):
            (d / f.name).symlink_to(f)
    tensors = {}
    for shard in sorted(set(_index(tiny_checkpoint)["weight_map"].values())):
        tensors.update(load_file(tiny_checkpoint / shard))
    f32 = "language_model.layers.0.mlp.gate_proj.weight"
    f16 = "audio_encoder.layers.0.fc1.weight"
    tensors[f32] = tensors[f32].float()
    tensors[f16] = tensors[f16].half()
    save_file(tensors, d / "model.safetensors")
    ckpt = open_checkpoint(d)
    assert (ckpt.dtype(f32), ckpt.dtype(f16), ckpt.dtype("lm_head.weight")) == ("F32", "F16", "BF16")
    for name in (f32, f16, "lm_head.weight"):
        np.testing.assert_array_equal(ckpt.numpy(name), tensors[name].float().numpy())
    # bf16 -> f16 may round; the f16 copy stays within f16 precision of the bf16 original.
    np.testing.assert_allclose(ckpt.numpy(f16), src.numpy(f16), rtol=1e-3, atol=1e-4)
