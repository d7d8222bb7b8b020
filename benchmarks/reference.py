"""The authors' srVAE-paper architectures, rebuilt layer for layer to time them beside ours in one run.

Sizes follow the published srVAE code (ioangatop/srVAE, ``densenet32`` VAE and ``densenet16x32`` srVAE, latents
16x8x8, RealNVP prior whose s/t nets are DenseNet layers of growth 64 and 5 steps) and its layer style:
``torch.nn.utils.weight_norm`` convolutions, in-place ELU, DenseNet blocks that re-activate the whole
concatenation, resampling convolutions on the full concatenation. The parameter counts printed by
:func:`main` (34.3M VAE, 39.3M srVAE) match those the issue quotes for the authors' code, which checks the
rebuild. The likelihood is our discretized logistic mixture (same arithmetic as their ``dmol_loss``), and
``y = d(x)`` is a batched 2x2 average pool, as in the issue's reference measurement (their code resizes
with PIL image by image). Data-dependent init is left out: it changes values, not the cost of a step.

This file exists for :mod:`benchmarks.bench` ``--reference``; nothing in :mod:`selfvae` imports it.
"""

from __future__ import annotations

import warnings

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from selfvae.distributions import DiagonalGaussian, DiscretizedLogisticMixture
from selfvae.models.selfvae import to_input, to_target
from selfvae.priors import _checkerboard, std_normal_log_prob

warnings.filterwarnings("ignore", message=".*weight_norm.*deprecated", category=FutureWarning)


