"""Bits-back coding of images with a :class:`~selfvae.models.selfvae.SelfVAE` (BB-ANS, Townsend et al. 2019),
ordered as Bit-Swap (Kingma et al. 2019) orders a hierarchy.

Write the model's variables as latents ``L_0 = u, L_1 = z_1, ..., L_K = z_K`` and image levels
``l_0 = y_1, ..., l_{K-1} = y_K, l_K = x``. The decoder works in the generative order::

    pop L_0 ~ p(u)                 pop l_0 ~ p(y_1 | u)
    for j = 1..K:  pop L_j ~ p(z_j | y_j, L_{j-1});  push L_{j-1} with q(L_{j-1} | l_{j-1});
                   pop l_j ~ p(l_j | l_{j-1}, z_j)
    push L_K with q(L_K | l_K)

so the bits borrowed for a latent are returned as soon as the next level is known, and the encoder (the same
steps reversed) needs initial bits only for its first pop, ``q(L_K | x)`` of the first image it codes. The
top of the stack holds ``u`` and ``y_1``: a prefix of the file decodes ``y_1`` (then ``y_2``, ...) first.

Latents are discretised on a uniform grid (:class:`~selfvae.codec.ans.Grid`) and posterior and prior are
integrated over the same bins, so the rate approaches the negative ELBO as the grid gets finer. Priors:

* standard normal: a discretised ``N(0, 1)`` per dimension;
* mixture of Gaussians: bits back on the component ``c``: push ``u`` with component ``c`` and ``c`` with the
  mixture weights, after popping ``c`` from its posterior responsibility ``p(c | u)`` - exactly ``-log p(u)``;
* RealNVP: local bits-back coding (Ho, Lohn & Abbeel 2019) one coupling at a time. Given the entries a
  coupling keeps, it is an elementwise affine map ``y = (x + t) exp(s)`` of the entries it changes, so its
  Jacobian is exact and diagonal there. The encoder first moves ``u`` onto the fine grid ``2**-flow_precision``
  (popping each value's position inside its coarse bin: uniform, given back by the decoder), then per
  coupling pops ``y ~ N((x + t) exp(s), sigma^2)`` (``sigma = 2**-flow_noise``) and pushes ``x`` with
  ``N(y exp(-s) - t, sigma^2 exp(-2s))``, which costs ``-s`` nats an entry whatever ``y`` was drawn; last it
  pushes ``v`` with ``N(0, 1)``. The net cost is ``-log p(u)`` on the coarse grid up to ``O(sigma^2)`` and
  discretisation terms (measured in ``docs/RESULTS.md``); the decoder runs the couplings backwards and
  always recovers ``u`` exactly.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import torch
from torch import Tensor

from selfvae.codec.ans import Grid, Stack, StackUnderflow  # noqa: F401 - raised by Stack's pops
from selfvae.codec.compute import ChunkRunner
from selfvae.codec.container import MAX_SAMPLES
from selfvae.codec.images import Cover
from selfvae.codec.prior_coding import coding_class
from selfvae.distributions import VALUES_PER_RUN, DiagonalGaussian
from selfvae.errors import SelfVAEError
from selfvae.models.selfvae import SelfVAE
from selfvae.nn.context import GROUPS, ORDER, group_of
from selfvae.priors import CouplingStep
from selfvae.renormalise import BlockConstraint, group_window


@dataclass(frozen=True)
class CodingParams:
    """What encoder and decoder must agree on; every field is stored in the file."""

    precision: int = 6  # latent grid 2**-precision
    flow_precision: int = 10  # RealNVP coupling grid 2**-flow_precision (at most 16: float32 holds it exactly)
    flow_noise: int = 6  # RealNVP coupling noise sigma = 2**-flow_noise
    # images per network call (results depend on it; see selfvae.codec.compute). Small chunks keep a network's
    # activations in cache (benchmarks/codec.py --chunk N measures the rate)
    chunk: int = 4
    # images per call of the RealNVP prior's coupling nets at most (see BitsBackCoder.flow_chunk): they run on
    # small latents (mnist-vae: 8x8), where a call's fixed cost dominates, so they take larger chunks
    flow_chunk: int = 16
    mixture_bits_back: bool = True  # pixels coded under a component popped from its posterior (files of version 3)
    # latent sets per image (BB-IS, selfvae.codec.importance: the rate of the IW bound with S samples instead of
    # the ELBO's); the file's first images, with few bits on the stack to borrow, get fewer (files of version 5)
    samples: int = 1
    # a lossless file's first images (until the stack can fund bits back) are coded with chosen latents and no
    # pops (selfvae.codec.chosen) instead of popping from seeded random words (files of version 6)
    chosen_first: bool = True
    # a group smaller than two chunks runs at chunks of half its images (at least 1): a group of one image
    # computes one image, not a chunk padded with zeros, and a group of two or four uses both threads; the
    # first groups of a file are that small while the stack grows (files of version 7)
    small_chunks: bool = True
    # the pixels of a tile outside its image (a photograph's last row and column of tiles, a small image in the
    # middle of one) are not coded: they repeat the image's edge, which the decoder rebuilds (files of version 10;
    # older ones padded with black and coded it: 0.03-0.05 bits/dim of the test photographs)
    edge_cover: bool = True
    # a sub-pixel coded under its mixture component in two 16-way steps, its run of 16 values then its place in
    # it (DiscretizedLogisticMixture.component_run_probs): the same rate from a fifteenth of the table work
    # (files of version 11; older ones coded one 256-way table a sub-pixel)
    split_values: bool = True


Levels = list[Tensor]  # uint8 image levels [y_1, ..., y_K, x]
Latents = list[Tensor]  # float32 latents [u, z_1, ..., z_K] on the grid

Hook = Callable[[str], None]  # called with the part just coded: progress and accounting
Window = tuple[Tensor, Tensor] | None  # a consistent context group's values lo .. hi per sub-pixel (int64), or none


def _window(window: Window) -> tuple[Tensor | None, Tensor | None]:
    """``window`` as two inputs of :meth:`ChunkRunner.map` (None, None where there is none)."""
    return (None, None) if window is None else window


def _certain(probs: np.ndarray, outside: np.ndarray | None) -> np.ndarray:
    """``probs`` ``[n, H, W, m]`` with the rows ``outside`` (``[n, H, W]``) certain of value 0 (in place)."""
    if outside is not None:
        probs[outside] = 0.0
        probs[outside, 0] = 1.0
    return probs


def _zeroed(values: np.ndarray, outside: np.ndarray | None) -> np.ndarray:
    """``values`` ``[n, H, W]`` with 0 where ``outside``: what a table :func:`_certain` of 0 codes there."""
    if outside is None:
        return values
    return np.where(outside, 0, values)


def _zeroed_level(level: Tensor, outside: np.ndarray | None) -> Tensor:
    """``level`` (uint8 ``[n, C, H, W]``) with 0 at the pixels ``outside`` (``[n, H, W]``)."""
    if outside is None:
        return level
    return level.masked_fill(torch.from_numpy(outside).unsqueeze(1), 0)


def growth_hook(stack: Stack, parts: dict[str, float]) -> Hook:
    """A :data:`Hook` that adds to ``parts[part]`` (a ``defaultdict(float)``) the bits ``stack`` grew by since the
    hook's previous call, or since it was made: what each part of a group cost."""
    last = [stack.num_bits()]

    def hook(part: str) -> None:
        parts[part] += stack.num_bits() - last[0]
        last[0] = stack.num_bits()

    return hook


