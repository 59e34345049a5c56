"""`edge-moss transcribe FILES...`: transcripts with the model's native timestamps."""

from __future__ import annotations

import sys
from pathlib import Path

from ..errors import EdgeMossError
from ..prompts import TASKS, instruction_for
from ..subtitles import FORMATS, check_line_options, render, write_transcript
from ._common import add_decode_args, add_model_args, decode_settings, load_model


def add_parser(sub) -> None:
    p = sub.add_parser("transcribe", help="transcribe audio files",
                       description="Transcribe audio files; long audio is cut into windows at "
                                   "pauses and transcribed with continuous timestamps.")
    p.add_argument("files", nargs="+", help="audio files")
    p.add_argument("--timestamps", action="store_true",
                   help="ask the model for sentence-level timestamps")
    p.add_argument("-f", "--format", default="txt", choices=[*FORMATS, "all"],
                   help="output format (default: txt)")
    p.add_argument("-o", "--output-dir", default=None,
                   help="write FILE.<format> here (default: print to stdout)")
    p.add_argument("--window", type=float, default=30.0,
                   help="longest window fed to the model at once, in seconds (default 30)")
    p.add_argument("--no-vad", action="store_true",
                   help="do not skip non-speech (by default Silero VAD keeps silence from the model)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    _add_prompt_args(p)
    add_model_args(p)
    add_decode_args(p, max_new_tokens=448)
    p.set_defaults(func=run)


def _add_prompt_args(p) -> None:
    g = p.add_argument_group("instruction and subtitles")
    g.add_argument("--task", choices=TASKS, default=None, help="transcribe (the default), caption "
                   "('Describe this audio.') or events (a sound-event timeline)")
    g.add_argument("--speakers", action="store_true", help="ask for a speaker label ([S01]...) "
                   "and times per sentence (the authors' prompt; moderate quality; default: off)")
    g.add_argument("--language", metavar="NAME", default=None, help="language hint for the "
                   "default instruction, e.g. German or de (default: none)")
    g.add_argument("--prompt", metavar="TEXT", default=None, help="send TEXT instead of the "
                   "task's instruction, word for word (default: the authors' prompt)")
    g.add_argument("--max-line-width", metavar="N", type=int, default=None, help="wrap srt/vtt "
                   "cue lines at N characters (default: no wrapping)")
    g.add_argument("--max-line-count", metavar="N", type=int, default=None, help="at most N lines "
                   "a cue, splitting a sentence's time between cues (default: no limit)")


def run(args) -> int:
    settings = decode_settings(args)
    instruction_for(args.task, timestamps=args.timestamps, speakers=args.speakers,
                    language=args.language, prompt=args.prompt)  # refuse bad choices up front
    check_line_options(args.max_line_width, args.max_line_count)
    lines = {"max_line_width": args.max_line_width, "max_line_count": args.max_line_count}
    if args.window < 2:
        raise EdgeMossError("--window must be at least 2 seconds")
    formats = list(FORMATS) if args.format == "all" else [args.format]
    out_dir = Path(args.output_dir) if args.output_dir else None
    if out_dir is None and len(formats) > 1:
        raise EdgeMossError("-f all needs -o DIR")
    model = load_model(args)
    failures = 0
    for name in args.files:
        try:
            segments, info = _transcribe_one(model, name, args, settings)
        except EdgeMossError as exc:
            print(f"edge-moss: error: {exc}", file=sys.stderr)
            failures += 1
            continue
        if out_dir is None:
            sys.stdout.write(render(segments, formats[0], info, **lines))
            sys.stdout.flush()
            continue
        out_dir.mkdir(parents=True, exist_ok=True)
        for fmt in formats:
            path = write_transcript(segments, out_dir / Path(name).stem, fmt, info, **lines)
            print(f"wrote {path}", file=sys.stderr)
    return 2 if failures else 0


def _transcribe_one(model, name: str, args, settings: dict):
    bar = None
    if not args.no_progress and sys.stderr.isatty():
        from tqdm import tqdm

        bar = tqdm(total=0, unit="window", desc=Path(name).name, file=sys.stderr)

    def progress(done: int, total: int) -> None:
        if bar is not None:
            bar.total = total
            bar.update(done - bar.n)

    try:
        return model.transcribe(name, timestamps=args.timestamps, window_s=args.window,
                                vad=not args.no_vad, progress=progress, task=args.task,
                                speakers=args.speakers, language=args.language,
                                prompt=args.prompt, **settings)
    finally:
        if bar is not None:
            bar.close()
