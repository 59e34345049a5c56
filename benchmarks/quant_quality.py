"""Quality of several bundles against one reference, at any shape (4B included), in bounded memory.

    python -m benchmarks.quant_quality int4=path/to/bundle-int4 compact=path/to/bundle-compact \
        --reference REF_BUNDLE_OR_CHECKPOINT \
        --swap-audio int4+int8audio=path/to/bundle-int4:path/to/audio-int8/audio.onnx \
        [--clips 2] [--tokens 32] [--out benchmarks/quant_quality.json]

The reference's answers and logits are computed once (quant.eval.reference_run) and the
reference is freed before any bundle is loaded, so a 4B reference and a 4B bundle never share
the machine's memory; each bundle is scored in a fresh process, so its peak RSS is its own.
`--swap-audio NAME=BUNDLE:GRAPH` scores BUNDLE with another audio graph (hard links in a scratch
folder, manifest rewritten): it isolates what the audio graph's quantization does to the
answers, with the decoder held fixed. Give the NAME=BUNDLE pairs together, before the options.

With a checkpoint as --reference, the reference is the torch model in float32 math
(benchmarks.gguf_reference), and two more kinds of row isolate the parts of a bundle:
  --torch NAME=WEIGHTS[+audio=GRAPH]   the torch model with WEIGHTS = gguf:FILE (e.g. CrispASR's
        Q4_K, dequantized), bundle:DIR (a bundle's decoder weights, dequantized: its weight error
        in float32 math, i.e. MatMulNBits at accuracy level 0) or checkpoint; +audio=GRAPH takes
        the audio embeddings from an ONNX audio graph (that graph's error alone);
  --decoder-only NAME=BUNDLE   the bundle's decoder fed the reference's audio embeddings.
Torch rows skip their own greedy decode unless --torch-greedy (it is slow at 4B).

Random weights: the numbers rank recipes; they exaggerate what trained weights lose (top-2 logit
gaps are tiny, and a random 32-layer encoder amplifies weight noise).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import pickle
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.bundles import bundle_sizes, link_bundle_except
from benchmarks.memory import peak_mb, reset_peak
from edge_runtime.bundle import AUDIO_GRAPH, describe_files, read_manifest, write_manifest


def swap_audio(base: Path, graph: Path, out: Path, label: str | None = None) -> Path:
    """A copy of bundle `base` (hard links) whose audio graph is `graph` (+ its .data file)."""
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    link_bundle_except(base, out, AUDIO_GRAPH)
    os.link(graph, out / AUDIO_GRAPH)
    data = graph.with_name(graph.name + ".data")
    if data.is_file():
        os.link(data, out / (AUDIO_GRAPH + ".data"))
        # The graph names its external data file; keep that name valid in the copy.
        if data.name != AUDIO_GRAPH + ".data":
            os.link(data, out / data.name)
    manifest = read_manifest(base)
    manifest.pop("eval_quant", None)
    manifest["quantization"]["audio"] = label or f"swapped: {graph}"
    names = [p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()]
    manifest["files"] = describe_files(out, names)
    write_manifest(out, manifest)
    return out


def describe(bundle: Path) -> dict[str, Any]:
    m = read_manifest(bundle)
    dec = m["quantization"]["decoder"]
    decoder = dec.get("quant")
    if decoder == "int4":
        decoder += f" {dec.get('method')}, {'sym' if dec.get('symmetric') else 'asym'}"
        if dec.get("fused"):
            decoder += ", fused"
    return {"decoder": decoder, "block_size": dec.get("block_size"),
            "lm_head": dec.get("lm_head_quant"), "audio": m["quantization"].get("audio"),
            "embeddings": m["embeddings"]["kind"], "bytes": bundle_sizes(bundle),
            "math": f"level {dec.get('accuracy_level')}"}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("bundles", nargs="*", help="NAME=BUNDLE pairs to score")
    p.add_argument("--reference", required=True, help="reference bundle or checkpoint")
    p.add_argument("--swap-audio", action="append", default=[],
                   help="NAME=BUNDLE:AUDIO_GRAPH[:LABEL]: BUNDLE with another audio graph "
                        "(LABEL names its precision in the table)")
    p.add_argument("--torch", action="append", default=[], dest="torch_rows",
                   help="NAME=WEIGHTS[+audio=GRAPH]: the torch reference with other weights")
    p.add_argument("--decoder-only", action="append", default=[],
                   help="NAME=BUNDLE: the bundle's decoder on the reference's audio embeddings")
    p.add_argument("--torch-greedy", action="store_true",
                   help="also run the torch rows' own greedy decode (divergence)")
    p.add_argument("--work", default="benchmarks/cache/quality", help="scratch folder for swaps")
    p.add_argument("--clips", type=int, default=2)
    p.add_argument("--tokens", type=int, default=32)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--run-cache", default=None,
                   help="pickle of the reference run: loaded when it exists (same checkpoint, "
                        "clips and tokens), else computed and written there")
    p.add_argument("--out", default="benchmarks/quant_quality.json")
    p.add_argument("--markdown", default=None,
                   help="also write the table with its machine and command to this .md file")
    p.add_argument("--report-only", action="store_true",
                   help="only turn an existing --out JSON into --markdown")
    p.add_argument("--merge", nargs="+", default=None, metavar="JSON",
                   help="with --report-only: the rows of several runs against the same reference "
                        "run (--run-cache) in one table; 'rows-log' takes the rows scored so far "
                        f"(logged to {ROWS_LOG}) with --run-cache's reference")
    p.add_argument("--score-one", nargs=2, metavar=("NAME", "BUNDLE"), help=argparse.SUPPRESS)
    p.add_argument("--score-torch", nargs=2, metavar=("NAME", "SPEC"), help=argparse.SUPPRESS)
    p.add_argument("--reference-audio", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--run-file", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.score_one:
        print(_kept(score_one(args.score_one[0], Path(args.score_one[1]),
                              Path(args.run_file), args.threads, args.reference_audio)))
        return 0
    if args.score_torch:
        print(_kept(score_torch(args.score_torch[0], args.score_torch[1], args.reference,
                                Path(args.run_file), args.torch_greedy)))
        return 0
    if args.report_only:
        if not args.markdown:
            p.error("--report-only needs --markdown")
        if args.merge == ["rows-log"]:  # the rows scored so far against --run-cache's reference
            with open(args.run_cache, "rb") as fh:
                run, ref_info = pickle.load(fh)  # written by this module (trusted local file)
            from benchmarks.machine import describe_machine

            rows = [json.loads(line) for line in ROWS_LOG.read_text(encoding="utf-8").splitlines()]
            out = {"reference": ref_info, "settings": run.settings, "rows": rows,
                   "machine": describe_machine(), "command": "python -m benchmarks.quant_quality "
                   + " ".join(argv if argv is not None else sys.argv[1:]),
                   "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
            Path(args.out).write_text(json.dumps(out, indent=2) + "\n", encoding="utf-8")
        elif args.merge:
            out = merge_runs([json.loads(Path(f).read_text(encoding="utf-8")) for f in args.merge])
            Path(args.out).write_text(json.dumps(out, indent=2) + "\n", encoding="utf-8")
        else:
            out = json.loads(Path(args.out).read_text(encoding="utf-8"))
        write_markdown(out, Path(args.markdown))
        return 0

    from edge_moss_quant.eval import CLIP_SECONDS, BundleModel

    candidates: list[tuple[str, Path]] = []
    for item in args.bundles:
        name, _, path = item.partition("=")
        candidates.append((name, Path(path)))
    decoder_only = []
    for item in args.decoder_only:
        name, _, path = item.partition("=")
        decoder_only.append((name, Path(path)))
    for item in args.swap_audio:
        name, _, rest = item.partition("=")
        base, _, graph = rest.partition(":")
        graph, _, label = graph.partition(":")
        candidates.append((name, swap_audio(Path(base), Path(graph), Path(args.work) / name,
                                            label or None)))
    torch_rows = [tuple(item.partition("=")[::2]) for item in args.torch_rows]
    if not candidates and not decoder_only:
        p.error("give at least one bundle (its tokenizer makes the prompts)")
    checkpoint_reference = (Path(args.reference) / "config.json").is_file()
    if (torch_rows or decoder_only) and not checkpoint_reference:
        p.error("--torch and --decoder-only need a checkpoint as --reference")

    # Prompts come from the first bundle's tokenizer; all candidates share the checkpoint's.
    first = BundleModel((candidates or decoder_only)[0][1], threads=args.threads, max_context=1024)
    builder, mode = first.model.prompt_builder(), first.encoder_mode
    del first
    gc.collect()

    t = time.perf_counter()
    reset_peak()
    cached = Path(args.run_cache) if args.run_cache else None
    if cached and cached.is_file():
        with open(cached, "rb") as fh:
            run, ref_info = pickle.load(fh)  # written by this module (trusted local file)
        if (run.settings["clips"] != list(CLIP_SECONDS[:args.clips])
                or run.settings["answer_tokens"] != args.tokens or ref_info["path"] != str(args.reference)):
            p.error(f"{cached} holds another reference run; delete it or pass another --run-cache")
        print(f"reference run loaded from {cached}", file=sys.stderr, flush=True)
    else:
        # Prompts come from the first bundle's tokenizer; all candidates share the checkpoint's.
        first = BundleModel((candidates or decoder_only)[0][1], threads=args.threads, max_context=1024)
        builder, mode = first.model.prompt_builder(), first.encoder_mode
        del first
        gc.collect()
        run, ref_info = _reference(args, builder, mode, checkpoint_reference)
        if cached:
            tmp_cache = cached.with_suffix(".partial")
            with open(tmp_cache, "wb") as fh:
                pickle.dump((run, ref_info), fh)
            os.replace(tmp_cache, cached)
    rows = _score_rows(args, run, candidates, decoder_only, torch_rows)
    from benchmarks.machine import describe_machine

    out = {"reference": ref_info, "settings": run.settings, "rows": rows,
           "machine": describe_machine(), "command": "python -m benchmarks.quant_quality " +
           " ".join(argv if argv is not None else sys.argv[1:]),
           "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
    Path(args.out).write_text(json.dumps(out, indent=2) + "\n", encoding="utf-8")
    if args.markdown:
        write_markdown(out, Path(args.markdown))
    print(format_rows(rows))
    return 0


def _reference(args, builder, mode: str, checkpoint_reference: bool):
    """The reference's answers and logits (then the reference is freed)."""
    from edge_moss_quant.eval import open_reference, reference_run

    t = time.perf_counter()
    if checkpoint_reference:
        from benchmarks.gguf_reference import TorchRow

        reference = TorchRow(args.reference, mode)
    else:
        reference = open_reference(args.reference, mode, threads=args.threads)
    run = reference_run(reference, builder, mode, clips=args.clips, answer_tokens=args.tokens)
    ref_info = {"path": str(args.reference), "description": run.description,
                "seconds": round(time.perf_counter() - t, 1), "peak_rss_mb": peak_mb()}
    del reference
    gc.collect()
    print(f"reference done in {ref_info['seconds']} s, peak {ref_info['peak_rss_mb']:.0f} MiB",
          file=sys.stderr, flush=True)
    return run, ref_info


