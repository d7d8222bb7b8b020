"""The generic K-level self-supervised VAE (thesis eq. 5.4); K = 0 is the plain VAE.

Levels are ordered coarse to fine: ``y_1, ..., y_K`` come from the transform chain applied to ``x``
(``y_K = d_1(x)``, ``y_{k} = d(y_{k+1})``) and ``y_{K+1} = x``. Latents are ``u, z_1, ..., z_K``.

Generative model::

    p(u) p(y_1 | u) prod_k p(z_k | y_k, z_{k-1}) p(y_{k+1} | y_k, z_k)        (z_0 = u)

Inference model::

    q(u | y_1) prod_k q(z_k | y_{k+1})

Every ``y`` is a deterministic function of ``x``, so ``p(x, d(x)) <= p(x)`` and the joint bound is also a
bound on ``log p(x)``: ``bpd`` (the joint negative ELBO over the dimensions of x) is an upper bound on the
negative log-likelihood of x in bits/dim. ``bpd_joint`` divides by the dimensions of x and every y, which is
the per-dimension figure of the joint ``(x, y_1..y_K)``.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from selfvae.config import CHOICES, ModelConfig
from selfvae.distributions import DiagonalGaussian, DiscretizedLogisticMixture, SubpixelMixture, WindowedMixture
from selfvae.errors import SelfVAEError
from selfvae.nn import paper
from selfvae.nn.context import SubpixelContext, check_even
from selfvae.nn.layers import elu
from selfvae.nn.nets import DenseDecoder, DenseEncoder, DenseNetwork, NetSpec, resample_to
from selfvae.priors import build_prior
from selfvae.transforms import apply_chain, chain_shapes, parse_chain


def to_input(y: Tensor, dtype: torch.dtype = torch.float32) -> Tensor:
    """uint8 image -> network input in [-1, 1]."""
    return y.to(dtype) / 127.5 - 1.0


def to_target(y: Tensor, dtype: torch.dtype = torch.float32) -> Tensor:
    """uint8 image -> likelihood target in [0, 1] on the grid k/255."""
    return y.to(dtype) / 255.0


def to_uint8(y: Tensor) -> Tensor:
    """[0, 1] image on the grid k/255 -> uint8."""
    return (y * 255.0).round().clamp(0, 255).to(torch.uint8)


def gaussian_from(params: Tensor) -> DiagonalGaussian:
    """Split a net's output into mean and log-variance; the log-variance is soft-clamped to [-7, 7]."""
    mu, raw = params.chunk(2, dim=1)
    return DiagonalGaussian(mu, 7.0 * torch.tanh(raw / 7.0))


def gaussian_hardtanh(params: Tensor) -> DiagonalGaussian:
    """The srVAE authors' split: the log-variance is ``hardtanh(-7, 7)`` (no gradient outside)."""
    mu, raw = params.chunk(2, dim=1)
    return DiagonalGaussian(mu, F.hardtanh(raw, -7.0, 7.0))


def _n_scale(shape: tuple[int, int, int], latent: tuple[int, int, int], what: str) -> int:
    """Number of 2x resolution changes between an image level and the latent grid."""
    (h, w), (lh, lw) = shape[1:], latent[1:]
    ratio = h // lh
    if h % lh or w % lw or w // lw != ratio or ratio & (ratio - 1):
        raise SelfVAEError(
            f"{what} has shape {shape}: the latent grid {latent[1:]} must divide it by a power of two"
        )
    return int(math.log2(ratio))


