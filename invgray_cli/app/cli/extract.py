"""``invgray extract``: the sidecar form, the embedded residual as its own file.

The embedding module brings numpy: it is imported when the command runs, not when the
CLI starts."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from invgray_cli.app.cli.options import err, usage
from invgray_cli.app.filework import check_writable, labelled_read, write_all
from invgray_cli.app.jobs import RESIDUAL_SUFFIX, STDIO, JobError, stem_of


def extract_command(
    gray: Annotated[Path, typer.Argument(help="A gray image with an embedded residual.")],
    output: Annotated[Optional[Path], typer.Option(
        "-o", "--output", help="Residual path (default <stem>.residual.bin beside the gray).")] = None,
    gray_out: Annotated[Optional[Path], typer.Option(
        "--gray-out", help="Also write the gray image without the embedded residual here.")] = None,
    force: Annotated[bool, typer.Option("--force", "-f", help="Overwrite existing outputs.")] = False,
) -> None:
    """Write the sidecar form: the embedded residual as its own file (no re-encoding)."""
    from invgray_cli.format.embedding import EmbeddingError, extract, strip

    if str(gray) == STDIO:
        raise usage("extract reads files, not stdin")
    target = output or gray.with_name(stem_of(gray) + RESIDUAL_SUFFIX)
    outputs = [target] + ([gray_out] if gray_out else [])
    if gray_out is not None and gray_out.resolve() == target.resolve():
        raise usage("--gray-out and the residual output are the same file")
    try:
        check_writable(outputs, [str(gray)], force)
        gray_bytes = labelled_read(gray)
        try:
            residual_bytes = extract(gray_bytes)
            if residual_bytes is None:
                raise JobError("no residual embedded (a tool may have stripped it)")
            files = [(target, residual_bytes)] + ([(gray_out, strip(gray_bytes))] if gray_out else [])
        except (EmbeddingError, JobError) as exc:
            raise JobError(f"{gray}: {exc}") from None
        write_all(files, force)
    except (JobError, FileExistsError) as exc:
        err(str(exc))
        raise typer.Exit(1) from None
    typer.echo(f"{gray}: {', '.join(str(p) for p, _ in files)}")
