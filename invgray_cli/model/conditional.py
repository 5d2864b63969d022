"""invgray-v2 (in training): invgray-v1's encoder and decoder (``network.py``, unchanged)
with a probability model that a decoder runs on what it already holds: the decoded gray,
the planes of the cell decoded before, and a checkerboard's anchor cells
(``integer_prior.py`` has the design and the numpy model that codes).

:class:`ConditionalPrior` is that integer network's torch twin for training: its weights
are float parameters whose forward pass uses them rounded to integers (``weight_bits``
fractional bits), its activations rounded and clipped as the integer network's, with
straight-through gradients, from the first step; so the network that training leaves is
the coder's model as it is, with no conversion after training. Its forward pass runs in
float64 (training too: the prior is small beside the network), where every sum of these
integers is exact, so it computes exactly the integers of
:func:`invgray_cli.model.integer_prior.logits` (``tests/test_integer_prior.py``).
The code length training minimises is -log2 of those very frequencies (forward), with the
gradient of their smooth form, (1 + (2^16 - A) softmax) / 2^16.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from invgray_cli.format.entropy import ALPHABET, ESCAPE, FREQUENCY_BITS, HEAD, MAX_PREFIX
from invgray_cli.model.code_length import interpolated_bits
from invgray_cli.model.integer_prior import (
    ACTIVATION_MAX,
    ESCAPE_PREFIX,
    EXP_BASE,
    EXP_MAX_SHIFT,
    GRAY_OFFSET,
    LOGIT_MAX,
    LOGIT_SCALE,
    SYMBOL_GAIN,
    IntegerPrior,
    PriorConfig,
    anchor_mask,
    plane_mask,
    rate_feature,
)
from invgray_cli.model.network import InvGrayNet, NetworkConfig

FAMILY = "invgray-v2"


class _Floor(torch.autograd.Function):
    """floor(x) exactly forward, the identity's gradient backward (straight through)."""

    @staticmethod
    def forward(ctx: object, x: torch.Tensor) -> torch.Tensor:
        return torch.floor(x)

    @staticmethod
    def backward(ctx: object, grad: torch.Tensor) -> torch.Tensor:
        return grad


class _Round(_Floor):
    """round(x) (half to even; the integer weights export the same way) straight through."""

    @staticmethod
    def forward(ctx: object, x: torch.Tensor) -> torch.Tensor:
        return torch.round(x)


