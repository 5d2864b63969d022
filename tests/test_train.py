"""The training command: a tiny end-to-end run with resume, growing a network, the ablation switch."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from invgray_cli.engines.registry import export_weights
from invgray_cli.model.network import InvGrayNet, NetworkConfig
from invgray_cli.training import train
from invgray_cli.training.checkpoints import grow_from, read_checkpoint
from invgray_cli.training.train import main


def _photos(folder: Path, count: int, size: tuple[int, int]) -> Path:
    folder.mkdir(parents=True)
    rng = np.random.default_rng(len(str(folder)))
    for index in range(count):
        h, w = size
        yy, xx = np.mgrid[0:h, 0:w]
        base = np.stack([np.sin(xx / (7 + index)), np.cos(yy / 5), np.sin((xx + yy) / 9)], axis=2)
        image = (127 + 100 * base + rng.normal(0, 8, (h, w, 3))).clip(0, 255).astype(np.uint8)
        Image.fromarray(image).save(folder / f"p{index}.png")
    return folder


def test_tiny_training_run_logs_validates_and_resumes(tmp_path: Path) -> None:
    threads = torch.get_num_threads()  # --threads sets it process-wide; later tests need it back
    try:
        _tiny_run(tmp_path)
    finally:
        torch.set_num_threads(threads)


def _tiny_run(tmp_path: Path) -> None:
    data = _photos(tmp_path / "train", 3, (96, 112))
    val = _photos(tmp_path / "val", 2, (70, 90))
    out = tmp_path / "run"
    common = ["--data", str(data), "--val", str(val), "--out", str(out), "--crop", "64", "--batch", "2",
              "--val-every", "2", "--val-steps", "2", "--warmup", "2", "--threads", "1", "--device", "cpu"]
    main(common + ["--steps", "2"])
    first = torch.load(out / "last.pt", weights_only=False)
    assert first["step"] == 2 and (out / "best.pt").exists()
    main(common + ["--steps", "4", "--resume"])
    resumed = torch.load(out / "last.pt", weights_only=False)
    assert resumed["step"] == 4
    records = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    validations = [r for r in records if "val_psnr" in r]
    assert [r["step"] for r in validations] == [2, 4]
    assert all(np.isfinite(r["val_psnr"]) and r["val_bpp"] > 0 for r in validations)


def _calls(out: Path, *argvs: list[str]) -> list[dict]:
    """Train once per argv (threads restored after: --threads sets them process-wide); the
    checkpoint each call left in ``out``."""
    threads = torch.get_num_threads()
    checkpoints = []
    try:
        for argv in argvs:
            main(argv)
            checkpoints.append(torch.load(out / "last.pt", weights_only=False))
    finally:
        torch.set_num_threads(threads)
    return checkpoints


def test_a_run_longer_than_one_call_keeps_one_schedule(tmp_path: Path) -> None:
    """--stop-after ends a call, not the run: a resumed call goes on down the same cosine
    over --time-limit (restarting it at the full rate once made a GPU run worse)."""
    data = _photos(tmp_path / "train", 2, (80, 80))
    out = tmp_path / "run"
    call = ["--data", str(data), "--out", str(out), "--crop", "64", "--batch", "2", "--threads", "1",
            "--device", "cpu", "--steps", "100000", "--time-limit", "4", "--stop-after", "1.5", "--lr", "1e-3"]
    # the fourth call finds the run complete: nothing more is trained
    first, second, third, after = _calls(out, call, *[call + ["--resume"]] * 3)
    assert 1.5 <= first["trained_seconds"] < 3.0 <= second["trained_seconds"] < 4.0 <= third["trained_seconds"]
    assert 0 < first["step"] < second["step"] < third["step"] == after["step"]
    windows = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    ends = {}
    for record in windows:  # the last window of each call, by the steps each call ended at
        for name, checkpoint in (("first", first), ("second", second)):
            if record["step"] == checkpoint["step"]:
                ends[name] = record
    # the cosine at 1.5 s of 4 is about 0.69 of the rate, at 3 s about 0.15: well apart
    assert ends["second"]["lr"] < 0.5 * ends["first"]["lr"] < 0.5e-3
    assert ends["first"]["time"] < ends["second"]["time"]


def test_stop_at_step_ends_a_call_where_asked_and_a_bf16_call_resumes_it(tmp_path: Path) -> None:
    """--stop-at-step: two runs stopped at the same step are paired on one schedule; a run
    goes on with --bf16 (training only: the checkpoint is a plain float32 network)."""
    data = _photos(tmp_path / "train", 2, (80, 80))
    out = tmp_path / "run"
    call = ["--data", str(data), "--out", str(out), "--crop", "64", "--batch", "2", "--threads", "1",
            "--device", "cpu", "--steps", "8", "--lr", "1e-3", "--rate", "tables", "--val-every", "1000"]
    first, second = _calls(out, call + ["--stop-at-step", "3"], call + ["--resume", "--bf16"])
    assert (first["step"], second["step"]) == (3, 8)
    assert all(t.dtype == torch.float32 for t in second["model"].values() if t.is_floating_point())
    model = InvGrayNet(NetworkConfig(**second["config"]))
    model.load_state_dict(second["model"])
    assert model.encoder.conv_dtype is None and model.decoder.conv_dtype is None


def test_sigterm_stops_after_the_step_with_the_checkpoint_saved(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    """A scheduler's SIGTERM (or Ctrl-C) mid-run: the step under way finishes, last.pt is
    saved, the exit status is the signal's (128 + 15), and --resume goes on from there."""
    original_loader = train.batch_loader

    def loader_signalling_at_step_3(sampler, first, args, device):  # noqa: ANN001, ANN202
        for index, batch in enumerate(original_loader(sampler, first, args, device)):
            if first + index == 2:
                os.kill(os.getpid(), signal.SIGTERM)
            yield batch

    data = _photos(tmp_path / "train", 2, (80, 80))
    out = tmp_path / "run"
    call = ["--data", str(data), "--out", str(out), "--crop", "64", "--batch", "2", "--threads", "1",
            "--device", "cpu", "--steps", "6", "--lr", "1e-3", "--val-every", "1000"]
    before = signal.getsignal(signal.SIGTERM)
    monkeypatch.setattr(train, "batch_loader", loader_signalling_at_step_3)
    with pytest.raises(SystemExit) as stopped:
        _calls(out, call)
    assert stopped.value.code == 128 + signal.SIGTERM
    assert signal.getsignal(signal.SIGTERM) is before
    assert "SIGTERM received at step 3" in capsys.readouterr().out
    assert torch.load(out / "last.pt", weights_only=False)["step"] == 3
    monkeypatch.setattr(train, "batch_loader", original_loader)
    (resumed,) = _calls(out, call + ["--resume"])
    assert resumed["step"] == 6


