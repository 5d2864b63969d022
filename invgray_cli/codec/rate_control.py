"""Targets instead of knobs: the quantisation step that meets a quality or size target.

``--target-psnr DB`` asks for the smallest residual whose restored RGB PSNR, measured on
the real decode, reaches DB; ``--max-bytes N`` for the best residual of at most N bytes.
The encoder's latent does not depend on the step, so it is computed once; each try then
quantises it at one step, packs the real residual file and (for a PSNR target) decodes
it with the real decoder. The step is searched on log(step) within :data:`STEP_RANGE`: regula
falsi (Illinois) once the target is bracketed,
until the reached PSNR is within 0.05 dB above the target (or the size within 1 %
under the limit), or the bracket is narrower than 1 % in step.

Past the network's finest step the search goes on through the refinement layer
(:mod:`invgray_cli.codec.refinement`), taking the cheaper of its two kinds: chroma
corrections on the network's colour at its ``high`` level, transform-coded in steps from
64 half levels down to 1 (up to the gray's own bound), or corrections of R, G and B on
the gray, every channel within K, K from 127 down to 0 (the exact original). So a PSNR
target is always reachable, and a byte budget is used up to the exact original.

Unreachable targets (a byte budget under the smallest residual) follow cwebp (``-psnr``, ``-size``): the closest achievable result
is written (the finest step for a PSNR target, the coarsest for a size target), the
file counts as done (exit status 0), and the result says ``met=False`` so that the CLI
prints a warning and ``--json`` reports ``"target_met": false``.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image

from invgray_cli.codec import Encoded, Prepared, decode_photo, prepare
from invgray_cli.codec.encoding import Refinement
from invgray_cli.codec.refinement import SPACE_CHROMA, SPACE_RGB, encode_chroma, encode_exact
from invgray_cli.engines.engine import Engine, engine_for
from invgray_cli.engines.registry import bundled_spec, model_spec
from invgray_cli.format.container import CONDITIONAL, RANGE_CODED
from invgray_cli.engines.tiling import quantise
from invgray_cli.imaging.gray import GrayFormat
from invgray_cli.imaging.images import Photo
from invgray_cli.imaging.metrics import psnr

if TYPE_CHECKING:
    import torch

    from invgray_cli.model.network import InvGrayNet

# Steps searched: from the smallest step invgray-v1 trained with (finer steps still grow
# the residual, but the network never learnt to use them, and the PSNR saturates), to
# where the residual is little more than its header.
STEP_RANGE = (0.5, 50.0)
STEP_TOLERANCE = 0.01  # stop when the bracket's steps differ by less than 1 %
START_STEP = 5.325  # invgray-v1's default level: where a search starts
MAX_TRIES = 16
# Typical slopes on log(step), for first guesses only (medians over 12 CBSD68 validation
# photos between steps 2 and 8; the search converges whatever they are):
PSNR_SLOPE = 2.5  # dB lost per unit of log(step)
BYTES_SLOPE = 1.0  # log(bytes) lost per unit of log(step)
PSNR_CLOSE_ENOUGH = 0.05  # dB above the target at which a PSNR search stops
BYTES_CLOSE_ENOUGH = math.log(1 / 0.99)  # within 1 % under the size limit


@dataclass
class Trial:
    """One step tried: the real files, and the restored PSNR once measured."""

    step: float
    encoded: Encoded
    psnr: float | None = None

    @property
    def residual_bytes(self) -> int:
        return len(self.encoded.residual)


@dataclass
class TargetResult:
    encoded: Encoded
    step: float
    psnr: float  # restored RGB PSNR against the photo, on the real decode
    residual_bytes: int
    met: bool
    tries: int
    seconds: float
    notes: list[str] = field(default_factory=list)


class StepTrials:
    """A photo ready to be encoded at any step: gray made, latent computed once."""

    def __init__(self, prepared: Prepared, engine: Engine) -> None:
        self.prepared, self.engine = prepared, engine
        self.reference = prepared.photo.rgb
        self.monochrome = prepared.photo.is_gray
        if not self.monochrome:
            self.latent = engine.latent(self.reference, prepared.decoded_gray)
            self.thresholds = engine.thresholds()
        self.trials: dict[float, Trial] = {}

    def at(self, step: float, measure: bool = True) -> Trial:
        """The files at ``step`` (rounded to the float32 the residual stores) and, with
        ``measure``, the PSNR of their real decode."""
        step = float(np.float32(step))
        trial = self.trials.get(step)
        if trial is None:
            symbols = None if self.monochrome else quantise(self.latent, self.engine.plane_steps(step), self.thresholds)
            trial = self.trials[step] = Trial(step, self.prepared.encoded(self.engine, step, symbols))
        if measure and trial.psnr is None:
            restored = decode_photo(trial.encoded.gray, trial.encoded.residual, model=self.engine).rgb
            trial.psnr = psnr(restored, self.reference)
        return trial


CHROMA_STEPS = (64, 1)  # the chroma layer's steps, coarse to fine, in half levels
MAX_ERRORS = (127, 0)  # the RGB layer's bounds, coarse to fine


CHROMA_BASE_LEVEL = "high"  # the network's level under a chroma layer: a finer one buys less than the layer


class RefinementTrials:
    """The refinement layers past the network's finest step: a chroma layer of step ``d``
    (:meth:`chroma`) on the model's ``high`` level, or an RGB layer within ``k``
    (:meth:`rgb`), each measured on the pixels a decoder restores (the encoder computes
    them exactly)."""

    def __init__(self, trials: StepTrials) -> None:
        self.trials = trials
        base_step = model_spec(trials.engine.model_id).level_step(CHROMA_BASE_LEVEL)
        self.base = trials.at(base_step, measure=False)
        self.symbols = quantise(trials.latent, trials.engine.plane_steps(self.base.step), trials.thresholds)
        self.prediction: np.ndarray | None = None
        self.done: dict[tuple[int, int], Trial] = {}

    def chroma(self, step: int) -> Trial:
        key = (SPACE_CHROMA, step)
        if key not in self.done:
            prepared = self.trials.prepared
            if self.prediction is None:
                self.prediction = self.trials.engine.synthesise(prepared.decoded_gray, self.symbols, self.base.step)
            payload, restored = encode_chroma(prepared.photo.rgb, prepared.decoded_gray, self.prediction, step)
            layer = Refinement(SPACE_CHROMA, step, payload, restored)
            self.done[key] = self._trial(prepared.encoded(self.trials.engine, self.base.step, self.symbols, layer),
                                         restored)
        return self.done[key]

    def rgb(self, max_error: int) -> Trial:
        key = (SPACE_RGB, max_error)
        if key not in self.done:
            prepared = self.trials.prepared
            payload, step, restored = encode_exact(prepared.photo.rgb, prepared.decoded_gray, max_error)
            layer = Refinement(SPACE_RGB, step, payload, restored)
            self.done[key] = self._trial(prepared.encoded(self.trials.engine, 1.0, None, layer), restored)
        return self.done[key]

    def _trial(self, encoded: Encoded, restored: np.ndarray) -> Trial:
        return Trial(encoded.step, encoded, psnr(restored, self.trials.reference))

    def search(self, target_psnr: float | None, max_bytes: int | None) -> Trial | None:
        """For a PSNR target: the smallest residual meeting it, of each layer's coarsest
        setting that does (there is always one: the exact original). For a byte budget:
        the highest PSNR within it, of each layer's finest setting that fits (None when
        nothing fits)."""
        candidates = [found for found in (self._search_layer(self.chroma, CHROMA_STEPS, target_psnr, max_bytes),
                                          self._search_layer(self.rgb, MAX_ERRORS, target_psnr, max_bytes))
                      if found is not None]
        if not candidates:
            return None
        if target_psnr is not None:
            return min(candidates, key=lambda trial: trial.residual_bytes)
        return max(candidates, key=lambda trial: trial.psnr)

    @staticmethod
    def _search_layer(make: Callable[[int], Trial], settings: tuple[int, int], target_psnr: float | None,
                      max_bytes: int | None) -> Trial | None:
        """Bisect one layer's integer setting (quality falls and size shrinks from ``fine``
        to ``coarse``) for the coarsest meeting the PSNR target or the finest within budget."""
        coarse, fine = settings
        if target_psnr is not None:
            if make(fine).psnr < target_psnr:
                return None
            if make(coarse).psnr >= target_psnr:
                return make(coarse)
            low, high = fine, coarse  # make(low) meets the target, make(high) does not
            while high - low > 1:
                middle = (low + high) // 2
                low, high = (middle, high) if make(middle).psnr >= target_psnr else (low, middle)
            return make(low)
        if make(coarse).residual_bytes > max_bytes:
            return None
        if make(fine).residual_bytes <= max_bytes:
            return make(fine)
        low, high = fine, coarse  # make(high) fits, make(low) does not
        while high - low > 1:
            middle = (low + high) // 2
            low, high = (low, middle) if make(middle).residual_bytes <= max_bytes else (middle, high)
        return make(high)


def _largest_feasible(score: Callable[[float], float], start: float, lower: float, upper: float, slope: float,
                      close_enough: float) -> float | None:
    """For a ``score`` that falls as x grows (feasible where it is >= 0): the largest
    feasible x found in [lower, upper], or None when even ``lower`` is infeasible.

    Outside a bracket it extrapolates with a typical ``slope``, and after two tries on
    the same side jumps to that end of the range; inside a bracket it uses the Illinois
    variant of regula falsi (kept away from the bracket's ends). It stops when a
    feasible score is within ``close_enough`` of 0, or the bracket is narrower than
    :data:`STEP_TOLERANCE`."""
    feasible: list[float] | None = None  # [x, score] with the largest feasible x so far
    infeasible: list[float] | None = None  # [x, score] with the smallest infeasible x so far
    x, one_sided, last_side = min(max(start, lower), upper), 0, None
    for _ in range(MAX_TRIES):
        value = score(x)
        side = value >= 0
        if side and (feasible is None or x > feasible[0]):
            feasible = [x, value]
        elif not side and (infeasible is None or x < infeasible[0]):
            infeasible = [x, value]
        if feasible is not None and feasible[1] <= close_enough:
            break
        if feasible is not None and infeasible is not None:
            width = infeasible[0] - feasible[0]
            if width < math.log1p(STEP_TOLERANCE):
                break
            if side == last_side:  # Illinois: the other end has stayed twice, halve its weight
                (infeasible if side else feasible)[1] /= 2
            share = min(max(feasible[1] / (feasible[1] - infeasible[1]), 0.1), 0.9)
            x = feasible[0] + share * width
        else:
            one_sided += 1
            if feasible is not None:
                if feasible[0] >= upper:
                    break
                guess = feasible[0] + max(1.5 * feasible[1] / slope, math.log1p(STEP_TOLERANCE))
                x = upper if one_sided >= 2 else min(upper, guess)
            else:
                if infeasible[0] <= lower:
                    break
                guess = infeasible[0] + 1.5 * infeasible[1] / slope
                x = lower if one_sided >= 2 else max(lower, guess)
        last_side = side
    return feasible[0] if feasible else None


def search(trials: StepTrials, target_psnr: float | None = None, max_bytes: int | None = None,
           start_step: float = START_STEP) -> tuple[Trial, bool]:
    """The trial meeting exactly one of the targets with the largest step (PSNR) or the
    smallest step (bytes), and whether it meets it; else the closest achievable one:
    the finest step for PSNR, the coarsest for bytes."""
    if (target_psnr is None) == (max_bytes is None):
        raise ValueError("give exactly one of target_psnr and max_bytes")
    low, high = math.log(STEP_RANGE[0]), math.log(STEP_RANGE[1])
    if trials.monochrome:  # no symbols: every step gives the same files
        trial = trials.at(STEP_RANGE[1])
        return trial, (trial.psnr >= target_psnr) if target_psnr is not None else trial.residual_bytes <= max_bytes
    if target_psnr is not None:  # x = log(step): PSNR falls as the step grows
        x = _largest_feasible(lambda x: trials.at(math.exp(x)).psnr - target_psnr, math.log(start_step),
                              low, high, PSNR_SLOPE, PSNR_CLOSE_ENOUGH)
        return (trials.at(math.exp(x)), True) if x is not None else (trials.at(STEP_RANGE[0]), False)
    # x = -log(step): the residual grows as the step shrinks
    x = _largest_feasible(
        lambda x: math.log(max_bytes / trials.at(math.exp(-x), measure=False).residual_bytes),
        -math.log(start_step), -high, -low, BYTES_SLOPE, BYTES_CLOSE_ENOUGH)
    return (trials.at(math.exp(-x), measure=False), True) if x is not None else \
        (trials.at(STEP_RANGE[1], measure=False), False)


def encode_to_target(image: Photo | Image.Image | np.ndarray, *, target_psnr: float | None = None,
                     max_bytes: int | None = None, quality: int | None = None, gray_format: GrayFormat = "jpg",
                     device: str | torch.device = "cpu", model: InvGrayNet | Engine | None = None,
                     keep_metadata: bool = True, effort: int = 1) -> TargetResult:
    """Encode a photo at the step that meets ``target_psnr`` (dB) or ``max_bytes``
    (residual file size); see the module's notes for unreachable targets. ``effort`` 2
    and 3: the step is searched at effort 1, then the chosen files are refined
    (:mod:`invgray_cli.codec.effort`) where that keeps the target and is no worse on the
    other side (bytes for a PSNR target, PSNR for a byte budget)."""
    from invgray_cli.codec import check_effort, check_refinable

    check_effort(effort)
    started = time.perf_counter()
    prepared = prepare(image, quality=quality, gray_format=gray_format, keep_metadata=keep_metadata)
    engine = engine_for(device=device, model=model)
    if effort != 1:
        check_refinable(engine.model_id)
    trials = StepTrials(prepared, engine)
    best, met = search(trials, target_psnr, max_bytes)
    tries = len(trials.trials)
    spec = bundled_spec(engine.model_id)
    refinable = not trials.monochrome and spec is not None and spec.format_version in (RANGE_CODED, CONDITIONAL)
    at_finest = best.step == float(np.float32(STEP_RANGE[0]))
    if refinable and ((target_psnr is not None and not met) or (max_bytes is not None and met and at_finest)):
        layers = RefinementTrials(trials)
        refined = layers.search(target_psnr, max_bytes)
        tries += len(layers.done)
        if refined is not None and (target_psnr is not None or refined.psnr > trials.at(best.step).psnr):
            best, met = refined, True
    if best.psnr is None:
        trials.at(best.step)  # measure the PSNR of the chosen files if the search did not
    if effort != 1 and not trials.monochrome and best.encoded.refinement is None:
        best = _refined_trial(trials, best, effort, device, target_psnr if met else None, max_bytes if met else None)
    notes = []
    if not met:
        if target_psnr is not None:
            notes.append(f"target {target_psnr:g} dB not reachable with this gray image: best {best.psnr:.2f} dB at "
                         f"step {best.step:.4g} (a higher gray quality or a PNG gray raises the limit)")
        else:
            notes.append(f"{max_bytes} bytes not reachable: the smallest residual is {best.residual_bytes} bytes")
    return TargetResult(best.encoded, best.step, best.psnr, best.residual_bytes, met, tries,
                        time.perf_counter() - started, notes)


def _refined_trial(trials: StepTrials, best: Trial, effort: int, device: str | torch.device,
                   target_psnr: float | None, max_bytes: int | None) -> Trial:
    """``best`` refined at its step, when the refined files still meet the target that
    ``best`` met and give no fewer dB (a byte budget) or no more bytes (a PSNR target)."""
    from invgray_cli.codec.encoding import refined_symbols

    symbols = quantise(trials.latent, trials.engine.plane_steps(best.step), trials.thresholds)
    refined = refined_symbols(trials.engine, trials.prepared, best.step, symbols, effort, device)
    if np.array_equal(refined, symbols):
        return best
    candidate = Trial(best.step, trials.prepared.encoded(trials.engine, best.step, refined))
    restored = decode_photo(candidate.encoded.gray, candidate.encoded.residual, model=trials.engine).rgb
    candidate.psnr = psnr(restored, trials.reference)
    keeps_target = (target_psnr is None or candidate.psnr >= target_psnr) and \
        (max_bytes is None or candidate.residual_bytes <= max_bytes)
    no_worse = candidate.residual_bytes <= best.residual_bytes if max_bytes is None else candidate.psnr >= best.psnr
    return candidate if keeps_target and no_worse else best
