"""The decode-speed peer: onnxruntime-genai's model builder INT4 graph of the same Qwen3 backbone.

The MOSS-Audio checkpoint's `language_model.*` + `lm_head` tensors are streamed into a plain
Qwen3ForCausalLM checkpoint (model.* names, model_type qwen3), the builder turns that into its own
INT4 CPU graph, and `onnxruntime_genai` times single decode steps at a given context length.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

TOKENIZER_FILES = ("vocab.json", "merges.txt", "tokenizer_config.json", "added_tokens.json",
                   "special_tokens_map.json", "generation_config.json")
_SHARD_BYTES = 2 << 30
MIN_AVAILABLE_MB = 700


def write_qwen3_checkpoint(moss_checkpoint: str | Path, out: str | Path, layers: int | None = None) -> Path:
    """Write the backbone of a MOSS-Audio checkpoint as a plain Qwen3ForCausalLM checkpoint.

    Tensors stream shard by shard (at most ~2 GB held at once) and keep their bf16 bytes.
    layers: keep only the first N decoder layers (a same-width, shallower model).
    """
    from safetensors import safe_open
    from safetensors.torch import save_file

    src, out = Path(moss_checkpoint), Path(out)
    if (out / "model.safetensors.index.json").is_file():
        return out
    tmp = out.with_name(out.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    config = json.loads((src / "config.json").read_text())
    index = json.loads((src / "model.safetensors.index.json").read_text())["weight_map"]

    def renamed(name: str) -> str | None:
        if layers is not None and name.startswith("language_model.layers."):
            if int(name.split(".")[2]) >= layers:
                return None
        if name.startswith("language_model."):
            return "model." + name[len("language_model."):]
        return name if name == "lm_head.weight" else None

    by_file: dict[str, list[str]] = {}
    for name, fname in index.items():
        if renamed(name):
            by_file.setdefault(fname, []).append(name)
    weight_map: dict[str, str] = {}
    shard: dict[str, Any] = {}
    shard_bytes, count = 0, 0

    def flush() -> None:
        nonlocal shard, shard_bytes, count
        if not shard:
            return
        count += 1
        fname = f"model-{count:05d}.safetensors"
        save_file(shard, str(tmp / fname), metadata={"format": "pt"})
        weight_map.update({k: fname for k in shard})
        shard, shard_bytes = {}, 0

    for fname, names in sorted(by_file.items()):
        with safe_open(str(src / fname), framework="pt") as fh:
            for name in sorted(names):
                tensor = fh.get_tensor(name)
                shard[renamed(name)] = tensor
                shard_bytes += tensor.numel() * tensor.element_size()
                if shard_bytes >= _SHARD_BYTES:
                    flush()
    flush()
    (tmp / "model.safetensors.index.json").write_text(json.dumps(
        {"metadata": {}, "weight_map": weight_map}, indent=1))
    lang = dict(config["language_config"])
    if layers is not None:
        lang["num_hidden_layers"] = int(layers)
        lang["max_window_layers"] = int(layers)
    lang.update(architectures=["Qwen3ForCausalLM"], model_type="qwen3", torch_dtype="bfloat16",
                tie_word_embeddings=False, vocab_size=config.get("vocab_size", lang.get("vocab_size")))
    (tmp / "config.json").write_text(json.dumps(lang, indent=2))
    for name in TOKENIZER_FILES:
        if (src / name).is_file():
            shutil.copyfile(src / name, tmp / name)
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)
    return out


def build_genai_model(qwen3_dir: str | Path, out: str | Path, precision: str = "int4",
                      log: Path | None = None, extra: list[str] | None = None) -> dict[str, Any]:
    """Run the onnxruntime-genai model builder on `qwen3_dir`; returns time, peak RSS and the path.

    Raises RuntimeError with the builder's last output lines when it fails.
    """
    from .subproc import run_tracked

    out = Path(out)
    stats_path = out.with_name(out.name + ".build.json")
    if (out / "genai_config.json").is_file() and stats_path.is_file():
        return {**json.loads(stats_path.read_text()), "reused": True}
    tmp = out.with_name(out.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    cmd = [sys.executable, "-m", "onnxruntime_genai.models.builder", "-i", str(qwen3_dir),
           "-o", str(tmp), "-p", precision, "-e", "cpu", "-c", str(tmp.with_name(tmp.name + "-hf-cache"))]
    if extra:
        cmd += ["--extra_options", *extra]
    # The builder holds the model in memory several times over (over 21 GB RSS for the 4B
    # backbone was seen): stop it before it starves other work on the machine.
    res = run_tracked(cmd, log=log, min_available_mb=MIN_AVAILABLE_MB)
    shutil.rmtree(tmp.with_name(tmp.name + "-hf-cache"), ignore_errors=True)
    if res["returncode"] != 0 or not (tmp / "genai_config.json").is_file():
        raise RuntimeError(f"builder exited {res['returncode']} (peak RSS {res['peak_rss_mb']:.0f} MB): "
                           f"{res['tail'][-500:]}")
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)
    stats = {"path": str(out), "seconds": round(res["wall_s"], 1),
             "peak_rss_mb": round(res["peak_rss_mb"], 1), "command": " ".join(cmd)}
    stats_path.write_text(json.dumps(stats, indent=2))
    return {**stats, "reused": False}


def set_genai_threads(model_dir: str | Path, threads: int) -> None:
    """Pin the decoder session's intra-op threads (and spinning off) in genai_config.json."""
    path = Path(model_dir) / "genai_config.json"
    cfg = json.loads(path.read_text())
    opts = cfg["model"]["decoder"].setdefault("session_options", {})
    opts["intra_op_num_threads"] = int(threads)
    opts["inter_op_num_threads"] = 1
    path.write_text(json.dumps(cfg, indent=4))