def test_a_second_ctrl_c_stops_at_once() -> None:
    with train.StopRequest() as request:
        os.kill(os.getpid(), signal.SIGINT)
        assert request.signal == signal.SIGINT and request.name == "SIGINT"
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_bf16_convolutions_keep_the_quantiser_and_the_pixels_float32(small_rgb: np.ndarray) -> None:
    """With bfloat16 convolution stacks the latent, symbols and colour stay float32, and
    the shipped network gives nearly the same symbols and pixels (bfloat16 inside the
    quantiser would move many more: latents of 100 steps have a resolution of 0.5)."""
    model, _ = read_checkpoint(Path("models/invgray-v1.4.pt"))
    rgb = torch.from_numpy(small_rgb[:128, :192].copy()).permute(2, 0, 1)[None].float() / 255
    gray = (0.299 * rgb[:, :1] + 0.587 * rgb[:, 1:2] + 0.114 * rgb[:, 2:])
    with torch.inference_mode():
        exact = model(rgb, gray, 1.0)
        model.mixed_precision(torch.bfloat16)
        mixed = model(rgb, gray, 1.0)
    assert all(mixed[k].dtype == torch.float32 for k in ("rgb", "latent", "symbols", "gated"))
    assert (mixed["symbols"] != exact["symbols"]).float().mean() < 0.01
    assert (mixed["rgb"] - exact["rgb"]).abs().mean() < 1 / 255


def test_grown_network_starts_as_the_checkpoint(tmp_path: Path) -> None:
    torch.manual_seed(0)
    small = InvGrayNet(NetworkConfig(decoder_blocks=2))
    with torch.no_grad():  # a trained-looking head, so that the check is not trivially zero
        small.decoder.head.weight.normal_(0, 0.02)
    torch.save({"model": small.state_dict()}, tmp_path / "small.pt")
    grown = InvGrayNet(NetworkConfig(decoder_blocks=4))
    grow_from(grown, tmp_path / "small.pt")
    rgb, gray = torch.rand(1, 3, 64, 96), torch.rand(1, 1, 64, 96)
    small.eval()
    grown.eval()
    with torch.inference_mode():
        torch.testing.assert_close(grown(rgb, gray, 2.0)["rgb"], small(rgb, gray, 2.0)["rgb"], rtol=0, atol=1e-6)


