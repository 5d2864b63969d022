"""Training: ``python -m invgray_cli.training.train --data ../shared/data/train --val ../shared/data/val/cbsd68``.

Random crops, the gray passed through real Pillow JPEG (random quality, sometimes
lossless) inside the loop, loss = RGB MSE + lambda x estimated bits per pixel, the
rate term warmed up so the latent cannot collapse to zero early. Seeded and
resumable: batch number i is drawn from its own generator seeded by (seed, i), so
the batches are the same whatever ``--workers`` prepares them and a resumed run
continues exactly where it stopped. Every ``--val-every`` steps the model is
measured on the validation folder through the product path (real quantisation, the
real bytes of the residual's coder: format 1's zstd packing, or with ``--rate tables``
format 2's range coder with the tables as they would be frozen then) and the
checkpoint with the best rate-distortion score is kept as ``best.pt``.
``--time-limit`` and ``--save-every`` bound a run by wall time (a lent GPU's minutes):
the learning-rate schedule then ends at whichever comes first, the step count or the
time limit.
"""

from __future__ import annotations

import argparse
import json
import math
import signal
import threading
import time
from pathlib import Path

import numpy as np
import torch

from invgray_cli.format.entropy import EntropyTables
from invgray_cli.model.code_length import LearnedTables, estimated_bits
from invgray_cli.model.network import InvGrayNet, NetworkConfig
from invgray_cli.training.checkpoints import grow_from, resume_from, save_checkpoint
from invgray_cli.training.data import CropSampler, batch_loader, list_images, load_rgb
from invgray_cli.training.validation import rd_score, table_coder, validate

SPIKE_RUN = 20  # consecutive "exploding" batches after which the loss level is taken as real


