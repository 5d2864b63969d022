"""CPU rehearsal of the GPU session script (benchmarks/gpu_session.py): every stage, tiny
budgets, ``--device cpu``, so the one command a lent GPU runs cannot rot between sessions."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

REPO = Path(__file__).resolve().parent.parent
SCRIPT = REPO / "benchmarks" / "gpu_session.py"
sys.path.insert(0, str(REPO / "benchmarks"))

import gpu_session  # noqa: E402


def _photos(folder: Path, count: int, size: tuple[int, int]) -> Path:
    folder.mkdir(parents=True)
    sample = np.asarray(Image.open(REPO / "samples" / "kodim23.png").convert("RGB"))
    for index in range(count):
        y, x = 60 * index, 90 * index
        Image.fromarray(np.ascontiguousarray(sample[y:y + size[0], x:x + size[1]])).save(folder / f"p{index}.png")
    return folder


def test_rehearsal_runs_every_stage_on_the_cpu(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(gpu_session, "LONG_RUN_DIR", tmp_path / "runs" / "v2-warm2")  # not this checkout's run
    photos = _photos(tmp_path / "photos", 3, (200, 264))
    carry, out = tmp_path / "carry", tmp_path / "out"
    gpu_session.main(["prepare", "--carry", str(carry), "--data", str(photos), "--crops", "6", "--crop-size", "128",
                      "--speed-images", str(photos), "--speed-limit", "2", "--no-wheels"])
    assert (carry / "train.npz").is_file() and len(list((carry / "speed").iterdir())) == 2
    result = subprocess.run(
        [sys.executable, str(SCRIPT), "run", "--device", "cpu", "--carry", str(carry), "--out", str(out),
         "--budget", "240", "--speed-batches", "1", "2", "--speed-precisions", "float32", "bfloat16",
         "--speed-repeat", "1", "--speed-jobs", "1", "--speed-effort-images", "1", "--min-train-seconds", "5",
         "--train-seconds", "35",
         "--save-every", "3", "--workers", "1", "--site", str(tmp_path / "site"),
         "--train-args", gpu_session.DEFAULT_TRAIN_ARGS.replace("--batch 16 --crop 128", "--batch 2 --crop 64")],
        cwd=REPO, capture_output=True, text=True, timeout=400)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    stages = summary["stages"]
    assert list(stages) == list(gpu_session.STAGES)
    assert all(stage["status"] == "ok" for stage in stages.values()), stages
    assert stages["tests"]["counts"]["passed"] >= 6 and "failed" not in stages["tests"]["counts"]
    assert stages["cross-device"]["symbols_differing"] == 0  # CPU against CPU: the rehearsal's own check
    assert stages["speed"]["decoder float32 batch 2 MP/s"] > 0 and "bfloat16 PSNR change dB" in stages["speed"]
    assert stages["speed"]["encode at effort 2 s/image"] > 0 and stages["speed"]["encode at effort 3 s/image"] > 0
    assert stages["train"]["crops_per_s"] > 0 and stages["train"]["last_step"] > 0
    checkpoint = torch.load(out / "train" / "last.pt", weights_only=False)
    assert checkpoint["args"]["rate"] == "prior" and (out / "train" / "prior.npz").is_file()  # invgray-v2's run
    assert checkpoint["step"] >= stages["train"]["last_step"]
    assert len(re.findall(r"\] stage [\w-]+: ", (out / "session.log").read_text())) == len(gpu_session.STAGES)
    # every file the device would bring back: at most 8, two folders deep, none over 16 MiB
    files = [p for p in out.rglob("*") if p.is_file()]
    assert len(files) <= 8 and all(len(p.relative_to(out).parts) <= 3 for p in files)
    assert all(p.stat().st_size < gpu_session.OUT_FILE_LIMIT_MIB * 2**20 for p in files)

    # the session's later call: the returned checkpoint carried back, no speed set, training only
    gpu_session.main(["prepare", "--carry", str(carry), "--data", str(photos), "--crops", "6", "--crop-size", "128",
                      "--checkpoint", str(out / "train" / "last.pt"), "--train-only", "--no-wheels"])
    assert (carry / "checkpoint" / "last.pt").is_file() and not (carry / "speed").exists()
    again = tmp_path / "again"
    result = subprocess.run(
        [sys.executable, str(SCRIPT), "run", "--train-only", "--device", "cpu", "--carry", str(carry),
         "--out", str(again), "--budget", "45", "--margin", "15", "--min-train-seconds", "5", "--save-every", "3",
         "--workers", "1", "--site", str(tmp_path / "site"),
         "--train-args", gpu_session.DEFAULT_TRAIN_ARGS.replace("--batch 16 --crop 128", "--batch 2 --crop 64")],
        cwd=REPO, capture_output=True, text=True, timeout=200)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    stages = json.loads((again / "summary.json").read_text())["stages"]
    assert [name for name, stage in stages.items() if stage["status"] == "skipped"] == ["tests", "cross-device",
                                                                                         "speed"]
    assert stages["train"]["status"] == "ok" and "--resume" in (again / "session.log").read_text()
    assert stages["train"]["last_step"] > checkpoint["step"]

    # collect keeps the furthest checkpoint as the shared run's, and never an older one over it
    gpu_session.main(["collect", str(again)])
    kept = gpu_session.LONG_RUN_DIR / "last.pt"
    furthest = torch.load(again / "train" / "last.pt", weights_only=False)["step"]
    assert torch.load(kept, weights_only=False)["step"] == furthest
    gpu_session.main(["collect", str(out)])
    assert torch.load(kept, weights_only=False)["step"] == furthest


def test_missing_requirement_without_a_wheel_stops_the_session_early(tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(gpu_session, "requirements", lambda: ["zstandard>=99"])
    (tmp_path / "carry").mkdir()
    code = gpu_session.main(["run", "--device", "cpu", "--carry", str(tmp_path / "carry"), "--out",
                             str(tmp_path / "out"), "--site", str(tmp_path / "site"), "--budget", "60"])
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert code == 1 and summary["stages"]["install"]["status"] == "error"
    assert "zstandard>=99" in summary["stages"]["install"]["unmet"][0]
    assert "tests" not in summary["stages"]


def test_carry_over_the_transfer_limit_is_refused() -> None:
    assert gpu_session.check_transfer(10 * 2**20, 50 * 2**20) == pytest.approx(60.0)
    with pytest.raises(SystemExit, match="over the 63 MiB"):
        gpu_session.check_transfer(10 * 2**20, 54 * 2**20)
