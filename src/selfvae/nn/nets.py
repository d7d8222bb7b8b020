"""Encoder, decoder and same-resolution networks built from :mod:`selfvae.nn.layers`.

Sizes come from :class:`NetSpec` so the small CPU presets and the paper-size presets share one code path.
Encoders halve the resolution with strided convolutions (doubling width and growth each time); decoders
double it with transposed convolutions (halving them), as in the srVAE/selfVAE architecture.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch.nn.functional as F
from torch import Tensor, nn

from selfvae.nn.layers import ELU, DenseLayer, Network, WNConv2d


@dataclass(frozen=True)
class NetSpec:
    """Size of one network: stem ``width``, dense ``growth`` per unit, ``steps`` units per dense layer,
    ``blocks`` dense layers per resolution for same-resolution networks."""

    width: int = 32
    growth: int = 16
    steps: int = 3
    blocks: int = 1
    max_mult: int = 4  # encoders/decoders widen (or narrow) by at most this factor across resolutions
    top_dense: bool = True  # decoders end with a dense layer at full resolution (the authors' decoders do not)
    # DenseNet transition: compress a dense layer's output to the next stage's width with a 1x1 conv + ELU
    # before the strided (encoder) or transposed (decoder) 3x3 conv, so resampling runs on the narrow width
    # instead of the full concatenation (a fraction of the FLOPs; the authors' nets resample the concatenation).
    transition: bool = False


def _zero_conv(c_in: int, c_out: int) -> nn.Conv2d:
    """A 1x1 convolution whose weights and bias start at zero."""
    conv = nn.Conv2d(c_in, c_out, 1)
    nn.init.zeros_(conv.weight)
    nn.init.zeros_(conv.bias)
    return conv


def _resample(c_in: int, c_out: int, transition: bool, transposed: bool) -> list[nn.Module]:
    """Halve (``transposed=False``) or double the resolution with a stride-2 3x3 conv to ``c_out`` channels,
    after a 1x1 transition to ``c_out`` channels when ``transition`` is set."""
    if not transition:
        return [WNConv2d(c_in, c_out, 3, stride=2, transposed=transposed)]
    return [WNConv2d(c_in, c_out, 1), ELU(), WNConv2d(c_out, c_out, 3, stride=2, transposed=transposed)]


class DenseEncoder(nn.Module, Network):
    """Image-shaped input -> ``out_channels`` maps at ``1 / 2**n_down`` of the resolution.

    ``spec`` sizes the first (full-resolution) stage; width and growth double after each downsampling.
    ``zero_start``: the last layer a plain 1x1 convolution that starts at zero (the net outputs zeros until trained),
    for a net whose output is added to a trained one's (:attr:`~selfvae.config.ModelConfig.q_u_residual`).
    """

    def __init__(self, in_channels: int, out_channels: int, spec: NetSpec, n_down: int, zero_start: bool = False,
                 ) -> None:
        super().__init__()
        layers: list[nn.Module] = [WNConv2d(in_channels, spec.width, 3)]
        c, g = spec.width, spec.growth
        for i in range(n_down):
            dense = DenseLayer(c, g, spec.steps)
            mult = min(2 ** (i + 1), spec.max_mult)
            nxt = spec.width * mult
            layers += [dense, ELU(), *_resample(dense.out_channels, nxt, spec.transition, transposed=False)]
            c, g = nxt, spec.growth * mult
        dense = DenseLayer(c, g, spec.steps)
        layers += [dense, ELU(), _zero_conv(dense.out_channels, out_channels) if zero_start
                   else WNConv2d(dense.out_channels, out_channels, 1, init_scale=0.1)]
        self.net = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


class DenseDecoder(nn.Module, Network):
    """Latent-shaped input -> ``out_channels`` maps at ``2**n_up`` times the resolution.

    ``spec`` sizes the first (lowest-resolution) stage; width and growth halve after each upsampling.
    """

    def __init__(self, in_channels: int, out_channels: int, spec: NetSpec, n_up: int) -> None:
        super().__init__()
        c, g = spec.width, spec.growth
        layers: list[nn.Module] = [WNConv2d(in_channels, c, 3)]
        for i in range(n_up):
            dense = DenseLayer(c, g, spec.steps)
            div = min(2 ** (i + 1), spec.max_mult)
            nxt = max(spec.width // div, 8)
            layers += [dense, ELU(), *_resample(dense.out_channels, nxt, spec.transition, transposed=True)]
            c, g = nxt, max(spec.growth // div, 4)
        if spec.top_dense or n_up == 0:
            dense = DenseLayer(c, g, spec.steps)
            layers += [dense, ELU()]
            c = dense.out_channels
        layers.append(WNConv2d(c, out_channels, 3, init_scale=0.1))
        self.net = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


class DenseNetwork(nn.Module, Network):
    """Same-resolution network: stem, ``blocks`` dense layers, 1x1 output."""

    def __init__(self, in_channels: int, out_channels: int, spec: NetSpec, out_scale: float = 0.1) -> None:
        super().__init__()
        layers: list[nn.Module] = [WNConv2d(in_channels, spec.width, 3)]
        c = spec.width
        for _ in range(spec.blocks):
            dense = DenseLayer(c, spec.growth, spec.steps)
            layers += [dense, ELU()]
            c = dense.out_channels
        layers.append(WNConv2d(c, out_channels, 1, init_scale=out_scale))
        self.net = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


def resample_to(x: Tensor, size: tuple[int, int]) -> Tensor:
    """Nearest-neighbour resize of a conditioning image to ``size`` (no-op when it already matches)."""
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    return F.interpolate(x, size=size, mode="nearest")
