"""Rate-distortion benchmark: invgray's levels against the classical baselines, as a
table and a plot.

    python benchmarks/quality.py [FOLDER] [--grays 50 75 90 png] [--levels low default high max]
                                 [--plot rd.png] [--ablation SEP.pt NOSEP.pt]
                                 [--reference MODEL_ID|none]

FOLDER defaults to ../shared/data/test/kodak24. For each gray setting (JPEG quality
or lossless PNG) it runs the product path (``invgray_cli.encode`` then ``decode``) on
every image at each rate level and prints mean RGB PSNR (8-bit, per image then
averaged), mean SSIM, mean CIEDE2000 colour difference (scikit-image's
``deltaE_ciede2000`` on ``rgb2lab``: mean over pixels, then over images; lower is
better) and mean gray / residual / total bits per pixel (file bytes x 8 / pixels).
Beside them:

* ``colour JPEG @ same total``: a Pillow colour JPEG (4:2:0, optimised Huffman
  tables, the same encoder settings as the gray) interpolated, per image, to the
  pair's total bpp: its PSNR / SSIM / CIEDE2000 there;
* ``saving vs colour JPEG``: 1 - (gray + residual bytes) / (the colour JPEG bytes
  that reach the pair's PSNR, per image, interpolated; summed over the folder), so
  positive means the pair is smaller;
* ``zero residual``: the decoder given an all-zero residual (what the gray alone gives);
* the classical split: the same gray plus Cb and Cr area-downsampled x4 or x8, each
  stored as a grayscale JPEG, bilinearly upsampled and recombined;
* the bound: the decoded gray with the original, exact chroma.

SSIM is scikit-image's ``structural_similarity`` with the standard Gaussian window
(sigma 1.5, population covariance, as in Wang et al. 2004), per RGB channel, averaged.
``--reference`` (a bundled model that still encodes, or a weights file: a retired
model's full weights come back from git, e.g. invgray-v1's with
``git show 487458c:models/invgray-v1.pt > /tmp/invgray-v1.pt``) encodes and decodes the
same images at the same steps (the default model's levels and the curve steps) with
that model and prints, per gray setting, both models' residual sizes step by step and
the Bjontegaard delta rate of the default model's residual against the reference's
(BD-rate, %: negative means fewer residual bytes at equal PSNR) with the BD-PSNR (dB
at equal residual rate); ``--reference none`` skips it.
``--plot`` writes residual bpp vs PSNR per gray setting (the reference dashed) and
total bpp vs PSNR against colour JPEG (needs matplotlib). ``--ablation`` takes two training checkpoints (with
and without the SEP layer) and prints their rate-distortion points at gray q90.
Needs the ``bench`` extra: ``pip install -e '.[bench]'``.
"""

from __future__ import annotations

import argparse
import io
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image

try:
    from skimage.color import deltaE_ciede2000, rgb2lab
    from skimage.metrics import structural_similarity
except ImportError:  # the benchmark extra, not a runtime dependency
    raise SystemExit("benchmarks/quality.py needs scikit-image and matplotlib: pip install -e '.[bench]'") from None


from bjontegaard import (  # a sibling script: benchmarks/ is on sys.path when run
    bd_psnr,
    bd_rate,
)

from invgray_cli.codec import (
    decode_array,
    encode,
    read_symbols,
    resolve_device,
)
from invgray_cli.engines.registry import bundled_spec, load_model, model_id_of
from invgray_cli.engines.registry import levels as model_levels
from invgray_cli.engines.torch_engine import symbol_shape, synthesise_image
from invgray_cli.format.container import read_residual
from invgray_cli.imaging.gray import decode_gray
from invgray_cli.imaging.metrics import psnr
from invgray_cli.model.network import InvGrayNet, network_from_weights
from invgray_cli.training.checkpoints import read_checkpoint

DEFAULT_FOLDER = Path(__file__).resolve().parent.parent.parent / "shared" / "data" / "test" / "kodak24"
SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp"}
COLOUR_JPEG_QUALITIES = sorted(set(range(5, 101, 5)) | set(range(86, 101)))
CLASSICAL_FACTORS = (8, 4)