class LossyTop(Protocol):
    """What a lossy file keeps of ``z_K`` and how it rebuilds ``x`` (:mod:`selfvae.codec.lossy`)."""

    def push(self, coder: BitsBackCoder, stack: Stack, levels: Levels, latent_above: Tensor) -> None: ...

    def pop(self, coder: BitsBackCoder, stack: Stack, y_k: Tensor, latent_above: Tensor) -> Tensor: ...

    def reconstruct(self, coder: BitsBackCoder, y_k: Tensor, z_k: Tensor) -> Tensor: ...


class BitsBackCoder:
    """Encodes and decodes groups of images (uint8 ``[n, C, H, W]`` of the model's shape) on a :class:`Stack`."""

    def __init__(self, model: SelfVAE, params: CodingParams, runner: ChunkRunner) -> None:
        self.m = model
        self.p = params
        self.run = runner
        self.grid = Grid(params.precision)
        for field in ("chunk", "flow_chunk"):
            if not 1 <= getattr(params, field) <= 255:
                raise SelfVAEError(f"{field} {getattr(params, field)}: must lie in [1, 255] (a byte of the file)")
        if not 1 <= params.samples <= MAX_SAMPLES:
            raise SelfVAEError(f"samples {params.samples}: must lie in [1, {MAX_SAMPLES}]")
        if not params.precision <= params.flow_precision <= 16:
            raise SelfVAEError(f"flow_precision {params.flow_precision}: must lie in [precision, 16] "
                               f"(precision is {params.precision})")
        if params.flow_precision - params.flow_noise < 3:
            raise SelfVAEError(f"flow_noise {params.flow_noise}: the noise 2**-flow_noise must span at least 8 steps "
                               f"of the flow grid 2**-{params.flow_precision}")
        self.flow_grid = Grid(params.flow_precision, range_log2=7)  # holds every refined coarse value
        self.fine_per_bin = 2 ** (params.flow_precision - params.precision)
        sigma_steps = 2.0 ** (params.flow_precision - params.flow_noise)
        self._pop_radius = float(self.flow_grid.radius(np.array([sigma_steps]))[0])  # a coupling's forward pop
        self.latent_shape = tuple(model.cfg.latent_shape)
        self.prior_coding = coding_class(model.p_u)(self)  # how u is coded under this prior (codec.prior_coding)
        self.push_prior, self.pop_prior = self.prior_coding.push, self.prior_coding.pop

    # ------------------------------------------------------------------ model pieces, chunked
    def _gaussian(self, fn: Callable[..., DiagonalGaussian], *inputs: Tensor) -> tuple[np.ndarray, np.ndarray]:
        """Mean and standard deviation (float64 numpy) of the Gaussian ``fn`` gives."""

        def chunk(*xs: Tensor) -> tuple[Tensor, Tensor]:
            g = fn(*xs)
            return g.mu.double(), torch.exp(0.5 * g.logvar.double())

        mu, std = self.run.map(chunk, *inputs)
        return mu.numpy(), std.numpy()

    def q(self, j: int, level: Tensor) -> tuple[np.ndarray, np.ndarray]:
        """Posterior of latent ``L_j`` given its image level ``l_j``."""
        if j == 0:
            return self._gaussian(self.m.q_u_given, level)
        return self._gaussian(lambda y: self.m.q_z_given(j - 1, y), level)

    def p_latent(self, j: int, level_above: Tensor, latent_above: Tensor) -> tuple[np.ndarray, np.ndarray]:
        """Conditional prior of ``L_j`` (``j >= 1``) given ``l_{j-1}`` and ``L_{j-1}``."""
        return self._gaussian(lambda y, z: self.m.p_z_given(j - 1, y, z), level_above, latent_above)

    def likelihood_params(self, i: int, latent: Tensor, level_above: Tensor | None) -> Tensor:
        """Raw likelihood parameters of image level ``l_i``."""
        if i == 0:
            return self.run.map(lambda z: self.m.p_y_given(z).params, latent)
        return self.run.map(lambda y, z: self.m.p_x_given(i - 1, y, z).params, level_above, latent)

    def channel_probs(self, i: int, params: Tensor, level: Tensor, c: int, k: np.ndarray | None = None,
                      window: Window = None) -> np.ndarray:
        """``[n, H, W, 256]`` probabilities of channel ``c`` of level ``l_i`` given its earlier channels: under the
        whole mixture, or with ``k`` (``[n, H, W]``) under each pixel's mixture component ``k`` alone. Rows sum
        to 1 (differences of a CDF from 0 to 1). ``window``: a consistent context group's (:func:`_window`)."""
        # float64 by the workers: the coder takes float64 tables, and converting them here would be serial
        if k is None:
            return self.run.map(lambda prm, y, lo, hi: self.m.likelihood(i, prm, lo, hi).bin_probs(c, self.m.target(y)),
                                params, level, *_window(window), dtype=torch.float64).numpy()
        return self.run.map(
            lambda prm, y, kk, lo, hi: self.m.likelihood(i, prm, lo, hi).component_bin_probs(c, kk, self.m.target(y)),
            params, level, torch.from_numpy(k), *_window(window), dtype=torch.float64).numpy()

    def run_probs(self, i: int, params: Tensor, level: Tensor, c: int, k: np.ndarray, run: np.ndarray | None = None,
                  window: Window = None) -> np.ndarray:
        """``[n, H, W, 16]`` probabilities of channel ``c`` of level ``l_i`` under each pixel's component ``k``,
        given its earlier channels: of the runs of 16 values, or with ``run`` (``[n, H, W]``) of the values within
        each pixel's run (:meth:`~selfvae.distributions.DiscretizedLogisticMixture.component_run_probs`)."""
        return self.run.map(
            lambda prm, y, kk, r, lo, hi: self.m.likelihood(i, prm, lo, hi).component_run_probs(
                c, kk, self.m.target(y), r),
            params, level, torch.from_numpy(k), None if run is None else torch.from_numpy(run), *_window(window),
            dtype=torch.float64).numpy()

    def _push_channel(self, stack: Stack, i: int, params: Tensor, level: Tensor, c: int, k: np.ndarray | None,
                      outside: np.ndarray | None, window: Window = None) -> None:
        values = _zeroed(level[:, c].numpy(), outside)
        if k is None or not self.p.split_values:
            stack.push_categorical(values, _certain(self.channel_probs(i, params, level, c, k, window), outside),
                                   normalised=True)
            return
        run, place = np.divmod(values, VALUES_PER_RUN)  # the decoder pops the run first, so it goes on last
        stack.push_categorical(place, _certain(self.run_probs(i, params, level, c, k, run, window), outside),
                               normalised=True)
        stack.push_categorical(run, _certain(self.run_probs(i, params, level, c, k, None, window), outside),
                               normalised=True)

    def _pop_channel(self, stack: Stack, i: int, params: Tensor, level: Tensor, c: int, k: np.ndarray | None,
                     outside: np.ndarray | None, window: Window = None) -> np.ndarray:
        if k is None or not self.p.split_values:
            return stack.pop_categorical(_certain(self.channel_probs(i, params, level, c, k, window), outside),
                                         normalised=True)
        run = stack.pop_categorical(_certain(self.run_probs(i, params, level, c, k, None, window), outside),
                                    normalised=True)
        place = stack.pop_categorical(_certain(self.run_probs(i, params, level, c, k, run, window), outside),
                                      normalised=True)
        return run * VALUES_PER_RUN + place

    def component_probs(self, i: int, params: Tensor, level: Tensor | None = None, window: Window = None,
                        ) -> np.ndarray:
        """``[n, H, W, M]``: the mixture weights, or with ``level`` the components' posterior given the pixels
        (under the components truncated to ``window``, where given)."""
        if level is None:
            return self.run.map(lambda prm: self.m.likelihood(i, prm).component_weights(), params,
                                dtype=torch.float64).numpy()
        return self.run.map(
            lambda prm, y, lo, hi: self.m.likelihood(i, prm, lo, hi).component_posterior(self.m.target(y)),
            params, level, *_window(window), dtype=torch.float64).numpy()

    # ------------------------------------------------------------------ image levels
    def _by_component(self, whole_mixture: bool) -> bool:
        return self.p.mixture_bits_back and not whole_mixture

    def constraint_of(self, i: int, params: Tensor, level_above: Tensor | None) -> BlockConstraint | None:
        """For a consistent model (``cfg.consistent``) and a level below the top: the first channel's tables
        renormalised onto ``d(l_i) = l_{i-1}`` (:mod:`selfvae.renormalise`); else None."""
        if i == 0 or not self.m.cfg.consistent or self._has_context(i):
            return None
        assert level_above is not None
        probs = self.run.map(lambda prm: self.m.likelihood(i, prm).bin_probs(0), params).numpy()
        return self.m.chain[self.m.K - i].block_constraint(probs, level_above[:, 0].numpy())

    def _outside(self, i: int, cover: Cover | None, constraint: BlockConstraint | None) -> np.ndarray | None:
        """``[n, H, W]`` bool: the pixels of level ``l_i`` not coded, those of ``x`` outside their image where
        ``cover`` says so (a level renormalised by a ``constraint`` is coded whole); None where all are coded."""
        if cover is None or i != self.m.K or self.m.cfg.consistent or not cover.partial.any():
            return None
        return cover.outside()

    def push_level(self, stack: Stack, i: int, level: Tensor, latent: Tensor, level_above: Tensor | None,
                   whole_mixture: bool = False, cover: Cover | None = None) -> None:
        """Push image level ``l_i``. By default with bits back on each pixel's mixture component (pop it from
        its posterior, push the pixel under it alone, push it with the mixture weights: ``-log p(x)`` net, at a
        tenth of the table work); ``whole_mixture`` codes under the whole mixture's tables and pops nothing,
        for the first image of a file, which has no bits to borrow. A consistent model's levels below the top
        are coded under the whole mixture, renormalised onto ``d(l_i) = l_{i-1}``. With ``cover``, the pixels
        of ``x`` outside their image (which :meth:`~selfvae.codec.images.Cover.fill` made) are coded as 0 under a
        table certain of 0 (no bits), their components likewise, and the decoder fills them in again. x with
        sub-pixel context (:mod:`selfvae.nn.context`) is coded group by group, the last group first, so that the
        decoder pops group 0 first and each later group under the parameters the groups before it give."""
        params = self.likelihood_params(i, latent, level_above)
        constraint = self.constraint_of(i, params, level_above)
        outside = self._outside(i, cover, constraint)
        by_component = self._by_component(whole_mixture) and constraint is None
        if not self._has_context(i):
            self._push_pixels(stack, i, params, level, outside, by_component, constraint)
            return
        seen = _zeroed_level(level, outside)  # what the decoder has of the earlier groups: outside pixels still 0
        for g in reversed(range(GROUPS)):
            self._push_pixels(stack, i, self.group_params(g, params, seen, level_above, i), group_of(level, g),
                              None if outside is None else group_of(outside, g), by_component, None,
                              self.group_window(g, level, level_above))

    def _push_pixels(self, stack: Stack, i: int, params: Tensor, level: Tensor, outside: np.ndarray | None,
                     by_component: bool, constraint: BlockConstraint | None, window: Window = None) -> None:
        """Push the pixels ``level`` of level ``l_i`` under the mixture of raw parameters ``params`` (truncated to
        ``window``, where given)."""
        k = stack.pop_categorical(_certain(self.component_probs(i, params, level, window), outside)) \
            if by_component else None
        for c in reversed(range(level.shape[1])):  # one channel's tables at a time: [n, H, W, 256] (or 16) float64
            if c or constraint is None:
                self._push_channel(stack, i, params, level, c, k, outside, window)
            else:
                constraint.push(stack, level[:, 0].numpy())
        if k is not None:
            stack.push_categorical(k, _certain(self.component_probs(i, params), outside))

    def pop_level(self, stack: Stack, i: int, latent: Tensor, level_above: Tensor | None,
                  whole_mixture: bool = False, cover: Cover | None = None) -> Tensor:
        """Pop image level ``l_i`` (``whole_mixture`` and ``cover`` as given to :meth:`push_level`)."""
        params = self.likelihood_params(i, latent, level_above)
        level = torch.zeros((latent.shape[0], *self.m.shapes[i]), dtype=torch.uint8)
        constraint = self.constraint_of(i, params, level_above)
        outside = self._outside(i, cover, constraint)
        by_component = self._by_component(whole_mixture) and constraint is None
        if not self._has_context(i):
            level = self._pop_pixels(stack, i, params, level, outside, by_component, constraint)
        else:
            for g in range(GROUPS):
                dy, dx = ORDER[g]
                level[..., dy::2, dx::2] = self._pop_pixels(
                    stack, i, self.group_params(g, params, level, level_above, i), group_of(level, g).clone(),
                    None if outside is None else group_of(outside, g), by_component, None,
                    self.group_window(g, level, level_above))
        if outside is not None:
            assert cover is not None
            level = torch.from_numpy(cover.fill(level.numpy()))
        return level

    def _pop_pixels(self, stack: Stack, i: int, params: Tensor, level: Tensor, outside: np.ndarray | None,
                    by_component: bool, constraint: BlockConstraint | None, window: Window = None) -> Tensor:
        """Pop into ``level`` (zeros, returned) the pixels of level ``l_i`` under the mixture of raw ``params``."""
        k = stack.pop_categorical(_certain(self.component_probs(i, params), outside)) if by_component else None
        for c in range(level.shape[1]):
            if c == 0 and constraint is not None:
                level[:, 0] = torch.from_numpy(constraint.pop(stack))
            else:
                level[:, c] = torch.from_numpy(self._pop_channel(stack, i, params, level, c, k, outside, window))
        if k is not None:
            stack.push_categorical(k, _certain(self.component_probs(i, params, level, window), outside))
        return level

    def _has_context(self, i: int) -> bool:
        return self.m.has_context(i)

    def group_window(self, g: int, level: Tensor, level_above: Tensor | None) -> Window:
        """A consistent model's windows for x's group ``g`` (:func:`selfvae.renormalise.group_window`) from the
        groups before it of ``level`` (uint8) and the level above; None for a model that is not consistent."""
        if not self.m.cfg.consistent or level_above is None:
            return None
        return group_window(level_above, [group_of(level, h) for h in range(g)], g)

    def group_params(self, g: int, params: Tensor, level: Tensor, level_above: Tensor | None, i: int) -> Tensor:
        """Raw mixture parameters of sub-pixel group ``g`` (``[n, P, H/2, W/2]``) of level ``l_i`` from the decoder's
        ``params``, the groups before ``g`` of ``level`` (uint8; the later groups are not read) and, for x in a
        selfVAE, the level above x (``level_above``, uint8)."""

        def one(prm: Tensor, y: Tensor, *above: Tensor) -> Tensor:
            p = self.m.with_context(i, self.m.likelihood(i, prm), *above)
            return p.group(g, [group_of(self.m.target(y), h) for h in range(g)]).params

        return self.run.map(one, params, level, *([] if level_above is None else [level_above]))

    # ------------------------------------------------------------------ latents
    def latent_values(self, k: np.ndarray, grid: Grid | None = None) -> Tensor:
        return torch.from_numpy((grid or self.grid).value(k)).float()

    def pop_gaussian(self, stack: Stack, mu: np.ndarray, std: np.ndarray, tight: bool = False) -> Tensor:
        return self.latent_values(stack.pop_gaussian(mu, std, self.grid, tight))

    def push_gaussian(self, stack: Stack, latent: Tensor, mu: np.ndarray, std: np.ndarray, tight: bool = False) -> None:
        stack.push_gaussian(self.grid.index(latent.double().numpy()), mu, std, self.grid, tight)

    # posteriors: the encoder samples from them, so they are coded tight (see Stack.push_gaussian)
    def pop_q(self, stack: Stack, j: int, level: Tensor) -> Tensor:
        return self.pop_gaussian(stack, *self.q(j, level), tight=True).view(-1, *self.latent_shape)

    def push_q(self, stack: Stack, j: int, level: Tensor, latent: Tensor) -> None:
        self.push_gaussian(stack, latent, *self.q(j, level), tight=True)

    # mixture of Gaussians: what its coding (codec.prior_coding.MixtureCoding) needs
    def mixture_parts(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The mixture prior's means, standard deviations and weights (float64)."""
        return tuple(t.numpy() for t in self.m.p_u.components(torch.float64))

    def responsibilities(self, u: Tensor) -> np.ndarray:
        """``[n, K]`` float64: which of the mixture prior's components drew each ``u``."""
        return self.run.map(self.m.p_u.responsibilities, u).numpy()

    # RealNVP: what its local bits-back coding (codec.prior_coding.FlowCoding) needs, one coupling at a time
    def _affine(self, step: CouplingStep, x: Tensor, changed: Tensor) -> tuple[np.ndarray, np.ndarray]:
        """``s`` and ``t`` of the coupling at its changed entries (``[n, m]`` float64), from the kept entries
        only: the changed ones are zeroed first, so encoder and decoder feed the nets identical bits."""

        s, t = self.run.map(step.coupling.affine, x.masked_fill(changed, 0.0), chunk=self.flow_chunk(x.shape[0]),
                            dtype=torch.float64)
        return s[:, changed].numpy(), t[:, changed].numpy()

    def flow_chunk(self, n: int) -> int:
        """Images per coupling-net call for a group of ``n``: ``flow_chunk``, halved while that leaves the group
        one call (two threads then share it), never below ``chunk``; a function of ``n`` alone, which the
        decoder knows (with ``small_chunks`` the runner lowers it further for a group under two chunks)."""
        size = self.p.flow_chunk
        while size > self.p.chunk and 2 * size > n:
            size //= 2
        return max(size, self.p.chunk)

    def through_flow(self, h: Tensor, steps: list[CouplingStep],
                 code: Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]) -> Tensor:
        """Run ``h`` through the coupling ``steps`` in the order given; ``code(x_b, s, t)`` gets each coupling's
        changed entries (``[n, m]`` float64) with their ``s`` and ``t`` and returns their new values."""
        for step in steps:
            x = step.view(h)
            changed = step.coupling.changed(x)
            s, t = self._affine(step, x, changed)
            x = x.clone()
            x[:, changed] = torch.from_numpy(code(x[:, changed].double().numpy(), s, t)).float()
            h = step.put(h, x)
        return h

    def flow_probe(self, u: Tensor) -> list[np.ndarray]:
        """``s`` and ``t`` of every coupling along ``u``'s path through the flow (no noise): the arithmetic the
        flow's coding depends on, for :func:`selfvae.codec.files.probe`."""
        out: list[np.ndarray] = []

        def forward(x_b: np.ndarray, s: np.ndarray, t: np.ndarray) -> np.ndarray:
            out.extend([s, t])
            return (x_b + t) * np.exp(s)

        self.through_flow(u, self.m.p_u.coupling_steps(), forward)
        return out

    def reach(self, s: np.ndarray) -> np.ndarray:
        """Window half-width (grid steps) that holds a coupling's input given its output: the input differs
        from ``y exp(-s) - t`` by the forward pop's offset (at most its window radius plus half a step from
        the window's centre) times ``exp(-s)``, and the window's own centre is rounded by half a step."""
        return (self._pop_radius + 0.5) * np.exp(-s) + 1.0

    def refine(self, stack: Stack, k: np.ndarray) -> Tensor:
        """Coarse grid indices ``k`` -> fine-grid values, popping each one's position inside its bin."""
        r = self.fine_per_bin
        kf = k * r + stack.pop_uniform(r, k.shape) - r // 2 if r > 1 else k
        return torch.from_numpy(self.flow_grid.value(kf)).float()

    def coarsen(self, stack: Stack, h: Tensor) -> np.ndarray:
        """Fine-grid values ``h`` -> coarse grid indices, pushing each one's position inside its bin (the
        inverse of :meth:`refine`)."""
        r = self.fine_per_bin
        kf = self.flow_grid.index(h.double().numpy())
        k = (kf + r // 2) // r
        if r > 1:
            stack.push_uniform(kf + r // 2 - k * r, r)
        return k

    # ------------------------------------------------------------------ whole groups
    def latent_name(self, j: int) -> str:
        return "u" if j == 0 else f"z{j}"

    def level_name(self, i: int) -> str:
        return "x" if i == self.m.K else f"y{i + 1}"

    def encode(self, stack: Stack, x: Tensor, hook: Hook | None = None, lossy: LossyTop | None = None,
               whole_mixture: bool = False, cover: Cover | None = None) -> None:
        """Push the images ``x`` (uint8 ``[n, C, H, W]``). ``hook(part)`` runs after each step, with ``part`` the
        variable just coded (``u``, ``z1``.., ``y1``.., ``x``), so a caller can attribute the stack's growth.
        ``whole_mixture`` codes the pixels without popping their mixture components (see :meth:`push_level`):
        for the first group of a file, whose pops come out of the initial bits.

        With ``lossy``, ``x`` itself is not coded: the levels ``y_1..y_K`` are (losslessly, bits back), and
        ``lossy`` codes what it keeps of ``z_K`` (see :mod:`selfvae.codec.lossy`). ``cover``: which pixels of ``x``
        are its images' (:meth:`push_level`).
        """
        hook = hook or (lambda part: None)
        levels = self.m.levels(x)
        top = self.m.K if lossy is None else self.m.K - 1
        latents: list[Tensor | None] = [None] * (top + 1)
        latents[top] = self.pop_q(stack, top, levels[top])  # may raise StackUnderflow, as may every pop
        hook(self.latent_name(top))
        if lossy is not None:
            lossy.push(self, stack, levels, latents[top])
            hook(self.latent_name(self.m.K))
        for j in range(top, 0, -1):
            self.push_level(stack, j, levels[j], latents[j], levels[j - 1], whole_mixture, cover)
            hook(self.level_name(j))
            latents[j - 1] = self.pop_q(stack, j - 1, levels[j - 1])
            hook(self.latent_name(j - 1))
            self.push_gaussian(stack, latents[j], *self.p_latent(j, levels[j - 1], latents[j - 1]))
            hook(self.latent_name(j))
        self.push_level(stack, 0, levels[0], latents[0], None, whole_mixture, cover)
        hook(self.level_name(0))
        self.push_prior(stack, latents[0])
        hook("u")

    def decode(self, stack: Stack, n: int, on_level: Callable[[int, Tensor], None] | None = None,
               lossy: LossyTop | None = None, whole_mixture: bool = False, cover: Cover | None = None) -> Tensor:
        """Pop ``n`` images; ``on_level(i, level)`` is called as each level ``y_1, ..., x`` becomes known. With
        ``lossy``, ``whole_mixture`` and ``cover`` as given to :meth:`encode`; with ``lossy`` the result is its
        reconstruction of ``x``."""
        top = self.m.K if lossy is None else self.m.K - 1
        latent = self.pop_prior(stack, n)
        level = self.pop_level(stack, 0, latent, None, whole_mixture, cover)
        if on_level:
            on_level(0, level)
        for j in range(1, top + 1):
            nxt = self.pop_gaussian(stack, *self.p_latent(j, level, latent)).view(-1, *self.latent_shape)
            self.push_q(stack, j - 1, level, latent)
            level_above, latent = level, nxt
            level = self.pop_level(stack, j, latent, level_above, whole_mixture, cover)
            if on_level:
                on_level(j, level)
        if lossy is None:
            self.push_q(stack, top, level, latent)
            return level
        z = lossy.pop(self, stack, level, latent)
        self.push_q(stack, top, level, latent)
        return lossy.reconstruct(self, level, z)

    def initial_words(self, x: Tensor) -> int:
        """32-bit words :meth:`encode` on ``x`` takes from an empty stack, estimated: its posterior's discretised
        entropy, and what the prior's coding adds (a RealNVP's: each value's place on its finer grid), plus one. The
        pixels pushed before the prior's pops, which fund them, are left out, as are the flow's coupling pops: a
        whole photo-vae tile's pops dug 3750-4800 bits against an estimate of 7600, a sliver's more."""
        _, std = self.q(self.m.K, self.m.levels(x)[-1])
        bits = np.maximum(np.log2(std / self.grid.delta) + 0.5 * np.log2(2 * np.pi * np.e), 0.0).sum()
        bits += self.prior_coding.initial_bits(len(x))
        return int(np.ceil(bits / 32)) + 1