def _conv(c_in: int, c_out: int, k: int, stride: int = 1, act: bool = True, transposed: bool = False) -> nn.Module:
    if transposed:
        conv = nn.utils.weight_norm(nn.ConvTranspose2d(c_in, c_out, k, stride, k // 2, output_padding=1), dim=1)
    else:
        conv = nn.utils.weight_norm(nn.Conv2d(c_in, c_out, k, stride, k // 2), dim=0)
    return nn.Sequential(conv, nn.ELU(inplace=True)) if act else conv


class _Unit(nn.Module):
    def __init__(self, c: int, g: int) -> None:
        super().__init__()
        self.net = nn.Sequential(_conv(c, 4 * g, 1), _conv(4 * g, g, 3, act=False))

    def forward(self, x: Tensor) -> Tensor:
        return torch.cat([x, self.net(x)], 1)


class _Attention(nn.Module):
    def __init__(self, c: int) -> None:
        super().__init__()
        self.net = nn.Sequential(_conv(c, c // 8, 1), _conv(c // 8, c, 1, act=False), nn.Sigmoid())

    def forward(self, x: Tensor) -> Tensor:
        return x * self.net(F.adaptive_avg_pool2d(x, 1))


def _dense_layer(c: int, g: int, steps: int) -> tuple[nn.Module, int]:
    layers: list[nn.Module] = []
    for _ in range(steps):
        layers += [_Unit(c, g), nn.ELU(inplace=True)]
        c += g
    return nn.Sequential(*layers, _Attention(c)), c


def _encoder(c: int, c_out: int, g: int, steps: int, n_down: int) -> nn.Module:
    layers: list[nn.Module] = []
    for _ in range(n_down):
        dense, c = _dense_layer(c, g, steps)
        layers += [dense, _conv(c, 2 * c, 3, stride=2)]
        c, g = 2 * c, 2 * g
    dense, c = _dense_layer(c, g, steps)
    return nn.Sequential(*layers, dense, _conv(c, c_out, 1, act=False))


def _decoder(c: int, c_out: int, g: int, steps: int, n_up: int) -> nn.Module:
    layers: list[nn.Module] = []
    for _ in range(n_up):
        dense, c = _dense_layer(c, g, steps)
        layers += [dense, _conv(c, c // 2, 3, stride=2, transposed=True)]
        c, g = c // 2, g // 2
    return nn.Sequential(*layers, _conv(c, c_out, 3, act=False))


def _network(c: int, c_out: int, g: int, steps: int, blocks: int) -> nn.Module:
    layers: list[nn.Module] = []
    for _ in range(blocks):
        dense, c = _dense_layer(c, g, steps)
        layers.append(dense)
    return nn.Sequential(*layers, _conv(c, c_out, 1, act=False))


class _Coupling(nn.Module):
    def __init__(self, c: int, checkerboard: bool, reverse: bool) -> None:
        super().__init__()
        self.checkerboard, self.reverse = checkerboard, reverse
        c_net = c if checkerboard else c // 2
        dense, c_mid = _dense_layer(c_net, 64, 5)
        self.st = nn.Sequential(dense, _conv(c_mid, 2 * c_net, 3))
        self.rescale = nn.Parameter(torch.ones(c_net, 1, 1))

    def forward(self, x: Tensor, sldj: Tensor) -> tuple[Tensor, Tensor]:
        if self.checkerboard:
            b = _checkerboard(x.shape[2], x.shape[3], self.reverse, x)
            s, t = self.st(x * b).chunk(2, 1)
            s = self.rescale * torch.tanh(s) * (1 - b)
            return (x + t * (1 - b)) * s.exp(), sldj + s.flatten(1).sum(1)
        x_id, x_change = x.chunk(2, 1) if self.reverse else x.chunk(2, 1)[::-1]
        s, t = self.st(x_id).chunk(2, 1)
        s = self.rescale * torch.tanh(s)
        x_change = (x_change + t) * s.exp()
        out = torch.cat([x_id, x_change], 1) if self.reverse else torch.cat([x_change, x_id], 1)
        return out, sldj + s.flatten(1).sum(1)


class _RealNVP(nn.Module):
    """Two scales: 3 checkerboard, squeeze + 3 channel-wise, split, then 4 checkerboard at 2x channels.

    (Plain squeezes in place of the alternate-order one: a permutation, the same cost.)
    """

    def __init__(self, c: int, last: bool = False) -> None:
        super().__init__()
        self.last = last
        self.cin = nn.ModuleList(_Coupling(c, True, bool(i % 2)) for i in range(4 if last else 3))
        if not last:
            self.cout = nn.ModuleList(_Coupling(4 * c, False, bool(i % 2)) for i in range(3))
            self.next = _RealNVP(2 * c, last=True)

    def forward(self, x: Tensor, sldj: Tensor) -> tuple[Tensor, Tensor]:
        for c in self.cin:
            x, sldj = c(x, sldj)
        if self.last:
            return x, sldj
        x = F.pixel_unshuffle(x, 2)
        for c in self.cout:
            x, sldj = c(x, sldj)
        keep, split = x.chunk(2, 1)  # the next scale works at half the resolution on 2x the channels
        keep, sldj = self.next(keep, sldj)
        return F.pixel_shuffle(torch.cat([keep, split], 1), 2), sldj

    def log_prob(self, u: Tensor) -> Tensor:
        v, sldj = self(u, u.new_zeros(u.shape[0]))
        return std_normal_log_prob(v) + sldj


def _gaussian(t: Tensor) -> DiagonalGaussian:
    mu, logvar = t.chunk(2, 1)
    return DiagonalGaussian(mu, F.hardtanh(logvar, -7.0, 7.0))


def _nll(logits: Tensor, y: Tensor) -> Tensor:
    return -DiscretizedLogisticMixture(logits, 3, 10).log_prob(to_target(y))


class AuthorsVAE(nn.Module):
    """``densenet32`` VAE with the RealNVP prior: q(u|x) -> p(x|u)."""

    def __init__(self) -> None:
        super().__init__()
        self.p_u = _RealNVP(16)
        self.q_u = _encoder(3, 32, 16, 8, 2)
        self.p_x = _decoder(16, 100, 128, 6, 2)

    def forward(self, x: Tensor) -> Tensor:
        q_u = _gaussian(self.q_u(to_input(x)))
        u = q_u.rsample()
        kl = q_u.log_prob(u) - self.p_u.log_prob(u)
        return (_nll(self.p_x(u), x) + kl).mean()


class AuthorsSrVAE(nn.Module):
    """``densenet16x32`` srVAE: y = d(x) at 16x16, u, z 16x8x8, RealNVP prior on u."""

    def __init__(self) -> None:
        super().__init__()
        self.p_u = _RealNVP(16)
        self.q_u = _encoder(3, 32, 64, 3, 1)
        self.p_y = _decoder(16, 100, 128, 4, 1)
        self.q_z = _encoder(3, 32, 16, 4, 2)
        self.p_z_y = nn.Sequential(_encoder(3, 16, 32, 5, 1), nn.ELU(inplace=True))
        self.p_z_u = _network(16, 16, 64, 3, 3)
        self.p_z = _network(32, 32, 64, 3, 3)
        self.p_x_z = _decoder(16, 100, 64, 8, 2)
        self.p_x = _network(103, 100, 64, 5, 3)

    def forward(self, x: Tensor) -> Tensor:
        y = F.avg_pool2d(x.float(), 2).round().to(torch.uint8)
        x_in, y_in = to_input(x), to_input(y)
        q_u, q_z = _gaussian(self.q_u(y_in)), _gaussian(self.q_z(x_in))
        u, z = q_u.rsample(), q_z.rsample()
        y_up = F.interpolate(y_in, size=x.shape[-2:], mode="bilinear", align_corners=False)
        x_logits = self.p_x(torch.cat([y_up, self.p_x_z(z)], 1))
        p_z = _gaussian(self.p_z(torch.cat([self.p_z_y(y_in), self.p_z_u(u)], 1)))
        kl = q_u.log_prob(u) - self.p_u.log_prob(u) + q_z.log_prob(z) - p_z.log_prob(z)
        return (_nll(x_logits, x) + _nll(self.p_y(u), y) + kl).mean()


REFERENCES: dict[str, type[nn.Module]] = {"authors-vae-realnvp": AuthorsVAE, "authors-srvae": AuthorsSrVAE}
PUBLISHED_MILLIONS = {"authors-vae-realnvp": 34.3, "authors-srvae": 39.3}  # parameters of the authors' models


def build(name: str) -> nn.Module:
    """A rebuilt model, checked to have the authors' published size (so the speed-up printed compares like with
    like) before anything is timed."""
    model = REFERENCES[name]()
    millions = round(sum(p.numel() for p in model.parameters()) / 1e6, 1)
    if millions != PUBLISHED_MILLIONS[name]:
        raise SystemExit(f"{name}: the rebuild has {millions}M parameters, the authors' model "
                         f"{PUBLISHED_MILLIONS[name]}M: it is not theirs")
    return model
