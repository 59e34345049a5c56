"""`edge-moss ask AUDIO QUESTION`: answer a question about a recording, streaming the answer."""

from __future__ import annotations

import json
import sys

from ._common import add_decode_args, add_model_args, decode_settings, load_model


def add_parser(sub) -> None:
    p = sub.add_parser("ask", help="ask a question about an audio file",
                       description="Answer a question about an audio file, streaming the answer.")
    p.add_argument("audio", help="audio file (wav, flac, ogg, mp3)")
    p.add_argument("question", help="what to ask, e.g. 'Who sounds upset, and when?'")
    p.add_argument("--system", default=None, help="system prompt (default: the model's own)")
    p.add_argument("--ignore-eos", action="store_true", help="keep decoding past the stop token")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    add_model_args(p)
    add_decode_args(p, max_new_tokens=512)
    p.set_defaults(func=run)


def run(args) -> int:
    settings = decode_settings(args)
    model = load_model(args)
    if args.json:
        result = model.ask(args.audio, args.question, system=args.system,
                           ignore_eos=args.ignore_eos, **settings)
        print(json.dumps(result.to_dict(), ensure_ascii=False))
        return 0
    stream = model.ask(args.audio, args.question, system=args.system, stream=True,
                       ignore_eos=args.ignore_eos, **settings)
    for piece in stream:
        sys.stdout.write(piece)
        sys.stdout.flush()
    sys.stdout.write("\n")
    t = stream.result.timings
    print(f"[{len(stream.result.token_ids)} tokens, encode {t['encode_s']:.2f} s, prefill "
          f"{t['prefill_s']:.2f} s, decode {t['decode_tokens_per_s']:.1f} tok/s]", file=sys.stderr)
    return 0
