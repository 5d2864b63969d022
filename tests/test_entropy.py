"""Residual format 2: the frozen-table range coder (invgray_cli/format/entropy.py), its tables
fitted (invgray_cli/training/tables.py) and learned (invgray_cli/model/code_length.py)."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from invgray_cli.codec import decode_array, encode, read_symbols
from invgray_cli.engines.engine import engine_for
from invgray_cli.engines.registry import (
    default_model_id,
    entropy_tables,
    load_model,
    model_spec,
)
from invgray_cli.format import entropy
from invgray_cli.format.container import (
    InvalidResidualError,
    read_residual,
    write_residual,
)
from invgray_cli.format.entropy import (
    ALPHABET,
    CONTEXTS,
    HEAD,
    EntropyCodingError,
    EntropyTables,
    decode_symbols,
    encode_symbols,
    plane_context,
    quantise_frequencies,
)
from invgray_cli.model.code_length import LearnedTables
from invgray_cli.training.tables import TableFitter, symbols_at_steps

V1 = "2fdd49ce27575cc9"
V1_1 = "5799d2c424f99bd3"  # v1's network with format 2 tables


@pytest.fixture(scope="module")
def tables() -> EntropyTables:
    return entropy_tables(default_model_id())


def test_models_with_tables_write_format_2_and_others_format_1(small_rgb: np.ndarray) -> None:
    assert [model_spec(m).format_version for m in (default_model_id(), V1_1, V1)] == [2, 2, 1]
    new = read_residual(encode(small_rgb, step=2.0, model=engine_for(device="cpu")).residual)
    unbundled = copy.deepcopy(load_model())  # the same weights, not known by the registry under this object
    unbundled.model_id = None
    old = read_residual(encode(small_rgb, step=2.0, model=unbundled).residual)
    assert (new.version, new.raw_size, len(new.payload) % 4) == (2, 0, 0)
    assert old.version == 1 and old.raw_size > 0 and old.model_id != new.model_id
    assert np.array_equal(read_symbols(new), read_symbols(old))  # same network, same step: same symbols


@pytest.mark.parametrize("step", [0.3, 1.0, 4.408, 40.0])
def test_round_trip_of_any_symbols_including_escapes(tables: EntropyTables, step: float) -> None:
    rng = np.random.default_rng(int(step * 10))
    shape = (tables.planes, 5, 7)
    symbols = np.round(rng.laplace(0, 3, shape)).astype(np.int32)
    symbols[0, 0, 0], symbols[1, 2, 3], symbols[5, 4, 6] = HEAD + 1, -(HEAD + 1), (1 << 24) + HEAD - 1  # escapes
    symbols[9, 1, 1] = -(1 << 23)
    payload = encode_symbols(symbols, step, tables)
    assert np.array_equal(decode_symbols(payload, shape, step, tables), symbols)
    zeros = np.zeros(shape, np.int32)
    assert np.array_equal(decode_symbols(encode_symbols(zeros, step, tables), shape, step, tables), zeros)


def test_symbols_too_large_for_the_format_are_refused(tables: EntropyTables) -> None:
    symbols = np.zeros((tables.planes, 1, 1), np.int32)
    symbols[3, 0, 0] = (1 << 24) + HEAD
    with pytest.raises(ValueError, match="too large"):
        encode_symbols(symbols, 1.0, tables)


def test_probabilities_come_from_integers_only(tables: EntropyTables, sample_rgb: np.ndarray,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """Decoding a format-2 payload touches no network and no float arithmetic of ours:
    wrecking the network's weights, or computing in another thread, changes nothing."""
    encoded = encode(sample_rgb)
    expected = read_symbols(read_residual(encoded.residual))
    model = load_model()
    with torch.no_grad():
        saved = [p.clone() for p in model.parameters()]
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 1e-3)  # deliberately perturbed float path
        try:
            entropy.categorical_model.cache_clear()  # models rebuilt from the integer tables
            assert np.array_equal(read_symbols(read_residual(encoded.residual)), expected)
        finally:
            for p, value in zip(model.parameters(), saved):
                p.copy_(value)
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(2) as pool:
        results = list(pool.map(lambda _: read_symbols(read_residual(encoded.residual)), range(4)))
    assert all(np.array_equal(r, expected) for r in results)


def test_files_do_not_depend_on_the_engine_that_encoded_them(sample_rgb: np.ndarray) -> None:
    from invgray_cli.engines.engine import engine_for

    onnx = encode(sample_rgb, model=engine_for(device="cpu"))
    torch_made = encode(sample_rgb, model=load_model())
    assert onnx.residual == torch_made.residual
    pixels = decode_array(onnx.gray, onnx.residual)
    assert pixels.shape == sample_rgb.shape


def test_rate_class_is_a_float32_comparison(tables: EntropyTables) -> None:
    bounds = tables.step_bounds
    assert tables.rate_class(float(bounds[3])) == 4 and tables.rate_class(float(np.nextafter(bounds[3], 0))) == 3
    assert tables.rate_class(1e-6) == 0 and tables.rate_class(999.0) == len(bounds)
    # fitted and learned tables store the same bounds, from one function
    assert np.array_equal(bounds, entropy.class_bounds()) and bounds.dtype == np.float32