def _four_channels_of_the_shipped_network(path: Path) -> Path:
    """A trained 4-channel network: the default model's first four latent channels."""
    wide, _ = read_checkpoint(Path("models/invgray-v1.4.pt"))
    state = wide.state_dict()
    for name, rows in (("encoder.out.weight", 4), ("encoder.out.bias", 4), ("gate.raw_threshold", 64)):
        state[name] = state[name][:rows]
    state["decoder.latent_stem.weight"] = state["decoder.latent_stem.weight"][:, :4]
    narrow = InvGrayNet(NetworkConfig(latent_channels=4))
    narrow.load_state_dict(state)
    export_weights(narrow, path)
    return path


def test_a_network_widened_to_more_latent_channels_starts_as_the_checkpoint(small_rgb: np.ndarray,
                                                                            tmp_path: Path) -> None:
    """--init a 4-channel network with a wider --latent-channels: the new channels' symbols
    open at once (fresh encoder outputs, a fresh dead zone), yet the pixels and the old
    symbols are the checkpoint's (the decoder reads the new ones through zero weights)."""
    torch.manual_seed(0)
    shipped = _four_channels_of_the_shipped_network(tmp_path / "narrow.pt")
    narrow = InvGrayNet(NetworkConfig())
    grow_from(narrow, shipped)
    wide = InvGrayNet(NetworkConfig(latent_channels=6))
    grow_from(wide, shipped)
    fresh = InvGrayNet(NetworkConfig(latent_channels=6)).gate.raw_threshold
    assert torch.equal(wide.gate.raw_threshold[:64], narrow.gate.raw_threshold)
    assert torch.equal(wide.gate.raw_threshold[64:], fresh[64:])
    rgb = torch.from_numpy(small_rgb[:128, :192].copy()).permute(2, 0, 1)[None].float() / 255
    gray = (0.299 * rgb[:, :1] + 0.587 * rgb[:, 1:2] + 0.114 * rgb[:, 2:])
    narrow.eval()
    wide.eval()
    with torch.inference_mode():
        before, after = narrow(rgb, gray, 1.0), wide(rgb, gray, 1.0)
    assert after["symbols"][:, 64:].any()
    torch.testing.assert_close(after["rgb"], before["rgb"], rtol=0, atol=1e-6)
    assert torch.equal(after["symbols"][:, :64], before["symbols"])
    wide.train()
    wide(rgb, gray, 1.0)["rgb"].sub(rgb).square().mean().backward()
    assert wide.decoder.latent_stem.weight.grad[:, 4:].abs().sum() > 0

    with pytest.raises(SystemExit, match="more than --latent-channels"):
        grow_from(InvGrayNet(NetworkConfig(latent_channels=2)), shipped)


def test_multiply_adds_probe_follows_the_network_dtype() -> None:
    # the first CUDA session's speed and training stages failed on a CPU probe against CUDA weights
    model = InvGrayNet(NetworkConfig())
    assert model.to(torch.float64).multiply_adds_per_pixel() == InvGrayNet(NetworkConfig()).multiply_adds_per_pixel()


def test_without_sep_the_gate_is_plain_rounding() -> None:
    torch.manual_seed(0)
    model = InvGrayNet().eval()
    model.gate.freeze_threshold(0.5)
    assert not model.gate.raw_threshold.requires_grad
    torch.testing.assert_close(model.gate.thresholds().flatten(), torch.full((model.cfg.symbol_planes,), 0.5))
    rgb, gray = torch.rand(1, 3, 64, 64), torch.rand(1, 1, 64, 64)
    with torch.inference_mode():
        raw = model.transform(model.encoder(rgb, gray, model.chroma_gain)) / 3.0
        torch.testing.assert_close(model.quantise(rgb, gray, 3.0), torch.round(raw), rtol=0, atol=0)


