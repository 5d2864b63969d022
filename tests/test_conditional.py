"""invgray-v2's torch side: the fake-quantised prior (invgray_cli/model/conditional.py) computes
bit for bit the integers of the numpy integer network that codes, its code length is -log2 of
those frequencies, gradients reach the network and the prior, and the training command
(invgray_cli/training/train_v2.py) runs and resumes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from invgray_cli.model import integer_prior
from invgray_cli.model.integer_prior import CELL, IntegerPrior, PriorConfig

torch = pytest.importorskip("torch")

from invgray_cli.model.conditional import ConditionalConfig, ConditionalNet, ConditionalPrior
from invgray_cli.model.network import NetworkConfig

PLANES = 32


def trained_looking(seed: int, **options: object) -> ConditionalPrior:
    torch.manual_seed(seed)
    prior = ConditionalPrior(PriorConfig(planes=PLANES, planes_per_channel=16, hidden=4, **options))
    with torch.no_grad():  # away from the initial Laplace start, so that every layer matters
        for parameter in prior.parameters():
            parameter.add_(torch.randn_like(parameter) * 0.05)
    return prior


def inputs(seed: int, n: int = 2, rows: int = 3, cols: int = 4) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    gray = rng.integers(0, 256, (n, rows * CELL, cols * CELL), dtype=np.uint8)
    symbols = np.round(rng.laplace(0, 2, (n, PLANES, rows, cols))).astype(np.int64)
    symbols[1, 0, 0, 0] = -70
    return gray, symbols


def as_tensors(gray: np.ndarray, symbols: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.from_numpy(gray[:, None]).float() / 255.0, torch.from_numpy(symbols).float()


@pytest.mark.parametrize("options", [{}, {"gray": False}, {"checkerboard": False}])
@pytest.mark.parametrize("train_mode", [False, True])
def test_torch_prior_computes_the_integer_networks_logits_and_frequencies(options: dict, train_mode: bool) -> None:
    prior = trained_looking(1, **options).train(train_mode)
    exported = prior.export()
    for seed, step in [(2, 0.7), (3, 3.0), (4, 12.0)]:
        gray, symbols = inputs(seed)
        z = prior.logits(*as_tensors(gray, symbols), step)
        expected = integer_prior.logits(exported, gray, symbols, step)
        assert np.array_equal(z.detach().numpy().astype(np.int64), expected)
        assert np.array_equal(np.moveaxis(prior.frequencies(z).numpy(), 2, -1),
                              integer_prior.frequencies(exported, gray, symbols, step).astype(np.int64))


def test_code_length_is_minus_log2_of_the_numpy_frequencies(tmp_path: Path) -> None:
    prior = trained_looking(5).eval()
    gray, symbols = inputs(6)
    bits = prior.code_length(*as_tensors(gray, symbols), 2.0)
    prior.export().save(tmp_path / "prior.npz")
    expected = integer_prior.ideal_bits(IntegerPrior.load(tmp_path / "prior.npz"), gray, symbols, 2.0)
    np.testing.assert_allclose(bits.detach().numpy(), expected, rtol=1e-6)


def test_code_length_gives_gradients_to_the_symbols_and_the_prior() -> None:
    prior = trained_looking(7).train()
    gray, symbols = inputs(8)
    values = (torch.from_numpy(symbols).float() + 0.3).requires_grad_(True)
    prior.code_length(torch.from_numpy(gray[:, None]).float() / 255.0, values, 2.0).sum().backward()
    assert values.grad is not None and values.grad.abs().sum() > 0
    for name in ("gray_layers.0.weight", "gray_cell.weight", "side.weight", "planes.weight", "spatial.weight",
                 "out.weight", "out.bias"):
        assert prior.get_parameter(name).grad.abs().sum() > 0, name


def test_network_config_shapes_the_prior() -> None:
    model = ConditionalNet(ConditionalConfig.build(NetworkConfig(latent_channels=6), hidden=8, gray=False))
    assert model.prior.cfg.planes == 96 and not model.prior.cfg.gray
    assert ConditionalConfig.from_dict(model.cfg.to_dict()) == model.cfg


def _photos(folder: Path) -> Path:
    folder.mkdir()
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:80, 0:96]
    for index in range(2):
        base = np.stack([np.sin(xx / (5 + index)), np.cos(yy / 7), np.sin((xx + yy) / 9)], axis=2)
        image = (127 + 100 * base + rng.normal(0, 8, (80, 96, 3))).clip(0, 255).astype(np.uint8)
        Image.fromarray(image).save(folder / f"p{index}.png")
    return folder


def test_training_runs_saves_the_integer_prior_and_resumes(tmp_path: Path) -> None:
    from invgray_cli.training.train_v2 import main

    photos, out = _photos(tmp_path / "photos"), tmp_path / "run"
    common = ["--data", str(photos), "--val", str(photos), "--out", str(out), "--crop", "64", "--batch", "2",
              "--val-every", "3", "--val-steps", "2", "--latent-channels", "2", "--lr-warmup", "2", "--seed", "4"]
    threads = torch.get_num_threads()
    try:
        main([*common, "--steps", "6", "--stop-at-step", "3", "--threads", "1"])
        first = torch.load(out / "last.pt", weights_only=False)
        main([*common, "--steps", "6", "--resume", "--threads", "1"])
        resumed = torch.load(out / "last.pt", weights_only=False)
        main([*common, "--steps", "6", "--out", str(tmp_path / "straight"), "--threads", "1"])
        straight = torch.load(tmp_path / "straight" / "last.pt", weights_only=False)
    finally:
        torch.set_num_threads(threads)
    assert first["step"] == 3 and resumed["step"] == 6 and first["config"]["family"] == "invgray-v2"
    for name, tensor in straight["model"].items():  # the same batches and optimiser: resuming changes nothing
        torch.testing.assert_close(resumed["model"][name], tensor, rtol=1e-5, atol=1e-6, msg=name)
    assert any(not torch.equal(first["model"][k], resumed["model"][k]) for k in first["model"])
    model = ConditionalNet(ConditionalConfig.from_dict(resumed["config"]))
    model.load_state_dict(resumed["model"])
    saved = IntegerPrior.load(out / "prior.npz")
    assert all(np.array_equal(saved.tensors[k], v) for k, v in model.prior.export().tensors.items())
    lines = (out / "log.jsonl").read_text().splitlines()
    assert any('"val_bpp"' in line for line in lines)


@pytest.mark.parametrize("options", [{}, {"gray": False}, {"plane_group": 4}])
def test_an_exported_prior_loads_back_to_the_same_integers(options: dict) -> None:
    exported = trained_looking(5, **options).export()
    fresh = ConditionalPrior(exported.config)
    fresh.load_integer(exported)
    assert fresh.export().digest() == exported.digest()
    gray, symbols = inputs(6)
    assert np.array_equal(fresh.logits(*as_tensors(gray, symbols), 2.0).detach().numpy().astype(np.int64),
                          integer_prior.logits(exported, gray, symbols, 2.0))
    with pytest.raises(ValueError, match="configuration"):
        ConditionalPrior(PriorConfig(planes=PLANES, planes_per_channel=16, hidden=8)).load_integer(exported)


def _trained_and_exported(tmp_path: Path, common: list[str], steps: int) -> tuple[dict, ConditionalNet, Path]:
    """A short run in ``tmp_path/first`` (its checkpoint, its network) and that network saved in
    the bundled form (config and weights), as the export writes it."""
    from invgray_cli.training.train_v2 import main

    main([*common, "--out", str(tmp_path / "first"), "--steps", str(steps)])
    first = torch.load(tmp_path / "first" / "last.pt", weights_only=False)
    model = ConditionalNet(ConditionalConfig.from_dict(first["config"]))
    model.load_state_dict(first["model"])
    weights = tmp_path / "model.pt"
    torch.save({"config": model.net.cfg.to_dict(), "state_dict": model.net.state_dict()}, weights)
    return first, model, weights


def test_training_restarts_from_an_exported_model(tmp_path: Path) -> None:
    """A run lost with its optimiser goes on from the model exported out of it: the same
    network and prior integers, the step count from --init-step."""
    from invgray_cli.training.train_v2 import main

    photos = _photos(tmp_path / "photos")
    common = ["--data", str(photos), "--crop", "64", "--batch", "2", "--val-every", "100", "--latent-channels", "2",
              "--lr-warmup", "2", "--seed", "4", "--threads", "1"]
    threads = torch.get_num_threads()
    try:
        first, _, weights = _trained_and_exported(tmp_path, common, 2)
        restarted = tmp_path / "restarted"
        main([*common, "--out", str(restarted), "--steps", "4", "--stop-at-step", "3", "--init", str(weights),
              "--init-prior", str(tmp_path / "first" / "prior.npz"), "--init-step", "2", "--lr", "0"])
    finally:
        torch.set_num_threads(threads)
    again = torch.load(restarted / "last.pt", weights_only=False)
    assert again["step"] == 3  # one step on from --init-step, at learning rate 0: the weights as loaded
    for name, tensor in first["model"].items():
        if name.startswith("net."):
            torch.testing.assert_close(again["model"][name], tensor, rtol=0, atol=0, msg=name)
    assert IntegerPrior.load(restarted / "prior.npz").digest() == IntegerPrior.load(
        tmp_path / "first" / "prior.npz").digest()  # the prior's floats differ; its integers do not


def test_a_frozen_network_leaves_the_prior_to_learn_first(tmp_path: Path) -> None:
    """--freeze-network-steps: the first steps train the prior on the --init network's
    symbols and leave the network as it was; then both train, the network at
    --network-lr-scale times the prior's rate."""
    from invgray_cli.training.train_v2 import ConditionalRun, main, parse_arguments

    photos = _photos(tmp_path / "photos")
    common = ["--data", str(photos), "--crop", "64", "--batch", "2", "--val-every", "100", "--latent-channels", "2",
              "--lr-warmup", "1", "--seed", "4", "--threads", "1", "--steps", "4"]
    threads = torch.get_num_threads()
    try:
        first, model, weights = _trained_and_exported(tmp_path, common, 1)
        warm = [*common, "--out", str(tmp_path / "warm"), "--init", str(weights), "--freeze-network-steps", "2",
                "--network-lr-scale", "0.5", "--init-prior", str(tmp_path / "first" / "prior.npz")]
        main([*warm, "--stop-at-step", "2"])
        frozen = torch.load(tmp_path / "warm" / "last.pt", weights_only=False)
        main([*warm, "--resume"])
        moved = torch.load(tmp_path / "warm" / "last.pt", weights_only=False)
        run = ConditionalRun(parse_arguments([*warm, "--out", str(tmp_path / "lr")]))
    finally:
        torch.set_num_threads(threads)
    net = [k for k in first["model"] if k.startswith("net.")]
    loaded = ConditionalPrior(model.prior.cfg)
    loaded.load_integer(IntegerPrior.load(tmp_path / "first" / "prior.npz"))
    assert all(torch.equal(frozen["model"][k], first["model"][k]) for k in net)
    assert any(not torch.equal(frozen["model"][f"prior.{k}"], v) for k, v in loaded.state_dict().items())
    assert moved["step"] == 4 and any(not torch.equal(moved["model"][k], first["model"][k]) for k in net)
    run.set_learning_rate()
    assert [g["lr"] for g in run.optimiser.param_groups] == [run.lr * 0.5, run.lr]