def load_folder(folder: Path) -> list[tuple[str, np.ndarray]]:
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in SUFFIXES)
    if not files:
        raise SystemExit(f"{folder}: no images")
    return [(p.name, np.asarray(Image.open(p).convert("RGB"))) for p in files]


def ssim(restored: np.ndarray, original: np.ndarray) -> float:
    return float(structural_similarity(restored, original, channel_axis=2, data_range=255,
                                       gaussian_weights=True, sigma=1.5, use_sample_covariance=False))


def ciede2000(restored: np.ndarray, original: np.ndarray, original_lab: np.ndarray | None = None) -> float:
    """Mean CIEDE2000 colour difference over the pixels (8-bit sRGB, D65); lower is better."""
    lab = rgb2lab(original) if original_lab is None else original_lab
    return float(np.mean(deltaE_ciede2000(lab, rgb2lab(restored))))


@dataclass
class Point:
    """One image's result: quality and bytes."""
    psnr: float
    ssim: float
    ciede: float
    gray_bytes: int
    side_bytes: int
    pixels: int

    @property
    def total_bpp(self) -> float:
        return (self.gray_bytes + self.side_bytes) * 8 / self.pixels


@dataclass
class Row:
    points: list[Point] = field(default_factory=list)
    same_pixels: int = 0  # reference rows: images whose restored pixels equal the model's

    def mean(self, attribute: str) -> float:
        return float(np.mean([getattr(p, attribute) for p in self.points]))

    def bpp(self, which: str) -> float:
        return float(np.mean([getattr(p, which) * 8 / p.pixels for p in self.points]))


@dataclass
class ColourJpegCurve:
    """One image's colour JPEG (4:2:0) rate-distortion curve over Pillow qualities."""
    bpp: np.ndarray
    psnr: np.ndarray
    ssim: np.ndarray
    ciede: np.ndarray

    @classmethod
    def measure(cls, rgb: np.ndarray, lab: np.ndarray | None = None) -> ColourJpegCurve:
        pixels = rgb.shape[0] * rgb.shape[1]
        lab = rgb2lab(rgb) if lab is None else lab
        rows = []
        for quality in COLOUR_JPEG_QUALITIES:
            buffer = io.BytesIO()
            Image.fromarray(rgb).save(buffer, "JPEG", quality=quality, subsampling="4:2:0", optimize=True)
            decoded = np.asarray(Image.open(io.BytesIO(buffer.getvalue())).convert("RGB"))
            rows.append((buffer.tell() * 8 / pixels, psnr(decoded, rgb), ssim(decoded, rgb), ciede2000(decoded, rgb, lab)))
        # in quality order; the running maxima (minima for the colour difference) keep
        # the curves monotonic for interpolation
        columns = [np.array(c) for c in zip(*rows)]
        bpp, p, s = (np.maximum.accumulate(c) for c in columns[:3])
        return cls(bpp, p, s, np.minimum.accumulate(columns[3]))

    def at_bpp(self, bpp: float) -> tuple[float, float, float]:
        return (float(np.interp(bpp, self.bpp, self.psnr)), float(np.interp(bpp, self.bpp, self.ssim)),
                float(np.interp(bpp, self.bpp, self.ciede)))

    def bpp_for_psnr(self, target: float) -> tuple[float, bool]:
        """Bits per pixel colour JPEG needs for ``target`` dB; False when even q100 falls
        short (then q100's size is returned: a lower bound)."""
        reachable = target <= self.psnr[-1]
        return float(np.interp(target, self.psnr, self.bpp)), reachable


