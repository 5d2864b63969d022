"""Training invgray-v2: ``python -m invgray_cli.training.train_v2 --data TRAIN_FOLDER --val VAL_FOLDER``.

invgray-v1's network (``model/network.py``) trained from scratch on the true code length
of the gray-conditioned checkerboard prior (``model/conditional.py``, ``model/integer_prior.py``):
-log2 of the integer model's own frequencies, the prior learned with the network, its
weights and activations integer from the first step. The loop, the data, the spike guard,
the checkpoints and ``--resume`` / ``--stop-after`` / ``--save-every`` / ``--time-limit``
are ``train``'s (``invgray_cli/training/train.py``); what differs:

* the rate term is the prior's code length (``--rate`` and ``--tables`` do not apply);
* ``--schedule constant`` (the default) holds the learning rate after a linear warm-up of
  ``--lr-warmup`` steps, for a run that sessions take further in turn with ``--resume``
  (a cosine over an unknown length would decay too early); ``--schedule cosine`` is
  ``train``'s;
* validation (``--val``, every ``--val-every`` steps): RGB PSNR of the product path's
  symbols and pixels at gray ``--val-quality`` and each ``--val-steps``, and the ideal
  code length of those symbols under the integer prior (every symbol's -log2 p, escapes
  included), in bits per pixel; the best score keeps ``best.pt``;
* every save also writes ``OUT/prior.npz``, the integer prior as the coder would load it
  (``IntegerPrior.load``).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from invgray_cli.engines.torch_engine import analyse_image, synthesise_image
from invgray_cli.imaging.gray import jpeg_round_trip, luma
from invgray_cli.imaging.metrics import psnr
from invgray_cli.model.conditional import ConditionalConfig, ConditionalNet
from invgray_cli.model.integer_prior import IntegerPrior, pad_gray
from invgray_cli.model.network import NetworkConfig
from invgray_cli.training import train
from invgray_cli.training.checkpoints import grow_from, save_checkpoint
from invgray_cli.training.validation import rd_score


def parse_arguments(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m invgray_cli.training.train_v2",
                                     description=__doc__.split("\n\n")[0])
    train._add_data_arguments(parser)
    train._add_validation_arguments(parser)
    train._add_stopping_arguments(parser)
    train._add_network_arguments(parser)
    group = parser.add_argument_group("invgray-v2")
    group.add_argument("--no-gray", action="store_true",
                       help="ablation: the prior does not see the decoded gray (in-cell and checkerboard context only)")
    group.add_argument("--no-checkerboard", action="store_true", help="ablation: no anchor cells, one pass")
    group.add_argument("--hidden", type=int, default=8, help="the prior's hidden units per symbol plane")
    group.add_argument("--plane-group", type=int, default=1,
                       help="planes decoded together (each sees the groups before its own): fewer, larger "
                            "decoding steps")
    group.add_argument("--schedule", choices=("constant", "cosine"), default="constant",
                       help="learning rate: constant after --lr-warmup (runs continued across sessions), or "
                            "train's cosine to zero over --steps / --time-limit")
    group.add_argument("--lr-warmup", type=int, default=500, help="steps of linear learning-rate warm-up")
    group.add_argument("--val-images", type=int, default=0, help="validate on the first N images only (0: all)")
    group.add_argument("--init-prior", type=Path,
                       help="start the prior from this exported integer prior (NAME.prior.npz, beside the "
                            "--init weights of an exported invgray-v2 model): a run restarted from a model")
    group.add_argument("--freeze-network-steps", type=int, default=0,
                       help="train only the prior for this many steps from the run's start (a start from a "
                            "trained network: the prior learns its symbols before the network moves)")
    group.add_argument("--network-lr-scale", type=float, default=1.0,
                       help="the network's learning rate as a fraction of --lr (the prior's); 1: one group")
    group.add_argument("--init-step", type=int, default=0,
                       help="the steps the --init model was trained for: the step count goes on from there "
                            "(the learning-rate warm-up counts from the restart)")
    args = parser.parse_args(argv)
    if args.rate_gains or args.tables or args.rate != "proxy" or args.lmbda_power:
        parser.error("--rate, --tables, --rate-gains and --lmbda-power are invgray-v1's; v2's rate is its prior")
    if (args.init_prior or args.init_step) and not args.init:
        parser.error("--init-prior and --init-step go with --init (the model's network weights)")
    args.rate = "prior"  # the training log's label of the rate term
    return args


@torch.no_grad()
def validate(model: ConditionalNet, images: list[np.ndarray], quality: int, step: float,
             device: torch.device) -> dict[str, float]:
    """Mean RGB PSNR through the product path (real gray JPEG, real quantisation, the network
    in float32), the integer prior's ideal code length of the symbols in bits per pixel, and
    the share of non-zero symbols."""
    was_training = model.training
    model.eval()
    training_precision = model.mixed_precision(None)
    psnrs, bits, nonzero, count, pixels = [], 0.0, 0, 0, 0
    for rgb in images:
        gray = jpeg_round_trip(luma(rgb), quality)
        symbols = analyse_image(model.net, rgb, gray, step, device)
        restored = synthesise_image(model.net, gray, symbols, step, device)
        psnrs.append(psnr(restored, rgb))
        gray_t = torch.from_numpy(pad_gray(gray)).to(device)[None, None].float() / 255.0
        bits += float(model.prior.code_length(gray_t, torch.from_numpy(symbols).to(device)[None].float(), step)[0])
        nonzero += int(np.count_nonzero(symbols))
        count += symbols.size
        pixels += rgb.shape[0] * rgb.shape[1]
    model.train(was_training)
    model.mixed_precision(training_precision)
    return {"val_psnr": float(np.mean(psnrs)), "val_bpp": bits / pixels, "val_nonzero": nonzero / max(1, count)}


class ConditionalRun(train.TrainingRun):
    """``train``'s loop on an invgray-v2 network (module docstring)."""

    def __init__(self, args: argparse.Namespace) -> None:
        super().__init__(args)
        if args.val_images:
            self.val_images = self.val_images[:args.val_images]
        if args.init_step and self.step == 0:
            self.step = self.step_at_window = args.init_step
        print(f"invgray-v2 prior: {self.model.cfg.prior}; {sum(p.numel() for p in self.model.prior.parameters())} "
              f"parameters", flush=True)

    def build_network(self) -> tuple[ConditionalNet, None]:
        args = self.args
        cfg = ConditionalConfig.build(NetworkConfig(latent_channels=args.latent_channels,
                                                    decoder_blocks=args.decoder_blocks),
                                      hidden=args.hidden, gray=not args.no_gray, checkerboard=not args.no_checkerboard,
                                      plane_group=args.plane_group)
        model = ConditionalNet(cfg).to(self.device)
        if args.init and not (args.resume and (args.out / "last.pt").exists()):
            grow_from(model.net, args.init)
            if args.init_prior:
                model.prior.load_integer(IntegerPrior.load(args.init_prior))
                print(f"prior initialised from {args.init_prior}", flush=True)
        if args.no_sep:
            model.net.gate.freeze_threshold(0.5)
        if args.bf16:
            model.mixed_precision(torch.bfloat16)
        return model, None

    def build_optimiser(self) -> torch.optim.Optimizer:
        """One Adam group, or with ``--network-lr-scale`` two: the network's at that fraction
        of the prior's rate (a run started from a trained network moves it gently)."""
        if self.args.network_lr_scale == 1.0:
            return super().build_optimiser()
        return torch.optim.Adam([
            {"params": list(self.model.net.parameters()), "lr_scale": self.args.network_lr_scale},
            {"params": list(self.model.prior.parameters()), "lr_scale": 1.0}], lr=self.args.lr)

    def network_frozen(self) -> bool:
        return self.step < self.args.init_step + self.args.freeze_network_steps

    def forward(self, rgb: torch.Tensor, gray: torch.Tensor, q_step: float) -> dict[str, torch.Tensor]:
        if not self.network_frozen():
            return super().forward(rgb, gray, q_step)
        with torch.no_grad():  # the prior learns the network's symbols; the network does not move
            return super().forward(rgb, gray, q_step)

    def rate_bits(self, out: dict[str, torch.Tensor], gray: torch.Tensor, q_step: float) -> torch.Tensor:
        return self.model.prior.code_length(gray, out["gated"], q_step, out["gate"], out["latent"])

    def set_learning_rate(self) -> None:
        if self.args.schedule == "cosine":
            super().set_learning_rate()
        else:
            since_start = self.step - self.args.init_step
            self.lr = self.args.lr * min(1.0, (since_start + 1) / max(1, self.args.lr_warmup))
        for group in self.optimiser.param_groups:
            group["lr"] = self.lr * group.get("lr_scale", 1.0)

    def save_last(self) -> None:
        super().save_last()
        prior = self.args.out / "prior.npz"
        self.model.prior.export().save(prior.with_name(prior.name + ".part"))
        prior.with_name(prior.name + ".part").replace(prior)

    def validate_and_save(self) -> None:
        args, scores = self.args, []
        started = time.time()
        for q_step in args.val_steps:
            metrics = validate(self.model, self.val_images, args.val_quality, q_step, self.device)
            scores.append(rd_score(metrics, train.rate_lambda(args, q_step)))
            print(f"val step {self.step} q_step {q_step:g} psnr {metrics['val_psnr']:.3f} "
                  f"ideal_bpp {metrics['val_bpp']:.5f} nonzero {metrics['val_nonzero']:.4f}", flush=True)
            self.log.write(json.dumps({"step": self.step, "q_step": q_step, **metrics, "time": self.trained()}) + "\n")
        score = float(np.mean(scores))
        improved = score < self.best
        self.best = min(self.best, score)
        print(f"val step {self.step} score {score:.4e}{' best' if improved else ''} "
              f"({time.time() - started:.0f}s)", flush=True)
        self.log.write(json.dumps({"step": self.step, "score": score}) + "\n")
        self.log.flush()
        self.save_last()
        if improved:
            save_checkpoint(args.out / "best.pt", self.model, self.optimiser, self.step, self.best, args, None,
                            self.trained())


def main(argv: list[str] | None = None) -> None:
    run = ConditionalRun(parse_arguments(argv))
    if run.complete():
        return
    with train.StopRequest() as stop_request:
        run.loop(stop_request)
    if stop_request.signal is not None:
        raise SystemExit(128 + stop_request.signal)


if __name__ == "__main__":
    main()
