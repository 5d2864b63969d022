"""Training: ``python -m invgray_cli.training.train --data ../shared/data/train --val ../shared/data/val/cbsd68``.

Random crops, the gray passed through real Pillow JPEG (random quality, sometimes
lossless) inside the loop, loss = RGB MSE + lambda x estimated bits per pixel, the
rate term warmed up so the latent cannot collapse to zero early. Seeded and
resumable: batch number i is drawn from its own generator seeded by (seed, i), so
the batches are the same whatever ``--workers`` prepares them and a resumed run
continues exactly where it stopped. Every ``--val-every`` steps the model is
measured on the validation folder through the product path (real quantisation, real
zstd bytes) and the checkpoint with the best rate-distortion score is kept as
``best.pt``. ``--time-limit`` and ``--save-every`` bound a run by wall time (a lent
GPU's minutes): the learning-rate schedule then ends at whichever comes first, the
step count or the time limit.
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
from invgray_cli.training.validation import rd_score, validate

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


def rate_lambda(args: argparse.Namespace, step: float) -> float:
    """The rate weight (lambda) of a batch or validation at quantisation step ``step``."""
    return args.lmbda * (step / args.lmbda_pivot) ** args.lmbda_power


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m invgray_cli.training.train", description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, nargs="+", required=True,
                        help="training image folders and/or training packs (.npz, see invgray_cli.training.trainpack)")
    parser.add_argument("--val", type=Path, help="validation image folder (without it no checkpoint is "
                        "selected: last.pt only, to be scored later with python -m invgray_cli.validate)")
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
    parser.add_argument("--val-steps", type=float, nargs="+", default=(1.0, 2.0))
    parser.add_argument("--val-every", type=int, default=1000)
    parser.add_argument("--val-quality", type=int, default=90)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--threads", type=int, default=0, help="CPU threads (0: torch default)")
    parser.add_argument("--workers", type=int, default=0,
                        help="processes preparing batches beside the training loop (0: in the loop)")
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
    args = parser.parse_args(argv)

    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    args.out.mkdir(parents=True, exist_ok=True)
    device = torch.device(args.device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # fixed crop size: let cuDNN pick its fastest kernels once

    model = InvGrayNet(NetworkConfig(latent_channels=args.latent_channels, decoder_blocks=args.decoder_blocks,
                                     rate_gains=args.rate_gains)).to(device)
    if args.init and not (args.resume and (args.out / "last.pt").exists()):
        grow_from(model, args.init)
    if args.no_sep:
        model.gate.freeze_threshold(0.5)
    if args.bf16:
        model.mixed_precision(torch.bfloat16)
    tables = None
    if args.rate == "tables":
        initial = EntropyTables.load(args.tables).widened(model.cfg.symbol_planes) if args.tables else None
        tables = LearnedTables(initial, model.cfg.symbol_planes, model.cfg.transform_block ** 2).to(device)
    parameters = list(model.parameters()) + (list(tables.parameters()) if tables is not None else [])
    optimiser = torch.optim.Adam(parameters, lr=args.lr)
    step, best, trained_before = 0, math.inf, 0.0
    last = args.out / "last.pt"
    if args.resume and last.exists():
        step, best, trained_before = resume_from(last, model, optimiser, tables, device)
        print(f"resumed from {last} at step {step} after {trained_before:.0f}s of training", flush=True)

    t0 = time.time()
    sampler = CropSampler.from_sources(args.data, args.crop)
    val_images = [load_rgb(p) for p in list_images([args.val])] if args.val else []
    print(f"{len(sampler.images)} training images, {len(val_images)} validation images, "
          f"loaded in {time.time() - t0:.0f}s; {model.multiply_adds_per_pixel():.0f} MAC/pixel; "
          f"device {device}, {args.workers} loader workers", flush=True)

    log = (args.out / "log.jsonl").open("a")
    model.train()
    window: list[dict[str, float]] = []
    loss_ema: float | None = None
    skipped = consecutive_spikes = 0
    t_start = last_save = window_start = time.time()
    step_at_window = step

    def elapsed() -> float:
        return time.time() - t_start

    def trained() -> float:
        return trained_before + elapsed()

    def save_last() -> None:
        nonlocal last_save
        save_checkpoint(last, model, optimiser, step, best, args, tables, trained())
        if tables is not None:
            frozen = args.out / "tables.entropy.npz"
            tables.freeze().save(frozen.with_name(frozen.name + ".part"))
            frozen.with_name(frozen.name + ".part").replace(frozen)
        last_save = time.time()

    def run_validation() -> None:
        nonlocal best
        scores = []
        # real bytes of the tables as they would be frozen now
        coder = tables.freeze().coded_size if tables is not None else None
        for q_step in args.val_steps:
            metrics = validate(model, val_images, args.val_quality, q_step, coder)
            scores.append(rd_score(metrics, rate_lambda(args, q_step)))
            print(f"val step {step} q_step {q_step:g} psnr {metrics['val_psnr']:.3f} bpp {metrics['val_bpp']:.4f} "
                  f"proxy_bpp {metrics['val_proxy_bpp']:.4f}", flush=True)
            log.write(json.dumps({"step": step, "q_step": q_step, **metrics, "time": trained()}) + "\n")
        score = float(np.mean(scores))
        improved = score < best
        best = min(best, score)
        print(f"val step {step} score {score:.3e}{' best' if improved else ''}", flush=True)
        log.write(json.dumps({"step": step, "score": score}) + "\n")
        log.flush()
        save_last()
        if improved:
            save_checkpoint(args.out / "best.pt", model, optimiser, step, best, args, tables, trained())

    if args.time_limit and trained_before >= args.time_limit:
        print(f"{last} has trained {trained_before:.0f}s of --time-limit {args.time_limit:g}s: the run is complete",
              flush=True)
        return
    out_of_time = False
    with StopRequest() as stop_request:
        for rgb, gray, q_step in batch_loader(sampler, step, args, device):
            progress = step / args.steps
            if args.time_limit:
                progress = max(progress, trained() / args.time_limit)
            lr = args.lr * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))
            for group in optimiser.param_groups:
                group["lr"] = lr
            rgb, gray = rgb.to(device, non_blocking=True), gray.to(device, non_blocking=True)
            out = model(rgb, gray, q_step)
            mse = torch.mean((out["rgb"] - rgb) ** 2)
            if tables is not None:
                bits = tables.code_length(out["gated"], q_step, out["gate"], out["latent"])
            else:
                bits = estimated_bits(out["gated"], out["gate"])
            bpp = bits.mean() / (rgb.shape[2] * rgb.shape[3])
            rate_weight = rate_lambda(args, q_step) * min(1.0, step / max(1, args.warmup))
            loss = mse + rate_weight * bpp
            step += 1
            loss_value = loss.item()
            # A single exploding batch once wrecked a run (measured: train PSNR 31.9 -> -1.5 at
            # step 10,000, never fully recovered); skip any batch far above the running loss.
            spike = loss_ema is not None and loss_value > args.spike_factor * loss_ema
            if spike and consecutive_spikes >= SPIKE_RUN:
                # not a spike but the new level (the rate weight ramping up, a coarser step range):
                # accept it, or every later batch would be skipped too (measured: all from step 680)
                print(f"step {step}: {SPIKE_RUN} batches in a row above {args.spike_factor:g}x the running loss; "
                      f"taking {loss_value:.3e} as the new running loss", flush=True)
                loss_ema, spike = loss_value, False
            if not math.isfinite(loss_value) or spike:
                skipped += 1
                consecutive_spikes += 1
                print(f"step {step}: skipped a batch with loss {loss_value:.3e} (running {loss_ema:.3e})", flush=True)
            else:
                consecutive_spikes = 0
                loss_ema = loss_value if loss_ema is None else 0.98 * loss_ema + 0.02 * loss_value
                optimiser.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
                optimiser.step()
                window.append({"psnr": -10 * math.log10(max(mse.item(), 1e-12)), "bpp": bpp.item(),
                               "nonzero": out["gate"].mean().item()})
            run_over = bool(args.time_limit) and trained() >= args.time_limit
            stop_step = bool(args.stop_at_step) and step >= args.stop_at_step
            interrupted = stop_request.signal is not None
            out_of_time = (run_over or stop_step or interrupted
                           or (bool(args.stop_after) and elapsed() >= args.stop_after))
            if window and (step % 100 == 0 or out_of_time or step == args.steps):
                mean = {k: float(np.mean([w[k] for w in window])) for k in window[0]}
                crops_per_second = (step - step_at_window) * args.batch / max(1e-9, time.time() - window_start)
                window.clear()
                window_start, step_at_window = time.time(), step
                print(f"step {step} lr {lr:.2e} train_psnr {mean['psnr']:.2f} {args.rate}_bpp {mean['bpp']:.4f} "
                      f"nonzero {mean['nonzero']:.3f} {crops_per_second:.0f} crops/s ({trained():.0f}s)", flush=True)
                log.write(json.dumps({"step": step, "lr": lr, **mean, "crops_per_s": crops_per_second,
                                      "time": trained()}) + "\n")
                log.flush()
            if step % args.val_every == 0 or step == args.steps or out_of_time:
                if val_images:
                    run_validation()
                else:
                    save_last()
            elif args.save_every and time.time() - last_save >= args.save_every:
                save_last()
            if out_of_time:
                why = (f"time limit {args.time_limit:g}s reached" if run_over
                       else f"--stop-at-step {args.stop_at_step} reached" if stop_step
                       else f"{stop_request.name} received" if interrupted
                       else f"--stop-after {args.stop_after:g}s reached")
                print(f"{why} at step {step} ({trained():.0f}s trained); saved {last}", flush=True)
                break
    if stop_request.signal is not None:
        raise SystemExit(128 + stop_request.signal)  # as a signal's default would: a shell loop stops too


if __name__ == "__main__":
    main()
