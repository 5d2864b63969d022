"""Encode and decode time of two (or more) source trees of invgray, measured in one run.

    git worktree add /tmp/invgray-1.3 66005db
    python benchmarks/compare_versions.py /tmp/invgray-1.3 . --folder ../shared/data/test/kodak24 --limit 8

Each tree runs in its own process (``PYTHONPATH`` = the tree), in alternating rounds, so
that whatever else the machine does falls on every tree alike. A round encodes every
photo at each ``--levels`` level (gray JPEG ``--quality``) through ``codec.encode`` and
decodes the pair through ``codec.decode_array``, after one untimed warm-up encode and
decode; it reports the mean seconds per photo of each. The table gives, per tree and
level, the median over rounds, the bytes and PSNR (which must agree where the trees
promise the same files), and the ratio to the first tree.

Each round also times **the first photo of a fresh process** through the CLI, as a
user's one-off command meets it: ``invgray encode`` of the first photo at the default
level, then ``invgray decode`` of that pair, each a new interpreter (start-up, imports,
model loading and the one photo), wall time seen from outside. A tree's models are
those of its ``invgray_models`` package: a tree with models of its own needs an
``invgray_models`` link to its ``models/`` folder at its root.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

WORKER = r"""
import json, sys, time
import numpy as np
from PIL import Image
from invgray_cli.codec import decode_array, encode
from invgray_cli.imaging.metrics import psnr
files, levels, quality = json.loads(sys.argv[1])
photos = [np.asarray(Image.open(f).convert("RGB")) for f in files]
warm = encode(photos[0], level=levels[0], quality=quality)
decode_array(warm.gray, warm.residual)
out = {}
for level in levels:
    enc = dec = size = quality_db = 0.0
    for rgb in photos:
        started = time.perf_counter()
        encoded = encode(rgb, level=level, quality=quality)
        enc += time.perf_counter() - started
        started = time.perf_counter()
        restored = decode_array(encoded.gray, encoded.residual)
        dec += time.perf_counter() - started
        size += len(encoded.residual) * 8 / (rgb.shape[0] * rgb.shape[1])
        quality_db += psnr(rgb, restored)
    n = len(photos)
    out[level] = {"encode_s": enc / n, "decode_s": dec / n, "residual_bpp": size / n, "psnr": quality_db / n}
print(json.dumps(out))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("trees", type=Path, nargs="+", help="source trees (each with invgray_cli/); the first is the reference")
    parser.add_argument("--folder", type=Path, default=Path("../shared/data/test/kodak24"))
    parser.add_argument("--limit", type=int, default=8)
    parser.add_argument("--levels", nargs="+", default=["low", "default", "high"])
    parser.add_argument("--quality", type=int, default=90)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    files = sorted(str(p.resolve()) for p in args.folder.iterdir() if p.suffix.lower() in (".png", ".jpg"))
    files = files[:args.limit] if args.limit else files
    job = json.dumps([files, args.levels, args.quality])
    results: dict[Path, list[dict]] = {tree: [] for tree in args.trees}
    fresh: dict[Path, list[tuple[float, float]]] = {tree: [] for tree in args.trees}
    scratch = Path(tempfile.mkdtemp(prefix="compare-versions-"))
    for round_number in range(args.rounds):
        for tree in args.trees:
            environment = dict(os.environ, PYTHONPATH=str(tree.resolve()))
            fresh[tree].append(first_photo(tree, environment, Path(files[0]), scratch))
            run = subprocess.run([sys.executable, "-c", WORKER, job], env=environment, cwd=tree,
                                 capture_output=True, text=True, check=False)
            if run.returncode:
                raise SystemExit(f"{tree}: {run.stderr.strip().splitlines()[-1]}")
            results[tree].append(json.loads(run.stdout.strip().splitlines()[-1]))
            print(f"round {round_number + 1}/{args.rounds} {tree} done", file=sys.stderr, flush=True)
    reference = args.trees[0]
    print(f"{len(files)} photos of {args.folder}, gray q{args.quality}, median of {args.rounds} alternating rounds")
    print(f"{'tree':<28} {'level':<8} {'encode s':>9} {'ratio':>6} {'decode s':>9} {'ratio':>6} {'bpp':>8} {'PSNR':>7}")
    print(f"\nfirst photo of a fresh process (CLI, default level, wall time), median of {args.rounds}")
    print(f"{'tree':<28} {'encode s':>9} {'ratio':>6} {'decode s':>9} {'ratio':>6}")
    for tree in args.trees:
        encode_s = statistics.median(e for e, _ in fresh[tree])
        decode_s = statistics.median(d for _, d in fresh[tree])
        base_encode = statistics.median(e for e, _ in fresh[reference])
        base_decode = statistics.median(d for _, d in fresh[reference])
        print(f"{str(tree)[-28:]:<28} {encode_s:9.3f} {encode_s / base_encode:6.3f} "
              f"{decode_s:9.3f} {decode_s / base_decode:6.3f}")
    print()
    for tree in args.trees:
        for level in args.levels:
            encode_s = statistics.median(r[level]["encode_s"] for r in results[tree])
            decode_s = statistics.median(r[level]["decode_s"] for r in results[tree])
            base_encode = statistics.median(r[level]["encode_s"] for r in results[reference])
            base_decode = statistics.median(r[level]["decode_s"] for r in results[reference])
            last = results[tree][-1][level]
            print(f"{str(tree)[-28:]:<28} {level:<8} {encode_s:9.3f} {encode_s / base_encode:6.3f} "
                  f"{decode_s:9.3f} {decode_s / base_decode:6.3f} {last['residual_bpp']:8.4f} {last['psnr']:7.2f}")


def first_photo(tree: Path, environment: dict[str, str], photo: Path, scratch: Path) -> tuple[float, float]:
    """Wall seconds of ``invgray encode`` of one photo, then of ``invgray decode`` of its pair,
    each in a fresh interpreter running ``tree``'s invgray."""
    out = scratch / tree.resolve().name
    out.mkdir(exist_ok=True)
    cli = [sys.executable, "-c", "import sys; from invgray_cli.app.cli import main; sys.argv[0] = 'invgray'; main()"]
    timings = []
    for arguments in (["encode", str(photo), "--out-dir", str(out), "--device", "cpu", "--force", "--quiet"],
                      ["decode", str(out / f"{photo.stem}.gray.jpg"), "-o", str(out / "restored.png"),
                       "--device", "cpu", "--force", "--quiet"]):
        started = time.perf_counter()
        run = subprocess.run(cli + arguments, env=environment, cwd=tree, capture_output=True, text=True, check=False)
        timings.append(time.perf_counter() - started)
        if run.returncode:
            raise SystemExit(f"{tree}: invgray {arguments[0]}: {(run.stderr or run.stdout).strip()}")
    return timings[0], timings[1]


if __name__ == "__main__":
    main()
