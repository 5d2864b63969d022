"""The ``invgray`` command line: one module per command, each parsing its arguments and
naming its files, with what they share in :mod:`invgray_cli.app.cli.options`.

What one file's encode or decode does is in :mod:`invgray_cli.app.filework`, the codec
in :mod:`invgray_cli.codec`; on the CPU the network runs in onnxruntime
(:mod:`invgray_cli.engines.engine`), so torch loads only for CUDA. Object storage
(:mod:`invgray_cli.app.storage`) and the Ray engine (:mod:`invgray_cli.app.cluster`) load
only when a URL or ``--engine ray`` asks for them.
"""

from __future__ import annotations

import os
import sys
import warnings
from typing import Annotated

import typer

import invgray_cli
from invgray_cli.app.cli import decode, embed, encode, extract, info
from invgray_cli.app.cli.options import err
from invgray_cli.engines.registry import model_spec

# Plain (not rich) help: flags read as flags there, without a <bool> placeholder.
app = typer.Typer(no_args_is_help=True, pretty_exceptions_enable=False, rich_markup_mode=None,
                  context_settings={"help_option_names": ["-h", "--help"]},
                  help="Grayscale images that restore to colour from a tiny residual file.")


def _version(value: bool) -> None:
    if value:
        spec = model_spec()
        typer.echo(f"invgray {invgray_cli.__version__} (model {spec.name} {spec.model_id})")
        raise typer.Exit()


@app.callback()
def main_options(
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True,
                                          help="Print the version and exit.")] = False,
) -> None:
    """invgray: encode colour photos as a grayscale image plus a tiny residual, and back."""
    # Pillow's warnings about damaged files would print multi-line noise; damaged files
    # are reported in one line, or read as far as they can be.
    warnings.filterwarnings("ignore", category=UserWarning, module=r"PIL(\..*)?")


app.command("encode")(encode.encode_command)
app.command("decode")(decode.decode_command)
app.command("embed")(embed.embed_command)
app.command("extract")(extract.extract_command)
app.command("info")(info.info_command)


def main() -> None:
    """Console entry point: no traceback reaches the user unless INVGRAY_DEBUG is set."""
    try:
        app(prog_name="invgray")
    except Exception as exc:  # noqa: BLE001 - last line of defence, reported in one line
        if os.environ.get("INVGRAY_DEBUG"):
            raise
        err(f"internal error: {type(exc).__name__}: {exc} (set INVGRAY_DEBUG=1 for details)")
        sys.exit(1)


__all__ = ["app", "main"]
