"""Machine-readable reports (``--json``): one JSON object per file, JSON Lines.

Every object of a command has exactly that command's keys (README, "Reports for
scripts"), in this order; a value that does not apply or is not known is ``null``.
A failed file gives an object too, with ``"status": "error"`` and the message under
``"error"``; exit statuses are the same as without ``--json``.
"""

from __future__ import annotations

import json
import math
from typing import Any

COMMON_KEYS = ("command", "status", "input", "error", "seconds")
KEYS: dict[str, tuple[str, ...]] = {
    "encode": COMMON_KEYS + (
        "gray", "residual", "embedded", "width", "height", "gray_path", "gray_note", "gray_bytes", "residual_bytes", "gray_bpp",
        "residual_bpp", "level", "step", "psnr", "target_psnr", "max_bytes", "target_met", "warnings", "model",
        "engine", "effort", "max_error"),
    "decode": COMMON_KEYS + (
        "residual", "output", "format", "width", "height", "output_bytes", "level", "step", "psnr", "warnings",
        "model", "engine"),
    "info": COMMON_KEYS + (
        "format_version", "model", "model_bundled", "width", "height", "symbols", "cell", "level", "step",
        "monochrome", "alpha", "icc_profile_bytes", "gray_fingerprint", "payload_bytes", "raw_bytes",
        "residual_bytes", "residual_bpp", "embedded", "gray_made_by", "refinement", "refinement_step",
        "refinement_bytes"),
}


def record(command: str, **values: Any) -> dict[str, Any]:  # noqa: ANN401 - JSON values
    """An object with every key of ``command`` (missing ones null); unknown keys are a bug."""
    unknown = set(values) - set(KEYS[command])
    if unknown:
        raise KeyError(f"not a documented {command} key: {', '.join(sorted(unknown))}")
    return {key: (command if key == "command" else values.get(key)) for key in KEYS[command]}


def dumps(obj: dict[str, Any]) -> str:
    """One line of JSON; an infinite PSNR (identical pixels) is written as null,
    since JSON has no infinity."""
    return json.dumps({k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in obj.items()})