class ConditionalPrior(nn.Module):
    """p(z_k | y_k, z_{k-1}): a y-encoder and a z-network fused by a same-resolution network."""

    def __init__(self, y_shape: tuple[int, int, int], latent: tuple[int, int, int], spec: NetSpec,
                 y_spec: NetSpec) -> None:
        super().__init__()
        c = latent[0]
        self.y_net = DenseEncoder(y_shape[0], spec.width, y_spec, _n_scale(y_shape, latent, "level y"))
        self.z_net = DenseNetwork(c, spec.width, spec, out_scale=1.0)
        self.core = DenseNetwork(2 * spec.width, 2 * c, spec)

    def encode_y(self, y_in: Tensor) -> Tensor:
        """Features of ``y_k`` (depend on x only, so they are computed once per image)."""
        return self.y_net(y_in)

    def forward(self, y_feat: Tensor, z_prev: Tensor) -> DiagonalGaussian:
        h = torch.cat([elu(y_feat), elu(self.z_net(z_prev))], dim=1)
        return gaussian_from(self.core(h))


class ConditionalDecoder(nn.Module):
    """p(y_{k+1} | y_k, z_k): z_k is decoded to the finer resolution, joined with the (resized) y_k."""

    def __init__(
        self,
        y_shape: tuple[int, int, int],
        out_shape: tuple[int, int, int],
        latent: tuple[int, int, int],
        spec: NetSpec,
        n_mix: int,
        z_spec: NetSpec,
    ) -> None:
        super().__init__()
        self.out_size = out_shape[1:]
        self.out_channels = out_shape[0]
        self.n_mix = n_mix
        self.z_net = DenseDecoder(latent[0], spec.width, z_spec, _n_scale(out_shape, latent, "level"))
        n_params = DiscretizedLogisticMixture.n_params(out_shape[0], n_mix)
        self.core = DenseNetwork(spec.width + y_shape[0], n_params, spec)

    def forward(self, y_in: Tensor, z: Tensor) -> DiscretizedLogisticMixture:
        h = torch.cat([elu(self.z_net(z)), resample_to(y_in, self.out_size)], dim=1)
        return DiscretizedLogisticMixture(self.core(h), self.out_channels, self.n_mix)


class PaperConditionalPrior(nn.Module):
    """p(z_k | y_k, z_{k-1}) as the authors' ``p_z``: ``ELU(y-encoder(y))`` and a same-resolution net of
    ``z_{k-1}`` (no activation after it), concatenated, through another same-resolution net; hardtanh
    log-variance. ``y_spec`` sizes the y-encoder (theirs: growth 32, 5 steps), ``spec`` the other two."""

    def __init__(self, y_shape: tuple[int, int, int], latent: tuple[int, int, int], spec: NetSpec,
                 y_spec: NetSpec) -> None:
        super().__init__()
        c = latent[0]
        n = _n_scale(y_shape, latent, "level y")
        self.y_net = paper.paper_encoder(y_shape[0], c, y_spec.growth, y_spec.steps, n)
        self.z_net = paper.paper_network(c, c, spec.growth, spec.steps, spec.blocks)
        self.core = paper.paper_network(2 * c, 2 * c, spec.growth, spec.steps, spec.blocks)

    def encode_y(self, y_in: Tensor) -> Tensor:
        return elu(self.y_net(y_in))

    def forward(self, y_feat: Tensor, z_prev: Tensor) -> DiagonalGaussian:
        return gaussian_hardtanh(self.core(torch.cat([y_feat, self.z_net(z_prev)], dim=1)))


