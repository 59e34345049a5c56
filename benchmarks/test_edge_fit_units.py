"""Edge-fit report arithmetic on made-up numbers (no model runs)."""

from benchmarks.edge_fit import medians
from benchmarks.edge_fit_report import _best, _ratio, write_report


def _row(after, **kw):
    runs = [dict(after_load_s=a, load_s=1.0, encode_s=2.0, prefill_s=10.0, decode_tok_s=5.0,
                 command_s=a + 1, peak_rss_gib=4.0, prompt_tokens=428, **kw) for a in after]
    return {"median": medians(runs), "runs": runs}


def test_medians_and_the_best_thread_count():
    rows = {"threads_1": _row([40.0]), "threads_2": _row([30.0, 20.0, 25.0])}
    assert rows["threads_2"]["median"]["after_load_s"] == 25.0
    assert rows["threads_2"]["median"]["after_load_s_range"] == [20.0, 30.0]
    assert _best(rows)[0] == "2"


def test_ratios_read_as_speed_ups():
    assert _ratio(10.0, 5.0, higher_is_better=True) == 2.0  # rates
    assert _ratio(5.0, 10.0, higher_is_better=False) == 2.0  # times
    assert _ratio(None, 1.0, True) is None


def test_report_without_a_peer_says_so(tmp_path):
    data = {"machine": {"cpu": "X"}, "new_tokens": 100, "bundle_bytes": {"a": 1},
            "ask": {"default_threads": 2, "default": _row([25.0]), "threads_1": _row([40.0]),
                    "threads_2": _row([25.0])},
            "crispasr": {"skipped": "no CrispASR build given"}}
    write_report(data, tmp_path / "R.md")
    text = (tmp_path / "R.md").read_text()
    assert "CrispASR row: no CrispASR build given." in text
    assert "edge-moss best (`--threads 2`)" in text


def test_other_bundle_rows_are_reported(tmp_path):
    row = _row([60.0])
    row["bundle_bytes"] = 6.2e9
    data = {"machine": {"cpu": "X"}, "new_tokens": 100, "bundle_bytes": {"a": 1},
            "ask": {"default_threads": 2, "default": _row([25.0]), "threads_2": _row([25.0])},
            "crispasr": {"skipped": "none"}, "rows": {"8B int4": row, "8B int8": {"error": "x"}}}
    write_report(data, tmp_path / "R.md")
    text = (tmp_path / "R.md").read_text()
    line = [ln for ln in text.splitlines() if ln.startswith("| 8B int4 |")]
    assert line and "| 6.20 |" in line[0] and "42.8" in line[0]  # 428 tokens / 10 s prefill
    assert "| 8B int8 | failed: x |" in text  # a failed row says so, with no figures


def test_roofline_against_the_held_decoder(tmp_path):
    data = {"machine": {"cpu": "X"}, "new_tokens": 100, "bundle_bytes": {"a": 1},
            "ask": {"default_threads": 2, "default": _row([25.0]), "threads_2": _row([25.0])},
            "crispasr": {"skipped": "none"},
            "roofline": {"read_all": {"best_gbps": 20.0}, "read_1t": {"best_gbps": 15.0}, "decoder_bytes": 2e9},
            "memory": {"rows": [{"step": "audio graph session", "rss": 1000.0, "peak_mb": 1000.0, "seconds": 1.0},
                                {"step": "decoder session", "rss": 1000.0 + 4e9 / (1 << 20), "peak_mb": 1.0,
                                 "seconds": 1.0}]}}
    write_report(data, tmp_path / "R.md")
    text = (tmp_path / "R.md").read_text()
    assert "/ 2.00 GB of decoder weights a token = 10.00 tok/s; default reaches 50 %" in text
    assert "(4.00 GB:" in text and "roofline is 5.00 tok/s and the default reaches 100 %" in text
