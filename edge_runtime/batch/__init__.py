"""Whole archives on Ray Data: the same bundle as a `map_batches` stage, from one machine to a cluster.

- `stage.MossStage`: the callable class for `Dataset.map_batches(..., compute=ActorPoolStrategy)`;
  one `EdgeMoss` per actor, a pinned ONNX Runtime thread count, one record per file.
- `ledger.Ledger`: what is done, appended line by line, so that a rerun skips it.
- `runner.run_batch`: lists, plans, runs and writes; behind `edge-moss batch`.

Only `session` and `runner` import Ray (the `[cluster]` extra); the stage, the ledger and the
writers work without it, and the rest of the runtime never imports this package.
"""
