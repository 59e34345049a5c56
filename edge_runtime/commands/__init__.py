"""One module per CLI subcommand; each exposes add_parser(subparsers) and sets `func`.

Build-side commands load torch lazily inside their handler, so the runtime install
(no torch) can still list and run every runtime command.
"""

# Modules listed here are registered in this order; a missing module is skipped so that the
# CLI keeps working while a command is being written.
COMMAND_MODULES = (
    "demo",
    "transcribe",
    "ask",
    "batch",
    "listen",
    "serve",
    "devices",
    "export",
    "eval_quant",
    "fixture",
    "pull",
    "doctor",
)