def test_damaged_payloads_fail_cleanly_or_decode_to_symbols(tables: EntropyTables) -> None:
    rng = np.random.default_rng(5)
    shape = (tables.planes, 3, 4)
    for length in (0, 4, 8, 64, 400):
        try:
            symbols = decode_symbols(rng.integers(0, 256, length, dtype=np.uint8).tobytes(), shape, 2.0, tables)
        except EntropyCodingError:
            continue
        assert symbols.shape == shape and symbols.dtype == np.int32
    with pytest.raises(EntropyCodingError, match="32-bit words"):
        decode_symbols(b"\x00" * 5, shape, 2.0, tables)


def test_container_refuses_a_range_coded_payload_with_a_raw_size(small_rgb: np.ndarray) -> None:
    header = read_residual(encode(small_rgb).residual)
    with pytest.raises(ValueError, match="32-bit words"):
        write_residual(header.__class__(**{**header.__dict__, "raw_size": 12}))
    data = bytearray(encode(small_rgb).residual)
    data[4] = 5  # a version this invgray does not know
    with pytest.raises(InvalidResidualError, match="version 5 is not supported"):
        read_residual(bytes(data))


def test_contexts_use_lower_frequencies_and_earlier_dc_planes() -> None:
    magnitudes = np.zeros((32, 1, 3), np.int64)
    magnitudes[0] = [[0, 1, 9]]  # channel 0, DC
    magnitudes[1] = [[0, 2, 0]]
    assert plane_context(magnitudes, 2, 16).tolist() == [[0, 2, 4]]  # 0, 1 + 2 = 3, 9
    assert plane_context(magnitudes, 16, 16).tolist() == [[0, 1, 4]]  # channel 1's DC: channel 0's DC


def test_fitted_tables_are_normalised_and_favour_what_they_saw() -> None:
    fitter = TableFitter(planes=16, planes_per_channel=16)
    rng = np.random.default_rng(0)
    for _ in range(20):
        fitter.add(3, np.round(rng.laplace(0, 1.5, (16, 8, 8))).astype(np.int32))
    tables = fitter.tables()
    assert tables.frequencies.shape == (len(entropy.class_centres()), 16, CONTEXTS, ALPHABET)
    zero = tables.frequencies[3, :, :, HEAD]
    assert (zero > tables.frequencies[3, :, :, HEAD + 5]).all()
    frequencies = quantise_frequencies(np.array([[0.0, 1e-12, 1.0]]))
    assert frequencies.sum() == 1 << 16 and frequencies.min() >= 1


def test_training_rate_term_is_the_coded_size(tables: EntropyTables, sample_rgb: np.ndarray) -> None:
    """The learnable tables' code length on rounded symbols equals the range coder's
    bytes (up to the coder's final word), with the coder's own contexts."""
    from invgray_cli.imaging.gray import jpeg_round_trip, luma

    module = LearnedTables(tables, tables.planes, tables.planes_per_channel)
    gray = jpeg_round_trip(luma(sample_rgb), 90)
    for step, symbols in zip((1.0, 4.408), symbols_at_steps(load_model(), sample_rgb, gray, np.array([1.0, 4.408]))):
        values = torch.tensor(symbols, dtype=torch.float32)[None]
        contexts = module.contexts(values)[0].numpy()
        magnitudes = np.abs(symbols.astype(np.int64))
        assert all((contexts[p] == plane_context(magnitudes, p, 16)).all() for p in range(tables.planes))
        estimate = float(module.code_length(values, step)[0].detach())
        coded = 8 * len(encode_symbols(symbols, step, tables))
        assert coded - 64 <= estimate <= coded + 1, (estimate, coded)
    values = (torch.tensor(symbols, dtype=torch.float32)[None] + 0.3).requires_grad_(True)
    module.code_length(values, 2.0).sum().backward()
    assert torch.isfinite(values.grad).all() and values.grad.abs().sum() > 0
    refrozen = module.freeze()
    assert np.abs(refrozen.frequencies.astype(np.int64) - tables.frequencies.astype(np.int64)).max() <= ALPHABET


def test_the_dead_zone_hears_the_rate(tables: EntropyTables) -> None:
    """With the gate and the latent, the rate term pushes SEP thresholds up (closing
    entries saves bits); on the values alone it could not reach them."""
    from invgray_cli.model.network import InvGrayNet

    torch.manual_seed(0)
    model = InvGrayNet().train()
    module = LearnedTables(tables, tables.planes, tables.planes_per_channel)
    out = model(torch.rand(1, 3, 64, 64), torch.rand(1, 1, 64, 64), 0.05)
    module.code_length(out["gated"], 0.05, out["gate"], out["latent"]).sum().backward()
    assert (model.gate.raw_threshold.grad <= 0).all() and (model.gate.raw_threshold.grad < 0).any()
