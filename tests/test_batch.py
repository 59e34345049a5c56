"""`edge-moss batch` on a real local Ray cluster (2 CPUs, 127.0.0.1, no dashboard), plus its parts.

Random-weight tiny fixture: the texts are meaningless; what is tested is that a batch gives the
same records as `edge-moss transcribe` file by file, survives a bad file and a kill, and skips
what it has done.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import soundfile as sf

from conftest import test_clip

REPO = Path(__file__).resolve().parents[1]
TOKENS = "24"  # short answers keep the tiny runs fast


def cli(*args, timeout=300):
    env = {**os.environ,
           "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    return subprocess.run([sys.executable, "-m", "edge_runtime.cli", *args], capture_output=True,
                          text=True, env=env, timeout=timeout, cwd=REPO)


@pytest.fixture(scope="module")
def bundle(tiny_checkpoint, bundle_factory):
    return bundle_factory(tiny_checkpoint, "fp32", "chunked")


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    """6 clips in two folders, two of them with the same stem; and one corrupt file."""
    root = tmp_path_factory.mktemp("archive")
    paths = []
    for i in range(6):
        folder = root / ("a" if i < 3 else "b")
        folder.mkdir(exist_ok=True)
        name = "same.wav" if i in (0, 3) else f"clip{i}.wav"
        sf.write(folder / name, test_clip(1.5 + 0.5 * i, seed=i), 16000)
        paths.append(str(folder / name))
    bad = root / "broken.wav"
    bad.write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunk" + b"\x00" * 64)
    return paths, str(bad)


def _descendants(pid: int) -> set[int]:
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    out, stack = set(), [pid]
    while stack:
        for child in children.get(stack.pop(), []):
            if child not in out:
                out.add(child)
                stack.append(child)
    return out


def _listening(pids: set[int]) -> list[str]:
    """Local addresses (hex, as /proc/net/tcp{,6} has them) of TCP sockets these pids listen on."""
    inodes = set()
    for pid in pids:
        try:
            for fd in Path(f"/proc/{pid}/fd").iterdir():
                link = os.readlink(fd)
                if link.startswith("socket:["):
                    inodes.add(link[8:-1])
        except OSError:
            continue
    found = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            cols = line.split()
            if cols[3] == "0A" and cols[9] in inodes:  # 0A = LISTEN
                found.append(cols[1].split(":")[0])
    return found


@pytest.fixture(scope="module")
def ray_cluster():
    """A local Ray with 2 worker CPUs on 127.0.0.1, started through edge-moss's own session code."""
    saved = {k: os.environ.get(k) for k in ("PYTHONPATH", "RAY_USAGE_STATS_ENABLED",
                                            "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER")}
    os.environ["PYTHONPATH"] = os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])
    from edge_runtime.batch.session import connect

    temp = tempfile.mkdtemp(prefix="emray", dir="/tmp")  # short: Ray's socket paths must fit
    ray, started = connect("local", num_cpus=2, temp_dir=temp)
    assert started
    try:
        yield ray, ray.get_runtime_context().gcs_address
    finally:
        ray.shutdown()
        shutil.rmtree(temp, ignore_errors=True)
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _config(inputs, out, bundle, **kw):
    from edge_runtime.batch.options import TaskOptions
    from edge_runtime.batch.runner import BatchConfig

    opts = TaskOptions(timestamps=True, vad=False, decode={"max_new_tokens": int(TOKENS)})
    return BatchConfig(inputs=list(inputs), out_dir=out, bundle=str(bundle), options=opts,
                       workers=2, threads=1, progress=False, **kw)


def _results(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]


# ----- without Ray -----

def test_stage_equals_the_api_for_paths_and_bytes(bundle, clips):
    from edge_runtime.api import EdgeMoss
    from edge_runtime.batch.stage import MossStage

    paths, bad = clips
    stage = MossStage(bundle, task="ask", question="What is this?", threads=1,
                      decode={"max_new_tokens": 8})
    want = EdgeMoss(bundle, threads=1).ask(paths[1], "What is this?", max_new_tokens=8).text
    batch = stage({"path": [paths[1], bad]})
    assert batch["text"][0] == want and batch["error"][0] == ""
    assert batch["error"][1] and "\n" not in batch["error"][1] and "broken.wav" in batch["error"][1]
    data = Path(paths[1]).read_bytes()
    from_bytes = stage({"path": [paths[1]], "bytes": [data]})
    assert from_bytes["text"][0] == want
    assert from_bytes["sha256"][0] == batch["sha256"][0] and from_bytes["size"][0] == len(data)


