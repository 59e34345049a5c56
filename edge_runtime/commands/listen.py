"""`edge-moss listen --mic`: live transcription; nothing leaves the device."""

from __future__ import annotations

import json
import signal
import sys

from ..options import LiveOptions
from ..output_files import check_outputs
from ._common import HelpFormatter, add_model_args, load_model, model_options


def add_parser(sub) -> None:
    p = sub.add_parser("listen", help="live transcription from the microphone (or a file)",
                       formatter_class=HelpFormatter,
                       description="Transcribe speech as it is spoken. Complete 4 s chunks are "
                                   "encoded and prefilled while you speak; the final text comes "
                                   "when you pause.")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--mic", action="store_true", help="capture from a microphone")
    src.add_argument("--input", metavar="FILE", help="push an audio file (or - for standard "
                                                     "input) through the same path")
    p.add_argument("--mic-device", "--input-device", dest="mic_device", default=None,
                   metavar="NAME|INDEX",
                   help="microphone: an input device index or name from `edge-moss devices` "
                        "(default: the system's default input)")
    p.add_argument("--realtime", action="store_true", help="with --input: pace the file in real time")
    p.add_argument("--partials", action="store_true", help="show provisional text while speaking")
    p.add_argument("--partial-every", type=float, default=2.0,
                   help="seconds between partials, 0.1-60")
    p.add_argument("--transcript", default=None, metavar="FILE",
                   help="append final segments to FILE (.txt, .srt or .jsonl), fsync'd after each "
                        "(default: none)")
    p.add_argument("--save-audio", default=None, metavar="FILE.wav",
                   help="also save the captured audio to a new WAV file (default: off; an "
                        "existing file is never overwritten)")
    p.add_argument("--json", action="store_true", help="JSONL events on stdout")
    p.add_argument("--no-timestamps", action="store_true", help="one segment per utterance")
    p.add_argument("--max-new-tokens", type=int, default=448,
                   help="most tokens generated per utterance, 1-32768")
    ep = p.add_argument_group("endpointing")
    ep.add_argument("--min-silence", type=float, default=0.7,
                    help="silence that ends an utterance, 0.05-10 s")
    ep.add_argument("--max-utterance", type=float, default=30.0, help="longest utterance, 1-120 s")
    ep.add_argument("--min-speech", type=float, default=0.25,
                    help="shorter speech is ignored, 0-10 s")
    ep.add_argument("--vad-threshold", type=float, default=0.5,
                    help="speech probability that starts speech, (0, 0.99]")
    add_model_args(p, backend_flag=False)
    p.set_defaults(func=run)


def _options(args) -> LiveOptions:
    return LiveOptions(min_silence_s=args.min_silence, max_utterance_s=args.max_utterance,
                       min_speech_s=args.min_speech, vad_threshold=args.vad_threshold,
                       partial_every_s=args.partial_every, max_new_tokens=args.max_new_tokens)


def _check_files(args) -> None:
    """Before anything opens: no output is the input or the other output, formats are known."""
    from ..live_output import check_audio_path, check_transcript_path

    outputs = [(flag, path) for flag, path in (("--transcript", args.transcript),
                                               ("--save-audio", args.save_audio)) if path]
    check_outputs([args.input] if args.input else [], outputs)
    if args.transcript:
        check_transcript_path(args.transcript)
    if args.save_audio:
        check_audio_path(args.save_audio)


class _View:
    """The terminal view: the partial line is rewritten in place, finals are printed with times."""

    def __init__(self, as_json: bool):
        self.as_json = as_json
        self.tty = sys.stdout.isatty()
        self._partial = False

    def show(self, event) -> None:
        from ..live_output import clock

        if self.as_json:
            print(json.dumps(event.to_dict(), ensure_ascii=False), flush=True)
            return
        if event.type == "partial":
            if self.tty:
                sys.stdout.write(f"\r\033[K… {event.text}")
                sys.stdout.flush()
                self._partial = True
            return
        if self._partial:
            sys.stdout.write("\r\033[K")
            self._partial = False
        print(f"[{clock(event.start)} -> {clock(event.end)}] {event.text}", flush=True)


