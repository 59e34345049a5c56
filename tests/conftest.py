"""Shared test fixtures: random-weight checkpoints in the release layout, built once per session."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session", autouse=True)
def export_cache(tmp_path_factory):
    """One exported audio graph per checkpoint and precision for the whole session.

    Every bundle of a fixture (fp32, int8, int4, both encoder modes, CLI subprocesses too) starts
    from the same torch.onnx graph, which costs ~20-40 s to export on 2 vCPUs; the cache is keyed
    by the tensors' bytes, so each graph is still exported, and checked, once per session.
    A developer rerunning single files may set EDGE_MOSS_EXPORT_CACHE=DIR to keep the graphs
    between sessions (same content key); unset, as in CI and the README's command, every session
    exports its own.
    """
    import os

    name = "EDGE_MOSS_EXPORT_CACHE"  # export.audio_graph._GraphCache.ENV (no torch import here)
    saved = os.environ.get(name)
    if saved:
        from pathlib import Path

        yield Path(saved)
        return
    folder = tmp_path_factory.mktemp("export-cache")
    os.environ[name] = str(folder)
    yield folder
    if saved is None:
        os.environ.pop(name, None)
    else:
        os.environ[name] = saved


def _checkpoint(tmp_path_factory, size: str, seed: int = 0):
    from edge_moss_export.fixture import write_fixture

    out = tmp_path_factory.mktemp(f"ckpt-{size}") / f"moss-audio-{size}"
    write_fixture(out, size=size, seed=seed)
    return out


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory):
    """Path of a tiny random-weight MOSS-Audio checkpoint (every release tensor name)."""
    return _checkpoint(tmp_path_factory, "tiny")


@pytest.fixture(scope="session")
def small_checkpoint(tmp_path_factory):
    """Path of a small random-weight MOSS-Audio checkpoint."""
    return _checkpoint(tmp_path_factory, "small")


@pytest.fixture(scope="session")
def bundle_factory(tmp_path_factory):
    """make(checkpoint, quant="fp32", encoder_mode="chunked") -> bundle path, exported once per session."""
    from pathlib import Path

    made = {}

    def make(checkpoint, quant: str = "fp32", encoder_mode: str = "chunked", **options):
        key = (str(checkpoint), quant, encoder_mode, tuple(sorted(options.items())))
        if key not in made:
            from edge_moss_export.bundle_export import ExportOptions, export_bundle

            out = tmp_path_factory.mktemp("bundle") / f"{Path(checkpoint).name}-{quant}-{encoder_mode}"
            export_bundle(checkpoint, out, ExportOptions(quant=quant, encoder_mode=encoder_mode,
                                                         progress=False, **options))
            made[key] = out
        return made[key]

    return make


def test_clip(seconds: float, seed: int = 0):
    """A deterministic non-silent clip (tones + noise) at 16 kHz, float32."""
    import numpy as np

    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * 16000)) / 16000
    x = 0.2 * np.sin(2 * np.pi * (180 + 40 * seed) * t) * (1 + np.sin(2 * np.pi * 1.5 * t))
    x += 0.05 * rng.standard_normal(t.size)
    return x.astype(np.float32)


test_clip.__test__ = False  # a helper, not a test