class PaperConditionalDecoder(nn.Module):
    """p(y_{k+1} | y_k, z_k) as the authors' ``p_x``: a decoder of z_k straight to the likelihood's
    outputs, concatenated after the bilinearly resized y_k, through a same-resolution net. ``z_spec`` sizes
    the z-decoder (theirs: growth 64, 8 steps), ``spec`` the joint net (growth 64, 5 steps, 3 blocks)."""

    def __init__(self, y_shape: tuple[int, int, int], out_shape: tuple[int, int, int],
                 latent: tuple[int, int, int], spec: NetSpec, z_spec: NetSpec, n_mix: int) -> None:
        super().__init__()
        self.out_size = out_shape[1:]
        self.out_channels, self.n_mix = out_shape[0], n_mix
        n_out = paper.paper_n_params(out_shape[0], n_mix)
        n_up = _n_scale(out_shape, latent, "level")
        self.z_net = paper.paper_decoder(latent[0], n_out, z_spec.growth, z_spec.steps, n_up)
        self.core = paper.paper_network(n_out + y_shape[0], n_out, spec.growth, spec.steps, spec.blocks)
        self.to_params = paper.PaperDMoLParams(out_shape[0], n_mix)

    def forward(self, y_in: Tensor, z: Tensor) -> DiscretizedLogisticMixture:
        y = F.interpolate(y_in, size=self.out_size, mode="bilinear", align_corners=False)
        raw = self.core(torch.cat([y, self.z_net(z)], dim=1))
        return DiscretizedLogisticMixture(self.to_params(raw), self.out_channels, self.n_mix)


@dataclass
class Terms:
    """Per-image terms of the negative ELBO in nats, each ``[B]`` (or ``[B, n]`` per level).

    ``re``: reconstruction errors ``-log p(y_1|u), ..., -log p(x|y_K,z_K)`` (coarse to fine, ``[B, K+1]``);
    ``kl_u``: ``log q(u|y_1) - log p(u)`` (Monte Carlo); ``kl_z_channels``: the KL of each ``z_k`` (analytic or
    Monte Carlo) by channel, ``[B, C_k]`` each (what per-channel free bits floor); ``kl_z``: their sums.
    """

    re: Tensor
    kl_u: Tensor
    kl_z_channels: list[Tensor]

    @property
    def kl_z(self) -> Tensor:
        """KL of each ``z_k``, ``[B, K]``."""
        if not self.kl_z_channels:
            return self.re.new_zeros(self.re.shape[0], 0)
        return torch.stack([c.sum(1) for c in self.kl_z_channels], 1)

    @property
    def nelbo(self) -> Tensor:
        return self.re.sum(1) + self.kl_u + self.kl_z.sum(1)