class StopRequest:
    """Ctrl-C (SIGINT) or SIGTERM (a scheduler's or a lease's end) asks the training loop to
    stop after the step it is on, checkpoint saved, as ``--stop-after`` does, so ``--resume``
    loses nothing; a second Ctrl-C stops at once, unsaved. Signals reach only the main thread,
    so elsewhere (training called from a worker thread) this does nothing."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self) -> None:
        self.signal: int | None = None
        self._previous: dict[int, object] = {}

    @property
    def name(self) -> str:
        return signal.Signals(self.signal).name if self.signal is not None else ""

    def __enter__(self) -> StopRequest:
        if threading.current_thread() is threading.main_thread():
            self._previous = {sig: signal.signal(sig, self._handle) for sig in self.SIGNALS}
        return self

    def __exit__(self, *exc_info: object) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)

    def _handle(self, signum: int, frame: object) -> None:
        if self.signal is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.signal = signum
        print(f"{self.name}: stopping after this step with the checkpoint saved "
              "(Ctrl-C again stops at once, unsaved)", flush=True)


def _add_data_arguments(parser: argparse.ArgumentParser) -> None:
    """The photos, the output folder, and the loss and its optimisation."""
    parser.add_argument("--data", type=Path, nargs="+", required=True,
                        help="training image folders and/or training packs (.npz, see invgray_cli.training.trainpack)")
    parser.add_argument("--val", type=Path, help="validation image folder (without it no checkpoint is "
                        "selected: last.pt only, to be scored later with python -m invgray_cli.training.validation)")
    parser.add_argument("--out", type=Path, default=Path("runs/default"))
    parser.add_argument("--steps", type=int, default=20000)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--crop", type=int, default=128)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--lmbda", type=float, default=2e-3, help="weight of bits per pixel against RGB MSE")
    parser.add_argument("--warmup", type=int, default=1000, help="steps over which the rate weight ramps up")
    parser.add_argument("--quality", type=int, nargs=2, default=(50, 100), metavar=("MIN", "MAX"))
    parser.add_argument("--lossless-fraction", type=float, default=0.15)
    parser.add_argument("--step-range", type=float, nargs=2, default=(0.5, 3.0), metavar=("MIN", "MAX"),
                        help="quantisation steps drawn log-uniformly per batch, so that one model "
                             "serves every rate level")


def _add_validation_arguments(parser: argparse.ArgumentParser) -> None:
    """Checkpoint selection on the validation folder, seeds and the machine."""
    parser.add_argument("--val-steps", type=float, nargs="+", default=(1.0, 2.0))
    parser.add_argument("--val-every", type=int, default=1000)
    parser.add_argument("--val-quality", type=int, default=90)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--threads", type=int, default=0, help="CPU threads (0: torch default)")
    parser.add_argument("--workers", type=int, default=0,
                        help="processes preparing batches beside the training loop (0: in the loop)")


def _add_stopping_arguments(parser: argparse.ArgumentParser) -> None:
    """Bounds of a call and of a run, resuming and starting from weights."""
    parser.add_argument("--time-limit", type=float, default=0.0, metavar="SECONDS",
                        help="the run's training time, counted over every --resume'd call (0: no limit): "
                             "the learning rate decays to zero by this time or by --steps, whichever "
                             "comes first, and training stops there, checkpoint saved")
    parser.add_argument("--stop-after", type=float, default=0.0, metavar="SECONDS",
                        help="this call stops after this much training time, checkpoint saved, without "
                             "ending the run: a later --resume goes on along the same schedule (a run "
                             "longer than one session or device lease)")
    parser.add_argument("--stop-at-step", type=int, default=0, metavar="STEP",
                        help="this call stops at this step, checkpoint saved, like --stop-after (paired "
                             "comparisons of runs on the same schedule)")
    parser.add_argument("--save-every", type=float, default=0.0, metavar="SECONDS",
                        help="also save last.pt this often (0: at validations and at the end only)")
    parser.add_argument("--resume", action="store_true", help="continue from OUT/last.pt")
    parser.add_argument("--init", type=Path, help="start from these weights (a training checkpoint or a bundled "
                        "models/*.pt; fresh optimiser and schedule); layers it lacks start as identities "
                        "(see --decoder-blocks)")


def _add_network_arguments(parser: argparse.ArgumentParser) -> None:
    """The network's shape and its rate term."""
    parser.add_argument("--latent-channels", type=int, default=NetworkConfig.latent_channels,
                        help="channels of the residual's latent (each is transform-block^2 symbol planes); "
                             "--tables made for fewer start the extra planes from the last channel's")
    parser.add_argument("--decoder-blocks", type=int, default=NetworkConfig.decoder_blocks,
                        help="residual blocks at 1/4 resolution in the decoder (at most 8)")
    parser.add_argument("--no-sep", action="store_true",
                        help="ablation: freeze every SEP threshold at 0.5 step, i.e. plain rounding "
                             "with no learned dead zone (same architecture and rate term)")
    parser.add_argument("--rate", choices=("proxy", "tables"), default="proxy",
                        help="rate term: 'proxy' (format 1's zstd-calibrated estimate) or 'tables' (the "
                             "code length of format 2's context tables, learned with the network and frozen "
                             "into OUT/tables.entropy.npz at every save)")
    parser.add_argument("--tables", type=Path, help="with --rate tables: start the tables from this .entropy.npz")
    parser.add_argument("--rate-gains", action="store_true",
                        help="the encoder knows the rate level: a learned step per symbol plane and level "
                             "(invgray_cli/model/rate_gains.py); use with --lmbda-power")
    parser.add_argument("--lmbda-power", type=float, default=0.0,
                        help="rate weight of a batch at step s: lmbda * (s / --lmbda-pivot) ** power; 0 keeps "
                             "one weight for all steps (invgray-v1); 2 follows a quantiser's own slope "
                             "(distortion grows with the square of the step), so each level trains as its "
                             "own operating point")
    parser.add_argument("--lmbda-pivot", type=float, default=2.0, help="the step at which the rate weight is --lmbda")
    parser.add_argument("--bf16", action="store_true",
                        help="run the network's convolution stacks in bfloat16 (autocast; weights, latent, "
                             "quantiser, rate and colour reconstruction stay float32): 1.5x faster training "
                             "on a CPU with AVX-512 BF16")
    parser.add_argument("--spike-factor", type=float, default=5.0,
                        help="skip batches whose loss exceeds this multiple of the running loss")


