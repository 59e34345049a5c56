"""`edge-moss doctor`: Jetson detection, memory, nvidia-smi parsing, provider probes, bundle estimate."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import onnxruntime as ort

from edge_runtime.commands import doctor

CPU, CUDA = "CPUExecutionProvider", "CUDAExecutionProvider"


def test_jetson_detection(tmp_path):
    release, model = tmp_path / "nv_tegra_release", tmp_path / "model"
    assert doctor.jetson_info(release, model) == {"detected": False}
    model.write_bytes(b"NVIDIA Jetson Orin Nano Engineering Reference Developer Kit Super\x00")
    info = doctor.jetson_info(release, model)
    assert info == {"detected": True,
                    "board": "NVIDIA Jetson Orin Nano Engineering Reference Developer Kit Super"}
    release.write_text("# R36 (release), REVISION: 4.3, GCID: 38968081, BOARD: generic, EABI: aarch64\n")
    assert doctor.jetson_info(release, model)["l4t"].startswith("R36 (release), REVISION: 4.3")
    model.write_bytes(b"Raspberry Pi 5 Model B Rev 1.0\x00")
    release.unlink()
    assert doctor.jetson_info(release, model)["detected"] is False


def test_memory_from_meminfo(tmp_path):
    meminfo = tmp_path / "meminfo"
    meminfo.write_text("MemTotal:        7991296 kB\nMemFree:  100 kB\nMemAvailable:    4194304 kB\n")
    assert doctor.memory_gib(meminfo) == {"MemTotal": round(7991296 / 1024 ** 2, 2), "MemAvailable": 4.0}
    assert doctor.memory_gib(tmp_path / "missing") == {}


def test_gpu_info_parses_nvidia_smi(monkeypatch):
    monkeypatch.setattr(doctor.shutil, "which", lambda name: None)
    assert doctor.gpu_info() == "nvidia-smi not found"
    monkeypatch.setattr(doctor.shutil, "which", lambda name: "/usr/bin/nvidia-smi")
    seen = []

    def fake_run(cmd, **kwargs):
        seen.append(cmd)
        return subprocess.CompletedProcess(cmd, 0, "NVIDIA H100 80GB HBM3, 81559, 3\nOrin, [N/A], [N/A]\n", "")

    monkeypatch.setattr(doctor.subprocess, "run", fake_run)
    assert doctor.gpu_info() == [{"name": "NVIDIA H100 80GB HBM3", "memory_total_mib": 81559, "memory_used_mib": 3},
                                 {"name": "Orin", "memory_total_mib": "[N/A]", "memory_used_mib": "[N/A]"}]
    assert "--query-gpu=name,memory.total,memory.used" in seen[0]
    monkeypatch.setattr(doctor.subprocess, "run",
                        lambda cmd, **kw: subprocess.CompletedProcess(cmd, 9, "", "NVIDIA-SMI has failed"))
    assert doctor.gpu_info() == "nvidia-smi failed: NVIDIA-SMI has failed"


def test_probe_provider(monkeypatch):
    monkeypatch.setattr(ort, "get_available_providers", lambda: [CPU])
    assert doctor.probe_provider("cuda") == {"usable": False,
                                             "detail": "onnxruntime lacks CUDAExecutionProvider"}
    monkeypatch.setattr(ort, "get_available_providers", lambda: [CUDA, CPU])
    real = ort.InferenceSession

    def failing(path, sess_options=None, providers=None, provider_options=None, **kw):
        raise RuntimeError("libcublasLt.so.12: cannot open shared object file")

    monkeypatch.setattr(ort, "InferenceSession", failing)
    probe = doctor.probe_provider("cuda")
    assert probe["usable"] is False and "libcublasLt" in probe["detail"]

    def dropping(path, sess_options=None, providers=None, provider_options=None, **kw):
        return real(path, sess_options=sess_options, providers=[CPU])

    monkeypatch.setattr(ort, "InferenceSession", dropping)
    assert doctor.probe_provider("cuda")["usable"] is False

    class Works:
        def __init__(self, path, sess_options=None, providers=None, provider_options=None, **kw):
            self.providers = providers

        def get_providers(self):
            return self.providers

    monkeypatch.setattr(ort, "InferenceSession", Works)
    assert doctor.probe_provider("cuda")["usable"] is True


def test_bundle_estimate_and_cli(tiny_checkpoint, bundle_factory, capsys):
    from edge_runtime.cli import main
    from edge_moss_export.fixture import fixture_config

    bundle = Path(bundle_factory(tiny_checkpoint, quant="int4"))
    lang = fixture_config("tiny")["language_config"]
    per_token = lang["num_hidden_layers"] * lang["num_key_value_heads"] * lang["head_dim"] * 2 * 4
    on_disk = sum(p.stat().st_size for p in bundle.rglob("*") if p.is_file() and p.name != "manifest.json")
    est = doctor.bundle_estimate(bundle, max_context=1000)
    assert est["kv_bytes_per_token"] == per_token and est["kv_cache_dtype"] == "float32"
    assert est["kv_cache_gib"] == round(per_token * 1000 / 1024 ** 3, 3)
    assert est["files_gib"] == round(on_disk / 1024 ** 3, 3)
    assert est["total_gib"] == round((on_disk + per_token * 1000) / 1024 ** 3, 3)
    assert doctor.bundle_estimate(bundle)["max_context"] == 4096  # the bundle's default

    # Independent of the formula: the bytes the runtime's decoder really allocates for its cache.
    from edge_runtime.decoder import CACHE_STEP, Decoder

    # A host cache starts at CACHE_STEP positions and grows with the context used; the estimate
    # is its size at the bound, which is what a full context allocates.
    decoder = Decoder(bundle / "decoder.onnx", max_context=1000)
    assert sum(buf.nbytes for buf in decoder._cache) == per_token * min(1000, CACHE_STEP)
    decoder._grow_for(1000)
    assert sum(buf.nbytes for buf in decoder._cache) == per_token * 1000
    del decoder

    assert main(["doctor", "--model", str(bundle), "--max-context", "1000"]) == 0
    text = capsys.readouterr().out
    assert "{" not in text and "MemTotal" not in text  # words and units, not a Python dict
    assert "GiB total" in text and "GiB available now" in text
    assert f"for 1000 tokens (float32, {per_token:,} bytes a token)" in text
    assert main(["doctor", "--json", "--model", str(bundle), "--max-context", "1000"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["bundle"]["kv_bytes_per_token"] == per_token
    assert set(info["usable"]) == {"cuda", "tensorrt"}
    assert info["providers"] == ort.get_available_providers()
    assert "detected" in info["jetson"] and "MemTotal" in info["memory_gib"]


def test_estimate_at_release_dims_with_fp16_cache(tmp_path):
    """The 4B numbers quoted in docs/gpu-jetson.md: an fp16 cache is 36 x 8 x 128 x 2 x 2 bytes a token."""
    from edge_runtime.bundle import FORMAT_NAME, FORMAT_VERSION
    from edge_runtime.model_config import MossAudioConfig
    from edge_moss_export.fixture import fixture_config

    from edge_runtime.bundle import REQUIRED_FILES, default_special_ids

    empty = {"bytes": 0, "sha256": "0" * 64}  # a complete manifest: only the sizes matter here
    manifest = {"format": FORMAT_NAME, "format_version": FORMAT_VERSION,
                "model": MossAudioConfig.from_dict(fixture_config("4b")).to_dict(),
                "files": {"decoder.onnx.data": {"bytes": 2_700_000_000, "sha256": "0" * 64},
                          **{name: empty for name in REQUIRED_FILES}},
                "special_ids": default_special_ids(), "time_markers": {"enabled": True},
                "encoder_mode": "chunked", "embeddings": {"kind": "int8"}, "max_context": 4096,
                "quantization": {"audio": "fp16", "decoder": {"io_dtype": "fp16"}}}
    (tmp_path / "manifest.json").write_text(json.dumps(manifest), encoding="utf-8")
    est = doctor.bundle_estimate(tmp_path, max_context=2048)
    assert est["kv_bytes_per_token"] == 147_456 and est["kv_cache_dtype"] == "float16"
    assert round(147_456 * 2048 / 1e9, 2) == 0.30  # the "0.3 GB for 2048 tokens" of the notes
    assert est["kv_cache_gib"] == round(147_456 * 2048 / 1024 ** 3, 3)
    assert est["total_gib"] == round((2_700_000_000 + 147_456 * 2048) / 1024 ** 3, 3)