class _Replace(torch.autograd.Function):
    """``exact`` forward (bit for bit, unlike x + (exact - x).detach()), ``smooth``'s gradient backward."""

    @staticmethod
    def forward(ctx: object, smooth: torch.Tensor, exact: torch.Tensor) -> torch.Tensor:
        return exact.clone()

    @staticmethod
    def backward(ctx: object, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        return grad, None


class ConditionalPrior(nn.Module):
    """The integer prior with fake-quantised weights and activations (module docstring)."""

    def __init__(self, cfg: PriorConfig) -> None:
        super().__init__()
        self.cfg = cfg
        planes, hidden = cfg.planes, cfg.hidden
        self.gray_layers = nn.ModuleList()
        channels = 1
        for width, stride in zip(cfg.gray_widths, cfg.gray_strides):
            self.gray_layers.append(nn.Conv2d(channels, width, stride, stride=stride))
            channels = width
        self.gray_cell = nn.Conv2d(channels, channels, 3, padding=1)
        self.side = nn.Conv2d(cfg.gray_features + 1, planes * hidden, 1)
        self.planes = nn.Conv2d(2 * planes, planes * hidden, 1, bias=False)
        mask = plane_mask(planes, hidden, cfg.plane_group)
        self.register_buffer("plane_mask", torch.from_numpy(mask).float()[:, :, None, None],
                             persistent=False)
        self.spatial = nn.Conv2d(2 * planes, planes * hidden, 3, padding=1, bias=False,
                                 groups=planes // cfg.planes_per_channel)
        self.out = nn.Conv2d(planes * hidden, planes * ALPHABET, 1, groups=planes)
        with torch.no_grad():  # start near a Laplace-like table: 1 bit per unit of magnitude
            self.out.weight.mul_(0.1)
            magnitude = torch.tensor([float(abs(a - HEAD)) if a != ESCAPE else 16.0 for a in range(ALPHABET)])
            self.out.bias.copy_((-LOGIT_SCALE * magnitude).repeat(planes))
            self.planes.weight.mul_(self.plane_mask)
        self.register_buffer("exp_base", torch.from_numpy(EXP_BASE), persistent=False)
        self.register_buffer("escape_prefix", torch.from_numpy(ESCAPE_PREFIX.astype(np.float64)), persistent=False)

    # ---- integer arithmetic in float64, where every sum of these integers is exact

    def integer(self, tensor: torch.Tensor) -> torch.Tensor:
        """A weight or bias as the integer network holds it: round(value x 2^weight_bits)."""
        return _Round.apply(tensor.to(torch.float64) * (1 << self.cfg.weight_bits))

    def _conv(self, layer: nn.Conv2d, x: torch.Tensor, weight: torch.Tensor | None = None) -> torch.Tensor:
        weight = self.integer(layer.weight if weight is None else weight)
        bias = self.integer(layer.bias) if layer.bias is not None else None
        return F.conv2d(x, weight, bias, stride=layer.stride, padding=layer.padding, groups=layer.groups)

    def _shift(self, acc: torch.Tensor) -> torch.Tensor:
        bits = self.cfg.weight_bits
        return _Floor.apply((acc + (1 << (bits - 1))) / (1 << bits))

    def _activation(self, acc: torch.Tensor) -> torch.Tensor:
        return self._shift(acc).clamp(0, ACTIVATION_MAX)

    def gray_features(self, gray: torch.Tensor) -> torch.Tensor:
        """(N, 1, H, W) gray in [0, 1] (uint8 / 255) -> (N, G, H/32, W/32) integer features."""
        x = torch.round(gray.detach().to(torch.float64) * 255) - GRAY_OFFSET
        for layer in self.gray_layers:
            x = self._activation(self._conv(layer, x))
        return self._activation(self._conv(self.gray_cell, x))

    def logits(self, gray: torch.Tensor, symbols: torch.Tensor, step: float) -> torch.Tensor:
        """(N, P, ALPHABET, h, w) integer logits (as floats) of integer ``symbols`` (N, P, h, w)."""
        cfg = self.cfg
        dtype = torch.float64  # exact for these integers; the network's float32 stays outside
        n, planes, h, w = symbols.shape
        side = [torch.full((n, 1, h, w), float(rate_feature(step)), dtype=dtype, device=symbols.device)]
        if cfg.gray:
            side.insert(0, self.gray_features(gray))
        acc = self._conv(self.side, torch.cat(side, 1))
        s = symbols.detach().to(dtype).clamp(-HEAD, HEAD)
        inputs = torch.stack([s, s.abs()], 2).flatten(1, 2) * SYMBOL_GAIN
        acc = acc + self._conv(self.planes, inputs, self.planes.weight * self.plane_mask)
        if cfg.checkerboard:
            anchors = torch.from_numpy(anchor_mask(h, w)).to(device=symbols.device, dtype=dtype)
            acc = acc + self._conv(self.spatial, inputs * anchors) * (1 - anchors)
        hidden = self._activation(acc)
        z = self._shift(self._conv(self.out, hidden)).clamp(-LOGIT_MAX, LOGIT_MAX)
        return z.view(n, planes, ALPHABET, h, w)

    def frequencies(self, z: torch.Tensor) -> torch.Tensor:
        """Integer logits (N, P, A, h, w) -> int64 frequencies along A, exactly as
        :func:`invgray_cli.model.integer_prior.logits_to_frequencies` gives them."""
        zi = z.detach().to(torch.int64)
        e = zi.amax(dim=2, keepdim=True) - zi
        weights = torch.bitwise_right_shift(self.exp_base[e % LOGIT_SCALE],
                                            torch.clamp(e // LOGIT_SCALE, max=EXP_MAX_SHIFT))
        room = (1 << FREQUENCY_BITS) - ALPHABET
        freq = 1 + torch.div(weights * room, weights.sum(dim=2, keepdim=True), rounding_mode="floor")
        short = (1 << FREQUENCY_BITS) - freq.sum(dim=2, keepdim=True)
        return freq.scatter_add(2, weights.argmax(dim=2, keepdim=True), short)

    def log2_probabilities(self, z: torch.Tensor) -> torch.Tensor:
        """log2 of the coder's probabilities (frequencies / 2^16) forward; backward, the
        gradient of their smooth form (1 + (2^16 - A) softmax(z ln2 / 16)) / 2^16."""
        total = float(1 << FREQUENCY_BITS)
        smooth = (1 + (total - ALPHABET) * torch.softmax(z * (math.log(2) / LOGIT_SCALE), dim=2)) / total
        exact = self.frequencies(z).to(smooth.dtype) / total
        return torch.log2(_Replace.apply(smooth, exact))

    def code_length(self, gray: torch.Tensor, values: torch.Tensor, step: float, gate: torch.Tensor | None = None,
                    latent: torch.Tensor | None = None) -> torch.Tensor:
        """Bits of each batch element: (N,) from symbols before rounding (N, P, h, w), as
        :class:`invgray_cli.model.code_length.LearnedTables` counts them (contexts from the
        rounded symbols; between two integers the code lengths of the magnitudes around the
        value interpolated, towards zero; with the SEP ``gate`` and ``latent``, a closed entry
        costs what a zero costs). For integer symbols, -log2 of the integer model's
        frequencies / 2^16, plus escaped magnitudes' bits."""
        rounded = torch.round(values.detach())
        log2p = self.log2_probabilities(self.logits(gray, rounded, step)).float()

        def bits_at(integer: torch.Tensor) -> torch.Tensor:
            inside = integer.abs() <= HEAD
            index = torch.where(inside, integer + HEAD, torch.full_like(integer, ESCAPE)).long()
            bits = -log2p.gather(2, index.unsqueeze(2)).squeeze(2)
            magnitude = (integer.abs() - HEAD - 1).clamp(min=0)
            length = torch.floor(torch.log2(magnitude + 1)).clamp(max=MAX_PREFIX - 1)
            prefix = -torch.log2(self.escape_prefix[length.long()] / float(1 << FREQUENCY_BITS))
            return bits + torch.where(inside, torch.zeros_like(bits), prefix + length + 1.0)

        return interpolated_bits(bits_at, values, rounded, gate, latent)

    def export(self) -> IntegerPrior:
        """The integer network (``integer_prior.IntegerPrior``) that these weights are."""
        def integer(tensor: torch.Tensor) -> np.ndarray:
            return torch.round(tensor.detach().float().cpu() * (1 << self.cfg.weight_bits)).to(torch.int64).numpy()

        tensors = {}
        for k, layer in enumerate(self.gray_layers):
            tensors[f"gray{k}.weight"] = integer(layer.weight).reshape(layer.weight.shape[0], -1)
            tensors[f"gray{k}.bias"] = integer(layer.bias)
        tensors["gray_cell.weight"] = integer(self.gray_cell.weight)
        tensors["gray_cell.bias"] = integer(self.gray_cell.bias)
        tensors["side.weight"] = integer(self.side.weight)[:, :, 0, 0]
        tensors["side.bias"] = integer(self.side.bias)
        mask = plane_mask(self.cfg.planes, self.cfg.hidden, self.cfg.plane_group)
        tensors["planes.weight"] = integer(self.planes.weight)[:, :, 0, 0] * mask
        tensors["spatial.weight"] = integer(self.spatial.weight)
        tensors["out.weight"] = integer(self.out.weight)[:, :, 0, 0]
        tensors["out.bias"] = integer(self.out.bias)
        if not self.cfg.gray:
            tensors = {k: v for k, v in tensors.items() if not k.startswith("gray")}
        return IntegerPrior(self.cfg, tensors)

    @torch.no_grad()
    def load_integer(self, prior: IntegerPrior) -> None:
        """Take the weights of an exported integer prior: each integer over 2^weight_bits,
        which rounds back to that integer, so this prior computes exactly ``prior``'s
        frequencies (a run restarted from a bundled or exported model)."""
        if prior.config != self.cfg:
            raise ValueError(f"the prior's configuration {prior.config} is not this network's {self.cfg}")
        scale = float(1 << self.cfg.weight_bits)

        def put(layer_tensor: torch.Tensor, name: str) -> None:
            values = torch.from_numpy(prior.tensors[name].astype(np.float64) / scale)
            layer_tensor.copy_(values.reshape(layer_tensor.shape).to(layer_tensor.dtype))

        if self.cfg.gray:
            for k, layer in enumerate(self.gray_layers):
                put(layer.weight, f"gray{k}.weight")
                put(layer.bias, f"gray{k}.bias")
            put(self.gray_cell.weight, "gray_cell.weight")
            put(self.gray_cell.bias, "gray_cell.bias")
        for name in ("side.weight", "side.bias", "planes.weight", "spatial.weight", "out.weight", "out.bias"):
            layer, _, kind = name.partition(".")
            put(getattr(getattr(self, layer), kind), name)


@dataclass(frozen=True)
class ConditionalConfig:
    network: NetworkConfig
    prior: PriorConfig

    def to_dict(self) -> dict:
        return {"family": FAMILY, "network": self.network.to_dict(), "prior": self.prior.to_dict()}

    @staticmethod
    def from_dict(values: Mapping) -> ConditionalConfig:
        if values.get("family") != FAMILY:
            raise ValueError(f"not an {FAMILY} configuration: {dict(values)}")
        return ConditionalConfig(NetworkConfig(**values["network"]), PriorConfig.from_dict(values["prior"]))

    @staticmethod
    def build(network: NetworkConfig, **prior: object) -> ConditionalConfig:
        """The prior shaped for ``network``'s symbol planes."""
        return ConditionalConfig(network, PriorConfig(planes=network.symbol_planes,
                                                      planes_per_channel=network.transform_block ** 2, **prior))


class ConditionalNet(nn.Module):
    """invgray-v1's network (``net``, unchanged) and the gray-conditioned prior (``prior``)."""

    def __init__(self, cfg: ConditionalConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.net = InvGrayNet(cfg.network)
        self.prior = ConditionalPrior(cfg.prior)

    def forward(self, rgb: torch.Tensor, gray: torch.Tensor, step: float = 1.0) -> dict[str, torch.Tensor]:
        return self.net(rgb, gray, step)

    def mixed_precision(self, dtype: torch.dtype | None) -> torch.dtype | None:
        """The network's convolutions only; the prior always runs as the integer network does."""
        return self.net.mixed_precision(dtype)

    def multiply_adds_per_pixel(self, height: int = 256, width: int = 256) -> float:
        return self.net.multiply_adds_per_pixel(height, width)


def conditional_from_weights(blob: Mapping[str, object]) -> ConditionalNet:
    """The network of an invgray-v2 training checkpoint, in eval mode."""
    model = ConditionalNet(ConditionalConfig.from_dict(blob["config"]))
    model.load_state_dict(blob["model"])
    return model.eval()
