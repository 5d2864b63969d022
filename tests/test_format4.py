"""Format 4: symbols range-coded under a probability model that reads the decoded gray
(an invgray-v2 model), end to end through the export command, the registry, the codec
and the CLI. The model here is a tiny invgray-v2 network with seeded random weights,
exported by ``python -m invgray_cli.training.export`` into a copy of the bundled models
folder: what is tested is the format and its plumbing, not colour quality."""

from __future__ import annotations

import io
import json
import zlib
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from invgray_cli.app.cli import app
from invgray_cli.codec import decode_array, decode_photo, encode, read_symbols
from invgray_cli.codec.decoding import GrayMismatchError
from invgray_cli.engines import registry
from invgray_cli.engines.engine import analyse, engine_for
from invgray_cli.format.container import (
    CONDITIONAL,
    FLAG_REFINEMENT,
    REFINED,
    InvalidResidualError,
    Residual,
    read_residual,
    write_residual,
)
from invgray_cli.imaging.gray import decode_gray

torch = pytest.importorskip("torch")
pytest.importorskip("onnx")  # the export command writes the ONNX graphs


def _clear_caches() -> None:
    from invgray_cli.engines import engine

    registry._installed.cache_clear()
    registry._spec.cache_clear()
    engine._onnx_engine.cache_clear()
    engine._torch_engine.cache_clear()


