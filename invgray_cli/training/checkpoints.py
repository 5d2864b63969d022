"""Training checkpoints (``OUT/last.pt``, ``OUT/best.pt``): writing them, resuming from
them, reading the network out of them (or out of bundled weights), and starting a
larger network from a smaller one (``train --init``).

A checkpoint is a ``torch.save`` dict: ``model`` (state dict), ``tables`` (the learned
entropy tables' state dict, or None), ``config``, ``optimiser``, ``step``,
``trained_seconds``, ``torch_rng``, ``best`` and ``args``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from invgray_cli.model.network import InvGrayNet, network_from_weights


def save_checkpoint(path: Path, model: InvGrayNet, optimiser: torch.optim.Optimizer, step: int,
                    best: float, args: argparse.Namespace, tables: torch.nn.Module | None = None,
                    trained_seconds: float = 0.0) -> None:
    """Write the checkpoint through a ``.part`` file, so an interrupted save leaves the old one."""
    tmp = path.with_name(path.name + ".part")
    torch.save({
        "model": model.state_dict(),
        "tables": tables.state_dict() if tables is not None else None,
        "config": model.cfg.to_dict(),
        "optimiser": optimiser.state_dict(),
        "step": step,
        "trained_seconds": trained_seconds,  # over every call of the run: --time-limit's schedule goes on from it
        "torch_rng": torch.get_rng_state(),
        "best": best,
        "args": vars(args) | {"data": [str(p) for p in args.data], "val": str(args.val), "out": str(args.out),
                              "init": str(args.init)},
    }, tmp)
    tmp.replace(path)


def resume_from(path: Path, model: InvGrayNet, optimiser: torch.optim.Optimizer, tables: torch.nn.Module | None,
                device: torch.device) -> tuple[int, float, float]:
    """Restore a run's network, tables, optimiser and torch generator from its checkpoint;
    returns its step, best score and training seconds so far."""
    ckpt = torch.load(path, map_location=device, weights_only=False)
    model.load_state_dict(ckpt["model"])
    if tables is not None and ckpt.get("tables") is not None:
        tables.load_state_dict(ckpt["tables"])
    optimiser.load_state_dict(ckpt["optimiser"])
    # map_location moved every tensor to the device; the CPU generator's state must stay a CPU ByteTensor
    torch.set_rng_state(ckpt["torch_rng"].cpu())
    return ckpt["step"], ckpt["best"], float(ckpt.get("trained_seconds", 0.0))


def checkpoint_state(blob: dict) -> dict[str, torch.Tensor]:
    """The network weights of a training checkpoint (``model``) or of bundled weights (``state_dict``)."""
    return blob["model"] if "model" in blob else blob["state_dict"]


def read_checkpoint(path: Path) -> tuple[InvGrayNet, dict]:
    """The network saved in a training checkpoint or bundled weights, in eval mode, and the file's contents."""
    blob = torch.load(path, map_location="cpu", weights_only=False)
    return network_from_weights(blob), blob


def grow_from(model: InvGrayNet, path: Path) -> None:
    """Load a smaller checkpoint into ``model``: matching tensors are copied; residual
    blocks it lacks get a zero second convolution, so they start as identities, and rate
    gains it lacks start at zero (every plane at the level's step). Extra latent channels
    (``--latent-channels`` above the checkpoint's) are widened in: the encoder's new
    outputs start as a fresh network's (small random weights, SEP's initial dead zone), so
    their symbols are non-zero from the first step, and the decoder reads them through
    zero weights, which learn from those symbols: the pixels start as the checkpoint's.
    (docs/RESULTS.md, "Widening a trained network to 6 channels", has how such runs went.)"""
    state = dict(checkpoint_state(torch.load(path, map_location="cpu", weights_only=False)))
    own = model.state_dict()
    missing = [name for name in own if name not in state]
    widened = _widen_latent(state, own, model.cfg.transform_block ** 2)
    for name, tensor in state.items():
        if name not in own or own[name].shape != tensor.shape:
            raise SystemExit(f"--init {path}: tensor {name} does not fit this network")
    model.load_state_dict(state, strict=False)
    with torch.no_grad():
        for name, module in model.named_modules():
            if any(m.startswith(f"{name}.conv2.") for m in missing):
                module.conv2.weight.zero_()
                module.conv2.bias.zero_()
    unexplained = [m for m in missing if ".conv1." not in m and ".conv2." not in m and m != "rate_gains.log_gains"]
    if unexplained:
        raise SystemExit(f"--init {path}: no rule to initialise {', '.join(unexplained)}")
    extra = f"; latent widened from {widened} channels" if widened else ""
    print(f"initialised from {path}; {len(missing)} new tensors start as identity blocks{extra}", flush=True)


def _widen_latent(state: dict[str, torch.Tensor], own: dict[str, torch.Tensor], planes_per_channel: int) -> int:
    """Rewrite, in ``state``, the tensors whose size is the latent's channel count to
    ``own``'s wider shapes (see :func:`grow_from`); the checkpoint's channel count, or 0
    when it is already as wide."""
    old = state["encoder.out.bias"].shape[0]
    new = own["encoder.out.bias"].shape[0]
    if old == new:
        return 0
    if old > new:
        raise SystemExit(f"--init: the checkpoint has {old} latent channels, more than --latent-channels {new}")
    extra = new - old
    weight = own["encoder.out.weight"].clone()
    weight[:old] = state["encoder.out.weight"]
    bias = torch.zeros(new)
    bias[:old] = state["encoder.out.bias"]
    stem = torch.zeros_like(own["decoder.latent_stem.weight"])
    stem[:, :old] = state["decoder.latent_stem.weight"]
    thresholds = own["gate.raw_threshold"].clone()
    thresholds[:old * planes_per_channel] = state["gate.raw_threshold"]
    state.update({"encoder.out.weight": weight, "encoder.out.bias": bias,
                  "decoder.latent_stem.weight": stem, "gate.raw_threshold": thresholds})
    if "rate_gains.log_gains" in state:
        gains = state["rate_gains.log_gains"]
        state["rate_gains.log_gains"] = torch.cat([gains, gains.new_zeros(len(gains), extra * planes_per_channel)], 1)
    return old