def genai_decode_rates(model_dir: str | Path, contexts: list[int], steps: int, repeats: int,
                       seed: int = 0) -> dict[str, Any]:
    """Decode seconds per token at each context length (prefill of random ids, then timed steps).

    Returns {"ctx_N": {"step_s": [...per repeat median...], "prefill_s": [...]}}.
    """
    import onnxruntime_genai as og

    model = og.Model(str(model_dir))
    rng = np.random.default_rng(seed)
    results: dict[str, Any] = {}
    for ctx in contexts:
        params = og.GeneratorParams(model)
        params.set_search_options(max_length=ctx + steps + 8, do_sample=False)
        gen = og.Generator(model, params)
        ids = rng.integers(1000, 100000, size=ctx, dtype=np.int32)
        t = time.perf_counter()
        gen.append_tokens(ids)
        prefill_s = [time.perf_counter() - t]
        step_s = []
        for _ in range(repeats):
            # rewind_to keeps the first ctx positions: each repeat decodes from the same context.
            gen.rewind_to(ctx)
            gen.generate_next_token()  # warm-up step, not timed
            times = []
            for _ in range(steps):
                t = time.perf_counter()
                gen.generate_next_token()
                times.append(time.perf_counter() - t)
            step_s.append(float(np.median(times)))
        del gen
        results[f"ctx_{ctx}"] = {"step_s": step_s, "prefill_s": prefill_s, "prefill_tokens": ctx}
    return results


def model_bytes(model_dir: str | Path) -> int:
    return sum(p.stat().st_size for p in Path(model_dir).rglob("*") if p.is_file()
               and (p.suffix in (".onnx", ".data") or p.name.endswith(".onnx.data")))


if __name__ == "__main__":  # manual: python -m benchmarks.genai_peer CKPT WORKDIR
    q = write_qwen3_checkpoint(sys.argv[1], Path(sys.argv[2]) / "qwen3")
    print(build_genai_model(q, Path(sys.argv[2]) / "genai-int4"))
    set_genai_threads(Path(sys.argv[2]) / "genai-int4", 1)
    print(genai_decode_rates(Path(sys.argv[2]) / "genai-int4", [100], 8, 1))
    os._exit(0)