def classical_split(rgb: np.ndarray, gray_bytes: bytes, factor: int, chroma_quality: int) -> tuple[np.ndarray, int]:
    """Restored RGB and side-file bytes for gray + JPEG'd Cb/Cr downsampled by ``factor``."""
    h, w = rgb.shape[:2]
    _, cb, cr = Image.fromarray(rgb).convert("YCbCr").split()
    small = (max(1, round(w / factor)), max(1, round(h / factor)))
    planes, side_bytes = [], 0
    for plane in (cb, cr):
        buffer = io.BytesIO()
        plane.resize(small, Image.Resampling.BOX).save(buffer, "JPEG", quality=chroma_quality, optimize=True)
        side_bytes += buffer.tell()
        decoded = Image.open(io.BytesIO(buffer.getvalue())).convert("L")
        planes.append(decoded.resize((w, h), Image.Resampling.BILINEAR))
    y = Image.fromarray(decode_gray(gray_bytes), "L")
    restored = Image.merge("YCbCr", (y, *planes)).convert("RGB")
    return np.asarray(restored), side_bytes


def exact_chroma(rgb: np.ndarray, gray_bytes: bytes) -> np.ndarray:
    chroma = Image.fromarray(rgb).convert("YCbCr").split()[1:]
    return np.asarray(Image.merge("YCbCr", (Image.fromarray(decode_gray(gray_bytes)), *chroma)).convert("RGB"))


def gray_options(setting: str) -> dict:
    return {"gray_format": "png"} if setting == "png" else {"gray_format": "jpg", "quality": int(setting)}


def gray_label(setting: str) -> str:
    return "PNG" if setting == "png" else f"q{setting}"


def run_gray_setting(images: list[tuple[str, np.ndarray]], labs: list[np.ndarray], setting: str,
                     steps: dict[str, float], chroma_qualities: list[int], model: InvGrayNet, device: torch.device,
                     reference: InvGrayNet | None = None, effort: int = 1) -> tuple[dict[str, Row], dict[str, Row]]:
    """The table's rows, and the reference model's rows at the same steps (empty without one)."""
    rows: dict[str, Row] = {}
    reference_rows: dict[str, Row] = {}
    options = gray_options(setting)
    zero_step = steps.get("default", next(iter(steps.values())))
    for (_, rgb), lab in zip(images, labs):
        pixels = rgb.shape[0] * rgb.shape[1]

        def point(restored: np.ndarray, gray: int, side: int) -> Point:
            return Point(psnr(restored, rgb), ssim(restored, rgb), ciede2000(restored, rgb, lab), gray, side, pixels)

        gray_bytes = b""
        for name, step in steps.items():
            encoded = encode(rgb, step=step, device=device, model=model, effort=effort, **options)
            restored = decode_array(encoded.gray, encoded.residual, device=device, model=model)
            gray_bytes = encoded.gray
            measured = point(restored, len(encoded.gray), len(encoded.residual))
            rows.setdefault(name, Row()).points.append(measured)
            if reference is not None:
                theirs = encode(rgb, step=step, device=device, model=reference, **options)
                restored_ref = decode_array(theirs.gray, theirs.residual, device=device, model=reference)
                same = np.array_equal(restored_ref, restored)  # same network and step: the same pixels
                if same:
                    ref_point = Point(measured.psnr, measured.ssim, measured.ciede, len(theirs.gray),
                                      len(theirs.residual), pixels)
                else:
                    ref_point = point(restored_ref, len(theirs.gray), len(theirs.residual))
                reference_row = reference_rows.setdefault(name, Row())
                reference_row.points.append(ref_point)
                reference_row.same_pixels += same
        decoded_gray = decode_gray(gray_bytes)
        zeros = np.zeros(symbol_shape(model, *decoded_gray.shape), np.int32)
        blank = synthesise_image(model, decoded_gray, zeros, zero_step, device)
        rows.setdefault("zero residual", Row()).points.append(point(blank, len(gray_bytes), 0))
        for factor in CLASSICAL_FACTORS:
            for cq in chroma_qualities:
                split, side = classical_split(rgb, gray_bytes, factor, cq)
                rows.setdefault(f"classical x{factor} q{cq}", Row()).points.append(point(split, len(gray_bytes), side))
        bound = exact_chroma(rgb, gray_bytes)
        rows.setdefault("bound: exact chroma", Row()).points.append(point(bound, len(gray_bytes), 0))
    return rows, reference_rows


