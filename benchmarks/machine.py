"""The machine the numbers come from, and its physical limits: memory read bandwidth and matmul rate.

Bandwidth: numpy reductions over a 1 GiB float32 array (far larger than any cache), best of several
passes, on 1 thread and on all logical CPUs (the array split between threads; numpy releases the GIL
inside the loop). Matmul: float32 GEMM through numpy's BLAS in a child process pinned to 1 or N
threads, and ONNX Runtime's MatMul at 1 and N intra-op threads.
"""

from __future__ import annotations

import datetime as _dt
import os
import platform
import threading
import time
from importlib import metadata
from typing import Any

import numpy as np


def _version(pkg: str) -> str | None:
    try:
        return metadata.version(pkg)
    except metadata.PackageNotFoundError:
        return None


def logical_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cpu_flags() -> list[str]:
    """The SIMD flags that matter for these kernels (AVX2/AVX-512/VNNI/BF16/AMX)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("flags"):
                    flags = line.split(":", 1)[1].split()
                    keep = ("avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "avx_vnni",
                            "amx_bf16", "amx_int8", "amx_tile")
                    return [f for f in keep if f in flags]
    except OSError:
        pass
    return []


def memory_gb() -> float:
    try:
        with open("/proc/meminfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("MemTotal"):
                    return round(int(line.split()[1]) / 1024 / 1024, 1)
    except OSError:
        pass
    return float("nan")


def describe_machine() -> dict[str, Any]:
    """CPU model, logical cores, memory, library versions, date."""
    load = os.getloadavg() if hasattr(os, "getloadavg") else (float("nan"),) * 3
    return {
        "cpu": cpu_model(),
        "cpu_flags": cpu_flags(),
        "logical_cpus": logical_cpus(),
        "memory_gb": memory_gb(),
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "onnxruntime": _version("onnxruntime"),
        "onnxruntime_genai": _version("onnxruntime-genai"),
        "numpy": np.__version__,
        "torch": _version("torch"),
        "transformers": _version("transformers"),
        "date": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "load_average_at_start": [round(x, 2) for x in load],
    }


def read_bandwidth(gib: float = 1.0, passes: int = 5, threads: int = 1) -> dict[str, Any]:
    """Read bandwidth (GB/s, 1e9 bytes) of summing a `gib` GiB float32 array; best and median pass."""
    n = int(gib * (1 << 30)) // 4
    data = np.ones(n, dtype=np.float32)  # touched: every page is resident before timing
    parts = np.array_split(data, threads)
    times = []
    for _ in range(passes):
        if threads == 1:
            t = time.perf_counter()
            float(data.sum())
            times.append(time.perf_counter() - t)
            continue
        workers = [threading.Thread(target=np.sum, args=(p,)) for p in parts]
        t = time.perf_counter()
        for w in workers:
            w.start()
        for w in workers:
            w.join()
        times.append(time.perf_counter() - t)
    rates = [data.nbytes / s / 1e9 for s in times]
    del data, parts
    return {"threads": threads, "array_gib": gib, "best_gbps": round(max(rates), 2),
            "median_gbps": round(float(np.median(rates)), 2), "passes": len(rates)}


def _sum_worker(args: tuple[int, int, Any]) -> list[float]:
    n, passes, barrier = args
    data = np.ones(n, dtype=np.float32)
    times = []
    for _ in range(passes):
        barrier.wait()  # every process reads at the same time
        t = time.perf_counter()
        float(data.sum())
        times.append(time.perf_counter() - t)
    return times


def read_bandwidth_processes(gib: float = 1.0, passes: int = 5, procs: int = 2) -> dict[str, Any]:
    """Aggregate read bandwidth of `procs` processes each summing its own share of `gib` GiB in
    lock-step (threads inside one numpy process do not overlap their reductions)."""
    import multiprocessing as mp

    n = int(gib * (1 << 30)) // 4 // procs
    ctx = mp.get_context("fork")
    with ctx.Manager() as manager:
        barrier = manager.Barrier(procs)
        with ctx.Pool(procs) as pool:
            per = pool.map(_sum_worker, [(n, passes, barrier)] * procs)
    # A pass ends when its slowest process does.
    rates = [procs * n * 4 / max(ts) / 1e9 for ts in zip(*per)]
    return {"processes": procs, "array_gib": gib, "best_gbps": round(max(rates), 2),
            "median_gbps": round(float(np.median(rates)), 2), "passes": len(rates)}


def _timed(step, passes: int) -> list[float]:
    """Wall seconds of `passes` calls of `step`."""
    times = []
    for _ in range(passes):
        t = time.perf_counter()
        step()
        times.append(time.perf_counter() - t)
    return times


def probe_session(graph, threads: int, opsets: tuple[tuple[str, int], ...] = (("", 17),),
                  ir_version: int = 9):
    """An ONNX Runtime CPU session of a small probe graph (one op, or one layer's matmuls), at
    `threads` intra-op threads."""
    import onnxruntime as ort
    from onnx import helper

    model = helper.make_model(graph, opset_imports=[helper.make_opsetid(d, v) for d, v in opsets])
    model.ir_version = ir_version
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.log_severity_level = 3
    return ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])


def ort_read_bandwidth(threads: int, gib: float = 1.0, passes: int = 5) -> dict[str, Any]:
    """Read bandwidth as ONNX Runtime's own kernels see it: ReduceMax over a `gib` GiB float32
    input (numpy's float32 sum is partly compute bound on this kind of core)."""
    from onnx import TensorProto, helper

    n = int(gib * (1 << 30)) // 4
    graph = helper.make_graph([helper.make_node("ReduceMax", ["x"], ["y"], keepdims=0)], "read",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [n])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [])])
    sess = probe_session(graph, threads)
    x = np.ones(n, dtype=np.float32)
    sess.run(None, {"x": x})
    times = _timed(lambda: sess.run(None, {"x": x}), passes)
    rates = [x.nbytes / s / 1e9 for s in times]
    return {"threads": threads, "array_gib": gib, "best_gbps": round(max(rates), 2),
            "median_gbps": round(float(np.median(rates)), 2), "passes": len(rates)}


