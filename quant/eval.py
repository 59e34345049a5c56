"""Teacher-forced quality of a quantized bundle against an fp32 reference (`edge-moss eval-quant`).

For a fixed, deterministic set of generated clips and questions, the reference greedily continues
each prompt for `answer_tokens` tokens (stop tokens ignored); that whole sequence is then fed
through both models in one pass ("teacher forcing"), and the logits at the answer positions are
compared:
  top1   share of positions where both models rank the same token first
  kl     mean KL(reference || quantized) of the next-token distributions (nats)
  rel    relative logit error ||q - r|| / ||r|| over all answer positions
  diverge  the first step at which the quantized model's own greedy decode leaves the
           reference's (None: it never does within `answer_tokens` steps)

The reference is either a checkpoint (the torch reference, imported only then: build side) or a
bundle (torch-free, so the comparison also runs on an install without torch). This module itself
imports only numpy and edge_runtime.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol, Sequence

import numpy as np

from edge_runtime.bundle import MANIFEST_NAME, read_manifest, write_manifest
from edge_runtime.errors import BundleError
from edge_runtime.prompt import Prompt

# Clip lengths in seconds, taken in this order by --clips N: one shorter than an encoder chunk
# (4 s), one of ~10 s (several chunks with a short tail), then others.
CLIP_SECONDS = (2.5, 10.0, 6.3, 4.0, 8.7, 1.2)
QUESTIONS = (
    "What is said in this recording?",
    "Describe the sounds you hear, with their timing.",
    "Transcribe the audio with sentence-level timestamps.",
)
DEFAULT_CLIPS = 3
DEFAULT_ANSWER_TOKENS = 32
SAMPLE_RATE = 16000


def eval_clip(seconds: float, seed: int) -> np.ndarray:
    """A deterministic, non-silent 16 kHz clip: a gliding tone with harmonics, tremolo and noise."""
    rng = np.random.default_rng(1000 + seed)
    t = np.arange(int(round(seconds * SAMPLE_RATE))) / SAMPLE_RATE
    f0 = 140.0 + 30.0 * seed
    phase = 2 * np.pi * (f0 * t + 25.0 * t ** 2)  # a slow upward glide
    tone = np.sin(phase) + 0.5 * np.sin(2 * phase) + 0.25 * np.sin(3 * phase)
    x = 0.15 * tone * (1.0 + 0.8 * np.sin(2 * np.pi * (1.0 + 0.3 * seed) * t))
    x += 0.03 * rng.standard_normal(t.size)
    return x.astype(np.float32)


# ---------------------------------------------------------------------------- metrics

def log_softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise log-softmax in float64."""
    x = np.asarray(logits, dtype=np.float64)
    x = x - x.max(axis=-1, keepdims=True)
    return x - np.log(np.exp(x).sum(axis=-1, keepdims=True))


def compare_logits(reference: np.ndarray, quantized: np.ndarray) -> dict[str, float]:
    """top1 agreement, mean KL(ref || quant) and relative error of two [positions, vocab] arrays."""
    ref = np.asarray(reference, dtype=np.float32)
    got = np.asarray(quantized, dtype=np.float32)
    if ref.shape != got.shape or ref.ndim != 2:
        raise ValueError(f"logit shapes differ or are not 2-D: {ref.shape} vs {got.shape}")
    lp, lq = log_softmax(ref), log_softmax(got)
    kl = (np.exp(lp) * (lp - lq)).sum(axis=-1)
    diff = (got.astype(np.float64) - ref).ravel()
    return {
        "top1": float((ref.argmax(-1) == got.argmax(-1)).mean()),
        "kl": float(max(kl.mean(), 0.0)),
        "rel": float(np.linalg.norm(diff) / max(np.linalg.norm(ref.astype(np.float64)), 1e-30)),
    }


def first_divergence(reference: Sequence[int], other: Sequence[int]) -> int | None:
    """The first index where the two token lists differ (None when they agree over the shorter)."""
    for index, (a, b) in enumerate(zip(reference, other)):
        if int(a) != int(b):
            return index
    return None


# ---------------------------------------------------------------------------- models

class ScoredModel(Protocol):
    """What the comparison needs of a model (a bundle or the torch reference)."""

    description: dict[str, Any]

    def prepare(self, clip: np.ndarray) -> Any: ...

    def greedy(self, prompt: Prompt, audio: Any, steps: int) -> list[int]: ...

    def teacher_forced(self, prompt: Prompt, answer: Sequence[int], audio: Any) -> np.ndarray: ...


