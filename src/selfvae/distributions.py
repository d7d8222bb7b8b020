"""Likelihoods and posteriors used by the VAEs.

* :class:`DiscretizedLogisticMixture` is the PixelCNN++ (Salimans et al., 2017) decoder likelihood over the
  256 intensity levels of a pixel, used for ``p(x|...)`` and ``p(y|...)`` in selfVAE / srVAE.
* :class:`DiagonalGaussian` is the factorised Gaussian used for the encoders ``q(z|x)`` and the conditional
  priors, with the analytic KL needed for the ELBO.

All log-probabilities are in nats and summed over every non-batch dimension (shape ``[B]``), as required by
``docs/CONVENTIONS.md``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from functools import cached_property

import torch
import torch.nn.functional as F
from torch import Tensor

from selfvae.errors import SelfVAEError
from selfvae.nn.context import GROUPS, SubpixelContext, group_of, join_groups
from selfvae.renormalise import group_window

__all__ = ["DiscretizedLogisticMixture", "DiagonalGaussian", "SubpixelMixture", "WindowedMixture"]

_LOG_SCALE_MIN = -7.0
_BIN_HALF_WIDTH = 1.0 / 255.0  # half the width of a bin once x is mapped from [0, 1] to [-1, 1]
_LOG_HALF_BINS = math.log(127.5)  # log of (1 / bin width) in [-1, 1] units
_BLOCK_PIXELS = 1024  # pixels per block when building coding tables
VALUES_PER_RUN = 16  # a sub-pixel coded in two steps: its run of 16 values (0-15, 16-31, ...), then its place in it


def _to_grid(x_pm1: Tensor) -> Tensor:
    """Map values in [-1, 1] to the nearest grid point k/255 in [0, 1] (bins are nearest-neighbour cells)."""
    return torch.round(((x_pm1 + 1.0) * 127.5).clamp(0.0, 255.0)) / 255.0


def _clamped_logistic_mean(loc: Tensor, log_scale: Tensor) -> Tensor:
    """``E[clamp(X, -1, 1)]`` for ``X ~ Logistic(loc, exp(log_scale))`` (closed form).

    ``E[clamp(X, a, b)] = a + s * (softplus((loc - a)/s) - softplus((loc - b)/s))``. It equals the mean of the
    discretized logistic up to the rounding bias of the bins (tiny for smooth densities), and it handles the
    edge bins correctly (mass beyond -1/+1 is collapsed onto 0/255).
    """
    s = log_scale.exp()
    return -1.0 + s * (F.softplus((loc + 1.0) / s) - F.softplus((loc - 1.0) / s))


class DiscretizedLogisticMixture:
    """PixelCNN++ (Salimans et al. 2017) discretized logistic mixture over 256 bins, any channel count.

    ``params`` is the raw decoder output ``[B, n_params, H, W]``; with ``M = n_mix`` and ``C = channels`` its
    channel axis is laid out as (``k`` = mixture component, ``c`` = image channel)::

        [0, M)                     mixture logits, index k
        [M, M + C*M)               locations,  index M + c*M + k          (in [-1, 1] units)
        [M + C*M, M + 2*C*M)       log-scales, index M + C*M + c*M + k    (clamped at >= -7)
        [M + 2*C*M, M + 2*C*M+3M)  only for C == 3: coupling coefficients (through tanh),
                                   index M + 2*C*M + j*M + k for j = 0 (G|R), 1 (B|R), 2 (B|G)

    so ``n_params = 10 * M`` for RGB (exactly PixelCNN++) and ``M * (1 + 2C)`` otherwise.

    For ``C == 3`` the channels of one component are coupled linearly and autoregressively (PixelCNN++):
    ``loc_G = mu_G + a * x_R`` and ``loc_B = mu_B + b * x_R + c * x_G``, where ``x`` are the observed (grid)
    values in [-1, 1]. For other ``C`` the channels are independent given the component, and all channels of
    a pixel share the mixture weights. The mixture is per pixel; pixels are independent given ``params``.

    Internally ``x`` in [0, 1] is mapped to [-1, 1]; a bin has half-width 1/255 there, the bins of 0 and 255
    extend to -inf / +inf, and probabilities below 1e-5 use the PixelCNN++ density approximation
    ``log_pdf(mid) - log(127.5)`` for numerical safety.
    """

    def __init__(self, params: Tensor, channels: int, n_mix: int = 10) -> None:
        expected = self.n_params(channels, n_mix)
        if params.dim() != 4 or params.shape[1] != expected:
            raise SelfVAEError(
                f"DiscretizedLogisticMixture params: expected shape [B, {expected}, H, W] for "
                f"channels={channels}, n_mix={n_mix}, got {list(params.shape)}"
            )
        self.channels = channels
        self.n_mix = n_mix
        self.params = params
        b, _, h, w = params.shape
        m, c = n_mix, channels
        # one split, not four slices: its gradient is one concatenation where each slice's would be a zero
        # tensor of the whole params plus a copy (a tenth of a paper-size VAE's step on a CPU)
        parts = params.split([m, c * m, c * m, params.shape[1] - m - 2 * c * m], dim=1)
        self.logits = parts[0]  # [B, M, H, W]
        self.locs = parts[1].reshape(b, c, m, h, w)  # [B, C, M, H, W]
        self.log_scales = parts[2].reshape(b, c, m, h, w).clamp(min=_LOG_SCALE_MIN)
        self._coupling = parts[3].reshape(b, 3, m, h, w) if self.coupled else None  # before tanh

    @cached_property
    def coeffs(self) -> Tensor | None:
        """The RGB coupling coefficients ``[B, 3, M, H, W]`` (through tanh; None unless ``C == 3``), computed
        once when first needed: coding one component's tables needs only that component's."""
        return None if self._coupling is None else torch.tanh(self._coupling)

    @staticmethod
    def n_params(channels: int, n_mix: int = 10) -> int:
        """Number of channels the decoder network must output for this likelihood."""
        if channels < 1 or n_mix < 1:
            raise SelfVAEError(f"DiscretizedLogisticMixture: channels={channels}, n_mix={n_mix} must be >= 1")
        if channels == 3:
            return n_mix * 10
        return n_mix * (1 + 2 * channels)

    @property
    def coupled(self) -> bool:
        """True when the RGB linear channel coupling is used (``channels == 3``)."""
        return self.channels == 3

    # ------------------------------------------------------------------ helpers
    def _coupled_locs(self, x_pm1: Tensor) -> Tensor:
        """Component locations ``[B, C, M, H, W]`` given observed ``x_pm1`` ``[B, C, H, W]`` in [-1, 1]."""
        if not self.coupled:
            return self.locs
        assert self.coeffs is not None
        xr = x_pm1[:, 0:1]  # [B, 1, H, W] broadcasts over M
        xg = x_pm1[:, 1:2]
        mu_r = self.locs[:, 0]
        mu_g = self.locs[:, 1] + self.coeffs[:, 0] * xr
        mu_b = self.locs[:, 2] + self.coeffs[:, 1] * xr + self.coeffs[:, 2] * xg
        return torch.stack([mu_r, mu_g, mu_b], dim=1)

    def _check_x(self, x: Tensor) -> None:
        b, _, h, w = self.params.shape
        if x.dim() != 4 or x.shape[0] != b or x.shape[1] != self.channels or x.shape[2:] != (h, w):
            raise SelfVAEError(
                f"DiscretizedLogisticMixture.log_prob x: expected shape {[b, self.channels, h, w]}, "
                f"got {list(x.shape)}"
            )
        if not x.is_floating_point():
            raise SelfVAEError(
                f"DiscretizedLogisticMixture.log_prob x: expected float in [0, 1], got {x.dtype}"
            )

    # ------------------------------------------------------------------ densities
    def log_prob_per_dim(self, x: Tensor) -> Tensor:
        """Per-pixel log-probability ``[B, H, W]`` (a pixel's channels share one mixture)."""
        self._check_x(x)
        x = x.to(self.params.dtype) * 2.0 - 1.0  # [B, C, H, W] in [-1, 1]
        locs = self._coupled_locs(x)  # [B, C, M, H, W]
        xe = x.unsqueeze(2)
        centered = xe - locs
        inv_s = torch.exp(-self.log_scales)
        plus_in = inv_s * (centered + _BIN_HALF_WIDTH)
        min_in = inv_s * (centered - _BIN_HALF_WIDTH)
        cdf_delta = torch.sigmoid(plus_in) - torch.sigmoid(min_in)
        log_cdf_plus = plus_in - F.softplus(plus_in)  # log CDF(upper edge): the bin of 0
        log_one_minus_cdf_min = -F.softplus(min_in)  # log(1 - CDF(lower edge)): the bin of 255
        mid_in = inv_s * centered
        log_pdf_mid = mid_in - self.log_scales - 2.0 * F.softplus(mid_in)
        log_mid = torch.where(
            cdf_delta > 1e-5,
            torch.log(cdf_delta.clamp(min=1e-12)),
            log_pdf_mid - _LOG_HALF_BINS,
        )
        log_probs = torch.where(
            xe < -0.999, log_cdf_plus, torch.where(xe > 0.999, log_one_minus_cdf_min, log_mid)
        )  # [B, C, M, H, W]
        joint = log_probs.sum(dim=1) + torch.log_softmax(self.logits, dim=1)  # [B, M, H, W]
        return torch.logsumexp(joint, dim=1)

    def log_prob(self, x: Tensor) -> Tensor:
        """``log p(x)`` in nats, ``[B]``, for ``x`` float ``[B, C, H, W]`` on the grid k/255 in [0, 1]."""
        return self.log_prob_per_dim(x).flatten(1).sum(dim=1)

    # ------------------------------------------------------------------ coding
    def bin_probs(self, channel: int, x: Tensor | None = None) -> Tensor:
        """Probabilities ``[B, H, W, 256]`` of the 256 values of ``channel`` given the earlier channels of ``x``.

        This is the distribution an entropy coder needs, one 256-way categorical per sub-pixel in decoding order
        (R, then G given R, then B given R and G): ``p(x_c | x_<c) = sum_k w_k p_k(x_c | x_<c)`` with the
        component weights ``w_k`` proportional to ``pi_k prod_{c' < c} p_k(x_c' | x_<c')`` (only the RGB
        coupling makes ``p_k(x_c | x_<c)`` depend on earlier channels). Bin probabilities are exact differences
        of the logistic CDF at the bin edges (no density approximation), with the edge bins open-ended as in
        :meth:`log_prob`; they sum to 1. ``x`` (float in [0, 1] on the grid k/255) is needed for ``channel > 0``.
        """
        log_w, locs = self._table_weights(channel, x)
        b, m, h, w = log_w.shape
        n = b * h * w
        first = lambda t: t.permute(1, 0, 2, 3).reshape(m, n, 1)  # noqa: E731  [M, P, 1]
        inv_s = first(torch.exp(-self.log_scales[:, channel]))
        shift = -first(locs[:, channel]) * inv_s
        weights = first(torch.softmax(log_w, dim=1))
        edges = self._bin_edges()
        mix = inv_s.new_empty(n, 257)
        mix[:, 0], mix[:, 256] = 0.0, 1.0
        block = min(n, _BLOCK_PIXELS)
        cdf = inv_s.new_empty(m, block, 255)  # reused: allocating [M, P, 255] anew costs more than the maths
        for a in range(0, n, block):
            z = min(block, n - a)
            c, out = cdf[:, :z], mix[a : a + z, 1:256]
            torch.mul(inv_s[:, a : a + z], edges, out=c).add_(shift[:, a : a + z]).sigmoid_()  # component CDFs
            torch.mul(c[0], weights[0, a : a + z], out=out)
            for k in range(1, m):  # the mixture, one component at a time (faster than a batched matmul here)
                out.addcmul_(c[k], weights[k, a : a + z])
        return torch.diff(mix, dim=1).clamp_(min=0.0).view(b, h, w, 256)

    def _table_weights(self, channel: int, x: Tensor | None) -> tuple[Tensor, Tensor]:
        """The checked arguments of :meth:`bin_probs` -> the components' log weights given the channels before
        ``channel`` of ``x`` and their locations (:meth:`_weights_and_locs`)."""
        if not 0 <= channel < self.channels:
            raise SelfVAEError(f"{type(self).__name__}.bin_probs: channel {channel} not in 0..{self.channels - 1}")
        if channel > 0 and x is None:
            raise SelfVAEError(f"{type(self).__name__}.bin_probs: channels after the first need x")
        return self._weights_and_locs(channel, x if channel > 0 else None)

    def _weights_and_locs(self, channels: int, x: Tensor | None) -> tuple[Tensor, Tensor]:
        """``log pi_k`` plus the log mass of each of the first ``channels`` channels of ``x`` under component ``k``
        (:meth:`_log_channel_mass`), ``[B, M, H, W]``: the components' weights given those channels; and the
        component locations ``[B, C, M, H, W]`` given ``x`` (the RGB coupling; the decoder's own without ``x``)."""
        log_w = torch.log_softmax(self.logits, dim=1)
        if x is None:
            return log_w, self.locs
        self._check_x(x)
        x_pm1 = x.to(self.params.dtype) * 2.0 - 1.0
        locs = self._coupled_locs(x_pm1)
        for c in range(channels):  # weight components by how well they explain the channels
            log_w = log_w + self._log_channel_mass(locs, c, x_pm1)
        return log_w, locs

    def _log_channel_mass(self, locs: Tensor, c: int, x_pm1: Tensor) -> Tensor:
        """``log P_k(x_c | x_<c)`` ``[B, M, H, W]``: the exact mass of channel ``c``'s bin under each component."""
        return self._log_bin_mass(locs[:, c], self.log_scales[:, c], x_pm1[:, c : c + 1])

    def window_bin_probs(self, pixels: Tensor, lo: Tensor, length: int, dtype: torch.dtype = torch.float64) -> Tensor:
        """Probabilities ``[P, length]`` of the first channel's values ``lo .. lo + length - 1`` (0 above 255) at the
        flat pixels ``pixels`` (``[P]``, index into ``B * H * W``), exact logistic CDF differences in ``dtype`` and
        differentiable (unlike the in-place tables of :meth:`bin_probs`, built for coding). The first channel's
        marginal needs no other channel, also with the RGB coupling. Renormalised likelihoods
        (:meth:`selfvae.transforms.Transform.log_mass_consistent`) are built from these windows."""
        flat = lambda t: t.permute(0, 2, 3, 1).reshape(-1, self.n_mix)[pixels].to(dtype)  # noqa: E731  [P, M]
        loc, inv_s = flat(self.locs[:, 0]), torch.exp(-flat(self.log_scales[:, 0]))
        values = lo.unsqueeze(1) + torch.arange(length + 1, device=lo.device)  # the bin below each edge: [P, L+1]
        edges = (values.to(dtype) - 0.5) * (2.0 / 255.0) - 1.0  # in [-1, 1] units, as _bin_edges
        inv_s = inv_s.unsqueeze(2)
        cdf = torch.addcmul(-loc.unsqueeze(2) * inv_s, edges.unsqueeze(1), inv_s).sigmoid_()  # [P, M, L+1]
        mix = (torch.softmax(flat(self.logits), dim=1).unsqueeze(1) @ cdf).squeeze(1)  # [P, L+1]
        mix = torch.where(values <= 0, 0.0, torch.where(values >= 256, 1.0, mix))  # the open-ended edge bins
        return torch.diff(mix, dim=1).clamp(min=0.0)

    def component_weights(self) -> Tensor:
        """The mixture weights ``pi_k`` per pixel, ``[B, H, W, M]``."""
        return torch.softmax(self.logits, dim=1).permute(0, 2, 3, 1)

    def component_posterior(self, x: Tensor) -> Tensor:
        """``q(k | x)`` per pixel, ``[B, H, W, M]``: how much of each pixel's probability each mixture component
        gives, ``pi_k prod_c P_k(x_c | x_<c) / p(x)``, from the same exact bin masses as :meth:`bin_probs`.

        Bits-back coding pops the component from it, codes the pixel under that component alone
        (:meth:`component_bin_probs`, a tenth of the work of the whole mixture's table) and pushes the component
        with :meth:`component_weights`: net ``-log p(x)`` again.
        """
        log_w, _ = self._weights_and_locs(self.channels, x)
        return torch.softmax(log_w, dim=1).permute(0, 2, 3, 1)

    def _component(self, channel: int, k: Tensor, x: Tensor | None, what: str, couple: bool = True,
                   ) -> tuple[Tensor, Tensor]:
        """Location and inverse scale ``[P, 1]`` of channel ``channel`` under each pixel's component ``k``
        (int ``[B, H, W]``), given the earlier channels of ``x`` (the RGB coupling; not with ``couple=False``)."""
        if not 0 <= channel < self.channels:
            raise SelfVAEError(f"DiscretizedLogisticMixture.{what}: channel {channel} not in 0..{self.channels - 1}")
        if channel > 0 and x is None:
            raise SelfVAEError(f"DiscretizedLogisticMixture.{what}: channels after the first need x")
        locs = self.locs if channel == 0 or not couple else self._coupled_locs(x.to(self.params.dtype) * 2.0 - 1.0)
        index = k.long().unsqueeze(1)  # [B, 1, H, W]
        loc = locs[:, channel].gather(1, index).reshape(-1, 1)  # [P, 1]
        inv_s = torch.exp(-self.log_scales[:, channel].gather(1, index)).reshape(-1, 1)
        return loc, inv_s

    def _one_component(self, channel: int, k: Tensor, x: Tensor | None) -> tuple[Tensor, Tensor]:
        """As :meth:`_component`, with each pixel's component picked before the coupling: tanh of the three
        coefficients of one component instead of all (what :meth:`component_run_probs` computes from)."""
        loc, inv_s = self._component(channel, k, x, "component_run_probs", couple=False)
        if channel and self.coupled:
            index = k.long().unsqueeze(1)  # [B, 1, H, W]
            pick = lambda j: torch.tanh(self._coupling[:, j].gather(1, index)).reshape(-1, 1)  # noqa: E731
            x_pm1 = (x.to(self.params.dtype) * 2.0 - 1.0).permute(1, 0, 2, 3).reshape(self.channels, -1, 1)
            loc = loc + pick(0) * x_pm1[0] if channel == 1 else loc + pick(1) * x_pm1[0] + pick(2) * x_pm1[1]
        return loc, inv_s

    def component_bin_probs(self, channel: int, k: Tensor, x: Tensor | None = None) -> Tensor:
        """Probabilities ``[B, H, W, 256]`` of the 256 values of ``channel`` under the one mixture component
        ``k`` (int ``[B, H, W]``) of each pixel, given the earlier channels of ``x`` (see :meth:`bin_probs`)."""
        loc, inv_s = self._component(channel, k, x, "component_bin_probs")
        cdf = inv_s.new_empty(len(loc), 257)
        cdf[:, 0], cdf[:, 256] = 0.0, 1.0
        edges = self._bin_edges()
        torch.mul(inv_s, edges, out=cdf[:, 1:256]).sub_(loc * inv_s).sigmoid_()
        b, _, h, w = self.params.shape
        return torch.diff(cdf, dim=1).clamp_(min=0.0).view(b, h, w, 256)

    def component_run_probs(self, channel: int, k: Tensor, x: Tensor | None = None, run: Tensor | None = None,
                            ) -> Tensor:
        """The value of ``channel`` under component ``k`` (as :meth:`component_bin_probs`) in two steps, each a
        16-way table ``[B, H, W, 16]`` in float64: without ``run``, the probabilities of the 16 runs of
        :data:`VALUES_PER_RUN` values (0-15, 16-31, ...); with ``run`` (int ``[B, H, W]``), those of the values
        within each pixel's run, given it. Their product is the value's probability: the same rate as one 256-way
        table from 17 CDF evaluations instead of 255, which is why the codec (files of version 11) codes so.

        Each edge's mass is computed from its nearer tail (``sigmoid(-|z|)``), so a run far from the component's
        centre keeps its digits where ``1 - CDF`` would round to 0; a run whose values all round to 0 (beyond
        about 700 scales) is coded under equal probabilities."""
        loc, inv_s = self._one_component(channel, k, x)
        n = VALUES_PER_RUN
        step = torch.arange(0, n + 1, device=loc.device) * (1 if run is not None else n)
        edge = step if run is None else run.reshape(-1, 1).long() * n + step  # edge j lies below value j: [.., 17]
        probs = _interval_probs(self._clamp_edges(edge, channel), loc.double(), inv_s.double())
        b, _, h, w = self.params.shape
        return probs.reshape(b, h, w, n)

    def _clamp_edges(self, edge: Tensor, channel: int) -> Tensor:
        """Value edges (int, edge ``j`` below value ``j``) a table is built on: all of them here, those inside each
        pixel's window in a :class:`WindowedMixture`."""
        return edge

    def _bin_edges(self) -> Tensor:
        """The 255 edges between neighbouring values in [-1, 1] units: the edge between values ``j - 1`` and ``j``
        lies half a bin below ``j``'s centre ``-1 + 2j/255``."""
        return torch.arange(1, 256, dtype=self.params.dtype, device=self.params.device) * (2.0 / 255.0) - (
            1.0 + _BIN_HALF_WIDTH)

    @staticmethod
    def _log_bin_mass(loc: Tensor, log_scale: Tensor, x_pm1: Tensor) -> Tensor:
        """``log P_k(bin of x)`` per component ``[B, M, H, W]``: the exact logistic mass of x's bin."""
        centered = x_pm1 - loc
        inv_s = torch.exp(-log_scale)
        upper = torch.where(x_pm1 > 0.999, torch.full_like(centered, math.inf), inv_s * (centered + _BIN_HALF_WIDTH))
        lower = torch.where(x_pm1 < -0.999, torch.full_like(centered, -math.inf), inv_s * (centered - _BIN_HALF_WIDTH))
        mass = torch.sigmoid(upper) - torch.sigmoid(lower)
        return torch.log(mass.clamp(min=1e-30))

    # ------------------------------------------------------------------ sampling / summaries
    def tempered(self, temperature: float) -> DiscretizedLogisticMixture:
        """The same mixture with every logistic scale multiplied by ``temperature`` (as :meth:`sample` uses it)."""
        if temperature == 1.0:
            return self
        m, c = self.n_mix, self.channels
        params = self.params.clone()
        params[:, m + c * m : m + 2 * c * m] += math.log(temperature)
        return DiscretizedLogisticMixture(params, c, m)

    def _pick(self, t: Tensor, onehot: Tensor) -> Tensor:
        """Select the chosen component: ``t`` ``[B, M, H, W]`` (or ``[B, C, M, H, W]``) -> drop the M axis."""
        return (t * onehot).sum(dim=-3)

    def sample(self, temperature: float = 1.0) -> Tensor:
        """Draw ``x`` ``[B, C, H, W]`` on the grid k/255.

        The component is chosen by Gumbel-max on the logits; each channel is ``loc + s * T * logit(u)``
        (inverse-CDF logistic noise, ``T`` = temperature scales the logistic scale only), then rounded to the
        grid. The RGB coupling uses the *rounded* earlier channels, so samples follow exactly the distribution
        scored by :meth:`log_prob` when ``T == 1``.
        """
        logits = self.logits
        u = torch.rand_like(logits).clamp(1e-10, 1.0 - 1e-7)
        k = torch.argmax(logits - torch.log(-torch.log(u)), dim=1)  # [B, H, W]
        onehot = F.one_hot(k, self.n_mix).permute(0, 3, 1, 2).to(logits.dtype)  # [B, M, H, W]
        locs = self._pick(self.locs, onehot.unsqueeze(1))  # [B, C, H, W]
        log_s = self._pick(self.log_scales, onehot.unsqueeze(1))
        u = torch.rand_like(locs).clamp(1e-7, 1.0 - 1e-7)
        noise = torch.exp(log_s) * temperature * (torch.log(u) - torch.log1p(-u))
        if not self.coupled:
            return _to_grid(locs + noise)
        assert self.coeffs is not None
        coeffs = self._pick(self.coeffs, onehot.unsqueeze(1))  # [B, 3, H, W]
        xr = _to_grid(locs[:, 0] + noise[:, 0]) * 2.0 - 1.0
        xg = _to_grid(locs[:, 1] + coeffs[:, 0] * xr + noise[:, 1]) * 2.0 - 1.0
        xb = _to_grid(locs[:, 2] + coeffs[:, 1] * xr + coeffs[:, 2] * xg + noise[:, 2]) * 2.0 - 1.0
        return (torch.stack([xr, xg, xb], dim=1) + 1.0) / 2.0

    def mean(self) -> Tensor:
        """Approximate ``E[x]`` ``[B, C, H, W]`` in [0, 1] (not on the grid).

        Per component and channel the mean of the logistic clamped to [-1, 1] is used (closed form; exact up
        to the small rounding bias of the bins, and exact in the limit of mass beyond the edges). For RGB the
        coupling is applied to the component means (PixelCNN++-style): the G location is
        ``mu_G + a * E[x_R | k]`` and B's is ``mu_B + b * E[x_R | k] + c * E[x_G | k]``; this is exact for the
        unclamped continuous logistic and an approximation near the edges. The components are then averaged
        with the softmax mixture weights.
        """
        w = torch.softmax(self.logits, dim=1)  # [B, M, H, W]
        if not self.coupled:
            means = _clamped_logistic_mean(self.locs, self.log_scales)  # [B, C, M, H, W]
        else:
            assert self.coeffs is not None
            ls = self.log_scales
            er = _clamped_logistic_mean(self.locs[:, 0], ls[:, 0])
            eg = _clamped_logistic_mean(self.locs[:, 1] + self.coeffs[:, 0] * er, ls[:, 1])
            eb = _clamped_logistic_mean(
                self.locs[:, 2] + self.coeffs[:, 1] * er + self.coeffs[:, 2] * eg, ls[:, 2]
            )
            means = torch.stack([er, eg, eb], dim=1)
        x = (means * w.unsqueeze(1)).sum(dim=2)
        return ((x + 1.0) / 2.0).clamp(0.0, 1.0)

    def mode(self) -> Tensor:
        """Location of each pixel's most likely component (largest logit), rounded to the grid k/255.

        For RGB the coupling uses the rounded earlier channels. This is the usual PixelCNN++ "mode" used for
        clean reconstructions; it is not guaranteed to be the exact argmax of the mixture.
        """
        k = torch.argmax(self.logits, dim=1)
        onehot = F.one_hot(k, self.n_mix).permute(0, 3, 1, 2).to(self.logits.dtype).unsqueeze(1)
        locs = self._pick(self.locs, onehot)
        if not self.coupled:
            return _to_grid(locs)
        assert self.coeffs is not None
        coeffs = self._pick(self.coeffs, onehot)
        xr = _to_grid(locs[:, 0]) * 2.0 - 1.0
        xg = _to_grid(locs[:, 1] + coeffs[:, 0] * xr) * 2.0 - 1.0
        xb = _to_grid(locs[:, 2] + coeffs[:, 1] * xr + coeffs[:, 2] * xg) * 2.0 - 1.0
        return (torch.stack([xr, xg, xb], dim=1) + 1.0) / 2.0


def _edge_z(edge: Tensor, loc: Tensor, inv_s: Tensor) -> Tensor:
    """Where the edge below value ``edge`` (int, broadcast) lies in standard units of the logistics ``loc``,
    ``inv_s`` (in ``loc``'s dtype): ``-inf`` below the open-ended bin of 0, ``+inf`` above that of 255."""
    z = ((edge.to(loc.dtype) * 2.0 - 1.0) / 255.0 - 1.0 - loc) * inv_s
    return torch.where(edge <= 0, -math.inf, torch.where(edge >= 256, math.inf, z))


def _interval_probs(edge: Tensor, loc: Tensor, inv_s: Tensor) -> Tensor:
    """Probabilities ``[..., n]`` of the values between successive ``edge`` ``[..., n + 1]`` (int, rising; edge
    ``j`` below value ``j``) under the logistics ``loc``, ``inv_s`` ``[..., 1]``. Each interval's mass comes from its
    edges' nearer tails (``sigmoid(-|z|)``), so an interval far from the centre keeps its digits where ``1 - CDF``
    would round to 0; where every mass rounds to 0 the intervals holding a value are equally likely."""
    z = _edge_z(edge, loc, inv_s)
    tail = torch.sigmoid(-z.abs())  # the mass beyond each edge, on its side of the centre
    below = z < 0
    cdf_lo, cdf_hi = tail[..., :-1], tail[..., 1:]  # an interval's mass from its edges' tails:
    mass = torch.where(below[..., 1:], cdf_hi - cdf_lo,  # both edges below the centre
                       torch.where(~below[..., :-1], cdf_lo - cdf_hi,  # both above
                                   1.0 - cdf_lo - cdf_hi)).clamp(min=0.0)  # straddling it
    total = mass.sum(dim=-1, keepdim=True)
    values = (edge[..., 1:] > edge[..., :-1]).to(mass.dtype).expand_as(mass)  # intervals holding any value
    return torch.where(total > 0, mass / total.clamp(min=1e-300), values / values.sum(dim=-1, keepdim=True))


def log_window_mass(loc: Tensor, inv_s: Tensor, lo: Tensor, hi: Tensor) -> Tensor:
    """``log P(lo <= v <= hi)`` of the discretized logistic of location ``loc`` ([-1, 1] units) and inverse scale
    ``inv_s`` over the values ``v`` in 0..255 (int ``lo <= hi``, broadcast; the bins of 0 and 255 open-ended), in
    both tails without cancellation: ``log(sigmoid(b) - sigmoid(a)) = log sigmoid(b) + log sigmoid(-a) +
    log(1 - exp(a - b))`` for the standardised edges ``a < b``. With ``lo == hi`` it is one value's exact bin mass."""
    a, b = _edge_z(lo, loc, inv_s), _edge_z(hi + 1, loc, inv_s)
    return -F.softplus(-b) - F.softplus(a) + torch.log(-torch.expm1(a - b))


class WindowedMixture(DiscretizedLogisticMixture):
    """A :class:`DiscretizedLogisticMixture` whose every component is truncated, channel by channel, to a window
    of values ``lo .. hi`` (int ``[B, C, H, W]``, one per pixel and channel) and renormalised on it::

        p(x) = sum_k pi_k prod_c P_k(x_c | x_<c) / P_k(lo_c <= v <= hi_c | x_<c)    (0 outside the windows)

    Each factor sums to 1 on its window, so each component and the mixture do. With the RGB coupling as in the
    parent. A consistent srVAE's sub-pixel groups are these (:func:`selfvae.renormalise.group_window`: the values
    a pixel may take for its block to average to y): no mass on images the transform could not have made. Coding
    tables (:meth:`bin_probs`, :meth:`component_bin_probs`, :meth:`component_run_probs`) hold 0 outside a pixel's
    window."""

    def __init__(self, params: Tensor, channels: int, n_mix: int, lo: Tensor, hi: Tensor) -> None:
        super().__init__(params, channels, n_mix)
        shape = [params.shape[0], channels, *params.shape[2:]]
        if list(lo.shape) != shape or list(hi.shape) != shape:
            raise SelfVAEError(f"WindowedMixture: windows of shape {list(lo.shape)} / {list(hi.shape)}, expected "
                               f"{shape}")
        if (lo < 0).any() or (hi > 255).any():
            raise SelfVAEError("WindowedMixture: windows lo..hi must lie in 0..255")
        # an empty window (hi < lo: earlier values no block could complete) holds nothing: such images get -inf
        self.lo, self.hi, self._empty = lo.long(), torch.maximum(hi, lo).long(), (hi < lo).any(dim=1)

    def _log_channel_mass(self, locs: Tensor, c: int, x_pm1: Tensor) -> Tensor:
        """``log P_k(x_c | x_<c)`` truncated to the window, ``[B, M, H, W]``: the bin's mass over the window's (both
        exact in the tails, :func:`log_window_mass`). The parent's component posterior and tables weigh by it."""
        v = torch.round((x_pm1[:, c : c + 1] + 1.0) * 127.5).long()
        loc, inv_s = locs[:, c], torch.exp(-self.log_scales[:, c])
        return (log_window_mass(loc, inv_s, v, v)
                - log_window_mass(loc, inv_s, self.lo[:, c : c + 1], self.hi[:, c : c + 1]))

    def log_prob_per_dim(self, x: Tensor) -> Tensor:
        """Per-pixel log-probability ``[B, H, W]``, from exact bin masses (``-inf`` outside the windows)."""
        log_w, _ = self._weights_and_locs(self.channels, x)
        v = torch.round(x * 255.0).long()
        inside = ((v >= self.lo) & (v <= self.hi)).all(dim=1) & ~self._empty
        return torch.where(inside, torch.logsumexp(log_w, dim=1), -math.inf)

    def _clamp_edges(self, edge: Tensor, channel: int) -> Tensor:
        lo = self.lo[:, channel].reshape(-1, 1)
        return edge.clamp(min=lo, max=self.hi[:, channel].reshape(-1, 1) + 1)

    def _tables(self, loc: Tensor, inv_s: Tensor, channel: int) -> Tensor:
        """The 256-way tables ``[..., P, 256]`` of logistics ``loc``, ``inv_s`` ``[..., P, 1]`` on each pixel's
        window of ``channel`` (flat pixels ``P``), from exact tail-aware masses (uniform on the window where they
        all round to 0)."""
        return _interval_probs(self._clamp_edges(torch.arange(257, device=loc.device), channel), loc, inv_s)

    def bin_probs(self, channel: int, x: Tensor | None = None) -> Tensor:
        """Probabilities ``[B, H, W, 256]`` of ``channel``'s values given the earlier channels of ``x`` (see the
        parent), 0 outside each pixel's window."""
        log_w, locs = self._table_weights(channel, x)
        b, m, h, w = log_w.shape
        flat = lambda t: t.permute(1, 0, 2, 3).reshape(m, -1, 1)  # noqa: E731  [M, P, 1]
        tables = self._tables(flat(locs[:, channel]), flat(torch.exp(-self.log_scales[:, channel])), channel)
        return (flat(torch.softmax(log_w, dim=1)) * tables).sum(dim=0).view(b, h, w, 256)

    def component_bin_probs(self, channel: int, k: Tensor, x: Tensor | None = None) -> Tensor:
        """As the parent's, on each pixel's window."""
        loc, inv_s = self._component(channel, k, x, "component_bin_probs")
        b, _, h, w = self.params.shape
        return self._tables(loc, inv_s, channel).view(b, h, w, 256)

    def tempered(self, temperature: float) -> WindowedMixture:
        """The same windows, every logistic scale multiplied by ``temperature``."""
        if temperature == 1.0:
            return self
        hi = torch.where(self._empty.unsqueeze(1), self.lo - 1, self.hi)
        return WindowedMixture(super().tempered(temperature).params, self.channels, self.n_mix, self.lo, hi)

    def sample(self, temperature: float = 1.0) -> Tensor:
        """Draw ``x`` on the grid k/255, each channel of the chosen component from its logistic truncated to the
        window (inverse CDF between the window's edges): exactly the scored distribution at ``temperature`` 1."""
        if temperature != 1.0:
            return self.tempered(temperature).sample()
        u = torch.rand_like(self.logits).clamp(1e-10, 1.0 - 1e-7)
        k = torch.argmax(self.logits - torch.log(-torch.log(u)), dim=1)  # [B, H, W]
        out = torch.zeros_like(self.params[:, : self.channels])
        for c in range(self.channels):
            loc, inv_s = self._component(c, k, out, "sample")  # [P, 1], coupled to the channels drawn so far
            loc, inv_s = loc.double(), inv_s.double()
            lo, hi = self.lo[:, c].reshape(-1, 1), self.hi[:, c].reshape(-1, 1)
            a, b = torch.sigmoid(_edge_z(lo, loc, inv_s)), torch.sigmoid(_edge_z(hi + 1, loc, inv_s))
            p = (a + torch.rand_like(a) * (b - a)).clamp(1e-300, 1.0 - 1e-16)
            v = torch.round((loc + torch.logit(p) / inv_s + 1.0) * 127.5)
            out[:, c] = (torch.maximum(torch.minimum(v, hi), lo).view(out[:, c].shape) / 255.0).to(out.dtype)
        return out

    def _into_windows(self, x: Tensor) -> Tensor:
        return torch.maximum(torch.minimum(x * 255.0, self.hi), self.lo) / 255.0

    def mean(self) -> Tensor:
        """The parent's approximate mean, clamped into the windows (a summary, not the truncated mean)."""
        return self._into_windows(super().mean())

    def mode(self) -> Tensor:
        """The parent's mode, clamped into the windows."""
        return self._into_windows(super().mode())


class SubpixelMixture:
    """``p(x | latents) = prod_g p(x_g | latents, x_<g)`` over the 2x2 sub-pixel groups of :mod:`selfvae.nn.context`:
    each group a :class:`DiscretizedLogisticMixture`, group 0's parameters the decoder's (``base``) at its pixels,
    group ``g``'s those plus ``context``'s correction from the groups before it (and ``cond``, the level above x on
    the half-size grid in [-1, 1], where the context reads it). A normalised likelihood (each
    factor is), scored with the observed earlier groups (:meth:`log_prob`) and drawn group by group
    (:meth:`sample`). ``params`` are the decoder's, as a plain mixture's are; the codec codes group by group
    (:meth:`group`).

    With ``average`` (uint8 ``[B, C, H/2, W/2]``, a consistent srVAE's ``y_K``) each group is a
    :class:`WindowedMixture` on the values that keep its 2x2 block's average at ``average``
    (:func:`selfvae.renormalise.group_window`): a likelihood on the images ``downscale:2`` maps to ``average``
    only, normalised there, whose last group has at most four values a sub-pixel."""

    def __init__(self, base: DiscretizedLogisticMixture, context: SubpixelContext, cond: Tensor | None = None,
                 temperature: float = 1.0, average: Tensor | None = None) -> None:
        if (cond is None) != (context.cond_channels == 0):
            raise SelfVAEError(f"SubpixelMixture: its context reads {context.cond_channels} channels of the level "
                               f"above; given {'none' if cond is None else list(cond.shape)}")
        self.base, self.context, self.cond, self.temperature = base, context, cond, temperature
        self.average = average
        self.channels, self.n_mix, self.params = base.channels, base.n_mix, base.params
        self._means: dict[int, Tensor] = {}

    def base_mean(self, g: int) -> Tensor:
        """The decoder's mean of group ``g`` in [-1, 1] (what the context nets read beside the pixels)."""
        if g not in self._means:
            self._means[g] = self.base_group(g).mean() * 2.0 - 1.0
        return self._means[g]

    def base_group(self, g: int) -> DiscretizedLogisticMixture:
        return DiscretizedLogisticMixture(group_of(self.params, g), self.channels, self.n_mix)

    def group(self, g: int, earlier: list[Tensor]) -> DiscretizedLogisticMixture:
        """``p(x_g | latents, x_<g)``: ``earlier`` holds groups ``0..g-1`` (at least) of x on the grid in [0, 1]."""
        if g == 0:
            d = self.base_group(0)
        else:
            known = torch.cat([e * 2.0 - 1.0 for e in earlier[:g]], dim=1).to(self.params.dtype)
            means = torch.cat([self.base_mean(h) for h in range(g)], dim=1)
            d = DiscretizedLogisticMixture(self.context(g, group_of(self.params, g), known, means, self.cond),
                                           self.channels, self.n_mix)
        d = d.tempered(self.temperature)
        if self.average is None:
            return d
        lo, hi = group_window(self.average, [torch.round(e * 255.0) for e in earlier[:g]], g)
        return WindowedMixture(d.params, self.channels, self.n_mix, lo, hi)

    def log_prob_per_dim(self, x: Tensor) -> Tensor:
        """Per-pixel log-probability ``[B, H, W]`` of ``x`` (float ``[B, C, H, W]`` on the grid in [0, 1])."""
        self.base._check_x(x)
        parts = [group_of(x, g) for g in range(GROUPS)]
        per = [self.group(g, parts).log_prob_per_dim(parts[g]).unsqueeze(1) for g in range(GROUPS)]
        return join_groups(per)[:, 0]

    def log_prob(self, x: Tensor) -> Tensor:
        """``log p(x)`` in nats, ``[B]``."""
        return self.log_prob_per_dim(x).flatten(1).sum(dim=1)

    def tempered(self, temperature: float) -> SubpixelMixture:
        """Each group's logistic scales multiplied by ``temperature`` (after its context)."""
        return SubpixelMixture(self.base, self.context, self.cond, self.temperature * temperature, self.average)

    def _by_groups(self, draw: Callable[[DiscretizedLogisticMixture], Tensor]) -> Tensor:
        """x from ``draw`` (a group's mixture -> its pixels ``[B, C, h, w]`` in [0, 1]) applied group by group."""
        parts: list[Tensor] = []
        for g in range(GROUPS):
            parts.append(draw(self.group(g, parts)))
        return join_groups(parts)

    def sample(self, temperature: float = 1.0) -> Tensor:
        """Draw ``x`` ``[B, C, H, W]`` on the grid k/255, group by group (exactly the scored distribution at 1)."""
        return self._by_groups(lambda d: d.sample(temperature))

    def mean(self) -> Tensor:
        """Each group's approximate mean (:meth:`DiscretizedLogisticMixture.mean`) given the earlier groups' means
        (a plug-in: the mean of x where the groups depend on each other only through their means)."""
        return self._by_groups(lambda d: d.mean())

    def mode(self) -> Tensor:
        """Each group's :meth:`DiscretizedLogisticMixture.mode` given the earlier groups' modes."""
        return self._by_groups(lambda d: d.mode())


def _per_channel(t: Tensor) -> Tensor:
    """``[B, C, ...]`` summed over everything after the channel: ``[B, C]``."""
    return t.reshape(*t.shape[:2], -1).sum(dim=2)


class DiagonalGaussian:
    """Factorised Gaussian ``N(mu, diag(exp(logvar)))`` over tensors of any shape ``[B, ...]``."""

    def __init__(self, mu: Tensor, logvar: Tensor) -> None:
        if mu.shape != logvar.shape:
            raise SelfVAEError(
                f"DiagonalGaussian: mu shape {list(mu.shape)} and logvar shape {list(logvar.shape)} differ"
            )
        self._mu = mu
        self._logvar = logvar

    @property
    def mu(self) -> Tensor:
        return self._mu

    @property
    def mean(self) -> Tensor:
        return self._mu

    @property
    def logvar(self) -> Tensor:
        return self._logvar

    @property
    def std(self) -> Tensor:
        return torch.exp(0.5 * self._logvar)

    @property
    def var(self) -> Tensor:
        return torch.exp(self._logvar)

    def rsample(self) -> Tensor:
        """Reparameterised sample ``mu + std * eps`` (differentiable w.r.t. mu and logvar)."""
        return self._mu + self.std * torch.randn_like(self._mu)

    def sample(self, temperature: float = 1.0) -> Tensor:
        """Sample without gradient; ``temperature`` multiplies the standard deviation."""
        with torch.no_grad():
            return self._mu + temperature * self.std * torch.randn_like(self._mu)

    def log_prob(self, z: Tensor) -> Tensor:
        """``log N(z; mu, var)`` summed over all non-batch dimensions, ``[B]`` (summed in one pass, as every
        prior's ``log_prob`` sums, so that equal densities cancel exactly)."""
        return self._log_density(z).flatten(1).sum(dim=1)

    def log_ratio_per_channel(self, other: DiagonalGaussian, z: Tensor) -> Tensor:
        """``log self(z) - log other(z)`` of each channel (dimension 1), summed over the rest: ``[B, C]`` (the
        Monte Carlo KL at a sample ``z``; differenced place by place, so equal densities cancel exactly)."""
        return _per_channel(self._log_density(z) - other._log_density(z))

    def _log_density(self, z: Tensor) -> Tensor:
        return -0.5 * (math.log(2.0 * math.pi) + self._logvar + (z - self._mu) ** 2 * torch.exp(-self._logvar))

    def kl(self, other: DiagonalGaussian) -> Tensor:
        """Analytic ``KL(self || other)`` summed over all non-batch dimensions, ``[B]``."""
        return self.kl_per_channel(other).sum(dim=1)

    def kl_per_channel(self, other: DiagonalGaussian) -> Tensor:
        """Analytic ``KL(self || other)`` of each channel (dimension 1), summed over the rest: ``[B, C]`` (what
        per-channel free bits floor)."""
        kl = 0.5 * (
            other.logvar
            - self._logvar
            + (self.var + (self._mu - other.mu) ** 2) * torch.exp(-other.logvar)
            - 1.0
        )
        return _per_channel(kl)
