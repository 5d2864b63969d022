"""Regenerate the golden fixtures: ``python tests/golden/make_golden.py``, and
``python tests/golden/make_golden.py format3`` for the refinement layer's (format 3).

``python tests/golden/make_golden.py format4-coder`` pins format 4's range coding
under an integer prior (``tests/golden/format4-coder``; no v2 model ships yet).

Run once when a model or a format version is added. Fixtures are never regenerated for an existing
model: they pin what its residual files decode to, so a change that breaks old
files fails test_golden.py instead of landing silently.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
from PIL import Image, ImageCms

HERE = Path(__file__).resolve().parent

from invgray_cli.codec import decode_photo, encode
from invgray_cli.engines.registry import default_model_id
from invgray_cli.imaging.images import Photo


def cases() -> dict[str, tuple[Photo, dict]]:
    rgb = np.asarray(Image.open(HERE.parent.parent / "samples" / "kodim23.png").convert("RGB"))
    crop = np.ascontiguousarray(rgb[180:277, 250:381])  # 131 x 97: not a multiple of the cell size
    alpha = np.tile(np.linspace(0, 255, crop.shape[1]).astype(np.uint8), (crop.shape[0], 1))
    icc = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    gray = np.asarray(Image.fromarray(crop).convert("L"))
    return {
        "rgb-q90": (Photo(crop), {"quality": 90}),
        "rgb-q75-low": (Photo(crop), {"quality": 75, "level": "low"}),
        "rgba-icc-png": (Photo(crop, alpha, icc_profile=icc), {"gray_format": "png", "level": "high"}),
        "monochrome": (Photo(np.repeat(gray[:, :, None], 3, axis=2)), {"gray_format": "png"}),
    }


def format3_cases() -> dict[str, tuple[Photo, dict]]:
    """The refinement layer (format 3): exact, bounded and chroma layers, with alpha and ICC."""
    photo, _ = cases()["rgb-q90"]
    with_extras, _ = cases()["rgba-icc-png"]
    return {
        "lossless-png": (photo, {"gray_format": "png", "max_error": 0}),
        "max-error-2-rgba-icc-png": (with_extras, {"gray_format": "png", "max_error": 2}),
        "max-error-4-q90": (photo, {"quality": 90, "max_error": 4}),
        "chroma-step-4-max-q90": (photo, {"quality": 90, "level": "max", "refine": 4}),
    }


def format4_coder() -> None:
    """Format 4's range coding under an integer prior, pinned without a shipped v2 model: a
    random prior of the sizes training gives (groups of 4 planes), a gray, symbols with
    escapes, and the payload the coder wrote for them."""
    import sys

    sys.path.insert(0, str(HERE.parent.parent))
    from invgray_cli.model.prior_coding import encode_symbols
    from tests.test_integer_prior import random_inputs, random_prior

    folder = HERE / "format4-coder"
    if folder.exists():
        raise SystemExit(f"{folder} exists: golden files are never regenerated")
    folder.mkdir()
    prior = random_prior(11, plane_group=4)
    gray, symbols = random_inputs(12, n=1, rows=3, cols=5)
    symbols[0, 7, 2, 4], symbols[0, 30, 0, 0] = -300, 17  # escapes in two groups and both phases
    prior.save(folder / "prior.npz")
    Image.fromarray(gray[0]).save(folder / "gray.png")
    np.save(folder / "symbols.npy", symbols[0].astype(np.int32))
    (folder / "payload.bin").write_bytes(encode_symbols(prior, gray[0], symbols[0], 2.787))
    print(f"wrote {folder}")


def main(which: str = "model") -> None:
    if which == "format4-coder":
        format4_coder()
        return
    model_id = default_model_id()
    folder = HERE / (model_id if which == "model" else f"{which}-{model_id}")
    if folder.exists():
        raise SystemExit(f"{folder} exists: golden files of a shipped model are never regenerated")
    folder.mkdir()
    manifest = {"model_id": model_id, "cases": {}}
    for name, (photo, options) in (cases() if which == "model" else format3_cases()).items():
        encoded = encode(photo, **options)
        suffix = "png" if options.get("gray_format") == "png" else "jpg"
        (folder / f"{name}.gray.{suffix}").write_bytes(encoded.gray)
        (folder / f"{name}.residual.bin").write_bytes(encoded.residual)
        restored = decode_photo(encoded.gray, encoded.residual)
        pixels = np.dstack([restored.rgb, restored.alpha]) if restored.alpha is not None else restored.rgb
        Image.fromarray(pixels).save(folder / f"{name}.expected.png")
        manifest["cases"][name] = {
            "gray": f"{name}.gray.{suffix}", "residual": f"{name}.residual.bin",
            "expected": f"{name}.expected.png", "sha256": hashlib.sha256(pixels.tobytes()).hexdigest(),
            "options": options,
        }
    if which == "model":
        embedded = encode(cases()["rgb-q90"][0]).embedded()
        (folder / "embedded.gray.jpg").write_bytes(embedded)
        manifest["cases"]["embedded"] = {**manifest["cases"]["rgb-q90"], "gray": "embedded.gray.jpg",
                                         "residual": None}
    (folder / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    print(f"wrote {len(manifest['cases'])} golden cases to {folder}")


if __name__ == "__main__":
    import sys

    main(*sys.argv[1:])