class SelfVAE(nn.Module):
    """K-level selfVAE; see the module docstring for the factorisation."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg = dataclasses.replace(cfg)  # its own copy: set_consistent changes it, not the caller's
        self.chain = parse_chain(cfg.transforms)
        self.K = len(self.chain)
        self.shapes: list[tuple[int, int, int]] = [
            *chain_shapes(self.chain, cfg.image_shape),
            tuple(cfg.image_shape),
        ]
        lat = tuple(cfg.latent_shape)
        top = self.shapes[0]
        n_top = _n_scale(top, lat, "level y_1" if self.K else "image")
        self.p_u = build_prior(cfg.prior, lat, **cfg.prior_kwargs)
        z_nets = cfg.z_nets or cfg.nets
        for key, family in (("nets", cfg.nets), ("z_nets", z_nets)):
            if family not in NET_FAMILIES:
                raise SelfVAEError(f"model.{key}={family!r}: expected one of {', '.join(NET_FAMILIES)}")
        self.paper = cfg.nets == "paper"  # the u side's family (q_u, p_y)
        self.paper_z = z_nets == "paper"  # the z side's (q_z, p_z, p_x)
        if self.paper:
            n_y = paper.paper_n_params(top[0], cfg.n_mix)
            self.q_u = paper.paper_encoder(top[0], 2 * lat[0], cfg.q_u.growth, cfg.q_u.steps, n_top)
            self.p_y = nn.Sequential(paper.paper_decoder(lat[0], n_y, cfg.p_y.growth, cfg.p_y.steps, n_top),
                                     paper.PaperDMoLParams(top[0], cfg.n_mix))
        else:
            self.q_u = DenseEncoder(top[0], 2 * lat[0], cfg.q_u, n_top)
            self.p_y = DenseDecoder(lat[0], DiscretizedLogisticMixture.n_params(top[0], cfg.n_mix), cfg.p_y, n_top)
        if self.paper_z:
            self.q_z = nn.ModuleList(
                paper.paper_encoder(s[0], 2 * lat[0], cfg.q_z.growth, cfg.q_z.steps, _n_scale(s, lat, "level"))
                for s in self.shapes[1:]
            )
            self.p_z = nn.ModuleList(PaperConditionalPrior(s, lat, cfg.p_z, cfg.inner("p_z_y"))
                                     for s in self.shapes[:-1])
            self.p_x = nn.ModuleList(
                PaperConditionalDecoder(self.shapes[k], self.shapes[k + 1], lat, cfg.p_x, cfg.inner("p_x_z"),
                                        cfg.n_mix)
                for k in range(self.K)
            )
        else:
            self.q_z = nn.ModuleList(
                DenseEncoder(s[0], 2 * lat[0], cfg.q_z, _n_scale(s, lat, "level")) for s in self.shapes[1:]
            )
            self.p_z = nn.ModuleList(ConditionalPrior(s, lat, cfg.p_z, cfg.inner("p_z_y")) for s in self.shapes[:-1])
            self.p_x = nn.ModuleList(
                ConditionalDecoder(self.shapes[k], self.shapes[k + 1], lat, cfg.p_x, cfg.n_mix, cfg.inner("p_x_z"))
                for k in range(self.K)
            )
        self.q_u_residual = (DenseEncoder(top[0], 2 * lat[0], cfg.q_u_residual, n_top, zero_start=True)
                             if cfg.q_u_residual is not None else None)
        self.x_context = self._context(cfg)
        self.y_context = self._y_context(cfg)
        self.gaussian = gaussian_hardtanh if self.paper else gaussian_from  # q(u|y_1)'s parameters
        self.gaussian_z = gaussian_hardtanh if self.paper_z else gaussian_from  # each q(z_k|y_k+1)'s
        self.set_consistent(cfg.consistent)
        self.padded_dims = math.prod(cfg.image_shape)
        self.x_dims = math.prod(_data_shape(cfg))  # bits/dim are per dimension of the data's own images
        self.joint_dims = sum(math.prod(s) for s in self.shapes)

    def _context(self, cfg: ModelConfig) -> SubpixelContext | None:
        """x's sub-pixel context net (``cfg.context_width``), or None."""
        if not cfg.context_width:
            return None
        check_even(self.shapes[-1], "model.image_shape")  # set_consistent checks what a renormalised one needs
        c = self.shapes[-1][0]
        cond = self.shapes[-2][0] if self.K else 0  # a selfVAE's context reads y_K too
        return SubpixelContext(c, DiscretizedLogisticMixture.n_params(c, cfg.n_mix), cfg.context_width,
                               cfg.context_layers, cond)

    def _y_context(self, cfg: ModelConfig) -> SubpixelContext | None:
        """y_1's sub-pixel context net (``cfg.y_context_width``, a selfVAE's only), or None."""
        if not cfg.y_context_width:
            return None
        if not self.K:
            raise SelfVAEError(f"model.y_context_width {cfg.y_context_width}: a plain VAE's y_1 is x, whose context "
                               f"is model.context_width; set that instead")
        check_even(self.shapes[0], "level y_1")
        c = self.shapes[0][0]
        return SubpixelContext(c, DiscretizedLogisticMixture.n_params(c, cfg.n_mix), cfg.y_context_width,
                               cfg.context_layers)

    def with_context(self, i: int, p: DiscretizedLogisticMixture, y_above: Tensor | None = None,
                     ) -> DiscretizedLogisticMixture | SubpixelMixture:
        """Level ``i``'s likelihood (0: ``y_1``, ``K``: x) from its decoder's mixture ``p``, with that level's
        sub-pixel context where it has one (x's reads ``y_above`` in a selfVAE)."""
        if i == self.K:
            return self.x_likelihood(p, y_above)
        if i == 0 and self.y_context is not None:
            return SubpixelMixture(p, self.y_context)
        return p

    def has_context(self, i: int) -> bool:
        """Whether level ``i`` (0: ``y_1``, ``K``: x) is scored group by group (:mod:`selfvae.nn.context`)."""
        return (self.x_context if i == self.K else self.y_context if i == 0 else None) is not None

    def x_likelihood(self, p: DiscretizedLogisticMixture, y_above: Tensor | None = None,
                     ) -> DiscretizedLogisticMixture | SubpixelMixture:
        """The likelihood of x from the decoder's mixture ``p``: ``p`` itself, or with the sub-pixel context (which,
        in a selfVAE, reads ``y_above``: ``y_K``, uint8, put on the half-size grid)."""
        if self.x_context is None:
            return p
        cond = None
        if self.K:
            assert y_above is not None
            h, w = p.params.shape[-2] // 2, p.params.shape[-1] // 2
            cond = resample_to(to_input(y_above, p.params.dtype), (h, w))
        return SubpixelMixture(p, self.x_context, cond, average=y_above if self.cfg.consistent else None)

    @property
    def dtype(self) -> torch.dtype:
        return next(self.q_u.parameters()).dtype

    def inp(self, y: Tensor, z_side: bool = False) -> Tensor:
        """uint8 level -> network input in the model's dtype: [-1, 1], or [0, 1] for the authors' nets (those of
        the u side, or with ``z_side`` of the z side: ``cfg.z_nets``)."""
        if self.paper_z if z_side else self.paper:
            return y.to(self.dtype) / 255.0
        return to_input(y, self.dtype)

    def target(self, y: Tensor) -> Tensor:
        """uint8 level -> likelihood target in [0, 1] in the model's dtype."""
        return to_target(y, self.dtype)

    # ----- levels and single distributions -------------------------------------------------------
    def levels(self, x: Tensor) -> list[Tensor]:
        """``[y_1, ..., y_K, x]`` as uint8, after checking ``x``."""
        if x.dtype != torch.uint8:
            raise SelfVAEError(f"images have dtype {x.dtype}, expected uint8 0..255")
        if tuple(x.shape[1:]) != self.shapes[-1]:
            raise SelfVAEError(f"images have shape {tuple(x.shape[1:])}, this model expects {self.shapes[-1]}")
        return [*apply_chain(self.chain, x), x]

    def q_u_given(self, y1: Tensor) -> DiagonalGaussian:
        """q(u | y_1) of uint8 ``y1`` (x in a plain VAE)."""
        return self._q_u(self.inp(y1))

    def _q_u(self, y_in: Tensor) -> DiagonalGaussian:
        """q(u | y_1) from its network input: the encoder's parameters, plus the residual encoder's where the model
        has one."""
        params = self.q_u(y_in)
        if self.q_u_residual is not None:
            params = params + self.q_u_residual(y_in)
        return self.gaussian(params)

    def q_z_given(self, k: int, y_next: Tensor) -> DiagonalGaussian:
        """q(z_{k+1} | y_{k+2}) in 0-based ``k``."""
        return self.gaussian_z(self.q_z[k](self.inp(y_next, z_side=True)))

    def posterior_means(self, x: Tensor) -> dict[str, Tensor]:
        """``E_q[u]`` and each ``E_q[z_k]`` of uint8 images ``x`` ``[B, C, H, W]``, keyed ``"u"``, ``"z1"``, ...
        (each ``[B, *latent_shape]``): what the active-unit diagnostic (Burda et al., 2015) measures the spread
        of across images. ``q(u | y_1)`` and ``q(z_k | y_{k+1})`` depend on the images alone, so no sample is
        drawn."""
        return self._posterior_means(self.levels(x))

    def _posterior_means(self, levels: list[Tensor]) -> dict[str, Tensor]:
        return {name: q.mu for name, q in self._posteriors(levels).items()}

    def posteriors(self, x: Tensor) -> dict[str, DiagonalGaussian]:
        """The encoders' ``q(u | y_1)`` and each ``q(z_k | y_{k+1})`` of uint8 images ``x``, keyed ``"u"``, ``"z1"``,
        ...: what :meth:`terms` uses unless given others (``q``), say ones optimised per image
        (:func:`selfvae.evaluation.refine.refine`)."""
        return self._posteriors(self.levels(x))

    def _posteriors(self, levels: list[Tensor]) -> dict[str, DiagonalGaussian]:
        q = {"u": self.q_u_given(levels[0])}
        for k in range(self.K):
            q[f"z{k + 1}"] = self.q_z_given(k, levels[k + 1])
        return q

    def prior_offsets(self, x: Tensor, means: dict[str, Tensor] | None = None) -> dict[str, Tensor]:
        """Each conditional latent's posterior mean measured from its prior's, in the prior's standard deviations:
        ``(E_q[z_k] - E_p[z_k]) / std_p[z_k]``, keyed ``"z1"``, ... (each ``[B, *latent_shape]``), the prior
        ``p(z_k | y_k, z_{k-1})`` taken at the posterior mean of the latent above (``z_0 = u``).

        Burda's test (the spread of :meth:`posterior_means`) assumes a prior fixed for every image. Where the prior
        moves with the image, a posterior that only follows it passes that test while carrying nothing (KL 0);
        the spread of this offset over images is what the posterior adds to its prior (the informative units of
        :func:`selfvae.evaluation.bounds.evaluate`), and equals Burda's under a N(0, 1) prior. ``means``: the
        :meth:`posterior_means` of ``x`` where the caller has them (the encoders are not run again)."""
        levels = self.levels(x)
        means = means if means is not None else self._posterior_means(levels)
        above = means["u"]
        offsets = {}
        for k in range(self.K):
            mu_q, p = means[f"z{k + 1}"], self.p_z_given(k, levels[k], above)
            offsets[f"z{k + 1}"] = (mu_q - p.mu) * torch.exp(-0.5 * p.logvar)
            above = mu_q
        return offsets

    def p_y_given(self, u: Tensor) -> DiscretizedLogisticMixture | SubpixelMixture:
        """p(y_1 | u): the likelihood of the coarsest level, with its context where it has one (x's for a plain VAE)."""
        return self.with_context(0, DiscretizedLogisticMixture(self.p_y(u), self.shapes[0][0], self.cfg.n_mix))

    def p_z_given(self, k: int, y: Tensor, z_above: Tensor) -> DiagonalGaussian:
        """p(z_{k+1} | y_{k+1}, z_k) in 0-based ``k`` (``z_0 = u``): the conditional prior of level ``k+1``'s
        latent given the level ``y`` (uint8) and the latent above it."""
        return self.p_z[k](self.p_z[k].encode_y(self.inp(y, z_side=True)), z_above)

    def p_x_given(self, k: int, y: Tensor, z: Tensor) -> DiscretizedLogisticMixture | SubpixelMixture:
        """p(y_{k+2} | y_{k+1}, z_{k+1}) in 0-based ``k``: the likelihood of the level below ``y`` (uint8), x
        itself (with its context) for the last ``k``; not renormalised (:meth:`re_level` is)."""
        return self._p_x(k, y, self.inp(y, z_side=True), z)

    def _p_x(self, k: int, y: Tensor, y_in: Tensor, z: Tensor) -> DiscretizedLogisticMixture | SubpixelMixture:
        p = self.p_x[k](y_in, z)
        return self.x_likelihood(p, y) if k == self.K - 1 else p

    def likelihood(self, i: int, params: Tensor, lo: Tensor | None = None, hi: Tensor | None = None,
                   ) -> DiscretizedLogisticMixture:
        """The decoder's mixture of level ``i`` (0: ``y_1``, ``K``: x) from its raw parameters (``.params`` of
        :meth:`p_y_given` / :meth:`p_x_given`), without x's sub-pixel context (:meth:`x_likelihood` adds it); with
        windows ``lo .. hi`` (a consistent context's group: :func:`selfvae.renormalise.group_window`) truncated
        to them (:class:`~selfvae.distributions.WindowedMixture`)."""
        if lo is not None and hi is not None:
            return WindowedMixture(params, self.shapes[i][0], self.cfg.n_mix, lo, hi)
        return DiscretizedLogisticMixture(params, self.shapes[i][0], self.cfg.n_mix)

    # ----- the bound ---------------------------------------------------------------------------
    def terms(self, x: Tensor, n_samples: int = 1, analytic_kl: bool = True, inside: Tensor | None = None,
              q: dict[str, DiagonalGaussian] | None = None) -> Terms:
        """Terms of the negative ELBO for ``n_samples`` posterior samples per image.

        Results are shaped ``[n_samples * B]`` (sample-major). With ``analytic_kl=False`` every term is a
        single-sample Monte Carlo estimate, so ``-nelbo`` is exactly the log importance weight
        ``log p(x, y, u, z) - log q(u, z | x)`` used by :func:`selfvae.evaluation.bounds.iw_bound`.
        ``inside`` (bool ``[B, H, W]``): only these pixels of ``x`` count in its reconstruction term (the codec's
        tiles partly outside their image, whose other pixels follow from these; not with ``cfg.consistent``).
        ``q``: the posteriors to draw from and score, keyed as :meth:`posteriors` gives them (each ``[B, *latent]``),
        instead of the encoders' (any posteriors give a bound on ``-log p(x)``; the encoders' are not run).
        """
        if inside is not None and n_samples > 1:
            inside = _repeat(n_samples)([inside])[0]
        levels = self.levels(x)
        inputs = [self.inp(y, z_side=True) for y in levels]  # the z side's
        if q is None:
            q_u = self._q_u(inputs[0] if self.paper == self.paper_z else self.inp(levels[0]))
            q_z = [self.gaussian_z(self.q_z[k](inputs[k + 1])) for k in range(self.K)]
        else:
            q_u, q_z = q["u"], [q[f"z{k + 1}"] for k in range(self.K)]
        y_feats = [self.p_z[k].encode_y(inputs[k]) for k in range(self.K)]
        if n_samples > 1:
            rep = _repeat(n_samples)
            levels, inputs, y_feats = rep(levels), rep(inputs), rep(y_feats)
            q_u = DiagonalGaussian(*rep([q_u.mu, q_u.logvar]))
            q_z = [DiagonalGaussian(*rep([q.mu, q.logvar])) for q in q_z]

        u = q_u.rsample()
        kl_u = q_u.log_prob(u) - self.p_u.log_prob(u)
        p_top = self.p_y_given(u)
        re = [-(p_top.log_prob(self.target(levels[0])) if inside is None or self.K
                else _masked_log_prob(p_top, self.target(levels[0]), inside))]
        kl_z = []
        z_prev = u
        for k in range(self.K):
            z = q_z[k].rsample()
            p_z = self.p_z[k](y_feats[k], z_prev)
            kl_z.append(q_z[k].kl_per_channel(p_z) if analytic_kl
                        else q_z[k].log_ratio_per_channel(p_z, z))
            p_x = self._p_x(k, levels[k], inputs[k], z)
            re.append(self.re_level(k, p_x, levels, inside if k == self.K - 1 else None))
            z_prev = z
        return Terms(re=torch.stack(re, 1), kl_u=kl_u, kl_z_channels=kl_z)

    def set_consistent(self, on: bool) -> None:
        """Renormalise each ``p(y_k+1 | y_k, z_k)`` onto ``d(y_k+1) = y_k`` (``cfg.consistent``), or stop. Any
        trained downscaling model can be evaluated so: its bound is then valid and tighter."""
        if on and self.x_context is not None and not (self.K and self.chain[0].spec == "downscale"):
            raise SelfVAEError(f"this model's x has a sub-pixel context (model.context_width > 0): it is renormalised "
                               f"onto d(x) = y (--consistent, model.consistent=true) group by group, which needs the "
                               f"2x2 blocks of a selfVAE whose last transform is 'downscale' (factor 2); "
                               f"model.transforms is {self.cfg.transforms!r}")
        if on and not all(t.renormalisable for t in self.chain):
            raise SelfVAEError(f"model.consistent=true needs transforms that can renormalise p(x|y,z) onto d(x) = y "
                               f"(only 'downscale'); model.transforms is {self.cfg.transforms!r}")
        self.cfg.consistent = bool(on)

    def re_level(self, k: int, p: DiscretizedLogisticMixture | SubpixelMixture, levels: list[Tensor],
                 inside: Tensor | None = None) -> Tensor:
        """``-log p(level k+1 | level k, z)`` ``[B]`` (0-based ``k``; ``levels`` as :meth:`levels`), renormalised onto
        ``d(level k+1) = level k`` when ``cfg.consistent``: ``+ log P(d(x) = y)`` under ``p``'s first channel (in
        float32 while training, float64 in evaluation). ``inside``: of the pixels only these (see :meth:`terms`)."""
        if inside is not None:
            if self.cfg.consistent:
                raise SelfVAEError("a renormalised (consistent) level is coded whole: no pixels can be left out")
            return -_masked_log_prob(p, self.target(levels[k + 1]), inside)
        re = -p.log_prob(self.target(levels[k + 1]))
        if self.cfg.consistent and not isinstance(p, SubpixelMixture):  # a context's groups are windowed already
            d = self.chain[self.K - 1 - k]  # the transform that made level k from level k+1
            dtype = torch.float32 if self.training else torch.float64  # float64: the figures reported
            re = re + d.log_mass_consistent(p, levels[k][:, 0], dtype).to(re.dtype)
        return re

    def bpd(self, nats: Tensor) -> Tensor:
        """Nats per image -> bits per dimension of x (of the data's own image: 784 for padded MNIST)."""
        return nats / (self.x_dims * math.log(2.0))

    def forward(self, x: Tensor) -> Tensor:
        """Mean negative ELBO in bits/dim of x (the training loss)."""
        return self.bpd(self.terms(x).nelbo).mean()