class BundleModel:
    """A bundle on ONNX Runtime (torch-free)."""

    def __init__(self, path: str | Path, threads: int | None = None, max_context: int = 1024):
        from edge_runtime.api import EdgeMoss

        from edge_runtime.bundle import read_manifest

        self.path = Path(path)
        # A short cache is enough for a clip, a question and an answer (and saves memory at 4B).
        context = min(max_context, int(read_manifest(self.path).get("max_context", max_context)))
        self.model = EdgeMoss(path, threads=threads, max_context=context)
        quant = self.model.bundle.quantization
        self.description = {"kind": "bundle", "path": str(self.path.resolve()),
                            "decoder": describe_decoder(quant["decoder"]), "audio": quant.get("audio")}

    @property
    def config(self):
        return self.model.config

    @property
    def encoder_mode(self) -> str:
        return self.model.bundle.encoder_mode

    def prepare(self, clip: np.ndarray):
        return self.model.encode(clip)

    def _prefill(self, ids: np.ndarray, prompt: Prompt, audio, keep: int) -> np.ndarray:
        lm = self.model.lm
        lm.rollback(0)
        return lm.append(ids, prompt.audio_positions, audio, logits_to_keep=keep)

    def greedy(self, prompt: Prompt, audio, steps: int) -> list[int]:
        last = self._prefill(prompt.ids, prompt, audio, 1)[-1]
        tokens: list[int] = []
        while len(tokens) < steps:
            tokens.append(int(np.argmax(last)))
            if len(tokens) < steps:
                last = self.model.lm.append(np.array(tokens[-1:], dtype=np.int64))[-1]
        return tokens

    def teacher_forced(self, prompt: Prompt, answer: Sequence[int], audio) -> np.ndarray:
        ids = np.concatenate([prompt.ids, np.asarray(answer, dtype=np.int64)])
        # Positions P-1 .. P+A-2 predict the A answer tokens.
        return self._prefill(ids, prompt, audio, len(answer) + 1)[:-1]


def describe_decoder(info: dict[str, Any]) -> str:
    """'int4 (lsq, asymmetric, blocks of 128, fused, lm_head int4, accuracy level 4)' from a
    manifest's decoder entry; just the kind for float decoders."""
    kind = str(info.get("quant"))
    if not kind.startswith("int"):
        return kind
    parts = [p for p in (info.get("method"),
                         None if info.get("symmetric") is None else
                         ("symmetric" if info.get("symmetric") else "asymmetric"),
                         f"blocks of {info['block_size']}" if info.get("block_size") else None,
                         "fused" if info.get("fused") else None,
                         f"lm_head {info['lm_head_quant']}" if info.get("lm_head_quant") else None,
                         f"accuracy level {info['accuracy_level']}" if info.get("accuracy_level") is not None
                         else None) if p]
    return f"{kind} ({', '.join(parts)})" if parts else kind


class CheckpointModel:
    """The torch reference of a checkpoint (build side: imports torch)."""

    def __init__(self, path: str | Path, encoder_mode: str):
        from edge_moss_export.reference import MossAudioReference

        self.path = Path(path)
        self.ref = MossAudioReference.from_checkpoint(path)
        self.encoder_mode = encoder_mode
        self.description = {"kind": "checkpoint", "path": str(self.path.resolve()),
                            "decoder": "fp32 (torch)", "audio": "fp32 (torch)"}

    @property
    def config(self):
        return self.ref.config

    def prepare(self, clip: np.ndarray):
        from edge_runtime.features import log_mel

        return log_mel(clip)

    def greedy(self, prompt: Prompt, mel, steps: int) -> list[int]:
        return self.ref.generate(prompt.ids.tolist(), mel, mode=self.encoder_mode,
                                 max_new_tokens=steps, stop_ids=())

    def teacher_forced(self, prompt: Prompt, answer: Sequence[int], mel) -> np.ndarray:
        ids = prompt.ids.tolist() + [int(t) for t in answer]
        logits = self.ref.teacher_forced_logits(ids, mel, mode=self.encoder_mode)
        p = prompt.ids.size
        return logits[p - 1:p - 1 + len(answer)]


def open_reference(path: str | Path, encoder_mode: str, threads: int | None = None) -> ScoredModel:
    """A bundle folder (has manifest.json) or a checkpoint directory (has config.json)."""
    path = Path(path)
    if (path / MANIFEST_NAME).is_file():
        return BundleModel(path, threads=threads)
    if (path / "config.json").is_file():
        try:
            return CheckpointModel(path, encoder_mode)
        except ImportError as exc:
            from edge_runtime.errors import MissingExtraError

            raise MissingExtraError(f"a checkpoint reference needs the build tools "
                                    f"({exc.name or 'torch'} is missing): pip install "
                                    "'edge-moss[export]', or pass an fp32 bundle as --reference"
                                    ) from None
    raise BundleError(f"--reference {path} is neither a bundle (manifest.json) nor a checkpoint "
                      "(config.json)")


# ---------------------------------------------------------------------------- the run