def versus_colour_jpeg(row: Row, curves: list[ColourJpegCurve]) -> tuple[float, float, float, float, int]:
    """Colour JPEG PSNR / SSIM / CIEDE2000 at the row's total bpp, the pair's byte saving
    in % against colour JPEG at the same PSNR, and how many images colour JPEG could not
    match at all."""
    at_same_bpp = [curve.at_bpp(point.total_bpp) for point, curve in zip(row.points, curves)]
    pair_bits, jpeg_bits, unreachable = 0.0, 0.0, 0
    for point, curve in zip(row.points, curves):
        bpp, reachable = curve.bpp_for_psnr(point.psnr)
        pair_bits += point.total_bpp * point.pixels
        jpeg_bits += bpp * point.pixels
        unreachable += not reachable
    saving = 100.0 * (1.0 - pair_bits / jpeg_bits)
    return (float(np.mean([p for p, _, _ in at_same_bpp])), float(np.mean([s for _, s, _ in at_same_bpp])),
            float(np.mean([d for _, _, d in at_same_bpp])), saving, unreachable)


def print_table(setting: str, rows: dict[str, Row], level_names: list[str], curves: list[ColourJpegCurve]) -> None:
    label = gray_label(setting)
    for name, row in rows.items():
        invgray = name in level_names or name.startswith("curve ")
        method = f"invgray {name}" if name in level_names else name.replace("curve ", "invgray step ")
        residual = row.bpp("side_bytes")
        has_side = invgray or name.startswith("classical")
        if has_side:
            jpeg_psnr, jpeg_ssim, jpeg_ciede, saving, unreachable = versus_colour_jpeg(row, curves)
            note = f" ({unreachable} beyond q100)" if unreachable else ""
            versus = f" {jpeg_psnr:.2f} / {jpeg_ssim:.4f} / {jpeg_ciede:.3f} | {saving:+.1f} %{note} |"
        else:
            versus = " - | - |"
        print(f"| {label} | {method} | {row.mean('psnr'):.2f} | {row.mean('ssim'):.4f} | {row.mean('ciede'):.3f} | "
              f"{row.bpp('gray_bytes'):.3f} | "
              f"{f'{residual:.4f}' if has_side else '-'} | {row.mean('total_bpp'):.3f} |{versus}")


def load_reference(name: str, device: torch.device) -> InvGrayNet:
    """A bundled model by id, or the network in a weights file (its id is its weights':
    a retired model's file then codes as that model did, format 1 without tables)."""
    if not Path(name).is_file():
        return load_model(name, device=device)
    network = network_from_weights(torch.load(name, map_location="cpu", weights_only=True)).to(device)
    network.model_id = model_id_of(network)
    return network


def reference_report(setting: str, rows: dict[str, Row], reference_rows: dict[str, Row],
                     steps: dict[str, float]) -> tuple[float, float, int, int]:
    """Print both models' residual sizes step by step for one gray setting; return
    (BD-rate %, BD-PSNR dB) of the model against the reference over those steps and
    how many of the decoded images were pixel-identical to the model's, out of how many."""
    label = gray_label(setting)
    ours = [(rows[name].bpp("side_bytes"), rows[name].mean("psnr")) for name in reference_rows]
    theirs = [(reference_rows[name].bpp("side_bytes"), reference_rows[name].mean("psnr")) for name in reference_rows]
    for name, (bpp, p), (ref_bpp, ref_p) in zip(reference_rows, ours, theirs):
        print(f"| {label} | {steps[name]:g} | {name.replace('curve ', 'step ')} | {p:.2f} | {ref_p:.2f} | "
              f"{bpp:.4f} | {ref_bpp:.4f} | {100 * (bpp / ref_bpp - 1):+.1f} % |")
    rate, quality = zip(*ours)
    ref_rate, ref_quality = zip(*theirs)
    same = sum(row.same_pixels for row in reference_rows.values())
    total = sum(len(row.points) for row in reference_rows.values())
    return bd_rate(ref_rate, ref_quality, rate, quality), bd_psnr(ref_rate, ref_quality, rate, quality), same, total