@pytest.fixture(scope="module")
def v2_model(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The id of a tiny invgray-v2 model, exported beside the bundled ones (which stay the default)."""
    from invgray_cli.model.conditional import ConditionalConfig, ConditionalNet
    from invgray_cli.model.network import NetworkConfig
    from invgray_cli.training import export

    folder = tmp_path_factory.mktemp("models")
    for item in registry.models_dir().iterdir():
        if item.is_file() and item.suffix in {".json", ".onnx", ".npz", ".pt"}:
            (folder / item.name).symlink_to(item)
    (folder / "registry.json").unlink()
    (folder / "registry.json").write_text(registry.models_dir().joinpath("registry.json").read_text())
    torch.manual_seed(5)
    config = ConditionalConfig.build(NetworkConfig(latent_channels=2, encoder_width=8, decoder_width=8, latent_width=8,
                                                   decoder_blocks=1),
                                     hidden=2, gray_widths=(4, 4, 4, 4), plane_group=2)
    network = ConditionalNet(config).eval()
    checkpoint = folder.parent / "tiny-v2.pt"
    torch.save({"config": config.to_dict(), "model": network.state_dict(), "step": 0}, checkpoint)
    threads = torch.get_num_threads()
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(registry, "models_dir", lambda: folder)
        _clear_caches()
        export.main([str(checkpoint), "--name", "invgray-v2-test", "--models-dir", str(folder)])
        torch.set_num_threads(threads)
        entry = json.loads((folder / "registry.json").read_text())
        model_id = next(i for i, e in entry["models"].items() if e["name"] == "invgray-v2-test")
        _clear_caches()
        yield model_id
    _clear_caches()


@pytest.fixture(scope="module")
def v2_engine(v2_model: str):  # noqa: ANN201
    return engine_for(registry.model_spec(v2_model), "cpu")


def test_export_records_the_prior_and_its_id_covers_it(v2_model: str) -> None:
    spec = registry.model_spec(v2_model)
    assert spec.format_version == CONDITIONAL and spec.prior_file == "invgray-v2-test.prior.npz"
    assert registry.combined_id(spec.network_id, spec.prior()) == v2_model
    assert registry.default_model_id() != v2_model  # exported without --default


def test_round_trip_is_exact(v2_engine, small_rgb: np.ndarray) -> None:  # noqa: ANN001
    encoded = encode(small_rgb, model=v2_engine, step=1.0)
    header = read_residual(encoded.residual)
    assert header.version == CONDITIONAL and header.model_id == v2_engine.model_id and not header.refined
    gray = decode_gray(encoded.gray)
    symbols = analyse(v2_engine, small_rgb, gray, header.step)
    assert np.array_equal(read_symbols(header, gray=gray), symbols)
    expected = v2_engine.synthesise(gray, symbols, header.step)
    assert np.array_equal(decode_array(encoded.gray, encoded.residual), expected)


def test_prior_uses_the_gray(v2_engine, small_rgb: np.ndarray) -> None:  # noqa: ANN001
    """The same symbols coded given another gray make other bytes: the gray is in the probabilities."""
    from invgray_cli.model.prior_coding import encode_symbols

    spec = registry.model_spec(v2_engine.model_id)
    encoded = encode(small_rgb, model=v2_engine, step=1.0)
    header = read_residual(encoded.residual)
    gray = decode_gray(encoded.gray)
    symbols = read_symbols(header, gray=gray)
    assert encode_symbols(spec.prior(), gray, symbols, header.step) == header.payload
    assert encode_symbols(spec.prior(), 255 - gray, symbols, header.step) != header.payload


def _resaved(gray_file: bytes, quality: int) -> bytes:
    out = io.BytesIO()
    Image.open(io.BytesIO(gray_file)).save(out, "JPEG", quality=quality)
    return out.getvalue()


@pytest.mark.parametrize("quality", [75, 85, 95])
def test_resaved_gray_is_refused_in_one_line(v2_engine, small_rgb: np.ndarray, tmp_path: Path,  # noqa: ANN001
                                             quality: int) -> None:
    encoded = encode(small_rgb, model=v2_engine, step=1.0)
    resaved = _resaved(encoded.gray, quality)
    assert not np.array_equal(decode_gray(resaved), decode_gray(encoded.gray))
    with pytest.raises(GrayMismatchError, match="re-saved"):
        decode_photo(resaved, encoded.residual)
    gray_path, residual_path, out = tmp_path / "photo.gray.jpg", tmp_path / "photo.residual.bin", tmp_path / "out.png"
    gray_path.write_bytes(resaved)
    residual_path.write_bytes(encoded.residual)
    result = CliRunner().invoke(app, ["decode", str(gray_path), str(residual_path), "-o", str(out)])
    assert result.exit_code != 0 and not out.exists()
    errors = [line for line in result.output.splitlines() if "error" in line]
    assert len(errors) == 1 and "photo.gray.jpg" in errors[0] and "re-saved" in errors[0], result.output
    assert "Traceback" not in result.output


def test_chroma_refinement_rides_in_format_4(v2_engine, small_rgb: np.ndarray) -> None:  # noqa: ANN001
    encoded = encode(small_rgb, model=v2_engine, step=1.0, refine=4)
    header = read_residual(encoded.residual)
    assert header.version == CONDITIONAL and header.refined and encoded.refinement == (1, 4)
    restored = decode_array(encoded.gray, encoded.residual)
    plain = decode_array(*(lambda e: (e.gray, e.residual))(encode(small_rgb, model=v2_engine, step=1.0)))
    error = lambda image: float(np.mean((image.astype(float) - small_rgb) ** 2))  # noqa: E731
    assert error(restored) < error(plain)


def test_exact_modes_stay_format_3(v2_engine, small_rgb: np.ndarray) -> None:  # noqa: ANN001
    encoded = encode(small_rgb, model=v2_engine, max_error=0)
    assert read_residual(encoded.residual).version == REFINED
    assert np.array_equal(decode_array(encoded.gray, encoded.residual), small_rgb)


def test_refinement_flag_belongs_to_format_4_only() -> None:
    base = Residual("00" * 8, 32, 32, 32, 32, 1.0, b"\0" * 8, b"\0" * 16, 0, b"", version=CONDITIONAL)
    assert read_residual(write_residual(base)).version == CONDITIONAL
    for version in (1, 2):
        data = bytearray(write_residual(replace(base, version=version)))
        data[5:7] = FLAG_REFINEMENT.to_bytes(2, "little")
        data[-4:] = zlib.crc32(bytes(data[:-4])).to_bytes(4, "little")
        with pytest.raises(InvalidResidualError, match="flags"):
            read_residual(bytes(data))


def test_damaged_payload_fails_in_one_line(v2_engine, small_rgb: np.ndarray) -> None:  # noqa: ANN001
    encoded = encode(small_rgb, model=v2_engine, step=1.0)
    header = read_residual(encoded.residual)
    rng = np.random.default_rng(0)
    for _ in range(20):
        payload = bytearray(header.payload)
        payload[rng.integers(len(payload))] ^= 1 << int(rng.integers(8))
        damaged = write_residual(replace(header, payload=bytes(payload)))
        try:
            decode_array(encoded.gray, damaged)
        except InvalidResidualError as error:
            assert "\n" not in str(error)


def test_damaged_prior_file_is_refused(v2_model: str, tmp_path: Path) -> None:
    folder = registry.models_dir()
    spec = registry.model_spec(v2_model)
    for item in folder.iterdir():
        (tmp_path / item.name).symlink_to(item.resolve())
    (tmp_path / spec.prior_file).unlink()
    prior = spec.prior()
    prior.tensors["side.bias"] = prior.tensors["side.bias"] + 1
    prior.save(tmp_path / spec.prior_file)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(registry, "models_dir", lambda: tmp_path)
        _clear_caches()
        with pytest.raises(registry.UnknownModelError, match="damaged"):
            registry.model_spec(v2_model).prior()
    _clear_caches()


def test_info_names_the_format_and_its_coder(v2_engine, small_rgb: np.ndarray, tmp_path: Path) -> None:  # noqa: ANN001
    encoded = encode(small_rgb, model=v2_engine, step=1.0)
    residual = tmp_path / "photo.residual.bin"
    residual.write_bytes(encoded.residual)
    result = CliRunner().invoke(app, ["info", str(residual)])
    assert result.exit_code == 0, result.output
    assert "format version     4" in result.output and "integer prior given the gray" in result.output
    result = CliRunner().invoke(app, ["info", str(residual), "--json"])
    assert json.loads(result.output)["format_version"] == CONDITIONAL


def test_engines_share_the_coder(v2_engine, small_rgb: np.ndarray) -> None:  # noqa: ANN001
    """The probabilities are integers of the gray and the symbols: a file the onnxruntime engine
    wrote decodes to the same symbols for the torch engine, and its colour agrees within the
    networks' float noise; the torch engine's own file codes its symbols the same way."""
    from invgray_cli.engines.torch_engine import TorchEngine

    spec = registry.model_spec(v2_engine.model_id)
    torch_engine = TorchEngine(spec.network("cpu"), "cpu")
    encoded = encode(small_rgb, model=v2_engine, step=1.0)
    header = read_residual(encoded.residual)
    gray = decode_gray(encoded.gray)
    symbols = read_symbols(header, spec, gray)
    by_torch = decode_array(encoded.gray, encoded.residual, model=torch_engine)
    assert np.abs(by_torch.astype(int) - decode_array(encoded.gray, encoded.residual)).max() <= 1
    assert np.array_equal(by_torch, torch_engine.synthesise(gray, symbols, header.step))
    from_torch = read_residual(encode(small_rgb, model=torch_engine, step=1.0).residual)
    assert from_torch.version == CONDITIONAL
    torch_symbols = read_symbols(from_torch, spec, gray)
    from invgray_cli.model.prior_coding import encode_symbols

    assert encode_symbols(spec.prior(), gray, torch_symbols, header.step) == from_torch.payload