def _data_shape(cfg: ModelConfig) -> tuple[int, int, int]:
    """``cfg.data_shape`` checked against the frame ``cfg.image_shape`` it sits in (``image_shape`` if None)."""
    if cfg.data_shape is None:
        return tuple(cfg.image_shape)
    (c, h, w), (fc, fh, fw) = cfg.data_shape, cfg.image_shape
    if c != fc or not (0 < h <= fh and 0 < w <= fw):
        raise SelfVAEError(f"model.data_shape {tuple(cfg.data_shape)} does not fit in model.image_shape "
                           f"{tuple(cfg.image_shape)} (same channels, at most as large)")
    return c, h, w


NET_FAMILIES = CHOICES["model.nets"]  # ModelConfig.nets: our networks, or the srVAE authors' (selfvae.nn.paper)


def _masked_log_prob(p: DiscretizedLogisticMixture, target: Tensor, inside: Tensor) -> Tensor:
    """``[B]``: the log-probability of the pixels of ``target`` where ``inside`` (``[B, H, W]``) holds."""
    return torch.where(inside, p.log_prob_per_dim(target), 0.0).flatten(1).sum(dim=1)


def _repeat(n: int):
    def rep(ts: list[Tensor]) -> list[Tensor]:
        return [t.repeat(n, *([1] * (t.dim() - 1))) for t in ts]

    return rep
