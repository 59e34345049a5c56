"""Server pieces without a server: streamed text adds up, thinking is split off, and the
`serve` command fails with one line (port in use, missing extra)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import textwrap
import time

import pytest

from edge_runtime.loopback import is_loopback
from edge_runtime.server.streaming import ChatText, TranscriptJoiner
from edge_runtime.timestamps import split_thinking
from edge_runtime.tokenizer import load_tokenizer
from server_fixtures import server_bundle  # noqa: F401


@pytest.fixture(scope="module")
def tokenizer(server_bundle):
    from edge_runtime.bundle import verify_bundle

    bundle = verify_bundle(server_bundle)
    return load_tokenizer(bundle.tokenizer_dir), bundle.special_ids


def test_transcript_deltas_add_up_to_the_joined_windows(tokenizer):
    tok, _ = tokenizer
    windows = ["  Hello there.\n ", "", " \n", "Über 20 °C — ok?  ", " 你好世界 "]
    joiner = TranscriptJoiner(tok)
    out = ""
    for text in windows:
        for token in tok.encode(text):
            out += joiner.push(token)
        out += joiner.end_window()
    assert out == " ".join(w.strip() for w in windows if w.strip())


def test_thinking_goes_to_reasoning_and_matches_split_thinking(tokenizer):
    tok, ids = tokenizer
    reply = [ids["think_start"], *tok.encode("\nThe speaker sounds calm.\n"), ids["think_end"],
             *tok.encode("\n\nA calm voice says hello.")]
    text = ChatText(tok, ids["think_start"], ids["think_end"], [])
    shown = [text.push(t) for t in reply] + [text.finish()]
    reasoning = "".join(r for r, _ in shown)
    content = "".join(c for _, c in shown)
    thinking, answer = split_thinking(tok.decode(reply, skip_special_tokens=False))
    assert (reasoning.strip(), content) == (thinking, answer)
    assert content == "A calm voice says hello."


def test_stop_strings_are_never_shown_even_split_across_tokens(tokenizer):
    tok, ids = tokenizer
    text = ChatText(tok, ids["think_start"], ids["think_end"], ["END!"])
    shown = "".join(text.push(t)[1] for t in tok.encode("one two EN"))
    assert shown == "one two " and not text.stopped  # "EN" is held: it may become "END!"
    shown += "".join(text.push(t)[1] for t in tok.encode("D! three"))
    assert text.stopped and shown == "one two " and text.content == "one two "


def test_loopback_hosts():
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("192.168.1.20")


def serve(*args, env=None):
    return subprocess.run([sys.executable, "-m", "edge_runtime.cli", "serve", *args],
                          capture_output=True, text=True, timeout=120, env=env)


def test_port_in_use_is_one_line(server_bundle):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        proc = serve("-m", str(server_bundle), "--port", str(port))
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1].startswith(f"edge-moss: error: cannot listen on "
                                                           f"127.0.0.1:{port}")
    assert "Traceback" not in proc.stderr


def test_missing_server_extra_names_the_install(tmp_path, server_bundle):
    blocker = tmp_path / "sitecustomize.py"
    blocker.write_text(textwrap.dedent("""
        import importlib.abc, sys
        class Block(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] == "uvicorn":
                    raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        sys.meta_path.insert(0, Block())
    """))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")]))
    proc = serve("-m", str(server_bundle), "--port", "0", env=env)
    assert proc.returncode == 2
    assert "pip install 'edge-moss[server]'" in proc.stderr and "uvicorn" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_a_host_beyond_loopback_without_a_key_is_warned_about(server_bundle):
    # 192.0.2.1 (TEST-NET-1) is no address of this machine: the bind fails after the warning,
    # so nothing ever listens beyond loopback here.
    proc = serve("-m", str(server_bundle), "--host", "192.0.2.1", "--port", "0",
                 env={k: v for k, v in os.environ.items() if k != "EDGE_MOSS_API_KEY"})
    assert "warning: listening on 192.0.2.1 without an API key" in proc.stderr
    assert proc.returncode == 2 and "cannot listen on 192.0.2.1" in proc.stderr


def test_the_work_queue_runs_jobs_in_order_and_bounds_the_waiting():
    import threading

    from edge_runtime.server.queue import Cancelled, QueueFull, WorkQueue

    work = WorkQueue(max_waiting=2)
    gate, order = threading.Event(), []
    first = work.submit(lambda job: gate.wait(30))
    deadline = time.monotonic() + 30
    while work.waiting and time.monotonic() < deadline:
        time.sleep(0.01)  # the first job starts
    later = [work.submit(lambda job, i=i: order.append(i)) for i in range(2)]
    with pytest.raises(QueueFull) as full:
        work.submit(lambda job: None)
    assert full.value.retry_after >= 1
    live = work.submit(lambda job: order.append("live"), bounded=False)  # not counted
    later[1].cancel()  # its client left while it waited: skipped
    gate.set()
    assert first.future.result(timeout=30) is True
    live.future.result(timeout=30)
    assert isinstance(later[1].future.exception(timeout=30), Cancelled)
    assert order == [0, "live"] and work.cancelled == 1
    work.close()