def model_name(model_id: str) -> str:
    """``invgray-v1.1 (5799d2c424f99bd3)``: the registry's name and the id."""
    spec = bundled_spec(model_id)
    return f"{spec.name if spec else 'invgray'} ({model_id})"


def load_checkpoint(path: Path) -> InvGrayNet:
    """A training checkpoint or exported weights, named by its weights' id."""
    model, _ = read_checkpoint(path)
    model.model_id = model_id_of(model)
    return model


def run_ablation(images: list[tuple[str, np.ndarray]], paths: list[Path], steps: list[float],
                 device: torch.device) -> dict[str, list[tuple[float, float, float, float, float]]]:
    """(step, PSNR, SSIM, residual bpp, non-zero fraction) per checkpoint, gray q90."""
    results = {}
    for label, path in zip(("with SEP", "without SEP"), paths):
        model = load_checkpoint(path).to(device)
        points = []
        for step in steps:
            values = []
            for _, rgb in images:
                encoded = encode(rgb, quality=90, step=step, device=device, model=model)
                restored = decode_array(encoded.gray, encoded.residual, device=device, model=model)
                header = read_residual(encoded.residual)
                symbols = read_symbols(header)
                pixels = rgb.shape[0] * rgb.shape[1]
                values.append((psnr(restored, rgb), ssim(restored, rgb), len(encoded.residual) * 8 / pixels,
                               float(np.count_nonzero(symbols)) / symbols.size))
            points.append((step, *(float(np.mean(c)) for c in zip(*values))))
        results[f"{label} ({path})"] = points
    return results


def print_ablation(results: dict[str, list[tuple[float, float, float, float, float]]]) -> None:
    print("\n### SEP ablation (gray q90)\n")
    print("| model | step | RGB PSNR dB | SSIM | residual bpp | non-zero symbols |")
    print("|---|---|---|---|---|---|")
    for label, points in results.items():
        for step, p, s, bpp, nonzero in points:
            print(f"| {label} | {step:g} | {p:.2f} | {s:.4f} | {bpp:.4f} | {100 * nonzero:.2f} % |")
    (sep_label, sep), (_, plain) = results.items()
    plain_sorted = sorted(plain, key=lambda point: point[1])
    print("\nResidual size at the same PSNR (the no-SEP curve interpolated to each SEP point):")
    for step, p, _, bpp, _ in sep:
        if plain_sorted[0][1] <= p <= plain_sorted[-1][1]:
            needed = float(np.interp(p, [q[1] for q in plain_sorted], [q[3] for q in plain_sorted]))
            print(f"- at {p:.2f} dB: with SEP {bpp:.4f} bpp, without {needed:.4f} bpp "
                  f"(without SEP: {100 * (needed / bpp - 1):+.0f} % bytes)")
        else:
            print(f"- at {p:.2f} dB: outside the no-SEP curve ({plain_sorted[0][1]:.2f}..{plain_sorted[-1][1]:.2f} dB)")