def parse_arguments(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m invgray_cli.training.train", description=__doc__.split("\n\n")[0])
    _add_data_arguments(parser)
    _add_validation_arguments(parser)
    _add_stopping_arguments(parser)
    _add_network_arguments(parser)
    return parser.parse_args(argv)


def prepare_process(args: argparse.Namespace) -> torch.device:
    """Threads, the torch seed, the output folder; the device to train on."""
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    args.out.mkdir(parents=True, exist_ok=True)
    device = torch.device(args.device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # fixed crop size: let cuDNN pick its fastest kernels once
    return device


def build_network(args: argparse.Namespace, device: torch.device) -> tuple[InvGrayNet, LearnedTables | None]:
    """The network to train (grown from ``--init`` unless a run is resumed) and, with
    ``--rate tables``, the learned entropy tables that are its rate term."""
    model = InvGrayNet(NetworkConfig(latent_channels=args.latent_channels, decoder_blocks=args.decoder_blocks,
                                     rate_gains=args.rate_gains)).to(device)
    if args.init and not (args.resume and (args.out / "last.pt").exists()):
        grow_from(model, args.init)
    if args.no_sep:
        model.gate.freeze_threshold(0.5)
    if args.bf16:
        model.mixed_precision(torch.bfloat16)
    if args.rate != "tables":
        return model, None
    initial = EntropyTables.load(args.tables).widened(model.cfg.symbol_planes) if args.tables else None
    return model, LearnedTables(initial, model.cfg.symbol_planes, model.cfg.transform_block ** 2).to(device)


def rate_lambda(args: argparse.Namespace, step: float) -> float:
    """The rate weight (lambda) of a batch or validation at quantisation step ``step``."""
    return args.lmbda * (step / args.lmbda_pivot) ** args.lmbda_power


class TrainingRun:
    """One call of the training command: the network, its rate term and optimiser (resumed
    from ``OUT/last.pt`` with ``--resume``), the data, and the loop's counters."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.device = prepare_process(args)
        self.model, self.tables = self.build_network()
        self.optimiser = self.build_optimiser()
        self.step, self.best, self.trained_before = 0, math.inf, 0.0
        self.last = args.out / "last.pt"
        if args.resume and self.last.exists():
            self.step, self.best, self.trained_before = resume_from(self.last, self.model, self.optimiser,
                                                                    self.tables, self.device)
            print(f"resumed from {self.last} at step {self.step} after {self.trained_before:.0f}s of training",
                  flush=True)
        t0 = time.time()
        self.sampler = CropSampler.from_sources(args.data, args.crop)
        self.val_images = [load_rgb(p) for p in list_images([args.val])] if args.val else []
        print(f"{len(self.sampler.images)} training images, {len(self.val_images)} validation images, "
              f"loaded in {time.time() - t0:.0f}s; {self.model.multiply_adds_per_pixel():.0f} MAC/pixel; "
              f"device {self.device}, {args.workers} loader workers", flush=True)
        self.log = (args.out / "log.jsonl").open("a")
        self.model.train()
        self.window: list[dict[str, float]] = []
        self.loss_ema: float | None = None
        self.skipped = self.consecutive_spikes = 0
        self.lr = args.lr
        self.t_start = self.last_save = self.window_start = time.time()
        self.step_at_window = self.step

    def build_optimiser(self) -> torch.optim.Optimizer:
        """Adam over the network's and the tables' parameters (a subclass may group them)."""
        parameters = list(self.model.parameters()) + (list(self.tables.parameters()) if self.tables is not None else [])
        return torch.optim.Adam(parameters, lr=self.args.lr)

    def forward(self, rgb: torch.Tensor, gray: torch.Tensor, q_step: float) -> dict[str, torch.Tensor]:
        """The network's training pass (a subclass may run it without gradients)."""
        return self.model(rgb, gray, q_step)

    def build_network(self) -> tuple[torch.nn.Module, torch.nn.Module | None]:
        """The network to train and its learned rate term (a subclass trains another family)."""
        return build_network(self.args, self.device)

    def elapsed(self) -> float:
        return time.time() - self.t_start

    def trained(self) -> float:
        return self.trained_before + self.elapsed()

    def complete(self) -> bool:
        """Whether an earlier call already trained the whole ``--time-limit``."""
        if self.args.time_limit and self.trained_before >= self.args.time_limit:
            print(f"{self.last} has trained {self.trained_before:.0f}s of --time-limit {self.args.time_limit:g}s: "
                  "the run is complete", flush=True)
            return True
        return False

    def loop(self, stop_request: StopRequest) -> None:
        """Step until ``--steps``, a time limit, ``--stop-at-step`` or a signal; saved at the end."""
        args = self.args
        for rgb, gray, q_step in batch_loader(self.sampler, self.step, args, self.device):
            self.set_learning_rate()
            self.train_step(rgb, gray, q_step)
            why = self.stop_reason(stop_request)
            self.report(out_of_time=why is not None)
            if self.step % args.val_every == 0 or self.step == args.steps or why is not None:
                if self.val_images:
                    self.validate_and_save()
                else:
                    self.save_last()
            elif args.save_every and time.time() - self.last_save >= args.save_every:
                self.save_last()
            if why is not None:
                print(f"{why} at step {self.step} ({self.trained():.0f}s trained); saved {self.last}", flush=True)
                break

    def set_learning_rate(self) -> None:
        """One cosine from --lr to zero over --steps or --time-limit, whichever ends first."""
        progress = self.step / self.args.steps
        if self.args.time_limit:
            progress = max(progress, self.trained() / self.args.time_limit)
        self.lr = self.args.lr * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))
        for group in self.optimiser.param_groups:
            group["lr"] = self.lr

    def train_step(self, rgb: torch.Tensor, gray: torch.Tensor, q_step: float) -> None:
        """Loss = RGB MSE + lambda x bits per pixel (lambda warmed up); one optimiser step
        unless the batch is skipped as a spike."""
        args = self.args
        rgb, gray = rgb.to(self.device, non_blocking=True), gray.to(self.device, non_blocking=True)
        out = self.forward(rgb, gray, q_step)
        mse = torch.mean((out["rgb"] - rgb) ** 2)
        bits = self.rate_bits(out, gray, q_step)
        bpp = bits.mean() / (rgb.shape[2] * rgb.shape[3])
        rate_weight = rate_lambda(args, q_step) * min(1.0, self.step / max(1, args.warmup))
        loss = mse + rate_weight * bpp
        self.step += 1
        if not self.accept(loss.item()):
            return
        self.optimiser.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), 1.0)
        self.optimiser.step()
        self.window.append({"psnr": -10 * math.log10(max(mse.item(), 1e-12)), "bpp": bpp.item(),
                            "nonzero": out["gate"].mean().item()})

    def rate_bits(self, out: dict[str, torch.Tensor], gray: torch.Tensor, q_step: float) -> torch.Tensor:
        """(N,) bits of each crop's symbols under the rate term (``gray``: for a family whose
        probability model reads the decoded gray)."""
        if self.tables is not None:
            return self.tables.code_length(out["gated"], q_step, out["gate"], out["latent"])
        return estimated_bits(out["gated"], out["gate"])

    def accept(self, loss_value: float) -> bool:
        """False for a batch to skip: a non-finite loss, or one far above the running loss
        (a single exploding batch can wreck a run; docs/RESULTS.md). SPIKE_RUN such batches
        in a row are the new level, not spikes (the rate weight ramping up, a coarser step
        range): accepted, or every later batch would be skipped too."""
        spike = self.loss_ema is not None and loss_value > self.args.spike_factor * self.loss_ema
        if spike and self.consecutive_spikes >= SPIKE_RUN:
            print(f"step {self.step}: {SPIKE_RUN} batches in a row above {self.args.spike_factor:g}x the running "
                  f"loss; taking {loss_value:.3e} as the new running loss", flush=True)
            self.loss_ema, spike = loss_value, False
        if not math.isfinite(loss_value) or spike:
            self.skipped += 1
            self.consecutive_spikes += 1
            print(f"step {self.step}: skipped a batch with loss {loss_value:.3e} (running {self.loss_ema:.3e})",
                  flush=True)
            return False
        self.consecutive_spikes = 0
        self.loss_ema = loss_value if self.loss_ema is None else 0.98 * self.loss_ema + 0.02 * loss_value
        return True

    def stop_reason(self, stop_request: StopRequest) -> str | None:
        """Why this call stops after the step just taken (None: it goes on)."""
        args = self.args
        if args.time_limit and self.trained() >= args.time_limit:
            return f"time limit {args.time_limit:g}s reached"
        if args.stop_at_step and self.step >= args.stop_at_step:
            return f"--stop-at-step {args.stop_at_step} reached"
        if stop_request.signal is not None:
            return f"{stop_request.name} received"
        if args.stop_after and self.elapsed() >= args.stop_after:
            return f"--stop-after {args.stop_after:g}s reached"
        return None

    def report(self, out_of_time: bool) -> None:
        """Every 100 steps (and at the end) the window's mean training figures, printed and logged."""
        if not self.window or not (self.step % 100 == 0 or out_of_time or self.step == self.args.steps):
            return
        mean = {k: float(np.mean([w[k] for w in self.window])) for k in self.window[0]}
        crops_per_second = ((self.step - self.step_at_window) * self.args.batch
                            / max(1e-9, time.time() - self.window_start))
        self.window.clear()
        self.window_start, self.step_at_window = time.time(), self.step
        print(f"step {self.step} lr {self.lr:.2e} train_psnr {mean['psnr']:.2f} {self.args.rate}_bpp "
              f"{mean['bpp']:.4f} nonzero {mean['nonzero']:.3f} {crops_per_second:.0f} crops/s "
              f"({self.trained():.0f}s)", flush=True)
        self.log.write(json.dumps({"step": self.step, "lr": self.lr, **mean, "crops_per_s": crops_per_second,
                                   "time": self.trained()}) + "\n")
        self.log.flush()

    def save_last(self) -> None:
        """``last.pt`` and, with learned tables, ``tables.entropy.npz`` frozen from them."""
        save_checkpoint(self.last, self.model, self.optimiser, self.step, self.best, self.args, self.tables,
                        self.trained())
        if self.tables is not None:
            frozen = self.args.out / "tables.entropy.npz"
            self.tables.freeze().save(frozen.with_name(frozen.name + ".part"))
            frozen.with_name(frozen.name + ".part").replace(frozen)
        self.last_save = time.time()

    def validate_and_save(self) -> None:
        """Score the network on the product path at each ``--val-steps``; save ``last.pt``,
        and ``best.pt`` when the score is the run's best."""
        args, scores = self.args, []
        # real bytes of the tables as they would be frozen now
        coder = table_coder(self.tables.freeze()) if self.tables is not None else None
        for q_step in args.val_steps:
            metrics = validate(self.model, self.val_images, args.val_quality, q_step, coder)
            scores.append(rd_score(metrics, rate_lambda(args, q_step)))
            print(f"val step {self.step} q_step {q_step:g} psnr {metrics['val_psnr']:.3f} "
                  f"bpp {metrics['val_bpp']:.4f} proxy_bpp {metrics['val_proxy_bpp']:.4f}", flush=True)
            self.log.write(json.dumps({"step": self.step, "q_step": q_step, **metrics, "time": self.trained()}) + "\n")
        score = float(np.mean(scores))
        improved = score < self.best
        self.best = min(self.best, score)
        print(f"val step {self.step} score {score:.3e}{' best' if improved else ''}", flush=True)
        self.log.write(json.dumps({"step": self.step, "score": score}) + "\n")
        self.log.flush()
        self.save_last()
        if improved:
            save_checkpoint(args.out / "best.pt", self.model, self.optimiser, self.step, self.best, args,
                            self.tables, self.trained())


def main(argv: list[str] | None = None) -> None:
    run = TrainingRun(parse_arguments(argv))
    if run.complete():
        return
    with StopRequest() as stop_request:
        run.loop(stop_request)
    if stop_request.signal is not None:
        raise SystemExit(128 + stop_request.signal)  # as a signal's default would: a shell loop stops too


if __name__ == "__main__":
    main()
