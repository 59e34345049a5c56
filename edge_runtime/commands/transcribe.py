"""`edge-moss transcribe INPUTS...`: transcripts with the model's native timestamps.

Everything a user can get wrong is checked before the model loads: option values (options.py),
the inputs (inputs.py) and the output names (output_files.py: one name per input, never an
input). Then each input is transcribed and written on its own: a file that fails is one line
on stderr, the others still run, and the exit code says that some failed.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

from ..errors import EdgeMossError, OptionError, OutputError
from ..inputs import display_name, expand_inputs
from ..options import TRANSCRIPT_FORMATS, WindowOptions, output_formats
from ..output_files import check_outputs, make_folder, plan_output_names
from ..prompts import TASKS, instruction_for
from ..subtitles import check_line_options, format_timestamp, render, write_transcript
from ._common import HelpFormatter, add_decode_args, add_model_args, decode_settings, load_model, \
    model_options

AUDIO_FORMATS = ("WAV, FLAC, OGG (Vorbis, Opus), MP3, AIFF, CAF, W64/RF64 and the other formats "
                 "libsndfile reads; any sample rate and channel count (mixed to mono, resampled "
                 "to 16 kHz). Other formats: pipe them in, e.g. "
                 "`ffmpeg -i x.mp4 -f wav - | edge-moss transcribe - -m BUNDLE`.")


def add_parser(sub) -> None:
    p = sub.add_parser(
        "transcribe", help="transcribe audio files", formatter_class=HelpFormatter,
        description="Transcribe audio files; long audio is cut into windows at pauses and "
                    "transcribed with continuous timestamps.",
        epilog=f"Audio formats: {AUDIO_FORMATS} With -o, INPUT talk.wav is written as "
               "DIR/talk.<format>; inputs of one run that share a name keep their extension "
               "(x.wav.srt, x.flac.srt), and equal file names in different folders keep their "
               "folders (a/x.wav.srt, b/x.wav.srt). An output is never one of the inputs.")
    p.add_argument("inputs", nargs="+", metavar="INPUT",
                   help="audio file, folder (searched recursively), glob pattern ('calls/*.wav'), "
                        "@LIST (one input per line) or - for standard input")
    p.add_argument("--timestamps", action="store_true",
                   help="ask the model for sentence-level timestamps; the terminal then shows "
                        "whisper.cpp's [00:00:00.000 --> 00:00:04.120] lines")
    p.add_argument("-f", "--format", default="txt",
                   help=f"output formats, comma-separated: {', '.join(TRANSCRIPT_FORMATS)}, or all")
    p.add_argument("-o", "--output-dir", default=None,
                   help="write DIR/NAME.<format> per input (default: print to stdout)")
    p.add_argument("--window", type=float, default=30.0,
                   help="longest window fed to the model at once, 6-120 seconds")
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
    model_options(args)
    window = WindowOptions(window_s=args.window)
    instruction_for(args.task, timestamps=args.timestamps, speakers=args.speakers,
                    language=args.language, prompt=args.prompt)  # refuse bad choices up front
    check_line_options(args.max_line_width, args.max_line_count)
    lines = {"max_line_width": args.max_line_width, "max_line_count": args.max_line_count}
    formats = output_formats(args.format)
    out_dir = Path(args.output_dir) if args.output_dir else None
    if out_dir is None and len(formats) > 1:
        raise OptionError(f"-f {args.format} gives {len(formats)} formats: that needs -o DIR "
                          "(the terminal shows one)")
    inputs = expand_inputs(args.inputs)
    targets = _plan(inputs, out_dir, formats) if out_dir is not None else {}
    model = load_model(args)
    failures = 0
    for index, name in enumerate(inputs):
        label = display_name(name)
        if out_dir is None and len(inputs) > 1:  # several files on the terminal: name each, as head(1)
            sys.stdout.write(("\n" if index else "") + f"==> {label} <==\n")
        try:
            start = time.perf_counter()
            segments, info = _transcribe_one(model, name, label, args, window, settings)
            wall = time.perf_counter() - start
        except EdgeMossError as exc:
            print(f"edge-moss: error: {exc}", file=sys.stderr)
            failures += 1
            continue
        if out_dir is None:
            sys.stdout.write(terminal_text(segments, formats[0], info, args.timestamps, **lines))
            sys.stdout.flush()
        else:
            for fmt, path in targets[name]:
                try:
                    make_folder(path.parent)
                    write_transcript(segments, path, fmt, info, **lines)
                except EdgeMossError as exc:
                    print(f"edge-moss: error: {exc}", file=sys.stderr)
                    failures += 1
                    continue
                print(f"wrote {path}", file=sys.stderr)
        print(summary(label, info.duration, wall), file=sys.stderr)
    if failures and len(inputs) > 1:
        print(f"edge-moss: {failures} of the results above failed (see the errors)", file=sys.stderr)
    return 2 if failures else 0


def _plan(inputs: list[str], out_dir: Path, formats: tuple[str, ...]) -> dict[str, list[tuple[str, Path]]]:
    """Every output path of the run, checked up front: one name per input, none of them an input."""
    if os.path.exists(out_dir) and not os.path.isdir(out_dir):
        raise OutputError(f"cannot write into {out_dir}: it is a file, not a folder")
    names = plan_output_names(inputs)
    targets = {item: [(fmt, out_dir / f"{name}.{fmt}") for fmt in formats]
               for item, name in zip(inputs, names)}
    check_outputs(inputs, [("output", path) for paths in targets.values() for _, path in paths])
    make_folder(out_dir)  # only once nothing is refused
    return targets


def terminal_text(segments, fmt: str, info, timestamps: bool, **render_options) -> str:
    """What the terminal shows: with --timestamps and txt, whisper.cpp's lines
    `[00:00:00.000 --> 00:00:04.120]  text` (a speaker as `[S01] ` before the text); otherwise
    the format itself."""
    if fmt != "txt" or not timestamps:
        return render(segments, fmt, info, **render_options)
    lines = []
    for seg in segments:
        text = " ".join(line.strip() for line in seg.text.splitlines() if line.strip())
        if text and getattr(seg, "speaker", None):
            text = f"[{seg.speaker}] {text}"
        if text:
            lines.append(f"[{format_timestamp(seg.start, '.')} --> "
                         f"{format_timestamp(max(seg.end, seg.start), '.')}]  {text}")
    return "".join(line + "\n" for line in lines)


def summary(label: str, audio_s: float, wall_s: float) -> str:
    rtf = wall_s / audio_s if audio_s > 0 else 0.0
    return (f"edge-moss: {label}: {audio_s:.1f} s of audio in {wall_s:.1f} s "
            f"(real-time factor {rtf:.3f})")


def _transcribe_one(model, name: str, label: str, args, window: WindowOptions, settings: dict):
    bar = None
    if not args.no_progress and sys.stderr.isatty():
        from tqdm import tqdm

        bar = tqdm(total=0, unit="s", desc=Path(label).name, file=sys.stderr,
                   bar_format="{desc}: {percentage:3.0f}%|{bar}| {n:.1f}/{total:.1f} s audio "
                              "[{elapsed}<{remaining}]")

    def progress(done_s: float, total_s: float) -> None:
        if bar is not None:
            bar.total = round(total_s, 1)
            bar.update(round(done_s, 1) - bar.n)

    try:
        return model.transcribe(name, timestamps=args.timestamps, window_s=window.window_s,
                                vad=not args.no_vad, progress=progress, task=args.task,
                                speakers=args.speakers, language=args.language,
                                prompt=args.prompt, **settings)
    finally:
        if bar is not None:
            bar.close()
