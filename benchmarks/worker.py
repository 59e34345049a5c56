"""Child-process entry: `python -m benchmarks.worker TASK ARGS_JSON RESULT_PATH`.

Runs one measurement in a fresh interpreter (so its peak RSS is its own and its memory is returned
afterwards) and writes the result as JSON.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any, Callable


def _gemm(args: dict[str, Any]) -> dict[str, Any]:
    from .machine import numpy_gemm_gflops

    return numpy_gemm_gflops(args.get("size", 2048))


def _tasks() -> dict[str, Callable[[dict[str, Any]], dict[str, Any]]]:
    from . import edge_fit, memory_breakdown, profile, tasks_runtime, tasks_torch

    def genai(args: dict[str, Any]) -> dict[str, Any]:
        from .genai_peer import genai_decode_rates, set_genai_threads

        set_genai_threads(args["model"], args.get("threads", 1))
        return genai_decode_rates(args["model"], args["contexts"], args["steps"], args["repeats"])

    def limits(args: dict[str, Any]) -> dict[str, Any]:
        from .machine import measure_limits

        return measure_limits(quick=args.get("quick", False))

    return {
        "gemm": _gemm,
        "limits": limits,
        "audio": tasks_runtime.audio_graph,
        "decoder": tasks_runtime.decoder,
        "e2e": tasks_runtime.end_to_end,
        "live": tasks_runtime.live_latency,
        "torch": tasks_torch.torch_reference,
        "genai": genai,
        "profile": profile.profile_run,
        "memory": memory_breakdown.breakdown,
        "live_paced": edge_fit.live_paced,
    }


def main(argv: list[str]) -> int:
    task, args, result_path = argv[0], json.loads(argv[1]), Path(argv[2])
    result = _tasks()[task](args)
    from .memory import process_peak_mb

    # The child's own peak: wait4's ru_maxrss would include the parent's peak (vfork + exec).
    result["own_peak_rss_mb"] = process_peak_mb()
    result_path.write_text(json.dumps(result))
    sys.stdout.flush()
    # Skip interpreter teardown: ORT / torch thread pools can take long to wind down.
    os._exit(0)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
