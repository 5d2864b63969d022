"""Encoder effort (invgray_cli/codec/effort.py): refined symbols are ordinary symbols of the same
model, never cost more than the single pass, and tiles cover large photos."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from invgray_cli.app.cli import app
from invgray_cli.codec import decode_array, encode, read_symbols, effort
from invgray_cli.engines.registry import (
    default_model_id,
    entropy_tables,
    load_model,
    model_spec,
)
from invgray_cli.engines.torch_engine import analyse_image
from invgray_cli.format.container import read_residual
from invgray_cli.imaging.gray import decode_gray
from invgray_cli.imaging.metrics import psnr

V1 = "2fdd49ce27575cc9"  # residual format 1: no entropy tables
runner = CliRunner()


def _single_pass(rgb: np.ndarray, step: float) -> tuple[np.ndarray, np.ndarray]:
    encoded = encode(rgb, step=step)
    gray = decode_gray(encoded.gray)
    return gray, analyse_image(load_model(), rgb, gray, float(np.float32(step)))


def test_effort_one_is_the_single_pass_itself(small_rgb: np.ndarray) -> None:
    gray, symbols = _single_pass(small_rgb, 3.0)
    assert effort.refine_symbols(load_model(), entropy_tables(default_model_id()), small_rgb, gray, 3.0, symbols,
                                 1) is symbols
    assert encode(small_rgb, step=3.0, effort=1).residual == encode(small_rgb, step=3.0).residual


@pytest.mark.parametrize("tile", [None, 64])
def test_refined_symbols_cost_no_more_than_the_single_pass(small_rgb: np.ndarray, monkeypatch: pytest.MonkeyPatch,
                                                           tile: int | None) -> None:
    """Whole photo, and in 64 px tiles (a 203 x 157 photo in 12 tiles, each with its halo)."""
    if tile:
        monkeypatch.setattr(effort, "REFINE_TILE", tile)
    monkeypatch.setitem(effort.EFFORT_ITERATIONS, 2, 8)  # the test's budget; the product runs 30
    model, tables = load_model(), entropy_tables(default_model_id())
    step = float(np.float32(model_spec(default_model_id()).level_step("high")))
    gray, symbols = _single_pass(small_rgb, step)
    refined = effort.refine_symbols(model, tables, small_rgb, gray, step, symbols, 2)
    assert refined.shape == symbols.shape and refined.dtype == symbols.dtype
    assert not np.array_equal(refined, symbols), "8 steps of descent changed nothing"
    assert effort.refinement_cost(model, tables, small_rgb, gray, step, refined, "cpu") \
        < effort.refinement_cost(model, tables, small_rgb, gray, step, symbols, "cpu")
    # only the latent learned: the shared network is left as it was, without gradients
    assert all(p.requires_grad and p.grad is None for p in model.parameters())


def test_a_refined_file_is_an_ordinary_file_of_the_same_model(small_rgb: np.ndarray,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(effort.EFFORT_ITERATIONS, 2, 8)
    plain, refined = encode(small_rgb), encode(small_rgb, effort=2)
    assert refined.gray == plain.gray and refined.model_id == plain.model_id and refined.step == plain.step
    header = read_residual(refined.residual)
    assert header.version == read_residual(plain.residual).version
    gray, single_pass = decode_gray(plain.gray), read_symbols(read_residual(plain.residual))
    expected = effort.refine_symbols(load_model(), entropy_tables(plain.model_id), small_rgb, gray, plain.step,
                                     single_pass, 2)
    assert np.array_equal(read_symbols(header), expected)
    assert psnr(decode_array(refined.gray, refined.residual), small_rgb) > 30


def test_effort_needs_a_model_with_tables_and_a_known_value(small_rgb: np.ndarray) -> None:
    with pytest.raises(ValueError, match="needs a bundled model with entropy tables"):
        encode(small_rgb, effort=2, model=load_model(V1))
    with pytest.raises(ValueError, match="effort must be one of 1, 2, 3"):
        encode(small_rgb, effort=4)


def test_cli_effort(small_png: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(effort.EFFORT_ITERATIONS, 2, 4)
    out = tmp_path / "out"
    result = runner.invoke(app, ["encode", str(small_png), "--effort", "2", "--out-dir", str(out), "--json"])
    assert result.exit_code == 0, result.output
    record = json.loads(result.output.strip().splitlines()[-1])
    assert record["effort"] == 2 and (out / "photo.residual.bin").is_file()
    targeted = runner.invoke(app, ["encode", str(small_png), "-e", "2", "--target-psnr", "33", "--out-dir",
                                   str(tmp_path / "other"), "--json"])
    assert targeted.exit_code == 0, targeted.output
    record = json.loads(targeted.output.strip().splitlines()[-1])
    assert record["effort"] == 2 and record["target_met"] and record["psnr"] >= 33
    bad = runner.invoke(app, ["encode", str(small_png), "--effort", "4", "--out-dir", str(tmp_path / "third")])
    assert bad.exit_code == 2


@pytest.mark.parametrize("target", [{"target_psnr": 34.0}, {"max_bytes": 700}])
def test_targets_refine_the_chosen_files_only_where_the_target_holds(small_rgb: np.ndarray,
                                                                     monkeypatch: pytest.MonkeyPatch,
                                                                     target: dict) -> None:
    from invgray_cli.codec.rate_control import encode_to_target

    monkeypatch.setitem(effort.EFFORT_ITERATIONS, 2, 8)
    single, refined = encode_to_target(small_rgb, **target), encode_to_target(small_rgb, effort=2, **target)
    assert single.met and refined.met and refined.step == single.step
    assert refined.encoded.residual != single.encoded.residual  # refined, and kept
    if "target_psnr" in target:
        assert refined.psnr >= 34.0 and refined.residual_bytes <= single.residual_bytes
    else:
        assert refined.residual_bytes <= 700 and refined.psnr >= single.psnr
    assert refined.psnr == pytest.approx(psnr(decode_array(refined.encoded.gray, refined.encoded.residual),
                                              small_rgb))
