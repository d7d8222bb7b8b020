"""Priors ``p(u)`` over latent tensors shaped ``(C, H, W)`` (e.g. ``(16, 8, 8)`` in selfVAE / srVAE).

Every prior is an :class:`torch.nn.Module` with ``log_prob(u) -> [B]`` (nats, summed over all latent
dimensions) and ``sample(n, temperature) -> [n, C, H, W]`` on the module's device and dtype.

* :class:`StandardNormal`: the fixed ``N(0, I)`` of a plain VAE.
* :class:`MixtureOfGaussians`: a learned mixture of diagonal Gaussians over the flattened latent (the
  "VAE + MoG" baseline of the thesis, 10 components).
* :class:`RealNVP`: the multi-scale RealNVP flow (Dinh et al. 2017) used as the data-driven prior in the
  papers, following the structure of chrischute/real-nvp (used by the srVAE authors) but without batch norm,
  so the density is a deterministic function of ``u`` (required for valid importance-sampling bounds).

``build_prior(name, shape, **kwargs)`` builds one by name from :data:`PRIORS`.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

import torch
from torch import Tensor, nn

from selfvae.errors import SelfVAEError
from selfvae.nn.layers import Network, WNConv2d, elu
from selfvae.nn.paper import PaperDenseLayer

__all__ = ["Prior", "StandardNormal", "MixtureOfGaussians", "RealNVP", "CouplingStep", "PRIORS", "build_prior",
           "prior_options"]

_LOG_2PI = math.log(2.0 * math.pi)


def _check_shape(shape: tuple[int, int, int]) -> tuple[int, int, int]:
    shape = tuple(int(s) for s in shape)
    if len(shape) != 3 or any(s < 1 for s in shape):
        raise SelfVAEError(f"prior shape: expected three positive ints (C, H, W), got {shape}")
    return shape  # type: ignore[return-value]


def std_normal_log_prob(v: Tensor) -> Tensor:
    return (-0.5 * (v**2 + _LOG_2PI)).flatten(1).sum(dim=1)


class Prior(nn.Module):
    """Base class: a density over latents ``u`` shaped ``[B, *shape]``."""

    def __init__(self, shape: tuple[int, int, int]) -> None:
        super().__init__()
        self.shape: tuple[int, int, int] = _check_shape(shape)
        # Non-persistent scalar buffer: follows .to(device/dtype) so sample() knows where to put its output.
        self.register_buffer("_anchor", torch.zeros(()), persistent=False)

    @property
    def dim(self) -> int:
        """Number of latent dimensions ``C * H * W``."""
        c, h, w = self.shape
        return c * h * w

    def _check_u(self, u: Tensor) -> None:
        if u.dim() != 4 or tuple(u.shape[1:]) != self.shape:
            raise SelfVAEError(
                f"{type(self).__name__}.log_prob u: expected shape [B, {', '.join(map(str, self.shape))}], "
                f"got {list(u.shape)}"
            )

    def _randn(self, n: int) -> Tensor:
        return torch.randn(n, *self.shape, device=self._anchor.device, dtype=self._anchor.dtype)

    def log_prob(self, u: Tensor) -> Tensor:
        """``log p(u)`` in nats, ``[B]``."""
        raise NotImplementedError

    def sample(self, n: int, temperature: float = 1.0) -> Tensor:
        """``n`` samples ``[n, C, H, W]``; ``temperature`` scales the Gaussian noise."""
        raise NotImplementedError


class StandardNormal(Prior):
    """Fixed ``N(0, I)`` prior."""

    def log_prob(self, u: Tensor) -> Tensor:
        self._check_u(u)
        return std_normal_log_prob(u)

    def sample(self, n: int, temperature: float = 1.0) -> Tensor:
        return temperature * self._randn(n)


class MixtureOfGaussians(Prior):
    """Learned mixture of ``n_components`` diagonal Gaussians over the flattened latent.

    Parameters: means ``[K, D]`` (initialised ``N(0, init_spread^2)``), log-variances ``[K, D]`` (zeros) and
    mixture logits ``[K]`` (zeros, i.e. uniform weights).
    """

    def __init__(self, shape: tuple[int, int, int], n_components: int = 10, init_spread: float = 0.1) -> None:
        super().__init__(shape)
        if n_components < 1:
            raise SelfVAEError(f"MixtureOfGaussians n_components: must be >= 1, got {n_components}")
        self.n_components = n_components
        self.means = nn.Parameter(init_spread * torch.randn(n_components, self.dim))
        self.logvars = nn.Parameter(torch.zeros(n_components, self.dim))
        self.logits = nn.Parameter(torch.zeros(n_components))

    def component_log_probs(self, u: Tensor) -> Tensor:
        """``[B, K]``: ``log w_k + log N(u; mean_k, var_k)`` per component."""
        self._check_u(u)
        x = u.flatten(1).unsqueeze(1)  # [B, 1, D]
        comp = -0.5 * (_LOG_2PI + self.logvars + (x - self.means) ** 2 * torch.exp(-self.logvars))
        return comp.sum(dim=2) + torch.log_softmax(self.logits, dim=0)

    def log_prob(self, u: Tensor) -> Tensor:
        return torch.logsumexp(self.component_log_probs(u), dim=1)

    def components(self, dtype: torch.dtype = torch.float64) -> tuple[Tensor, Tensor, Tensor]:
        """Means ``[K, D]``, standard deviations ``[K, D]`` and weights ``[K]`` in ``dtype``."""
        with torch.no_grad():
            weights = torch.exp(torch.log_softmax(self.logits.to(dtype), 0))
            return self.means.to(dtype), torch.exp(0.5 * self.logvars.to(dtype)), weights

    def responsibilities(self, u: Tensor, dtype: torch.dtype = torch.float64) -> Tensor:
        """``[B, K]``: the posterior ``p(k | u)`` of the component that drew ``u``, computed in ``dtype`` (the
        codec's tables are float64)."""
        x = u.to(dtype).flatten(1).unsqueeze(1)
        logvars, means = self.logvars.to(dtype), self.means.to(dtype)
        comp = (-0.5 * (logvars + (x - means) ** 2 * torch.exp(-logvars))).sum(2)
        return torch.softmax(comp + torch.log_softmax(self.logits.to(dtype), 0), dim=1)

    def sample(self, n: int, temperature: float = 1.0) -> Tensor:
        with torch.no_grad():
            k = torch.multinomial(torch.softmax(self.logits, dim=0), n, replacement=True)
            eps = self._randn(n).flatten(1)
            z = self.means[k] + temperature * torch.exp(0.5 * self.logvars[k]) * eps
        return z.view(n, *self.shape)


# ---------------------------------------------------------------------------------------------- RealNVP


def _squeeze(x: Tensor) -> Tensor:
    """Space-to-depth 2x2: ``[B, C, H, W] -> [B, 4C, H/2, W/2]``, channel index ``4c + 2i + j``."""
    b, c, h, w = x.shape
    x = x.reshape(b, c, h // 2, 2, w // 2, 2).permute(0, 1, 3, 5, 2, 4)
    return x.reshape(b, 4 * c, h // 2, w // 2)


def _unsqueeze(x: Tensor) -> Tensor:
    """Inverse of :func:`_squeeze`."""
    b, c4, h, w = x.shape
    c = c4 // 4
    x = x.reshape(b, c, 2, 2, h, w).permute(0, 1, 4, 2, 5, 3)
    return x.reshape(b, c, 2 * h, 2 * w)


def _squeeze_alt(x: Tensor) -> Tensor:
    """Space-to-depth 2x2 in the alternate order of Dinh et al.: the four sub-grids (0,0), (1,1), (0,1), (1,0)
    stacked as channel blocks, so the first half of the channels is one checkerboard colour."""
    b, c, h, w = x.shape
    x = x.reshape(b, c, h // 2, 2, w // 2, 2)
    return torch.cat([x[:, :, :, 0, :, 0], x[:, :, :, 1, :, 1], x[:, :, :, 0, :, 1], x[:, :, :, 1, :, 0]], 1)


def _unsqueeze_alt(x: Tensor) -> Tensor:
    """Inverse of :func:`_squeeze_alt`."""
    b, c4, h, w = x.shape
    c = c4 // 4
    p00, p11, p01, p10 = x.chunk(4, dim=1)
    row0 = torch.stack([p00, p01], dim=-1)  # [B, C, h, w, 2]  (j index last)
    row1 = torch.stack([p10, p11], dim=-1)
    out = torch.stack([row0, row1], dim=3)  # [B, C, h, 2(i), w, 2(j)]
    return out.reshape(b, c, 2 * h, 2 * w)


def _checkerboard(h: int, w: int, reverse: bool, like: Tensor) -> Tensor:
    """``[1, 1, H, W]`` mask, 1 where ``i + j`` is even (odd if ``reverse``): the positions kept unchanged."""
    ii = torch.arange(h, device=like.device).view(-1, 1)
    jj = torch.arange(w, device=like.device).view(1, -1)
    mask = ((ii + jj) % 2 == (1 if reverse else 0)).to(like.dtype)
    return mask.view(1, 1, h, w)


class _ResBlock(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        return x + self.conv2(elu(self.conv1(elu(x))))


class _STNet(nn.Module, Network):
    """Small ResNet producing (s, t); no batch norm or dropout (deterministic density); last conv zeroed so
    every coupling starts at the identity."""

    def __init__(self, in_channels: int, mid_channels: int, out_channels: int, num_blocks: int) -> None:
        super().__init__()
        self.inp = nn.Conv2d(in_channels, mid_channels, 3, padding=1)
        self.blocks = nn.Sequential(*[_ResBlock(mid_channels) for _ in range(num_blocks)])
        self.out = nn.Conv2d(mid_channels, 2 * out_channels, 3, padding=1)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        st = self.out(elu(self.blocks(self.inp(x))))
        s, t = st.chunk(2, dim=1)
        return s, t


class _DenseSTNet(nn.Module, Network):
    """The srVAE authors' s/t net: their dense layer (growth 64, 5 units, attention) and a weight-normed
    3x3 conv to ``2 * out_channels`` (no zero init: their data-dependent init, output std 0.01)."""

    def __init__(self, in_channels: int, out_channels: int, growth: int, steps: int) -> None:
        super().__init__()
        self.dense = PaperDenseLayer(in_channels, growth, steps)
        self.out = WNConv2d(self.dense.out_channels, 2 * out_channels, 3, init_scale=0.01)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        s, t = self.out(self.dense(x)).chunk(2, dim=1)
        return s, t


class _Coupling(nn.Module):
    """Affine coupling ``y = (x + t) * exp(scale * tanh(s))`` on the masked-out half (data -> base direction).

    ``checkerboard=True``: spatial checkerboard mask (the mask itself is given to the net as an extra input
    channel). Otherwise channel-wise: the input channels are split into two halves.
    """

    def __init__(self, channels: int, mid_channels: int, num_blocks: int, checkerboard: bool, reverse: bool,
                 dense: tuple[int, int] | None = None):
        super().__init__()
        self.checkerboard = checkerboard
        self.reverse_mask = reverse
        self.mask_channel = checkerboard and dense is None  # the authors' nets see x * mask only
        self.odd_first = dense is not None  # their unreversed checkerboard keeps the odd sites (i + j odd)
        c_in, c_out = (channels, channels) if checkerboard else (channels // 2, channels - channels // 2)
        if dense is not None:
            self.net = _DenseSTNet(c_in, c_out, *dense)
        else:
            self.net = _STNet(c_in + int(self.mask_channel), mid_channels, c_out, num_blocks)
        self.scale = nn.Parameter(torch.ones(1, c_out, 1, 1))

    def _checker_st(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Checkerboard coupling: ``s``, ``t`` (zero on the kept sites) and the ``[1, 1, H, W]`` kept-site mask."""
        b = _checkerboard(x.shape[2], x.shape[3], self.reverse_mask != self.odd_first, x)
        x_b = x * b
        s, t = self.net(torch.cat([x_b, b.expand(x.shape[0], 1, -1, -1)], dim=1) if self.mask_channel else x_b)
        return self.scale * torch.tanh(s) * (1 - b), t * (1 - b), b

    def _split(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Channel-wise coupling: ``(kept, changed)`` halves of the channels."""
        half = x.shape[1] // 2
        if self.reverse_mask:
            return x[:, :half], x[:, half:]
        return x[:, x.shape[1] - half :], x[:, : x.shape[1] - half]

    def _join(self, kept: Tensor, changed: Tensor) -> Tensor:
        return torch.cat([kept, changed], 1) if self.reverse_mask else torch.cat([changed, kept], 1)

    def forward(self, x: Tensor, logdet: Tensor, inverse: bool = False) -> tuple[Tensor, Tensor]:
        if self.checkerboard:
            s, t, _ = self._checker_st(x)
            if inverse:  # the log-det of the forward map at the output, so an inverse pass can report it too
                return x * torch.exp(-s) - t, logdet - s.flatten(1).sum(dim=1)
            return (x + t) * torch.exp(s), logdet + s.flatten(1).sum(dim=1)
        x_id, x_change = self._split(x)
        s, t = self.net(x_id)
        s = self.scale * torch.tanh(s)
        if inverse:
            x_change = x_change * torch.exp(-s) - t
            logdet = logdet - s.flatten(1).sum(dim=1)
        else:
            x_change = (x_change + t) * torch.exp(s)
            logdet = logdet + s.flatten(1).sum(dim=1)
        return self._join(x_id, x_change), logdet

    def changed(self, like: Tensor) -> Tensor:
        """Bool ``[C, H, W]``: the entries of an input shaped like ``like`` that this coupling changes."""
        c, h, w = like.shape[1:]
        if self.checkerboard:
            b = _checkerboard(h, w, self.reverse_mask != self.odd_first, like)
            return (b[0] == 0).expand(c, h, w)
        _, changed = self._split(torch.arange(c, device=like.device).view(1, c, 1, 1))
        mask = torch.zeros(c, dtype=torch.bool, device=like.device)
        mask[changed.flatten()] = True
        return mask.view(c, 1, 1).expand(c, h, w)

    def affine(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """``(s, t)`` shaped like ``x``, functions of the kept entries only (zero on them), such that the coupling
        is ``y = (x + t) * exp(s)`` on the :meth:`changed` entries and ``y = x`` elsewhere: an elementwise map
        given the kept entries, which is what layer-by-layer bits-back coding of the flow needs."""
        if self.checkerboard:
            s, t, _ = self._checker_st(x)
            return s, t
        x_id, _ = self._split(x)
        s, t = self.net(x_id)
        zero = torch.zeros_like(x_id)
        return self._join(zero, self.scale * torch.tanh(s)), self._join(zero, t)


@dataclass(frozen=True)
class CouplingStep:
    """One coupling of the flow seen from ``u``'s layout: ``view(h)`` is its input and ``put(h, y)`` puts its
    output back, so the flow's forward map is ``h = put(h, coupling(view(h)))`` over the steps in order
    (:meth:`RealNVP.coupling_steps`); the squeezes and splits in between are permutations."""

    coupling: _Coupling
    view: Callable[[Tensor], Tensor]
    put: Callable[[Tensor, Tensor], Tensor]


def _same(h: Tensor) -> Tensor:
    return h


def _replace(_h: Tensor, y: Tensor) -> Tensor:
    return y


def _put_squeezed(_h: Tensor, y: Tensor) -> Tensor:
    return _unsqueeze(y)


def _view_next(view: Callable[[Tensor], Tensor], h: Tensor) -> Tensor:
    return view(_squeeze_alt(h).chunk(2, dim=1)[0])


def _put_next(put: Callable[[Tensor, Tensor], Tensor], h: Tensor, y: Tensor) -> Tensor:
    keep, split = _squeeze_alt(h).chunk(2, dim=1)
    return _unsqueeze_alt(torch.cat([put(keep, y), split], dim=1))


class _Scale(nn.Module):
    """One scale of the multi-scale RealNVP (recursive, as in chrischute/real-nvp ``_RealNVP``)."""

    def __init__(self, scale_idx: int, num_scales: int, channels: int, mid: int, num_blocks: int,
                 dense: tuple[int, int] | None = None) -> None:
        super().__init__()
        self.is_last = scale_idx == num_scales - 1
        n_in = 4 if self.is_last else 3
        self.in_couplings = nn.ModuleList(
            [
                _Coupling(channels, mid, num_blocks, checkerboard=True, reverse=bool(i % 2), dense=dense)
                for i in range(n_in)
            ]
        )
        if not self.is_last:
            self.out_couplings = nn.ModuleList(
                [
                    _Coupling(4 * channels, 2 * mid, num_blocks, checkerboard=False, reverse=bool(i % 2),
                              dense=dense)
                    for i in range(3)
                ]
            )
            self.next = _Scale(scale_idx + 1, num_scales, 2 * channels, 2 * mid, num_blocks, dense)

    def forward(self, x: Tensor, logdet: Tensor, inverse: bool = False) -> tuple[Tensor, Tensor]:
        if not inverse:
            for c in self.in_couplings:
                x, logdet = c(x, logdet)
            if not self.is_last:
                x = _squeeze(x)
                for c in self.out_couplings:
                    x, logdet = c(x, logdet)
                x = _unsqueeze(x)
                x = _squeeze_alt(x)
                x_keep, x_split = x.chunk(2, dim=1)
                x_keep, logdet = self.next(x_keep, logdet)
                x = _unsqueeze_alt(torch.cat([x_keep, x_split], dim=1))
            return x, logdet
        if not self.is_last:
            x = _squeeze_alt(x)
            x_keep, x_split = x.chunk(2, dim=1)
            x_keep, logdet = self.next(x_keep, logdet, inverse=True)
            x = _unsqueeze_alt(torch.cat([x_keep, x_split], dim=1))
            x = _squeeze(x)
            for c in reversed(self.out_couplings):
                x, logdet = c(x, logdet, inverse=True)
            x = _unsqueeze(x)
        for c in reversed(self.in_couplings):
            x, logdet = c(x, logdet, inverse=True)
        return x, logdet

    def steps(self) -> list[CouplingStep]:
        """This scale's couplings and those of the scales below, in the forward order (:class:`CouplingStep`)."""
        out = [CouplingStep(c, _same, _replace) for c in self.in_couplings]
        if self.is_last:
            return out
        out += [CouplingStep(c, _squeeze, _put_squeezed) for c in self.out_couplings]
        return out + [CouplingStep(st.coupling, partial(_view_next, st.view), partial(_put_next, st.put))
                      for st in self.next.steps()]


class RealNVP(Prior):
    """Multi-scale RealNVP flow prior with a standard normal base (Dinh et al. 2017; chrischute/real-nvp).

    Per scale: 3 checkerboard couplings, squeeze 2x2 + 3 channel-wise couplings + unsqueeze, then an
    alternate-order squeeze, half of the channels is split off (kept as output) and the other half goes to
    the next scale with 2x channels (and 2x ``mid_channels``); the last scale has 4 checkerboard couplings.
    The output ``v`` has the same shape as ``u``. ``H`` and ``W`` must be divisible by ``2**(num_scales-1)``.

    Couplings use ``s = scale * tanh(s_raw)`` with a learned per-channel ``scale``; the s/t nets are small
    ResNets (``num_blocks`` residual blocks of 3x3 convs, ELU, no normalisation, no dropout) whose last layer
    is zero-initialised, so the flow starts as the identity; a checkerboard coupling's net also sees its mask.
    ``st_net="dense"`` gives the srVAE authors' couplings instead: their dense layer of growth ``mid_channels``
    (at every scale: their code does not double it) and ``num_blocks`` units, then a weight-normed 3x3 conv,
    fed ``x * mask`` only, with their checkerboard parity (the first coupling keeps the odd sites).
    """

    def __init__(
        self, shape: tuple[int, int, int], mid_channels: int = 64, num_blocks: int = 5, num_scales: int = 2,
        st_net: str = "resnet",
    ) -> None:
        super().__init__(shape)
        if st_net not in ("resnet", "dense"):
            raise SelfVAEError(f"RealNVP st_net={st_net!r}: expected 'resnet' or 'dense'")
        c, h, w = self.shape
        if num_scales < 1:
            raise SelfVAEError(f"RealNVP num_scales: must be >= 1, got {num_scales}")
        f = 2 ** (num_scales - 1)
        if h % f or w % f:
            raise SelfVAEError(
                f"RealNVP shape {self.shape}: H and W must be divisible by 2**(num_scales-1) = {f} "
                f"for num_scales={num_scales}"
            )
        self.num_scales = num_scales
        dense = (mid_channels, num_blocks) if st_net == "dense" else None
        self.flow = _Scale(0, num_scales, c, mid_channels, num_blocks, dense)

    def forward(self, u: Tensor) -> tuple[Tensor, Tensor]:
        """Data -> base: returns ``(v, log|det dv/du|)`` with ``logdet`` shaped ``[B]``."""
        self._check_u(u)
        logdet = torch.zeros(u.shape[0], device=u.device, dtype=u.dtype)
        return self.flow(u, logdet)

    def inverse(self, v: Tensor) -> Tensor:
        """Base -> data: ``u = f^{-1}(v)``."""
        return self.inverse_and_logdet(v)[0]

    def inverse_and_logdet(self, v: Tensor) -> tuple[Tensor, Tensor]:
        """Base -> data: ``u = f^{-1}(v)`` and ``log|det df/du|`` at that ``u`` (``[B]``, as :meth:`forward` gives)."""
        logdet = torch.zeros(v.shape[0], device=v.device, dtype=v.dtype)
        u, neg_logdet = self.flow(v, logdet, inverse=True)
        return u, -neg_logdet

    def coupling_steps(self) -> list[CouplingStep]:
        """The flow as a sequence of affine couplings acting on ``u``'s layout (see :class:`CouplingStep`)."""
        return self.flow.steps()

    def log_prob(self, u: Tensor) -> Tensor:
        v, logdet = self.forward(u)
        return std_normal_log_prob(v) + logdet

    def sample(self, n: int, temperature: float = 1.0) -> Tensor:
        return self.inverse(temperature * self._randn(n))


PRIORS: dict[str, type[Prior]] = {
    "standard": StandardNormal,
    "mog": MixtureOfGaussians,
    "realnvp": RealNVP,
}


def prior_options(name: str) -> dict[str, object]:
    """The keyword options of the prior ``name`` (its ``prior_kwargs``) and their defaults."""
    if name not in PRIORS:
        raise SelfVAEError(f"prior '{name}': unknown, known priors are {', '.join(sorted(PRIORS))}")
    params = list(inspect.signature(PRIORS[name].__init__).parameters.values())[2:]  # after self, shape
    return {p.name: p.default for p in params}


def build_prior(name: str, shape: tuple[int, int, int], **kwargs: object) -> Prior:
    """Build the prior registered under ``name`` in :data:`PRIORS` for latents of ``shape`` (C, H, W)."""
    if name not in PRIORS:
        raise SelfVAEError(f"prior '{name}': unknown, known priors are {', '.join(sorted(PRIORS))}")
    return PRIORS[name](shape, **kwargs)
