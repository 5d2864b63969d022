"""The core install has no torch: every CPU feature works in an interpreter where
``import torch`` fails, and each torch feature says, in one line, which extra to install.

A ``sitecustomize`` on PYTHONPATH makes ``import torch`` raise ModuleNotFoundError, as
in a venv where torch was never installed."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from invgray_cli.model.availability import TORCH_EXTRA

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = ROOT / "samples" / "kodim23.png"
BLOCK_TORCH = """
import importlib.abc, sys

class _NoTorch(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "torch" or name.startswith("torch."):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None

sys.meta_path.insert(0, _NoTorch())
"""


@pytest.fixture(scope="module")
def no_torch(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    site = tmp_path_factory.mktemp("no-torch")
    (site / "sitecustomize.py").write_text(BLOCK_TORCH)
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), str(ROOT)])}


def _invgray(env: dict[str, str], cwd: Path, *args: object, stdin: bytes | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "invgray_cli", *map(str, args)], cwd=cwd, env=env,
                          input=stdin, capture_output=True, timeout=300)


def test_torch_really_is_blocked(no_torch: dict[str, str]) -> None:
    probe = subprocess.run([sys.executable, "-c", "import torch"], env=no_torch, capture_output=True)
    assert probe.returncode != 0 and b"No module named 'torch'" in probe.stderr


def test_core_commands_run_without_torch(no_torch: dict[str, str], tmp_path: Path) -> None:
    photos = tmp_path / "photos"
    photos.mkdir()
    for name in ("a.png", "b.png"):
        (photos / name).write_bytes(SAMPLE.read_bytes())

    encoded = _invgray(no_torch, tmp_path, "encode", SAMPLE, "--out-dir", tmp_path, "--json")
    assert encoded.returncode == 0, encoded.stderr
    assert json.loads(encoded.stdout)["status"] == "ok"
    gray, residual = tmp_path / "kodim23.gray.jpg", tmp_path / "kodim23.residual.bin"
    decoded = _invgray(no_torch, tmp_path, "decode", gray, residual, "--compare", SAMPLE, "--device", "auto")
    assert decoded.returncode == 0, decoded.stderr
    assert (tmp_path / "kodim23.color.png").stat().st_size > 0

    for args in (("info", residual), ("info", gray), ("embed", gray, residual, "-o", tmp_path / "one.gray.jpg"),
                 ("extract", tmp_path / "one.gray.jpg", "-o", tmp_path / "back.residual.bin"),
                 ("encode", SAMPLE, "--target-psnr", "35", "-o", tmp_path / "t.gray.jpg"),
                 ("encode", SAMPLE, "--max-bytes", "1200", "-o", tmp_path / "m.gray.jpg"),
                 ("encode", photos, "--out-dir", tmp_path / "folder", "--jobs", "2"),
                 ("decode", tmp_path / "folder", "--out-dir", tmp_path / "restored")):
        result = _invgray(no_torch, tmp_path, *args)
        assert result.returncode == 0, (args, result.stderr)
    assert (tmp_path / "back.residual.bin").read_bytes() == residual.read_bytes()
    assert sorted(p.name for p in (tmp_path / "restored").iterdir()) == ["a.color.png", "b.color.png"]

    piped = subprocess.run(["bash", "-o", "pipefail", "-c",
                            f"{shlex.quote(sys.executable)} -m invgray_cli encode - --embed -o - "
                            f"< {shlex.quote(str(SAMPLE))} | {shlex.quote(sys.executable)} -m invgray_cli decode - -o - "
                            "> piped.png"], cwd=tmp_path, env=no_torch, capture_output=True, timeout=300)
    assert piped.returncode == 0, piped.stderr
    assert (tmp_path / "piped.png").read_bytes().startswith(b"\x89PNG")


@pytest.mark.parametrize(("args", "feature"), [
    (("encode", SAMPLE, "--device", "cuda"), "--device cuda"),
    (("encode", SAMPLE, "--effort", "3"), "--effort 3"),
    (("encode", SAMPLE, "--effort", "2", "--target-psnr", "35"), "--effort 2"),
])
def test_torch_features_say_which_extra_to_install(no_torch: dict[str, str], tmp_path: Path,
                                                   args: tuple, feature: str) -> None:
    result = _invgray(no_torch, tmp_path, *args, "--out-dir", tmp_path)
    message = result.stderr.decode().strip()
    assert result.returncode == 2
    assert message == f"invgray: error: {feature} needs torch, which is not installed: {TORCH_EXTRA}"
    assert list(tmp_path.iterdir()) == []  # refused before any file is written


def test_decoding_on_cuda_without_torch_says_which_extra(no_torch: dict[str, str], tmp_path: Path) -> None:
    golden = sorted((ROOT / "tests" / "golden").glob("*/*.gray.*"))[0]
    result = _invgray(no_torch, tmp_path, "decode", golden, "--device", "cuda", "--out-dir", tmp_path)
    assert result.returncode == 2
    assert result.stderr.decode().strip() == f"invgray: error: --device cuda needs torch, which is not installed: " \
                                             f"{TORCH_EXTRA}"


@pytest.mark.parametrize("module", ["train", "train_v2", "tables", "validation", "export", "export_onnx", "trainpack"])
def test_training_commands_without_torch_say_which_extra(no_torch: dict[str, str], tmp_path: Path,
                                                         module: str) -> None:
    result = subprocess.run([sys.executable, "-m", f"invgray_cli.training.{module}", "--help"], cwd=tmp_path,
                            env=no_torch, capture_output=True, timeout=120)
    lines = result.stderr.decode().strip().splitlines()
    assert result.returncode == 2
    assert lines == [f"python -m invgray_cli.training.{module} needs torch, which is not installed: {TORCH_EXTRA}"]


def test_invgray_v2s_integer_prior_needs_no_torch(no_torch: dict[str, str], tmp_path: Path) -> None:
    """The model that a decoder codes with is numpy only (invgray_cli/model/integer_prior.py)."""
    script = ("import sys, numpy as np; from invgray_cli.model import integer_prior as p; "
              "f = p.logits_to_frequencies(np.zeros((2, p.ALPHABET), np.int64)); "
              "assert 'torch' not in sys.modules and (f.sum(-1) == 1 << 16).all(); print('ok')")
    result = subprocess.run([sys.executable, "-c", script], check=False, cwd=tmp_path, env=no_torch,
                            capture_output=True, timeout=120)
    assert result.returncode == 0 and result.stdout.strip() == b"ok", result.stderr.decode()
