"""SHA-256 of every file the CLI writes for a folder of photos, over the settings that
reach different code paths: each level, PNG and q75 grays, JPEG inputs (lossless
luma), targets, one-file embedding, refinement, and the decodes of the default files.

A refactoring that claims "behaviour unchanged" runs this before and after:

    python benchmarks/encode_digest.py ../shared/data/test/kodak24 --save before.json
    ... change the code ...
    python benchmarks/encode_digest.py ../shared/data/test/kodak24 --compare before.json

It drives ``python -m invgray_cli`` (the same entry point in every release), so it
measures the product as users run it, whatever the package's inner layout.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import subprocess
import sys
import tempfile
from pathlib import Path

from PIL import Image

SETTINGS: dict[str, list[str]] = {
    "q90-low": ["--level", "low"],
    "q90-default": ["--level", "default"],
    "q90-high": ["--level", "high"],
    "q90-max": ["--level", "max"],
    "q90-step2.5": ["--step", "2.5"],
    "q75-default": ["-q", "75"],
    "png-default": ["--gray-format", "png"],
    "q90-target36": ["--target-psnr", "36"],
    "q90-max1500": ["--max-bytes", "1500"],
    "q90-embed": ["--embed"],
}
JPEG_INPUT_QUALITY = 95  # JPEG inputs keep their own luma: the transcode path


def _digests(folder: Path) -> dict[str, str]:
    return {str(path.relative_to(folder)): hashlib.sha256(path.read_bytes()).hexdigest()
            for path in sorted(folder.rglob("*")) if path.is_file()}


def _cli(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "invgray_cli", *args], check=True, stdout=subprocess.DEVNULL)


def measure(photos: Path, refine_photos: int, jobs: int) -> dict[str, dict[str, str]]:
    results: dict[str, dict[str, str]] = {}
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch)
        for name, flags in SETTINGS.items():
            out = root / name
            _cli("encode", str(photos), "--out-dir", str(out), "--jobs", str(jobs), *flags)
            results[name] = _digests(out)
            print(f"{name}: {len(results[name])} files", file=sys.stderr)
        restored = root / "decoded-q90-default"
        _cli("decode", str(root / "q90-default"), "--out-dir", str(restored), "--jobs", str(jobs))
        results["decoded-q90-default"] = _digests(restored)

        jpegs = root / "jpeg-inputs"
        jpegs.mkdir()
        for path in sorted(photos.glob("*.png")):
            buffer = io.BytesIO()
            Image.open(path).convert("RGB").save(buffer, "JPEG", quality=JPEG_INPUT_QUALITY)
            (jpegs / f"{path.stem}.jpg").write_bytes(buffer.getvalue())
        _cli("encode", str(jpegs), "--out-dir", str(root / "jpeg-input-default"), "--jobs", str(jobs))
        results["jpeg-input-default"] = _digests(root / "jpeg-input-default")

        for effort in (2, 3):
            chosen = sorted(photos.glob("*.png"))[:refine_photos]
            if not chosen:
                continue
            out = root / f"effort{effort}"
            _cli("encode", *map(str, chosen), "--out-dir", str(out), "--effort", str(effort))
            results[f"effort{effort}"] = _digests(out)
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("photos", type=Path)
    parser.add_argument("--save", type=Path, help="write the digests here (JSON)")
    parser.add_argument("--compare", type=Path, help="compare with digests saved earlier; exit 1 on any difference")
    parser.add_argument("--refine-photos", type=int, default=2, help="photos encoded at --effort 2 and 3")
    parser.add_argument("--jobs", type=int, default=2)
    args = parser.parse_args(argv)

    results = measure(args.photos, args.refine_photos, args.jobs)
    if args.save:
        args.save.write_text(json.dumps(results, indent=1, sort_keys=True) + "\n")
    if not args.compare:
        return 0
    before = json.loads(args.compare.read_text())
    differ = 0
    for setting in sorted(set(before) | set(results)):
        old, new = before.get(setting, {}), results.get(setting, {})
        changed = sorted(name for name in set(old) | set(new) if old.get(name) != new.get(name))
        differ += len(changed)
        print(f"{setting:22} {len(new):4} files  {'same' if not changed else f'{len(changed)} differ: ' + ', '.join(changed[:4])}")
    print(f"{'all identical' if differ == 0 else f'{differ} files differ'}")
    return 1 if differ else 0


if __name__ == "__main__":
    raise SystemExit(main())
