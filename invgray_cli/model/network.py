"""The invgray network: an encoder that writes colour into a sparse low-resolution
latent, the Sparsity Enforcing Prior (SEP) gate that zeroes most of it, and a
decoder that restores colour from the decoded gray plus that latent.

Design (see models/MODEL_CARD.md for the measured reasons):

* All convolutions run at 1/4 or 1/8 of the image resolution. The full-resolution
  gray enters the decoder losslessly through ``pixel_unshuffle`` (16 channels at 1/4
  resolution) and full-resolution outputs leave through ``pixel_shuffle``, so the
  cost per pixel stays in the tens of thousands of multiply-adds.
* Strong prior from the start: the first two latent channels carry area-averaged
  Cb/Cr (x8) plus a learned correction, and the decoder starts as bilinear chroma
  upsampling. Chroma is then refined by a gray-guided local linear model
  (``chroma = a * gray + b`` with smooth a, b, as in guided filtering) plus a
  learned full-resolution correction; the decoder may also correct the gray's JPEG
  error.
* The SEP gate is a learned per-channel dead-zone threshold trained with a
  straight-through estimator: entries below it become exactly zero, and the rate
  term (a proxy calibrated against real zstd bytes) pays only for the survivors.
* Training may run the convolution stacks in bfloat16 (:meth:`InvGrayNet.mixed_precision`,
  ``train --bf16``); the latent, the transform, the gate, the quantiser and the colour
  reconstruction stay in float32, where bfloat16's 8-bit mantissa would move symbols
  and pixels. Bundled models run in float32.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

from invgray_cli.model.colour import rgb_to_ycbcr, ycbcr_to_rgb
from invgray_cli.model.rate_gains import ANCHORS

LATENT_STRIDE = 8
FEATURE_STRIDE = 4
DECODER_DILATIONS = (1, 2, 1, 4, 1, 2, 1, 4)  # of the 1/4-resolution residual blocks, in order


@dataclass(frozen=True)
class NetworkConfig:
    latent_channels: int = 4
    transform_block: int = 4  # DCT block side, in latent cells
    encoder_width: int = 48
    decoder_width: int = 48
    latent_width: int = 64
    decoder_blocks: int = 4
    chroma_gain: float = 32.0  # latent units per unit of chroma at initialisation
    rate_gains: bool = False  # a learned step per symbol plane and rate level (invgray_cli/model/rate_gains.py)

    def to_dict(self) -> dict:
        return asdict(self)

    @property
    def symbol_planes(self) -> int:
        return self.latent_channels * self.transform_block**2

    @property
    def symbol_stride(self) -> int:
        """Image pixels per symbol cell along each axis."""
        return LATENT_STRIDE * self.transform_block


def in_conv_precision(stack: Callable[..., torch.Tensor], dtype: torch.dtype | None,
                      *inputs: torch.Tensor) -> torch.Tensor:
    """``stack(*inputs)``, under ``dtype`` autocast when one is set, returned as float32.
    Without one the call is plain, so the exported ONNX graphs stay byte for byte the same."""
    if dtype is None:
        return stack(*inputs)
    with torch.autocast(inputs[0].device.type, dtype=dtype):
        return stack(*inputs).float()


class BlockDCT(nn.Module):
    """Orthonormal 2-D DCT-II on non-overlapping ``block x block`` tiles of each latent
    channel: (N, C, h, w) -> (N, C * block^2, h / block, w / block), frequency-minor.
    Decorrelating the latent this way leaves most high-frequency symbols at zero, the
    way JPEG does for pixels."""

    def __init__(self, channels: int, block: int) -> None:
        super().__init__()
        n = torch.arange(block, dtype=torch.float64)
        basis = torch.cos(math.pi * (2 * n[None, :] + 1) * n[:, None] / (2 * block))
        basis[0] /= math.sqrt(2)
        basis *= math.sqrt(2 / block)
        kernels = torch.einsum("ui,vj->uvij", basis, basis).reshape(block * block, 1, block, block)
        self.register_buffer("kernels", kernels.float().repeat(channels, 1, 1, 1), persistent=False)
        self.channels, self.block = channels, block

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.kernels, stride=self.block, groups=self.channels)

    def inverse(self, coefficients: torch.Tensor) -> torch.Tensor:
        return F.conv_transpose2d(coefficients, self.kernels, stride=self.block, groups=self.channels)


class ResBlock(nn.Module):
    def __init__(self, channels: int, dilation: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=dilation, dilation=dilation)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv2(F.leaky_relu(self.conv1(x), 0.1))


class SparsityGate(nn.Module):
    """Sparsity Enforcing Prior layer: a learned dead zone per symbol plane.

    Forward pass is a hard mask (entries with ``|y| <= threshold`` become exactly
    zero, at training and inference alike). Backward, the value passes straight
    through (so a plane that is all zero still learns, instead of dying) and the
    threshold learns through a sigmoid relaxation of the mask, from the distortion
    it causes and from the rate term, which only pays for entries the gate keeps.
    """

    def __init__(self, channels: int, initial_threshold: float = 0.5, temperature: float = 0.1) -> None:
        super().__init__()
        raw = math.log(math.expm1(initial_threshold))
        self.raw_threshold = nn.Parameter(torch.full((channels,), raw))
        self.temperature = temperature

    def freeze_threshold(self, threshold: float) -> None:
        """Fix every threshold (0.5 is what rounding does anyway: the ablation without SEP)."""
        with torch.no_grad():
            self.raw_threshold.fill_(math.log(math.expm1(threshold)))
        self.raw_threshold.requires_grad_(False)

    def thresholds(self) -> torch.Tensor:
        return F.softplus(self.raw_threshold).view(1, -1, 1, 1)

    def forward(self, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        margin = y.abs() - self.thresholds()
        hard = (margin > 0).to(y.dtype)
        if not self.training:
            return y * hard, hard
        soft = torch.sigmoid(margin / self.temperature)
        gate = hard + soft - soft.detach()
        gated = y + (y * hard - y).detach() + y.detach() * (soft - soft.detach())
        return gated, gate


class RateGains(nn.Module):
    """Per-plane log gains at each anchor step (:mod:`invgray_cli.model.rate_gains`); zero at
    the start, so a network grown from one without them computes what it did."""

    def __init__(self, planes: int) -> None:
        super().__init__()
        self.log_gains = nn.Parameter(torch.zeros(len(ANCHORS), planes))

    def forward(self, step: torch.Tensor) -> torch.Tensor:
        """Per-plane steps (N, planes, 1, 1) for steps (N, 1, 1, 1), in float64 rounded
        once to float32 as :func:`invgray_cli.model.rate_gains.plane_steps` computes them."""
        log2_step = torch.log2(step.to(torch.float64)).flatten()
        position = log2_step.clamp(float(ANCHORS[0]), float(ANCHORS[-1])) - float(ANCHORS[0])
        index = position.floor().clamp(max=len(ANCHORS) - 2)
        fraction = (position - index).unsqueeze(1)
        gains = self.log_gains.to(torch.float64)
        log_gain = (1.0 - fraction) * gains[index.long()] + fraction * gains[index.long() + 1]
        steps = step.to(torch.float64).flatten().unsqueeze(1) * torch.exp(-log_gain)
        return steps.to(torch.float32)[:, :, None, None]


class Encoder(nn.Module):
    def __init__(self, cfg: NetworkConfig) -> None:
        super().__init__()
        w = cfg.encoder_width
        self.stem = nn.Conv2d(4 * FEATURE_STRIDE**2, w, 3, padding=1)
        self.block_quarter = ResBlock(w)
        self.down = nn.Conv2d(w, w, 4, stride=2, padding=1)
        self.blocks_eighth = nn.Sequential(ResBlock(w), ResBlock(w, dilation=2))
        self.out = nn.Conv2d(w, cfg.latent_channels, 3, padding=1)
        self.conv_dtype: torch.dtype | None = None
        # Small but non-zero: an all-zero start would leave the extra channels inside the
        # SEP dead zone, where they get (almost) no gradient and never open.
        with torch.no_grad():
            self.out.weight.mul_(0.3)
            self.out.bias.zero_()

    def forward(self, rgb: torch.Tensor, gray: torch.Tensor, chroma_gain: torch.Tensor) -> torch.Tensor:
        ycc = rgb_to_ycbcr(rgb)
        x = torch.cat([gray - 0.5, ycc[:, :1] - gray, ycc[:, 1:]], dim=1)
        y = in_conv_precision(self._convolutions, self.conv_dtype, x)
        pooled_chroma = F.avg_pool2d(ycc[:, 1:], LATENT_STRIDE) * chroma_gain
        return y + F.pad(pooled_chroma, (0, 0, 0, 0, 0, y.shape[1] - 2))

    def _convolutions(self, x: torch.Tensor) -> torch.Tensor:
        f = F.leaky_relu(self.stem(F.pixel_unshuffle(x, FEATURE_STRIDE)), 0.1)
        f = self.block_quarter(f)
        f = self.blocks_eighth(F.leaky_relu(self.down(f), 0.1))
        return self.out(f)


class Decoder(nn.Module):
    def __init__(self, cfg: NetworkConfig) -> None:
        super().__init__()
        w, lw = cfg.decoder_width, cfg.latent_width
        self.latent_stem = nn.Conv2d(cfg.latent_channels, lw, 3, padding=1)
        self.latent_blocks = nn.Sequential(ResBlock(lw), ResBlock(lw, dilation=2))
        self.latent_up = nn.Conv2d(lw, 4 * w, 3, padding=1)
        self.gray_stem = nn.Conv2d(FEATURE_STRIDE**2, w, 3, padding=1)
        self.fuse = nn.Conv2d(2 * w, w, 1)
        if not 1 <= cfg.decoder_blocks <= len(DECODER_DILATIONS):
            raise ValueError(f"decoder_blocks must be 1..{len(DECODER_DILATIONS)}, got {cfg.decoder_blocks}")
        dilations = DECODER_DILATIONS[: cfg.decoder_blocks]
        self.body = nn.Sequential(*[ResBlock(w, d) for d in dilations])
        # 4 guided-linear coefficients (a_cb, b_cb, a_cr, b_cr) + 16 sub-pixels x (dCb, dCr, dY)
        self.head = nn.Conv2d(w, 4 + 3 * FEATURE_STRIDE**2, 3, padding=1)
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)
        self.conv_dtype: torch.dtype | None = None

    def forward(self, gray: torch.Tensor, latent: torch.Tensor, chroma_gain: torch.Tensor) -> torch.Tensor:
        out = in_conv_precision(self._convolutions, self.conv_dtype, gray, latent)

        coarse_chroma = F.interpolate(latent[:, :2] / chroma_gain, scale_factor=2, mode="bilinear", align_corners=False)
        coeffs = out[:, :4] + torch.cat([torch.zeros_like(coarse_chroma[:, :1]), coarse_chroma[:, :1],
                                         torch.zeros_like(coarse_chroma[:, 1:]), coarse_chroma[:, 1:]], dim=1)
        coeffs = F.interpolate(coeffs, scale_factor=FEATURE_STRIDE, mode="bilinear", align_corners=False)
        detail = F.pixel_shuffle(out[:, 4:], FEATURE_STRIDE)
        centred = gray - 0.5
        cb = coeffs[:, 0:1] * centred + coeffs[:, 1:2] + detail[:, 0:1]
        cr = coeffs[:, 2:3] * centred + coeffs[:, 3:4] + detail[:, 1:2]
        luma = gray + detail[:, 2:3]
        return ycbcr_to_rgb(luma, cb, cr)

    def _convolutions(self, gray: torch.Tensor, latent: torch.Tensor) -> torch.Tensor:
        lat = F.leaky_relu(self.latent_stem(latent), 0.1)
        lat = self.latent_blocks(lat)
        lat = F.pixel_shuffle(self.latent_up(lat), 2)
        g = self.gray_stem(F.pixel_unshuffle(gray - 0.5, FEATURE_STRIDE))
        f = F.leaky_relu(self.fuse(F.leaky_relu(torch.cat([lat, g], dim=1), 0.1)), 0.1)
        return self.head(self.body(f))


ENCODER_ONLY = ("encoder.", "gate.")  # the tensors that only encoding uses


class InvGrayNet(nn.Module):
    """Encoder + block DCT + SEP gate + decoder. Inputs must have sides divisible by
    ``cfg.symbol_stride``."""

    def __init__(self, cfg: NetworkConfig | None = None) -> None:
        super().__init__()
        self.cfg = cfg or NetworkConfig()
        self.log_chroma_gain = nn.Parameter(torch.tensor(math.log(self.cfg.chroma_gain)))
        self.encoder = Encoder(self.cfg)
        self.transform = BlockDCT(self.cfg.latent_channels, self.cfg.transform_block)
        self.gate = SparsityGate(self.cfg.symbol_planes)
        self.decoder = Decoder(self.cfg)
        self.rate_gains = RateGains(self.cfg.symbol_planes) if self.cfg.rate_gains else None

    def mixed_precision(self, dtype: torch.dtype | None) -> torch.dtype | None:
        """Run the encoder's and decoder's convolution stacks in ``dtype`` (autocast, for
        training on hardware with fast bfloat16); None restores float32. Everything
        between the stacks stays float32. Returns the previous setting, to restore it."""
        previous = self.encoder.conv_dtype
        self.encoder.conv_dtype = self.decoder.conv_dtype = dtype
        return previous

    @property
    def chroma_gain(self) -> torch.Tensor:
        return self.log_chroma_gain.exp()

    def plane_steps(self, step: float | torch.Tensor) -> float | torch.Tensor:
        """The quantisation step of each symbol plane for rate level ``step`` (a number, or
        a tensor of one step per image (N, 1, 1, 1)): the step itself without rate gains."""
        if self.rate_gains is None:
            return step
        if not torch.is_tensor(step):
            step = torch.tensor([float(step)], device=self.rate_gains.log_gains.device).view(1, 1, 1, 1)
        return self.rate_gains(step)

    def analyse(self, rgb: torch.Tensor, gray: torch.Tensor, step: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
        """Transformed latent before rounding, already gated, in quantisation steps; plus the gate."""
        return self.gate(self.transform(self.encoder(rgb, gray, self.chroma_gain)) / self.plane_steps(step))

    def quantise(self, rgb: torch.Tensor, gray: torch.Tensor, step: float = 1.0) -> torch.Tensor:
        """Integer residual symbols (as a float tensor holding integers)."""
        gated, _ = self.analyse(rgb, gray, step)
        return torch.round(gated)

    def synthesise(self, gray: torch.Tensor, symbols: torch.Tensor, step: float = 1.0) -> torch.Tensor:
        """RGB in [0, 1] (unclamped) from decoded gray and integer symbols."""
        return self.decoder(gray, self.transform.inverse(symbols * self.plane_steps(step)), self.chroma_gain)

    def forward(self, rgb: torch.Tensor, gray: torch.Tensor, step: float = 1.0) -> dict[str, torch.Tensor]:
        latent = self.transform(self.encoder(rgb, gray, self.chroma_gain)) / self.plane_steps(step)
        gated, gate = self.gate(latent)
        symbols = gated + (torch.round(gated) - gated).detach()
        return {"rgb": self.synthesise(gray, symbols, step), "symbols": symbols, "gated": gated, "gate": gate,
                "latent": latent}

    def multiply_adds_per_pixel(self, height: int = 256, width: int = 256) -> float:
        """Counted by hooking every convolution on a probe input."""
        total = 0

        def count(module: nn.Module, inputs: tuple, output: torch.Tensor) -> None:
            nonlocal total
            kernel = module.weight.shape[1] * module.weight.shape[2] * module.weight.shape[3]
            total += output.numel() * kernel

        parameter = next(self.parameters())
        probe = {"device": parameter.device, "dtype": parameter.dtype}
        hooks = [m.register_forward_hook(count) for m in self.modules() if isinstance(m, nn.Conv2d)]
        try:
            with torch.inference_mode():
                self(torch.rand(1, 3, height, width, **probe), torch.rand(1, 1, height, width, **probe))
        finally:
            for h in hooks:
                h.remove()
        return total / (height * width)


def network_from_weights(blob: Mapping[str, object], strict: bool = True) -> InvGrayNet:
    """The network stored in a weights file's contents, in eval mode: bundled weights
    (``config`` + ``state_dict``) or a training checkpoint (``config`` + ``model``).
    ``strict=False``: decoder weights alone, without the encoder's and the gate's tensors."""
    model = InvGrayNet(NetworkConfig(**blob["config"]))
    missing, unexpected = model.load_state_dict(blob["model"] if "model" in blob else blob["state_dict"],
                                                strict=strict)
    if unexpected or any(not name.startswith(ENCODER_ONLY) for name in missing):
        raise ValueError(f"weights do not fit the network: missing {missing}, unexpected {unexpected}")
    return model.eval()
