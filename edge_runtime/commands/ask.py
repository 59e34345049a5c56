"""`edge-moss ask AUDIO... QUESTION`: answer a question about recordings, streaming the answer.

AUDIO takes what `transcribe` takes (files, folders, globs, @LIST, `-`); several answers are headed
by their file's name (with --json: one object per line, naming its "audio"). A file that fails is
one line on stderr; the others are still asked, and the exit code says that some failed.
"""

from __future__ import annotations

import json
import sys

from ..errors import EdgeMossError
from ..inputs import display_name, expand_inputs
from ._common import HelpFormatter, add_decode_args, add_model_args, decode_settings, load_model, \
    model_options


def add_parser(sub) -> None:
    p = sub.add_parser("ask", help="ask a question about an audio file",
                       formatter_class=HelpFormatter,
                       description="Answer a question about audio files, streaming the answer.")
    p.add_argument("audio", nargs="+", metavar="AUDIO",
                   help="audio file (wav, flac, ogg, mp3, ...), folder, glob pattern, @LIST or - "
                        "for standard input")
    p.add_argument("question", help="what to ask, e.g. 'Who sounds upset, and when?'")
    p.add_argument("--system", default=None, help="system prompt (default: the model's own)")
    p.add_argument("--ignore-eos", action="store_true", help="keep decoding past the stop token")
    p.add_argument("--json", action="store_true", help="print one JSON object (per file) instead of text")
    add_model_args(p)
    add_decode_args(p, max_new_tokens=512)
    p.set_defaults(func=run)


def run(args) -> int:
    settings = decode_settings(args)
    model_options(args)
    inputs = expand_inputs(args.audio)
    model = load_model(args)
    failures = 0
    for index, name in enumerate(inputs):
        label = display_name(name)
        if len(inputs) > 1 and not args.json:
            sys.stdout.write(("\n" if index else "") + f"==> {label} <==\n")
        try:
            _ask_one(model, name, label, args, settings)
        except EdgeMossError as exc:
            sys.stdout.flush()
            print(f"edge-moss: error: {exc}", file=sys.stderr)
            failures += 1
    if failures and len(inputs) > 1:
        print(f"edge-moss: {failures} of {len(inputs)} files failed (see the errors)", file=sys.stderr)
    return 2 if failures else 0


def _ask_one(model, name: str, label: str, args, settings: dict) -> None:
    if args.json:
        result = model.ask(name, args.question, system=args.system, ignore_eos=args.ignore_eos,
                           **settings)
        print(json.dumps({"audio": label, **result.to_dict()}, ensure_ascii=False), flush=True)
        return
    stream = model.ask(name, args.question, system=args.system, stream=True,
                       ignore_eos=args.ignore_eos, **settings)
    for piece in stream:
        sys.stdout.write(piece)
        sys.stdout.flush()
    sys.stdout.write("\n")
    sys.stdout.flush()
    t = stream.result.timings
    print(f"[{len(stream.result.token_ids)} tokens, encode {t['encode_s']:.2f} s, prefill "
          f"{t['prefill_s']:.2f} s, decode {t['decode_tokens_per_s']:.1f} tok/s]", file=sys.stderr)