class _StopFlag:
    """Ctrl-C / SIGTERM set a flag that the capture loop checks between blocks: the utterance in
    progress is then finished from what was captured, never cut in the middle of a decode."""

    def __init__(self):
        self.raised = False
        self._old = {sig: signal.signal(sig, self._set) for sig in (signal.SIGINT, signal.SIGTERM)}

    def _set(self, signum, frame) -> None:
        self.raised = True

    def restore(self) -> None:
        for sig, handler in self._old.items():
            signal.signal(sig, handler)


def _say_audio_lost(total_seconds: float) -> None:
    """Called by the capture's watcher thread the moment audio is lost."""
    print(f"edge-moss: {total_seconds:.2f} s of audio LOST so far: the model fell behind by more "
          "than the memory queue and spill file hold", file=sys.stderr, flush=True)


def run(args) -> int:
    from ..capture import DeviceLostError, FileStream, MicrophoneStream
    from ..live import LiveTranscriber
    from ..live_output import AudioFile, TranscriptFile

    options = _options(args)
    model_options(args)
    _check_files(args)
    endpoint = options.endpoint_config()
    # Open the source first: a missing microphone should be reported before a model loads.
    source = (MicrophoneStream(device=args.mic_device, on_loss=_say_audio_lost) if args.mic
              else FileStream(args.input, realtime=args.realtime))
    lost_reported = 0.0
    transcript = audio_out = None
    try:
        model = load_model(args)
        transcript = TranscriptFile(args.transcript) if args.transcript else None
        audio_out = AudioFile(args.save_audio) if args.save_audio else None
        view = _View(args.json)

        def on_event(event) -> None:
            view.show(event)
            if event.type == "final":
                if transcript is not None:
                    transcript.write(event.start, event.end, event.text)
                if audio_out is not None:
                    audio_out.sync()

        live = LiveTranscriber(model, on_event, endpoint=endpoint,
                               timestamps=not args.no_timestamps,
                               partial_every_s=args.partial_every if args.partials else None,
                               max_new_tokens=options.max_new_tokens)
        live.warm_up()
        if args.mic and not args.json:
            print("listening (Ctrl-C to stop)…", file=sys.stderr)
        status, message, warned = 0, None, False
        stop = _StopFlag()
        try:
            while not stop.raised:
                block = source.read(timeout=0.5)
                if block is None:
                    break
                if audio_out is not None:
                    audio_out.write(block)
                live.process(block)
                lost = getattr(source, "lost_seconds", 0.0)
                if lost > lost_reported and args.json:
                    print(json.dumps({"type": "audio_lost", "seconds": round(lost - lost_reported, 3),
                                      "total_seconds": round(lost, 3)}), flush=True)
                lost_reported = max(lost_reported, lost)
                if (args.mic or args.realtime) and not warned and live.stats.audio_s > 10 \
                        and live.stats.real_time_factor > 1.0:
                    warned = True
                    print(f"edge-moss: slower than real time (RTF {live.stats.real_time_factor:.2f});"
                          " audio is queued (in memory, then on disk), not dropped", file=sys.stderr)
        except DeviceLostError as exc:
            if audio_out is not None:
                audio_out.write(exc.samples)
            live.process(exc.samples)
            status, message = 1, f"input device lost: {exc}; finished the last utterance"
        finally:
            stop.restore()
        if stop.raised:
            status, message = 130, "stopped; finished the last utterance"
            if args.mic:
                # What the microphone captured before the stop is still queued: use all of it.
                source.close()
                while (rest := source.read(timeout=0)) is not None:
                    if audio_out is not None:
                        audio_out.write(rest)
                    live.process(rest)
        live.close()
        overflows = getattr(source, "overflows", 0)
        stats = live.stats
        lat = sorted(stats.latencies)
        summary = (f"{stats.utterances} utterances, {stats.audio_s:.1f} s of audio, real-time factor "
                   f"{stats.real_time_factor:.3f}")
        if lat:
            summary += f", end of speech -> final text {lat[len(lat) // 2]:.3f} s (median)"
        if overflows:
            summary += f", {overflows} input overflows reported by the device"
        if getattr(source, "spilled_seconds", 0.0):
            summary += f", {source.spilled_seconds:.1f} s waited in the spill file"
        if getattr(source, "lost_seconds", 0.0):
            summary += f", {source.lost_seconds:.2f} s of audio LOST (capture buffers full)"
        print(f"edge-moss: {message + '. ' if message else ''}{summary}", file=sys.stderr)
        return status
    finally:
        source.close()
        if transcript is not None:
            transcript.close()
        if audio_out is not None:
            audio_out.close()