def test_pool_fills_the_cpus_without_oversubscribing():
    from edge_runtime.batch.runner import plan_pool
    from edge_runtime.errors import EdgeMossError

    for cpus in (1, 2, 3, 4, 8, 16, 64):
        workers, threads = plan_pool(cpus, None, None)
        assert workers * threads <= cpus and workers * threads > cpus - threads
    assert plan_pool(16, None, None, max_workers=2) == (2, 8)
    assert plan_pool(8, 2, None) == (2, 4) and plan_pool(8, None, 3) == (2, 3)
    with pytest.raises(EdgeMossError, match="oversubscribe"):
        plan_pool(4, 3, 2)


def test_ledger_survives_a_torn_line_and_plans_by_content(tmp_path):
    from edge_runtime.batch.ledger import Ledger, plan
    from edge_runtime.batch.stage import file_identity

    a, b, c = (tmp_path / f"{n}.wav" for n in "abc")
    for i, path in enumerate((a, b, c)):
        sf.write(path, test_clip(0.5, seed=i), 16000)
    ledger = Ledger(tmp_path / "ledger.jsonl")
    for path, error in ((a, ""), (b, "cannot read")):
        sha, size, mtime = file_identity(path)
        ledger.append({"path": str(path), "sha256": sha, "size": size, "mtime_ns": mtime,
                       "error": error})
    ledger.close()
    with open(ledger.path, "ab") as handle:
        handle.write(b'{"path": "torn')  # a crash in the middle of a write
    latest = Ledger(ledger.path).latest()
    assert set(latest) == {str(a), str(b)}
    todo = plan([str(a), str(b), str(c)], latest)
    assert list(todo.done) == [str(a)] and todo.todo == [str(b), str(c)]
    # same size and mtime, other content: the quick check trusts it, --rehash does not
    st = os.stat(a)
    data = bytearray(a.read_bytes())
    data[-1] ^= 1
    a.write_bytes(bytes(data))
    os.utime(a, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert list(plan([str(a)], latest).done) == [str(a)]
    assert plan([str(a)], latest, rehash=True).todo == [str(a)]
    with Ledger(ledger.path) as again:  # appending after the torn line keeps both readable
        again.append({"path": str(c), "error": ""})
    assert str(c) in Ledger(ledger.path).latest()


def test_output_names_never_collide(tmp_path):
    from edge_runtime.batch.outputs import file_output

    names = {file_output(tmp_path, p, "srt") for p in ("/x/a/talk.wav", "/x/b/talk.wav",
                                                        "/x/a/talk.flac")}
    assert len(names) == 3
    assert file_output(tmp_path, "/x/a/talk.wav", "srt") == tmp_path / "files/x/a/talk.wav.srt"


def test_parquet_results_round_trip(tmp_path):
    import pyarrow.parquet as pq

    from edge_runtime.batch.outputs import write_results

    records = [{"path": "/a.wav", "sha256": "00", "size": 3, "mtime_ns": 1, "duration": 1.5,
                "text": "hi", "segments": [{"start": 0.0, "end": 1.5, "text": "hi"}],
                "timings": {"total_s": 0.1}, "worker": "w", "error": ""},
               {"path": "/b.wav", "sha256": "", "size": -1, "mtime_ns": -1, "duration": -1.0,
                "text": "", "segments": [], "timings": {}, "worker": "w", "error": "bad"}]
    table = pq.read_table(write_results(tmp_path / "r.parquet", records, "parquet"))
    rows = table.to_pylist()
    assert rows[0]["segments"] == records[0]["segments"] and rows[1]["error"] == "bad"
    assert json.loads(rows[0]["timings"]) == {"total_s": 0.1}


def test_progress_counts_audio_hours_and_eta(monkeypatch):
    import io

    from edge_runtime.batch import progress as prog

    clock = [100.0]
    monkeypatch.setattr(prog.time, "monotonic", lambda: clock[0])
    stream = io.StringIO()
    bar = prog.BatchProgress(files=3, audio_s=3 * 3600.0, stream=stream, line_every_s=0.0)
    clock[0] += 1800.0  # one hour of audio done in half an hour
    bar.update(3600.0)
    assert bar.rate() == pytest.approx(2.0) and bar.eta_s() == pytest.approx(3600.0)
    assert "1.00/3.00 audio h, 2.0 audio-h/h, ETA 1:00:00" in stream.getvalue()
    clock[0] += 10.0
    bar.update(0.0, failed=True)
    assert bar.failed == 1 and "1 failed" in stream.getvalue().splitlines()[-1]


@pytest.mark.parametrize("flags, needle", [
    (["--task", "ask"], "--question"),
    (["--question", "why?"], "--task ask"),
    (["--workers", "0"], "--workers"),
    (["--task", "ask", "--question", "q", "-f", "srt"], "srt"),
    (["-f", "docx"], "docx"),
    (["--max-new-tokens", "0"], "--max-new-tokens"),
])
def test_bad_flags_are_one_line_and_exit_2(tmp_path, clips, flags, needle):
    proc = cli("batch", clips[0][0], "-m", str(tmp_path), "-o", str(tmp_path / "o"), *flags)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1 and needle in lines[0], proc.stderr
    assert lines[0].startswith("edge-moss: error:")


RAY_BLOCKER = """
import importlib.abc, runpy, sys
class _Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] == "ray":
            raise ImportError(f"{name} is blocked", name=name)
sys.meta_path.insert(0, _Block())
import edge_runtime.batch.stage, edge_runtime.batch.ledger, edge_runtime.batch.outputs
sys.argv = ["edge-moss", *sys.argv[1:]]
runpy.run_module("edge_runtime.cli", run_name="__main__")
"""


def test_runtime_and_cli_work_without_ray(tmp_path, clips):
    """Only edge_runtime/batch/{session,runner}.py import Ray, and only when a batch runs."""
    offenders = [str(p.relative_to(REPO)) for p in (REPO / "edge_runtime").rglob("*.py")
                 if p.parent.name != "batch" and any(
                     line.strip().startswith(("import ray", "from ray"))
                     for line in p.read_text().splitlines())]
    assert offenders == []
    env = {**os.environ,
           "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    run = lambda *args: subprocess.run([sys.executable, "-c", RAY_BLOCKER, *args], env=env,
                                       capture_output=True, text=True, timeout=120, cwd=REPO)
    assert run("batch", "--help").returncode == 0
    proc = run("batch", clips[0][0], "-m", str(tmp_path), "-o", str(tmp_path / "o"))
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1, proc.stderr
    assert "edge-moss[cluster]" in lines[0]


# ----- on Ray -----

def test_ray_listens_on_loopback_only_and_reports_nothing(ray_cluster):
    ray, _ = ray_cluster
    try:
        from ray._common.usage import usage_lib
    except ImportError:  # Ray before 2.4x kept it here
        from ray._private.usage import usage_lib

    assert not usage_lib.usage_stats_enabled()
    addresses = _listening({os.getpid()} | _descendants(os.getpid()))
    assert addresses, "found no Ray server sockets to check"
    # 127.0.0.1, ::1 and ::ffff:127.0.0.1 as /proc/net/tcp{,6} spell them
    loopback = {"0100007F", "00000000000000000000000001000000", "0000000000000000FFFF00000100007F"}
    assert set(addresses) <= loopback, addresses

    @ray.remote(num_cpus=1)
    def worker_env():
        return os.environ.get("RAY_USAGE_STATS_ENABLED")

    assert ray.get(worker_env.remote(), timeout=120) == "0"


def test_batch_equals_transcribe_and_survives_a_bad_file(ray_cluster, bundle, clips, tmp_path):
    from edge_runtime.batch.runner import run_batch

    paths, bad = clips
    out = tmp_path / "out"
    summary = run_batch(_config([*paths, bad], out, bundle, file_formats=("json", "srt")))
    assert (summary.ran, summary.failed, summary.skipped) == (7, 1, 0)
    records = {rec["path"]: rec for rec in _results(out)}
    assert list(records) == [*paths, bad]  # input order, one record each
    assert records[bad]["error"] and "\n" not in records[bad]["error"]
    assert len({records[p]["worker"] for p in paths}) == 2  # two actors shared the work

    ref = tmp_path / "ref"
    for folder in ("a", "b"):  # `transcribe -o` names by stem: one folder at a time
        mine = [p for p in paths if Path(p).parent.name == folder]
        proc = cli("transcribe", *mine, "-m", str(bundle), "--timestamps", "--no-vad",
                   "--max-new-tokens", TOKENS, "-f", "json", "-o", str(ref / folder),
                   "--threads", "1", "--no-progress")
        assert proc.returncode == 0, proc.stderr
    for path in paths:
        want = json.loads((ref / Path(path).parent.name / f"{Path(path).stem}.json").read_text())
        assert records[path]["error"] == ""
        assert records[path]["text"] == want["text"]
        assert records[path]["segments"] == want["segments"]
        assert records[path]["duration"] == want["info"]["duration"]
        per_file = json.loads((out / "files" / (path.lstrip("/") + ".json")).read_text())
        assert per_file["segments"] == want["segments"] and per_file["text"] == want["text"]
        assert (out / "files" / (path.lstrip("/") + ".srt")).is_file()
    assert any(rec["segments"] for rec in records.values()), "nothing was compared"

    # a second run skips every finished file (Ray is not even asked) ...
    again = run_batch(_config(paths, out, bundle))
    assert (again.ran, again.skipped) == (0, 6) and again.workers == 0
    assert _results(out) == [records[p] for p in paths]
    # ... and retries only the failed one
    retry = run_batch(_config([*paths, bad], out, bundle))
    assert (retry.ran, retry.failed, retry.skipped) == (1, 1, 6)
    done = [json.loads(line) for line in (out / "ledger.jsonl").read_text().splitlines()]
    assert sorted(rec["path"] for rec in done if not rec["error"]) == sorted(paths)


def test_killed_run_resumes_without_duplicates(ray_cluster, bundle, clips, tmp_path):
    from edge_runtime.batch.runner import run_batch

    _, address = ray_cluster
    paths, _ = clips
    out = tmp_path / "out"
    ledger = out / "ledger.jsonl"
    env = {**os.environ}
    proc = subprocess.Popen(
        [sys.executable, "-m", "edge_runtime.cli", "batch", *paths, "-m", str(bundle), "-o",
         str(out), "--timestamps", "--no-vad", "--max-new-tokens", TOKENS, "--address", address,
         "--workers", "1", "--threads-per-worker", "1", "--no-progress"],
        cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline and proc.poll() is None:
            if ledger.exists() and ledger.read_bytes().count(b"\n") >= 1:
                break
            time.sleep(0.05)
        assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait(timeout=30)
        proc.stderr.close()
    before = ledger.read_bytes().count(b"\n")
    assert 1 <= before < len(paths), f"{before} of {len(paths)} were done at the kill"
    assert not (out / "results.jsonl").exists()

    summary = run_batch(_config(paths, out, bundle))
    assert summary.skipped == before and summary.ran == len(paths) - before
    assert summary.failed == 0
    lines = [json.loads(line) for line in ledger.read_text().splitlines()]
    assert sorted(rec["path"] for rec in lines) == sorted(paths)  # each file once, none lost
    assert [rec["path"] for rec in _results(out)] == paths


def test_readme_pipeline_reads_bytes_on_two_actors(ray_cluster, bundle, clips):
    """The README's own-pipeline example: read_binary_files -> MossStage on 2 actors."""
    ray, _ = ray_cluster
    from ray.data import ActorPoolStrategy

    from edge_runtime.batch.stage import MossStage

    paths, _ = clips
    kwargs = {"bundle": str(bundle), "threads": 1, "timestamps": True, "vad": False,
              "decode": {"max_new_tokens": int(TOKENS)}}
    ds = ray.data.read_binary_files(str(Path(paths[0]).parent), include_paths=True,
                                    file_extensions=["wav"])
    # half a CPU each: the read tasks need the rest of this 2-CPU cluster (two 1-CPU actors
    # would leave them none and the pipeline would wait forever)
    ds = ds.map_batches(MossStage, batch_size=1, num_cpus=0.5, compute=ActorPoolStrategy(size=2),
                        fn_constructor_kwargs=kwargs)
    rows = {Path(row["path"]).name: row for row in ds.take_all()}
    here = MossStage(**kwargs)
    mine = [p for p in paths if Path(p).parent == Path(paths[0]).parent]
    assert sorted(rows) == sorted(Path(p).name for p in mine)
    for path in mine:
        want, got = here.process(path), rows[Path(path).name]
        assert got["error"] == "" and got["sha256"] == want["sha256"]
        assert got["text"] == want["text"]
        assert json.loads(got["segments"]) == json.loads(want["segments"])