def test_training_pack_round_trip_and_training_from_it(tmp_path: Path) -> None:
    from invgray_cli.training.data import read_pack
    from invgray_cli.training.trainpack import main as pack_main

    data = _photos(tmp_path / "train", 2, (150, 170))
    pack = tmp_path / "packs" / "train.npz"
    pack_main(["--data", str(data), "--out", str(pack), "--crops", "5", "--size", "64"])
    crops = read_pack(pack)
    assert len(crops) == 5 and all(c.shape == (64, 64, 3) and c.dtype == np.uint8 for c in crops)
    with np.load(pack, allow_pickle=False) as stored:  # plain arrays, no pickles
        assert set(stored.files) == {"jpeg", "offsets"}
    threads = torch.get_num_threads()
    try:
        main(["--data", str(pack), "--val", str(data), "--out", str(tmp_path / "run"), "--crop", "64",
              "--batch", "2", "--steps", "2", "--val-every", "2", "--val-steps", "2", "--threads", "1",
              "--device", "cpu"])
    finally:
        torch.set_num_threads(threads)
    assert torch.load(tmp_path / "run" / "last.pt", weights_only=False)["step"] == 2


def test_batches_do_not_depend_on_loader_workers_or_resume_point(tmp_path: Path) -> None:
    import argparse

    from invgray_cli.training.data import CropSampler, batch_loader

    sampler = CropSampler(sorted(_photos(tmp_path / "train", 2, (96, 112)).iterdir()), 64)
    args = argparse.Namespace(batch=2, seed=3, quality=(50, 100), lossless_fraction=0.15, step_range=(0.5, 4.0),
                              steps=6, workers=0)
    in_loop = list(batch_loader(sampler, 0, args, torch.device("cpu")))
    args.workers = 2
    with_workers = list(batch_loader(sampler, 0, args, torch.device("cpu")))
    resumed = list(batch_loader(sampler, 4, args, torch.device("cpu")))
    assert len(in_loop) == len(with_workers) == 6 and len(resumed) == 2
    for (rgb_a, gray_a, step_a), (rgb_b, gray_b, step_b) in zip(in_loop, with_workers):
        assert torch.equal(rgb_a, rgb_b) and torch.equal(gray_a, gray_b) and step_a == step_b
    for (rgb_a, _, step_a), (rgb_b, _, step_b) in zip(in_loop[4:], resumed):
        assert torch.equal(rgb_a, rgb_b) and step_a == step_b
    assert not torch.equal(in_loop[0][0], in_loop[1][0])


def test_training_on_the_tables_code_length_writes_frozen_tables(tmp_path: Path) -> None:
    from invgray_cli.format.entropy import EntropyTables, encode_symbols

    data = _photos(tmp_path / "train", 2, (96, 112))
    val = _photos(tmp_path / "val", 1, (70, 90))
    threads = torch.get_num_threads()
    try:
        main(["--data", str(data), "--val", str(val), "--out", str(tmp_path / "run"), "--crop", "64", "--batch", "2",
              "--steps", "2", "--val-every", "2", "--val-steps", "2", "--threads", "1", "--device", "cpu",
              "--rate", "tables", "--init", "models/invgray-v1.4.pt", "--tables", "models/invgray-v1.4.entropy.npz",
              "--latent-channels", "6"])
    finally:
        torch.set_num_threads(threads)
    checkpoint = torch.load(tmp_path / "run" / "last.pt", weights_only=False)
    assert checkpoint["tables"] is not None
    frozen = EntropyTables.load(tmp_path / "run" / "tables.entropy.npz")
    symbols = np.zeros((frozen.planes, 2, 3), np.int32)
    assert len(encode_symbols(symbols, 2.0, frozen)) > 0


def test_a_wider_latent_trains_from_narrower_tables(tmp_path: Path) -> None:
    """--latent-channels 6 from 4-channel tables: the extra planes start as the last channel's."""
    from invgray_cli.format.entropy import EntropyTables

    narrow = EntropyTables.load(Path("models/invgray-v1.2.entropy.npz"))
    wide = narrow.widened(96)
    assert wide.planes == 96 and np.array_equal(wide.frequencies[:, :64], narrow.frequencies)
    assert np.array_equal(wide.frequencies[:, 64:80], narrow.frequencies[:, 48:64])
    data = _photos(tmp_path / "train", 2, (96, 112))
    threads = torch.get_num_threads()
    try:
        main(["--data", str(data), "--out", str(tmp_path / "run"), "--crop", "64", "--batch", "2", "--steps", "2",
              "--threads", "1", "--device", "cpu", "--latent-channels", "6", "--rate", "tables",
              "--tables", "models/invgray-v1.2.entropy.npz"])
    finally:
        torch.set_num_threads(threads)
    assert torch.load(tmp_path / "run" / "last.pt", weights_only=False)["config"]["latent_channels"] == 6
    assert EntropyTables.load(tmp_path / "run" / "tables.entropy.npz").planes == 96
