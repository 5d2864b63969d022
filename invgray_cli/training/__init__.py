"""Training, table fitting, validation and export: the commands that make the bundled
models (``python -m invgray_cli.training.<command>``). Nothing in the package imports
this layer. It needs torch, the ``torch`` extra: run as a command without it, it says
so in one line and exits with status 2."""

from __future__ import annotations

import sys

from invgray_cli.model.availability import TorchMissingError, require_torch


def _command() -> str | None:
    """``python -m invgray_cli.training.X``: the command being started, else None."""
    argv = getattr(sys, "orig_argv", [])
    if "-m" in argv[:-1] and argv[argv.index("-m") + 1].startswith(__name__):
        return argv[argv.index("-m") + 1]
    return None


try:
    require_torch(f"python -m {_command() or __name__}")
except TorchMissingError as missing:
    if _command() is None:
        raise
    print(missing, file=sys.stderr)
    raise SystemExit(2) from None