@dataclass
class CaseResult:
    clip_seconds: float
    question: int
    positions: int
    top1: float
    kl: float
    rel: float
    diverge: int | None


@dataclass
class EvalResult:
    bundle: dict[str, Any]
    reference: dict[str, Any]
    settings: dict[str, Any]
    cases: list[CaseResult] = field(default_factory=list)
    summary: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"bundle": self.bundle, "reference": self.reference, "settings": self.settings,
                "summary": self.summary, "cases": [asdict(c) for c in self.cases]}


def _check_compatible(bundle: BundleModel, reference: ScoredModel) -> None:
    if bundle.config != reference.config:
        raise BundleError("the reference has other model dimensions than the bundle "
                          "(was the bundle exported from this checkpoint?)")
    if getattr(reference, "encoder_mode", bundle.encoder_mode) != bundle.encoder_mode:
        raise BundleError(f"the reference bundle uses the {reference.encoder_mode} encoder, the "
                          f"bundle the {bundle.encoder_mode} one: compare like with like")


@dataclass
class ReferenceCase:
    """One clip x question: the prompt, the reference's greedy answer and its logits there."""

    clip_seconds: float
    seed: int
    question: int
    prompt: Prompt
    answer: list[int]
    logits: np.ndarray  # [len(answer), vocab]


@dataclass
class ReferenceRun:
    """The reference's side of a comparison, computed once and scored against many bundles
    (so the reference and a bundle need not be in memory together)."""

    description: dict[str, Any]
    settings: dict[str, Any]
    cases: list[ReferenceCase]
    # (clip seconds, seed) -> the reference's AudioFeatures, when it computes them as a bundle
    # does (benchmarks.gguf_reference): lets a bundle's decoder be scored on the reference's audio.
    audio: dict[tuple[float, int], Any] = field(default_factory=dict)


def _token_count(clip: np.ndarray, encoder_mode: str) -> int:
    from edge_runtime.encoder_chunks import chunked_token_count
    from edge_runtime.model_facts import HOP_LENGTH, audio_token_count

    frames = clip.size // HOP_LENGTH
    return chunked_token_count(frames) if encoder_mode == "chunked" else audio_token_count(frames)


def reference_run(reference: ScoredModel, builder, encoder_mode: str, clips: int = DEFAULT_CLIPS,
                  answer_tokens: int = DEFAULT_ANSWER_TOKENS,
                  questions: Sequence[str] = QUESTIONS) -> ReferenceRun:
    """Greedy answers and teacher-forced logits of `reference` on the fixed clips and questions;
    `builder` is a bundle's PromptBuilder (the prompts use the bundle's tokenizer)."""
    if not 1 <= clips <= len(CLIP_SECONDS):
        raise BundleError(f"--clips must be in 1..{len(CLIP_SECONDS)}")
    if answer_tokens < 1:
        raise BundleError("--tokens must be at least 1")
    settings = {"clips": list(CLIP_SECONDS[:clips]), "questions": list(questions),
                "answer_tokens": answer_tokens, "encoder_mode": encoder_mode}
    from edge_runtime.audio_encoder import AudioFeatures

    cases = []
    audio_by_clip = {}
    for seed, seconds in enumerate(CLIP_SECONDS[:clips]):
        clip = eval_clip(seconds, seed)
        audio = reference.prepare(clip)
        if isinstance(audio, AudioFeatures):
            audio_by_clip[(seconds, seed)] = audio
        for qi, question in enumerate(questions):
            prompt = builder.build(_token_count(clip, encoder_mode), question)
            answer = reference.greedy(prompt, audio, answer_tokens)
            cases.append(ReferenceCase(seconds, seed, qi, prompt, answer,
                                       reference.teacher_forced(prompt, answer, audio)))
    return ReferenceRun(dict(reference.description), settings, cases, audio_by_clip)


