"""What every file of a batch is asked: the task, its question and decoding settings, checked once."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..errors import EdgeMossError

TASKS = ("transcribe", "ask")
# the defaults of `edge-moss transcribe` / `edge-moss ask`, so that a batch equals them
DEFAULT_MAX_NEW_TOKENS = {"transcribe": 448, "ask": 512}


@dataclass(frozen=True)
class TaskOptions:
    """One batch job's settings; raises EdgeMossError on a bad value (before any model loads).

    Args:
        task: "transcribe" (segments, optionally timed) or "ask" (an answer to `question`).
        question: the question for task "ask" (user text, never a special token).
        timestamps: ask the model for sentence-level timestamps (transcribe only).
        window_s: longest window fed to the model at once (transcribe only).
        vad: skip non-speech with Silero VAD (transcribe only).
        decode: max_new_tokens, temperature, top_k, top_p, seed (as for `edge-moss ask`).
    """

    task: str = "transcribe"
    question: str | None = None
    timestamps: bool = False
    window_s: float = 30.0
    vad: bool = True
    decode: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        from ..api import DecodeSettings
        from ..sampling import SamplerConfig

        if self.task not in TASKS:
            raise EdgeMossError(f"--task must be one of {', '.join(TASKS)}, not {self.task!r}")
        if self.task == "ask" and not (self.question or "").strip():
            raise EdgeMossError("--task ask needs --question TEXT")
        if self.task == "transcribe" and self.question is not None:
            raise EdgeMossError("--question applies to --task ask only")
        if self.task == "ask" and self.timestamps:
            raise EdgeMossError("--timestamps applies to --task transcribe only")
        if self.window_s < 2:
            raise EdgeMossError("--window must be at least 2 seconds")
        try:
            settings = DecodeSettings(**self.settings())
        except TypeError as exc:  # an unknown key
            raise EdgeMossError(f"decoding settings: {exc}") from None
        if settings.max_new_tokens < 1:
            raise EdgeMossError("--max-new-tokens must be at least 1")
        try:
            SamplerConfig(temperature=settings.temperature, top_k=settings.top_k,
                          top_p=settings.top_p, seed=settings.seed)
        except ValueError as exc:
            raise EdgeMossError(f"sampling settings: {exc}") from None

    def settings(self) -> dict[str, Any]:
        """Decoding keyword arguments for EdgeMoss.ask/transcribe, with the commands' defaults."""
        from ..api import DecodeSettings

        given = {k: v for k, v in self.decode.items() if v is not None}
        return asdict(DecodeSettings(**{"max_new_tokens": DEFAULT_MAX_NEW_TOKENS[self.task], **given}))

    def fingerprint(self, bundle: str | Path) -> dict[str, Any]:
        """What makes two runs' records interchangeable: these settings and the bundle's manifest."""
        doc = asdict(self)
        doc["decode"] = self.settings()
        manifest = Path(bundle) / "manifest.json"
        try:
            doc["bundle_manifest_sha256"] = hashlib.sha256(manifest.read_bytes()).hexdigest()
        except OSError:  # the bundle lives on the cluster only: its path stands for it
            doc["bundle"] = str(Path(bundle).absolute())
        return json.loads(json.dumps(doc))
