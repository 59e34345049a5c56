"""`edge-moss devices`: list the audio input devices a live session can use."""

from __future__ import annotations

import argparse

from ..errors import DeviceError


def add_parser(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "devices",
        help="list audio input devices (microphones)",
        description="List the audio input devices PortAudio sees; pass an index or name to "
        "`edge-moss listen --mic --mic-device NAME|INDEX` (--device is the compute device).",
    )
    parser.set_defaults(func=run)
    return parser


def format_devices(devices: list[dict]) -> str:
    """A table of input devices; `*` marks the default one."""
    rows = [("", "index", "name", "channels", "rate", "host API")]
    for info in devices:
        rows.append((
            "*" if info["default"] else "",
            str(info["index"]),
            info["name"],
            str(info["channels"]),
            f"{info['samplerate']:g} Hz",
            info["hostapi"],
        ))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip() for row in rows]
    lines.append("* = default input device; choose one with `edge-moss listen --mic --mic-device INDEX`")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    # imported here so that `edge-moss --help` never touches PortAudio
    from ..capture import NO_DEVICE_MESSAGE, list_input_devices

    devices = list_input_devices()
    if not devices:
        raise DeviceError(NO_DEVICE_MESSAGE)
    print(format_devices(devices))
    return 0