def copy_bandwidth(gib: float = 0.5, passes: int = 5) -> dict[str, Any]:
    """Copy bandwidth counting read + write bytes (1 thread)."""
    n = int(gib * (1 << 30)) // 4
    src = np.ones(n, dtype=np.float32)
    dst = np.zeros_like(src)
    times = _timed(lambda: np.copyto(dst, src), passes)
    rates = [2 * src.nbytes / s / 1e9 for s in times]
    return {"array_gib": gib, "best_gbps": round(max(rates), 2),
            "median_gbps": round(float(np.median(rates)), 2)}


def numpy_gemm_gflops(size: int = 2048, passes: int = 5) -> dict[str, Any]:
    """float32 GEMM rate of numpy's BLAS in this process (thread count set by the environment)."""
    rng = np.random.default_rng(0)
    a = rng.standard_normal((size, size), dtype=np.float32)
    b = rng.standard_normal((size, size), dtype=np.float32)
    a @ b  # warm-up: BLAS thread pool start
    times = _timed(lambda: a @ b, passes)
    rates = [2 * size ** 3 / s / 1e9 for s in times]
    return {"size": size, "best_gflops": round(max(rates), 1),
            "median_gflops": round(float(np.median(rates)), 1)}


def ort_matmul_gflops(threads: int, m: int = 512, k: int = 2560, n: int = 9728,
                      passes: int = 5) -> dict[str, Any]:
    """ONNX Runtime float32 MatMul rate: activations [m, k] times a constant weight [k, n]."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    w = numpy_helper.from_array(rng.standard_normal((k, n), dtype=np.float32) * 0.02, "w")
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"])], "mm",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [m, k])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [m, n])], [w])
    sess = probe_session(graph, threads)
    x = rng.standard_normal((m, k), dtype=np.float32)
    sess.run(None, {"x": x})
    times = _timed(lambda: sess.run(None, {"x": x}), passes)
    rates = [2 * m * k * n / s / 1e9 for s in times]
    return {"threads": threads, "shape": [m, k, n], "best_gflops": round(max(rates), 1),
            "median_gflops": round(float(np.median(rates)), 1)}


def measure_limits(quick: bool = False) -> dict[str, Any]:
    """All physical limits; numpy GEMM runs in children so each gets its own BLAS thread count."""
    from .subproc import run_worker

    cpus = logical_cpus()
    gib = 0.25 if quick else 1.0
    limits: dict[str, Any] = {
        "read_bandwidth_1t": read_bandwidth(gib, threads=1),
        "read_bandwidth_all": (read_bandwidth_processes(gib, procs=cpus) if cpus > 1
                               else read_bandwidth(gib, threads=1)),
        "copy_bandwidth": copy_bandwidth(gib / 2),
        "ort_read_1t": ort_read_bandwidth(1, gib),
        "ort_read_all": ort_read_bandwidth(cpus, gib),
    }
    size = 1024 if quick else 2048
    for t in sorted({1, cpus}):
        env = {"OPENBLAS_NUM_THREADS": str(t), "OMP_NUM_THREADS": str(t), "MKL_NUM_THREADS": str(t)}
        limits[f"numpy_gemm_{t}t"] = run_worker("gemm", {"size": size}, env=env)
        limits[f"ort_matmul_{t}t"] = ort_matmul_gflops(t, m=128 if quick else 512)
    limits["read_bandwidth_gbps"] = max(limits[k]["best_gbps"] for k in
                                        ("read_bandwidth_1t", "read_bandwidth_all", "ort_read_1t", "ort_read_all"))
    limits["read_bandwidth_1t_gbps"] = max(limits["read_bandwidth_1t"]["best_gbps"],
                                           limits["ort_read_1t"]["best_gbps"])
    limits["matmul_gflops_1t"] = max(limits["numpy_gemm_1t"]["best_gflops"],
                                     limits["ort_matmul_1t"]["best_gflops"])
    limits["matmul_gflops_all"] = max(v["best_gflops"] for k, v in limits.items()
                                      if isinstance(v, dict) and "best_gflops" in v)
    return limits


if __name__ == "__main__":
    import json

    print(json.dumps({"machine": describe_machine(), "limits": measure_limits(quick=True)}, indent=2))
