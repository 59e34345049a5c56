"""`edge-moss` command line: a thin layer over the Python API and the build tools."""

from __future__ import annotations

import argparse
import importlib
import sys

from . import __version__
from .commands import COMMAND_MODULES
from .errors import EdgeMossError
from .model_config import ConfigError


class CommandLineParser(argparse.ArgumentParser):
    """Bad usage is one line on stderr, exit 2: the command, what is wrong, where help is.

    argparse's default prints the whole usage block first; subparsers inherit this class (they
    are made with the parent's type), so every command gets the same line. --help is unchanged.
    """

    _commands: argparse._SubParsersAction | None = None

    def add_subparsers(self, **kwargs):
        self._commands = super().add_subparsers(**kwargs)
        return self._commands

    def parse_args(self, args=None, namespace=None):
        # The top parser collects a command's unknown options; report them as that command's.
        namespace, extras = self.parse_known_args(args, namespace)
        if extras:
            owner = self
            if self._commands is not None:
                owner = self._commands.choices.get(getattr(namespace, self._commands.dest, None),
                                                   self)
            owner.error(f"unrecognized arguments: {' '.join(extras)}")
        return namespace

    def error(self, message: str):
        command = self.prog.partition(" ")[2]
        where = f"{command}: " if command else ""
        text = " ".join(message.split())
        self.exit(2, f"edge-moss: error: {where}{text} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = CommandLineParser(
        prog="edge-moss",
        description="Offline MOSS-Audio: transcribe and question audio on this device.",
    )
    parser.add_argument("--version", action="version", version=f"edge-moss {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(f"{__package__}.commands.{name}")
        except ModuleNotFoundError as exc:
            if exc.name == f"{__package__}.commands.{name}":
                continue
            raise
        module.add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        result = args.func(args)
    except (EdgeMossError, ConfigError) as exc:
        print(f"edge-moss: error: {exc}", file=sys.stderr)
        return getattr(exc, "exit_code", 2)
    except KeyboardInterrupt:
        print("edge-moss: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0
    return int(result or 0)


if __name__ == "__main__":
    sys.exit(main())
