"""``invgray info``: what residual files and gray images hold.

The container, embedding and image modules bring numpy and Pillow: they are imported
when a file is read, not when the CLI starts."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from invgray_cli.app.cli.options import JSON, err
from invgray_cli.app.filework import level_of, read_input
from invgray_cli.app.jobs import STDIO, JobError
from invgray_cli.app.reports import dumps, record
from invgray_cli.engines.registry import known_model_ids
from invgray_cli.format.signatures import is_gray_image, is_png, is_residual

if TYPE_CHECKING:
    from invgray_cli.format.container import Residual

Rows = list[tuple[str, str]]


@dataclass
class Contents:
    """What one file holds: a residual (on its own, or embedded in a gray image) and
    what a gray image says about itself."""

    data: bytes | None  # the residual file's bytes
    header: Residual | None
    gray: Rows | None  # rows about the gray image, when the file is one
    embedded: bool  # a gray image (possibly with a residual inside)


def info_command(
    files: Annotated[list[Path], typer.Argument(
        metavar="FILE...", help="Residual files, or gray images (how the gray was made, and its embedded residual; "
        "'-' reads stdin).")],
    json_lines: Annotated[bool, JSON] = False,
) -> None:
    """Print what residual files and gray images hold."""
    failures = 0
    for file in files:
        label = "<stdin>" if str(file) == STDIO else str(file)
        try:
            contents = inspect(file)
        except JobError as exc:
            failures += 1
            err(f"{label}: {exc}")
            if json_lines:
                typer.echo(dumps(record("info", status="error", input=label, error=str(exc))))
            continue
        if json_lines:
            typer.echo(dumps(_record(label, contents)))
        else:
            _print_rows(_rows(label, contents, several=len(files) > 1))
    if failures:
        raise typer.Exit(1)


def inspect(file: Path) -> Contents:
    """Read a residual file or a gray image; JobError says why it is neither."""
    from invgray_cli.format.container import InvalidResidualError, read_residual
    from invgray_cli.format.embedding import EmbeddingError
    try:
        data = read_input(str(file))
        embedded = not is_residual(data) and is_gray_image(data)
        gray = None
        if embedded:
            gray, data = _embedded_parts(data)
        return Contents(data, read_residual(data) if data is not None else None, gray, embedded)
    except (InvalidResidualError, EmbeddingError) as exc:
        raise JobError(str(exc)) from None


def _embedded_parts(image: bytes) -> tuple[Rows | None, bytes | None]:
    """A gray image's rows and the residual embedded in it (None: there is none)."""
    from invgray_cli.format.embedding import EmbeddingError, extract

    gray = _gray_rows(image)
    try:
        residual = extract(image)
    except EmbeddingError as exc:
        if gray is None:
            raise
        return gray + [("embedded residual", str(exc))], None
    if residual is None:
        if gray is None:
            raise JobError("no residual embedded in this image (a tool may have stripped it)")
        gray.append(("embedded residual", "none"))
    return gray, residual


def _gray_rows(data: bytes) -> Rows | None:
    """What a gray image file says about itself; None when the bytes are not one."""
    from invgray_cli.imaging.gray import decode_gray
    from invgray_cli.imaging.jpeg_transcode import gray_provenance

    try:
        pixels = decode_gray(data)
    except ValueError:
        return None
    if is_png(data):
        return [("gray image", f"PNG {pixels.shape[1]} x {pixels.shape[0]}"), ("gray made by", "PNG (lossless)")]
    made = gray_provenance(data) or "not recorded (a JPEG with non-standard quantisation tables)"
    return [("gray image", f"JPEG {pixels.shape[1]} x {pixels.shape[0]}"), ("gray made by", made)]


def _record(label: str, contents: Contents) -> dict[str, Any]:
    """The --json object of one file."""
    header, data = contents.header, contents.data
    made_by = dict(contents.gray or []).get("gray made by")
    if header is None or data is None:  # a gray image without a residual inside
        return record("info", status="ok", input=label, gray_made_by=made_by, embedded=False)
    return record(
        "info", status="ok", input=label, format_version=header.version, model=header.model_id,
        model_bundled=header.model_id in known_model_ids(), width=header.width, height=header.height,
        symbols=list(header.symbol_shape), cell=header.cell, level=level_of(header.model_id, header.step),
        step=header.step, monochrome=header.monochrome, alpha=bool(header.alpha),
        icc_profile_bytes=len(header.icc_profile), gray_fingerprint=header.gray_fingerprint.hex(),
        payload_bytes=len(header.payload), raw_bytes=header.raw_size, residual_bytes=len(data),
        residual_bpp=round(len(data) * 8 / (header.width * header.height), 5), embedded=contents.embedded,
        gray_made_by=made_by, refinement=_refinement_name(header), refinement_step=header.refinement_step or None,
        refinement_bytes=len(header.refinement) if header.refinement_space else None)


def _rows(label: str, contents: Contents, several: bool) -> Rows:
    """The plain report of one file, a row per fact."""
    header, data, gray = contents.header, contents.data, contents.gray or []
    if header is None or data is None:  # a gray image without a residual inside
        return ([("file", label)] if several else []) + gray
    pixels = header.width * header.height
    bundled = header.model_id in known_model_ids()
    level = level_of(header.model_id, header.step)
    embedded = contents.embedded
    rows = [("file", label + (" (embedded residual)" if embedded else ""))] if several or embedded else []
    return rows + gray + [
        ("format version", str(header.version)),
        ("model", f"{header.model_id} ({'bundled' if bundled else 'NOT bundled with this invgray'})"),
        ("image", f"{header.width} x {header.height}"),
        ("symbols", " x ".join(map(str, header.symbol_shape)) + f" ({header.cell} px cells)"),
        ("quantisation step", f"{header.step:g}" + (f" (level {level})" if level else "")),
        ("gray fingerprint", header.gray_fingerprint.hex()),
        ("payload", _payload_description(header)),
        *([("refinement", f"{_refinement_name(header)}, step {header.refinement_step} "
                          f"({_refinement_bound(header)}), {len(header.refinement)} bytes")]
          if header.refinement_space else []),
        ("file size", f"{len(data)} bytes, {len(data) * 8 / pixels:.4f} bpp"),
    ]


def _print_rows(rows: Rows) -> None:
    width = max(len(k) for k, _ in rows)
    for key, value in rows:
        typer.echo(f"{key:<{width}}  {value}")


def _refinement_name(header: Residual) -> str | None:
    from invgray_cli.format.refinement import SPACE_RGB

    if not header.refinement_space:
        return None
    return "rgb" if header.refinement_space == SPACE_RGB else "chroma"


def _refinement_bound(header: Residual) -> str:
    from invgray_cli.format.refinement import SPACE_RGB

    if header.refinement_space != SPACE_RGB:
        return "Cb and Cr in half levels on the network's colour"
    bound = (header.refinement_step - 1) // 2
    if header.refinement_step % 2 == 0:
        return f"every channel within {header.refinement_step // 2}"
    return "lossless" if bound == 0 else f"every channel within {bound}"


def _payload_description(header: Residual) -> str:
    from invgray_cli.format.container import CONDITIONAL

    if header.version == CONDITIONAL:
        return f"{len(header.payload)} bytes range-coded (integer prior given the gray)"
    if header.version >= 2:
        return f"{len(header.payload)} bytes range-coded (frozen context tables)"
    return f"{len(header.payload)} bytes zstd, {header.raw_size} bytes raw"