def write_plot(path: Path, folder: Path, results: dict[str, dict[str, Row]], level_names: list[str],
               curves: list[ColourJpegCurve], ablation: dict | None, model_label: str = "invgray",
               references: dict[str, dict[str, Row]] | None = None, reference_label: str = "reference") -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    settings = list(results)
    panels = len(settings) + 1 + (ablation is not None)
    columns = 3
    figure, axes = plt.subplots((panels + columns - 1) // columns, columns, figsize=(5 * columns, 4.2 * ((panels + 2) // 3)),
                                squeeze=False)
    flat = axes.flatten()
    for ax in flat[panels:]:
        ax.axis("off")

    def invgray_curve(rows: dict[str, Row]) -> tuple[list[float], list[float]]:
        named = [row for name, row in rows.items() if name in level_names or name.startswith("curve ")]
        pairs = sorted((row.bpp("side_bytes"), row.mean("psnr")) for row in named)
        return [x for x, _ in pairs], [y for _, y in pairs]

    for ax, setting in zip(flat, settings):
        rows = results[setting]
        x, y = invgray_curve(rows)
        ax.plot(x, y, "o-", color="C3", label=model_label)
        if references and references.get(setting):
            rx, ry = invgray_curve(references[setting])
            ax.plot(rx, ry, "o--", color="C1", markersize=4, label=reference_label)
        for name in level_names:
            ax.annotate(name, (rows[name].bpp("side_bytes"), rows[name].mean("psnr")), textcoords="offset points",
                        xytext=(4, -10), fontsize=8)
        for factor, colour in zip(CLASSICAL_FACTORS, ("C0", "C2")):
            pts = sorted((row.bpp("side_bytes"), row.mean("psnr")) for name, row in rows.items()
                         if name.startswith(f"classical x{factor} "))
            ax.plot(*zip(*pts), "s--", color=colour, label=f"classical Cb/Cr x{factor} JPEG")
        ax.axhline(rows["bound: exact chroma"].mean("psnr"), color="k", ls=":", label="exact chroma (bound)")
        ax.axhline(rows["zero residual"].mean("psnr"), color="0.5", ls="-.", label="zero residual")
        ax.set_xscale("log")
        ax.set_title(f"gray {gray_label(setting)}")
        ax.set_xlabel("residual / side bits per pixel")
        ax.set_ylabel("RGB PSNR (dB)")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7, loc="lower right")

    ax = flat[len(settings)]
    jpeg_bpp = np.mean([c.bpp for c in curves], axis=0)
    jpeg_psnr = np.mean([c.psnr for c in curves], axis=0)
    ax.plot(jpeg_bpp, jpeg_psnr, "-", color="k", label="colour JPEG 4:2:0")
    for index, setting in enumerate(settings):
        pts = sorted((row.mean("total_bpp"), row.mean("psnr")) for name, row in results[setting].items()
                     if name in level_names or name.startswith("curve "))
        ax.plot(*zip(*pts), "o-", color=f"C{index + 3}", label=f"invgray, gray {gray_label(setting)}")
    ax.set_xlabel("total bits per pixel (gray + residual)")
    ax.set_ylabel("RGB PSNR (dB)")
    ax.set_title("against colour JPEG")
    top = max(r.mean("total_bpp") for rows in results.values() for n, r in rows.items() if n in level_names)
    ax.set_xlim(0, top * 1.3)
    ax.set_ylim(28, None)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")

    if ablation is not None:
        ax = flat[len(settings) + 1]
        for (label, points), colour in zip(ablation.items(), ("C3", "C0")):
            ax.plot([p[3] for p in points], [p[1] for p in points], "o-", color=colour, label=label.split(" (")[0])
        ax.set_xscale("log")
        ax.set_xlabel("residual bits per pixel")
        ax.set_ylabel("RGB PSNR (dB)")
        ax.set_title("SEP ablation (same budget), gray q90")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8, loc="lower right")

    figure.suptitle(f"invgray rate-distortion on {folder.name}")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    print(f"\nplot: {path}", file=sys.stderr)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("folder", nargs="?", type=Path, default=DEFAULT_FOLDER)
    parser.add_argument("--grays", nargs="*", default=["50", "75", "90", "png"],
                        help="gray settings: JPEG qualities and/or png")
    parser.add_argument("--levels", nargs="+", help="rate levels (default: all of the model's)")
    parser.add_argument("--curve-steps", type=float, nargs="*", default=[0.8, 1.2, 3.2, 9.0, 28.0],
                        help="extra quantisation steps drawn on the plot's curve")
    parser.add_argument("--chroma-qualities", type=int, nargs="+", default=[30, 50, 90])
    parser.add_argument("--plot", type=Path, help="write the rate-distortion plot (PNG) here")
    parser.add_argument("--ablation", type=Path, nargs=2, metavar=("SEP_CKPT", "NOSEP_CKPT"),
                        help="training checkpoints with and without the SEP layer")
    parser.add_argument("--ablation-steps", type=float, nargs="+", default=[1.0, 1.5, 2.0, 3.0, 4.0, 6.0, 8.0])
    parser.add_argument("--reference", default="none", metavar="MODEL_ID|WEIGHTS",
                        help="a bundled model that encodes, or a weights file (.pt), to compare the residual "
                             "against at the same steps (BD-rate); default none")
    parser.add_argument("--effort", type=int, default=1, choices=(1, 2, 3),
                        help="encoder effort of the measured model (the reference always encodes at 1)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=0)
    args = parser.parse_args()

    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    model = load_model(device=device)
    reference = None
    if args.reference.lower() != "none":
        if args.reference == model.model_id:
            print(f"--reference {args.reference} is the default model itself: skipped", file=sys.stderr)
        else:
            reference = load_reference(args.reference, device)
    named = model_levels(model.model_id)
    args.levels = args.levels or list(named)
    steps = {name: named[name] for name in args.levels} | {f"curve {s:g}": s for s in args.curve_steps}
    images = load_folder(args.folder)
    level_text = ", ".join(f"{name} = step {named[name]:g}" for name in args.levels)
    reference_text = f"; reference {reference.model_id}, same steps" if reference is not None else ""
    print(f"{args.folder}: {len(images)} images; model {model.model_id} ({level_text}){reference_text}; "
          f"device {device}\n")

    started = time.perf_counter()
    labs = [rgb2lab(rgb) for _, rgb in images]
    curves = [ColourJpegCurve.measure(rgb, lab) for (_, rgb), lab in zip(images, labs)]
    print(f"<!-- colour JPEG curves: {time.perf_counter() - started:.0f}s -->", file=sys.stderr)
    header = ("| gray | method | RGB PSNR dB | SSIM | CIEDE2000 | gray bpp | residual bpp | total bpp | "
              "colour JPEG @ same total: PSNR / SSIM / CIEDE2000 | saving vs colour JPEG @ same PSNR |")
    print(header)
    print("|" + "|".join("---" for _ in range(header.count("|") - 1)) + "|")
    results, references = {}, {}
    for setting in args.grays:
        started = time.perf_counter()
        results[setting], references[setting] = run_gray_setting(
            images, labs, setting, steps, args.chroma_qualities, model, device, reference, args.effort)
        print_table(setting, results[setting], args.levels, curves)
        print(f"<!-- gray {setting}: {time.perf_counter() - started:.0f}s -->", file=sys.stderr)

    if reference is not None:
        print(f"\n### Residual: {model.model_id} against reference {reference.model_id} (same steps)\n")
        print("| gray | step | point | PSNR dB | reference PSNR dB | residual bpp | reference residual bpp | "
              "residual bytes vs reference |")
        print("|---|---|---|---|---|---|---|---|")
        bd = {setting: reference_report(setting, results[setting], references[setting], steps)
              for setting in args.grays}
        print(f"\nBjontegaard deltas of {model.model_id} against {reference.model_id}, residual bpp vs RGB PSNR "
              f"over the {len(steps)} steps (cubic fits, shared interval):")
        for setting, (rate, gain, same, total) in bd.items():
            print(f"- gray {gray_label(setting)}: BD-rate {rate:+.2f} % (residual bytes at equal PSNR), "
                  f"BD-PSNR {gain:+.3f} dB (at equal residual rate); decoded pixels identical to the "
                  f"reference's in {same} of {total} files")

    jpeg_psnr = np.mean([c.psnr for c in curves], axis=0)
    jpeg_bpp = np.mean([c.bpp for c in curves], axis=0)
    print("\nColour JPEG 4:2:0 (optimised), mean over the folder: "
          + ", ".join(f"q{q} {p:.2f} dB @ {b:.3f} bpp" for q, p, b in
                      zip(COLOUR_JPEG_QUALITIES, jpeg_psnr, jpeg_bpp) if q in (50, 75, 90, 95, 100)))

    ablation = None
    if args.ablation:
        ablation = run_ablation(images, args.ablation, args.ablation_steps, device)
        print_ablation(ablation)
    if args.plot:
        write_plot(args.plot, args.folder, results, args.levels, curves, ablation,
                   model_label=model_name(model.model_id), references=references if reference is not None else None,
                   reference_label=model_name(reference.model_id) if reference is not None else "reference")


if __name__ == "__main__":
    main()