def score(bundle: BundleModel, run: ReferenceRun, progress=None, reference_audio: bool = False,
          greedy: bool = True) -> EvalResult:
    """Compare `bundle` with a reference run (see the module docstring for the metrics).

    reference_audio: feed the bundle's decoder the reference's audio features (run.audio), so
    that only the decoder differs. greedy=False skips the bundle's own greedy decode (its
    divergence is then not measured: None), for models too slow to decode."""
    if reference_audio and not run.audio:
        raise BundleError("the reference run holds no audio features to score with")
    if run.settings["encoder_mode"] != bundle.encoder_mode:
        raise BundleError(f"the reference ran the {run.settings['encoder_mode']} encoder, the "
                          f"bundle the {bundle.encoder_mode} one: compare like with like")
    result = EvalResult(bundle=bundle.description, reference=run.description,
                        settings=dict(run.settings))
    refs, gots = [], []
    audio_by_clip: dict[tuple[float, int], Any] = {}
    for case in run.cases:
        key = (case.clip_seconds, case.seed)
        if key not in audio_by_clip:
            audio_by_clip.clear()  # cases come clip by clip: keep one clip's encoding
            audio_by_clip[key] = (run.audio[key] if reference_audio else
                                  bundle.prepare(eval_clip(case.clip_seconds, case.seed)))
        audio = audio_by_clip[key]
        got_logits = bundle.teacher_forced(case.prompt, case.answer, audio)
        own = bundle.greedy(case.prompt, audio, len(case.answer)) if greedy else None
        m = compare_logits(case.logits, got_logits)
        result.cases.append(CaseResult(case.clip_seconds, case.question, len(case.answer),
                                       round(m["top1"], 4), float(f"{m['kl']:.4g}"),
                                       float(f"{m['rel']:.4g}"),
                                       None if own is None else first_divergence(case.answer, own)))
        refs.append(case.logits)
        gots.append(got_logits)
        if progress:
            progress(result.cases[-1])
    overall = compare_logits(np.concatenate(refs), np.concatenate(gots))
    diverged = [c.diverge for c in result.cases if c.diverge is not None]
    result.summary = {
        "top1": round(overall["top1"], 4),
        "kl": float(f"{overall['kl']:.4g}"),
        "rel": float(f"{overall['rel']:.4g}"),
        "positions": sum(c.positions for c in result.cases),
        "cases": len(result.cases),
        "diverged_cases": len(diverged) if greedy else None,
        "first_divergence_min": min(diverged) if diverged else None,
        "first_divergence_median": float(np.median(diverged)) if diverged else None,
    }
    return result


def evaluate(bundle: BundleModel, reference: ScoredModel, clips: int = DEFAULT_CLIPS,
             answer_tokens: int = DEFAULT_ANSWER_TOKENS,
             questions: Sequence[str] = QUESTIONS, progress=None) -> EvalResult:
    """Compare `bundle` with `reference` on `clips` clips x every question (see module docstring)."""
    _check_compatible(bundle, reference)
    run = reference_run(reference, bundle.model.prompt_builder(), bundle.encoder_mode,
                        clips=clips, answer_tokens=answer_tokens, questions=questions)
    return score(bundle, run, progress=progress)


def record_in_manifest(bundle_path: str | Path, result: EvalResult) -> Path:
    """Store the result under "eval_quant" in the bundle's manifest (atomic rewrite).

    The manifest lists and hashes the other files, not itself, so the bundle still verifies.
    """
    manifest = read_manifest(Path(bundle_path))
    manifest["eval_quant"] = result.to_dict()
    return write_manifest(Path(bundle_path), manifest)


# ---------------------------------------------------------------------------- output

def _fmt_div(value: int | None, steps: int) -> str:
    return f"none<{steps}" if value is None else str(value)


def format_table(result: EvalResult) -> str:
    """A plain-text table: one row per case and an overall row."""
    steps = result.settings["answer_tokens"]
    header = f"{'clip s':>6}  {'q':>1}  {'pos':>4}  {'top1':>6}  {'KL':>9}  {'rel err':>8}  {'diverge':>8}"
    lines = [f"bundle    {result.bundle['path']} (decoder {result.bundle['decoder']}, "
             f"audio {result.bundle['audio']})",
             f"reference {result.reference['path']} ({result.reference['kind']}, decoder "
             f"{result.reference['decoder']})", header, "-" * len(header)]
    for c in result.cases:
        lines.append(f"{c.clip_seconds:>6.1f}  {c.question:>1}  {c.positions:>4}  {c.top1:>6.3f}  "
                     f"{c.kl:>9.3g}  {c.rel:>8.3g}  {_fmt_div(c.diverge, steps):>8}")
    s = result.summary
    lines.append("-" * len(header))
    div = (f"{s['diverged_cases']}/{s['cases']}" if s["diverged_cases"] else f"none<{steps}")
    lines.append(f"{'all':>6}  {'':>1}  {s['positions']:>4}  {s['top1']:>6.3f}  {s['kl']:>9.3g}  "
                 f"{s['rel']:>8.3g}  {div:>8}")
    if s["diverged_cases"]:
        lines.append(f"greedy decodes diverged in {s['diverged_cases']} of {s['cases']} cases "
                     f"(earliest at step {s['first_divergence_min']}, median "
                     f"{s['first_divergence_median']:g})")
    return "\n".join(lines)


def to_json(result: EvalResult) -> str:
    return json.dumps(result.to_dict(), indent=2, allow_nan=False)


__all__ = ["BundleModel", "CheckpointModel", "CaseResult", "EvalResult", "ReferenceCase",
           "ReferenceRun", "compare_logits", "eval_clip", "evaluate", "first_divergence",
           "format_table", "open_reference", "record_in_manifest", "reference_run", "score",
           "to_json"]
