"""The torch peer: the reference model (transformers' Qwen3Model) in bf16 on the CPU, the way a user
of the upstream code runs it. Prefill and KV-cached decode of the same backbone, plus load time.

The cache for a long context is filled with random bf16 keys/values instead of a real prefill: the
values do not change the work of a decode step, and a 2,000-token bf16 prefill would dominate the
run. The 100-token context is a real prefill (its time is the prefill figure).
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from .memory import StagePeaks


def torch_reference(args: dict[str, Any]) -> dict[str, Any]:
    import torch
    from transformers import DynamicCache

    from edge_moss_export.reference import MossAudioReference

    threads = args.get("threads")
    if threads:
        torch.set_num_threads(int(threads))
    repeats, steps = args.get("repeats", 3), args.get("steps", 8)
    peaks = StagePeaks()
    peaks.start()
    t = time.perf_counter()
    model = MossAudioReference.from_checkpoint(args["checkpoint"], dtype=torch.bfloat16,
                                               attn_implementation=args.get("attn", "sdpa"))
    load_s = time.perf_counter() - t
    peaks.end("load")
    lm, head = model.language_model, model.lm_head
    cfg = lm.config
    gen = torch.Generator().manual_seed(0)
    out: dict[str, Any] = {"load_s": load_s, "threads": torch.get_num_threads(),
                           "dtype": "bfloat16", "prefill": {}, "decode": {}}

    def embeds(n: int) -> torch.Tensor:
        ids = torch.randint(1000, 100000, (1, n), generator=gen)
        return lm.embed_tokens(ids)

    def step(cache, x):
        hidden = lm(inputs_embeds=x, past_key_values=cache, use_cache=True).last_hidden_state
        return head(hidden[:, -1:])

    with torch.inference_mode():
        for n in args.get("prefill_tokens", [100]):
            peaks.start()
            runs = []
            for _ in range(repeats):
                x = embeds(n)
                t = time.perf_counter()
                step(DynamicCache(config=cfg), x)
                runs.append(time.perf_counter() - t)
            peaks.end("prefill")
            out["prefill"][str(n)] = {"runs_s": runs, "tokens": n}
        for ctx in args.get("contexts", [100, 2000]):
            peaks.start()
            medians = []
            for _ in range(repeats):
                cache = DynamicCache(config=cfg)
                if ctx <= args.get("real_prefill_max", 128):
                    step(cache, embeds(ctx))
                else:
                    shape = (1, cfg.num_key_value_heads, ctx, cfg.head_dim)
                    for layer in range(cfg.num_hidden_layers):
                        k = torch.randn(shape, generator=gen, dtype=torch.float32).to(torch.bfloat16)
                        v = torch.randn(shape, generator=gen, dtype=torch.float32).to(torch.bfloat16)
                        cache.update(k, v, layer)
                step(cache, embeds(1))  # warm-up step
                times = []
                for _ in range(steps):
                    x = embeds(1)
                    t = time.perf_counter()
                    step(cache, x)
                    times.append(time.perf_counter() - t)
                medians.append(float(np.median(times)))
            peaks.end("decode")
            out["decode"][str(ctx)] = {"step_s": medians, "steps_per_repeat": steps}
    out["peaks_mb"] = peaks.peaks
    return out
