"""``invgray embed``: the one-file form, a gray image with its residual inside.

The container, embedding and image modules bring numpy and Pillow: they are imported
when the command runs, not when the CLI starts."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from invgray_cli.app.cli.options import err, usage
from invgray_cli.app.filework import check_writable, labelled_read, write_all
from invgray_cli.app.jobs import STDIO, JobError, stem_of
from invgray_cli.format.signatures import is_png


def embed_command(
    gray: Annotated[Path, typer.Argument(help="A gray image made by invgray encode.")],
    residual: Annotated[Path, typer.Argument(help="Its residual file.")],
    output: Annotated[Optional[Path], typer.Option(
        "-o", "--output", help="Output path (default <stem>.embedded.gray.jpg/.png beside the gray).")] = None,
    force: Annotated[bool, typer.Option("--force", "-f", help="Overwrite an existing output.")] = False,
) -> None:
    """Write the one-file form: the gray image with its residual inside (no re-encoding)."""
    if STDIO in (str(gray), str(residual)):
        raise usage("embed reads files, not stdin")
    try:
        gray_bytes = labelled_read(gray)
        target = output or gray.with_name(f"{stem_of(gray)}.embedded.gray{'.png' if is_png(gray_bytes) else '.jpg'}")
        check_writable([target], [str(gray), str(residual)], force)
        write_all([(target, _embedded(gray, gray_bytes, residual))], force)
    except (JobError, FileExistsError) as exc:
        err(str(exc))
        raise typer.Exit(1) from None
    typer.echo(f"{gray} + {residual}: {target}")


def _embedded(gray: Path, gray_bytes: bytes, residual: Path) -> bytes:
    """The gray image's bytes with the residual inside; JobError when the residual is
    damaged or belongs to another gray image."""
    from invgray_cli.format.container import (
        InvalidResidualError,
        gray_fingerprint,
        read_residual,
    )
    from invgray_cli.format.embedding import EmbeddingError, embed
    from invgray_cli.imaging.gray import decode_gray

    residual_bytes = labelled_read(residual)
    try:
        header = read_residual(residual_bytes)
    except InvalidResidualError as exc:
        raise JobError(f"{residual}: {exc}") from None
    try:
        if header.gray_fingerprint != gray_fingerprint(decode_gray(gray_bytes)):
            raise ValueError(f"residual {residual} does not belong to this gray image")
        return embed(gray_bytes, residual_bytes)
    except (EmbeddingError, ValueError, OSError) as exc:
        raise JobError(f"{gray}: {exc}") from None