def _score_rows(args, run, candidates, decoder_only, torch_rows) -> list[dict[str, Any]]:
    # Each row is scored in a fresh process, so its peak RSS is its own (memory a freed model
    # leaves in this process's allocator would otherwise count against the next one).
    with tempfile.TemporaryDirectory() as tmp:
        run_file = Path(tmp) / "reference.pkl"
        with open(run_file, "wb") as fh:
            pickle.dump(run, fh)
        # torch rows first: at 4B the GGUF row is the one a late failure should not lose
        greedy = ["--torch-greedy"] if args.torch_greedy else []
        rows = [_score_in_subprocess(name, ["--score-torch", name, spec, *greedy], run_file,
                                     args.threads, reference=args.reference)
                for name, spec in torch_rows]
        rows += [_score_in_subprocess(name, ["--score-one", name, str(path)], run_file, args.threads)
                 for name, path in candidates]
        rows += [_score_in_subprocess(name, ["--score-one", name, str(path), "--reference-audio"],
                                      run_file, args.threads) for name, path in decoder_only]
    return rows


def merge_runs(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """One report from several runs that scored rows against the same reference run."""
    first = runs[0]
    for other in runs[1:]:
        if other["settings"] != first["settings"] or other["reference"]["path"] != first["reference"]["path"]:
            raise SystemExit("--merge: the runs used different references or settings")
    return {**first, "rows": [r for run in runs for r in run["rows"]],
            "command": " ; ".join(run["command"] for run in runs),
            "date": " / ".join(run["date"] for run in runs)}


def write_markdown(out: dict[str, Any], path: Path) -> Path:
    """The table with what it needs to be read: weights, reference, machine, command."""
    m = out.get("machine", {})
    s = out["settings"]
    text = "\n".join([
        "# Quantization quality at full shape",
        "",
        "> **The weights are random.** These figures rank quantization recipes against each other;",
        "> they exaggerate what trained weights lose (random logits have tiny top-2 gaps, and a random",
        "> 32-layer audio encoder amplifies weight noise). The generated text is noise.",
        "",
        f"Reference: `{out['reference']['path']}` ({out['reference']['description'].get('decoder')} "
        f"decoder, {out['reference']['description'].get('audio')} audio graph). "
        f"{len(s['clips'])} generated clips ({', '.join(f'{c:g} s' for c in s['clips'])}) x "
        f"{len(s['questions'])} questions, {s['answer_tokens']} teacher-forced answer tokens each, "
        f"{s['encoder_mode']} encoder. Peak RSS is each bundle's own scoring process (bundle "
        "loaded, prompts of up to ~200 tokens, a 1024-token cache, and the reference logits: "
        "~0.1 GB at 4B).",
        "",
        f"Machine: {m.get('cpu', '?')}, {m.get('logical_cpus', '?')} logical CPUs, "
        f"{m.get('memory_gb', '?')} GB, ONNX Runtime {m.get('onnxruntime', '?')}; {out.get('date', '')}.",
        "",
        f"Command: `{out.get('command', 'python -m benchmarks.quant_quality ...')}`",
        "",
        format_rows(out["rows"]),
        "",
    ])
    path.write_text(text, encoding="utf-8")
    return path


def _score_in_subprocess(name: str, what: list[str], run_file: Path, threads: int,
                         reference: str = "-") -> dict[str, Any]:
    proc = subprocess.run([sys.executable, "-m", "benchmarks.quant_quality", *what,
                           "--run-file", str(run_file), "--threads", str(threads),
                           "--reference", reference], capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"scoring {name} failed:\n{proc.stderr[-2000:]}")
    row = json.loads(proc.stdout.strip().splitlines()[-1])
    print(json.dumps({k: row[k] for k in ("name", "top1", "kl", "rel", "peak_rss_mb")}),
          file=sys.stderr, flush=True)
    return row


# Every scored row is also appended here as it finishes, so a long 4B run that fails late (or is
# stopped) keeps the rows it has scored.
ROWS_LOG = Path("benchmarks/cache/quality/rows.jsonl")


def _kept(row: dict[str, Any]) -> str:
    line = json.dumps(row)
    ROWS_LOG.parent.mkdir(parents=True, exist_ok=True)
    with open(ROWS_LOG, "a", encoding="utf-8") as fh:
        fh.write(line + "\n")
    return line


def score_one(name: str, path: Path, run_file: Path, threads: int,
              reference_audio: bool = False) -> dict[str, Any]:
    """Score one bundle against a pickled reference run (this process's peak RSS is the bundle's)."""
    from edge_moss_quant.eval import BundleModel, score

    with open(run_file, "rb") as fh:
        run = pickle.load(fh)  # written by this module's own parent process
    t = time.perf_counter()
    model = BundleModel(path, threads=threads, max_context=1024)
    result = score(model, run, reference_audio=reference_audio)
    row = {"name": name, "path": str(path), **describe(path), **result.summary,
           "seconds": round(time.perf_counter() - t, 1), "peak_rss_mb": peak_mb()}
    if reference_audio:
        row["audio"] = "reference (torch)"
    return row


def score_torch(name: str, spec: str, checkpoint: str, run_file: Path, greedy: bool) -> dict[str, Any]:
    """Score the torch reference with the weights `spec` names (see the module docstring)."""
    from benchmarks.gguf_reference import TorchRow
    from edge_moss_quant.eval import score

    with open(run_file, "rb") as fh:
        run = pickle.load(fh)  # written by this module's own parent process
    weights, _, audio = spec.partition("+audio=")
    t = time.perf_counter()
    model = TorchRow(checkpoint, run.settings["encoder_mode"], weights or "checkpoint", audio or None)
    result = score(model, run, greedy=greedy)
    kind, _, path = weights.partition(":")
    row = {"name": name, "path": path or checkpoint, "kind": "torch", "weights": weights,
           "audio": f"graph: {audio}" if audio else "reference (torch)", "math": "fp32 (= level 0)",
           **result.summary, "seconds": round(time.perf_counter() - t, 1), "peak_rss_mb": peak_mb()}
    if kind == "gguf":
        from edge_moss_quant.gguf_weights import GGUFWeights

        names = [n for n in model.ref.state_dict() if n.startswith(("language_model.", "lm_head."))]
        g = GGUFWeights(path, names)
        row.update(decoder=g.type_name("language_model.layers.0.mlp.up_proj.weight") + " (GGUF)",
                   block_size="32 in 256", lm_head=g.type_name("lm_head.weight"),
                   embeddings=g.type_name("language_model.embed_tokens.weight"),
                   bytes={"total": Path(path).stat().st_size})
    elif kind == "bundle":
        row.update({k: v for k, v in describe(Path(path)).items() if k not in ("audio", "math")})
    else:
        row.update(decoder="checkpoint (bf16)", block_size=None, lm_head="bf16", embeddings="bf16",
                   bytes=None)
    return row


def format_rows(rows: list[dict[str, Any]]) -> str:
    """A Markdown table: size on disk, scoring peak RSS and quality, one row per bundle."""
    lines = ["| row | runs on | decoder (block) | lm_head | audio | embeddings | matmul math "
             "| GB on disk | peak RSS GB | top-1 | KL | rel. logit err | greedy diverged |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        size = f"{r['bytes']['total'] / 1e9:.2f}" if r.get("bytes") else "-"
        block = f" ({r['block_size']})" if r.get("block_size") else ""
        diverged = ("not run" if r.get("diverged_cases") is None
                    else f"{r['diverged_cases']}/{r['cases']}")
        lines.append(
            f"| {r['name']} | {'torch' if r.get('kind') == 'torch' else 'ONNX Runtime'} "
            f"| {r['decoder']}{block} | {r['lm_head']} | {r['audio']} | {r['embeddings']} "
            f"| {r.get('math', '-')} | {size} | {r['peak_rss_mb'] * 1.048576e-3:.2f} "
            f"| {r['top1']:.3f} | {r['kl']:.3g} | {r['rel']:.3g} | {diverged} |")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
