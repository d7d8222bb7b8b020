"""How the codec codes the top latent ``u`` under each kind of prior: one class per prior class, registered by it.

A new prior is a :class:`~selfvae.priors.Prior` in ``priors.py`` plus one :class:`PriorCoding` here, registered in
:data:`PRIOR_CODINGS`: bits-back coding (:mod:`selfvae.codec.bitsback`), chosen latents (:mod:`selfvae.codec.chosen`)
and the file's machine probe (:mod:`selfvae.codec.files`) ask it, never the prior's class.

* :class:`StandardCoding`: a discretised ``N(0, 1)`` per dimension;
* :class:`MixtureCoding`: bits back on the component (push ``u`` under the component popped from its
  responsibilities, then the component with the mixture weights: exactly ``-log p(u)``);
* :class:`FlowCoding`: RealNVP by local bits-back, one coupling at a time (the module docstring of
  :mod:`selfvae.codec.bitsback` has the derivation); chosen latents are sent in the flow's base space.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

import numpy as np
import torch
from torch import Tensor

from selfvae.codec.ans import Grid, Stack
from selfvae.errors import SelfVAEError
from selfvae.priors import MixtureOfGaussians, Prior, RealNVP, StandardNormal, std_normal_log_prob


class Coder(Protocol):
    """What a coding uses of its :class:`~selfvae.codec.bitsback.BitsBackCoder` (named here, not imported: the
    coder builds its coding)."""

    m: Any  # the model
    p: Any  # its CodingParams
    grid: Grid
    flow_grid: Grid
    fine_per_bin: int
    latent_shape: tuple[int, ...]

    def latent_values(self, k: np.ndarray, grid: Grid | None = None) -> Tensor: ...
    def push_gaussian(self, stack: Stack, latent: Tensor, mu: np.ndarray, std: np.ndarray) -> None: ...
    def pop_gaussian(self, stack: Stack, mu: np.ndarray, std: np.ndarray) -> Tensor: ...
    def mixture_parts(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]: ...
    def responsibilities(self, u: Tensor) -> np.ndarray: ...
    def through_flow(self, h: Tensor, steps: list, code: Callable[..., np.ndarray]) -> Tensor: ...
    def flow_probe(self, u: Tensor) -> list[np.ndarray]: ...
    def reach(self, s: np.ndarray) -> np.ndarray: ...
    def refine(self, stack: Stack, k: np.ndarray) -> Tensor: ...
    def coarsen(self, stack: Stack, h: Tensor) -> np.ndarray: ...


class PriorCoding:
    """The coding of ``u`` under one kind of prior, for the coder ``c`` (its grids, stack helpers and model)."""

    def __init__(self, coder: Coder) -> None:
        self.c = coder

    # ----- bits-back coding (lossless files)
    def push(self, stack: Stack, u: Tensor) -> None:
        """Push ``u`` ``[n, *latent_shape]`` (on the coder's grid) under the prior."""
        raise NotImplementedError

    def pop(self, stack: Stack, n: int) -> Tensor:
        """Pop ``n`` latents :meth:`push` pushed."""
        raise NotImplementedError

    # ----- chosen latents (a file's first images: no bits back)
    def to_base(self, u: Tensor) -> Tensor:
        """The values the chosen code rounds for ``u``: ``u`` itself, or a flow's base value ``f(u)``."""
        return u

    def from_base(self, v: Tensor) -> Tensor:
        """``u`` from the values :meth:`to_base` gives (both sides compute it alike)."""
        return v

    def push_chosen(self, stack: Stack, k: np.ndarray, u: Tensor, grid: Grid) -> None:
        """Push grid indices ``k`` of :meth:`to_base`'s values for ``u`` under the prior, without bits back."""
        stack.push_gaussian(k, np.zeros(k.shape), np.ones(k.shape), grid)

    def pop_chosen(self, stack: Stack, n: int, grid: Grid) -> Tensor:
        """``u`` of :meth:`push_chosen` (``[n, *latent_shape]``)."""
        shape = (n, *self.c.latent_shape)
        v = self.c.latent_values(stack.pop_gaussian(np.zeros(shape), np.ones(shape), grid), grid).view(shape)
        return self.from_base(v)

    @staticmethod
    def chosen_nats(prior: Prior, top: Tensor) -> tuple[Tensor, Tensor]:
        """``(nats [n], u)``: about what :meth:`push_chosen` takes for the base values ``top`` (a density, up to
        the grid's constant), and the ``u`` they give; differentiable in ``top`` (the encoder's search)."""
        return -std_normal_log_prob(top), top

    # ----- what else the file depends on
    def probe(self, u: Tensor) -> list[np.ndarray]:
        """Arithmetic of this coding the file's machine probe covers beyond the networks (none here)."""
        return []

    def initial_bits(self, n: int) -> float:
        """Bits an encoder's first pop of ``n`` images takes beyond the posterior's entropy (none here)."""
        return 0.0


class StandardCoding(PriorCoding):
    """``N(0, 1)`` per dimension, discretised on the coder's grid."""

    def push(self, stack: Stack, u: Tensor) -> None:
        zero = np.zeros(u.shape)
        self.c.push_gaussian(stack, u, zero, zero + 1.0)

    def pop(self, stack: Stack, n: int) -> Tensor:
        zero = np.zeros((n, *self.c.latent_shape))
        return self.c.pop_gaussian(stack, zero, zero + 1.0)


class MixtureCoding(PriorCoding):
    """A mixture of Gaussians: bits back on the component."""

    def push(self, stack: Stack, u: Tensor) -> None:
        c = self.c
        means, std, w = c.mixture_parts()
        comp = stack.pop_categorical(c.responsibilities(u))
        flat = u.flatten(1)
        stack.push_gaussian(c.grid.index(flat.double().numpy()), means[comp], std[comp], c.grid)
        stack.push_categorical(comp, np.broadcast_to(w, (len(comp), len(w))))

    def pop(self, stack: Stack, n: int) -> Tensor:
        c = self.c
        means, std, w = c.mixture_parts()
        comp = stack.pop_categorical(np.broadcast_to(w, (n, len(w))))
        u = c.latent_values(stack.pop_gaussian(means[comp], std[comp], c.grid)).view(n, *c.latent_shape)
        stack.push_categorical(comp, c.responsibilities(u))
        return u

    def push_chosen(self, stack: Stack, k: np.ndarray, u: Tensor, grid: Grid) -> None:
        """The component that explains ``u`` best, then ``u`` under it."""
        means, std, w = self.c.mixture_parts()
        comp = self.c.responsibilities(u).argmax(1)
        stack.push_gaussian(k.reshape(len(comp), -1), means[comp], std[comp], grid)
        stack.push_categorical(comp, np.broadcast_to(w, (len(comp), len(w))))

    def pop_chosen(self, stack: Stack, n: int, grid: Grid) -> Tensor:
        means, std, w = self.c.mixture_parts()
        comp = stack.pop_categorical(np.broadcast_to(w, (n, len(w))))
        return self.c.latent_values(stack.pop_gaussian(means[comp], std[comp], grid), grid).view(
            -1, *self.c.latent_shape)

    @staticmethod
    def chosen_nats(prior: Prior, top: Tensor) -> tuple[Tensor, Tensor]:
        return -prior.component_log_probs(top).max(1).values, top  # the best component, as push_chosen sends it


class FlowCoding(PriorCoding):
    """RealNVP: local bits-back coding one coupling at a time (Ho, Lohn & Abbeel 2019)."""

    def push(self, stack: Stack, u: Tensor) -> None:
        c = self.c
        fine, sigma = c.flow_grid, 2.0**-c.p.flow_noise

        def forward(x_b: np.ndarray, s: np.ndarray, t: np.ndarray) -> np.ndarray:
            y = fine.value(stack.pop_gaussian((x_b + t) * np.exp(s), np.full(x_b.shape, sigma), fine, tight=True))
            stack.push_gaussian(fine.index(x_b), y * np.exp(-s) - t, sigma * np.exp(-s), fine, tight=True,
                                reach=c.reach(s))
            return y

        v = c.through_flow(c.refine(stack, c.grid.index(u.double().numpy())), c.m.p_u.coupling_steps(), forward)
        # v under N(0, 1): its coarse bin, and its place in the bin uniformly (the same bits as the fine grid to
        # first order, and no 24-bit coder over 2**23 values, whose floor probabilities would take half its mass)
        k = c.coarsen(stack, v)
        if np.any(np.abs(k) > c.grid.limit):
            raise SelfVAEError(f"the flow maps a latent beyond +-{c.grid.limit * c.grid.delta:g}; cannot code it")
        stack.push_gaussian(k, np.zeros(k.shape), np.ones(k.shape), c.grid)

    def pop(self, stack: Stack, n: int) -> Tensor:
        c = self.c
        fine, sigma = c.flow_grid, 2.0**-c.p.flow_noise
        shape = (n, *c.latent_shape)

        def inverse(y_b: np.ndarray, s: np.ndarray, t: np.ndarray) -> np.ndarray:
            x = fine.value(stack.pop_gaussian(y_b * np.exp(-s) - t, sigma * np.exp(-s), fine, tight=True,
                                              reach=c.reach(s)))
            stack.push_gaussian(fine.index(y_b), (x + t) * np.exp(s), np.full(y_b.shape, sigma), fine, tight=True)
            return x

        v = c.refine(stack, stack.pop_gaussian(np.zeros(shape), np.ones(shape), c.grid))
        h = c.through_flow(v, c.m.p_u.coupling_steps()[::-1], inverse)
        return c.latent_values(c.coarsen(stack, h))

    def to_base(self, u: Tensor) -> Tensor:
        with torch.inference_mode():
            return self.c.m.p_u(u)[0]

    def from_base(self, v: Tensor) -> Tensor:
        """``u = f^-1(v)`` one coupling at a time on the coder's fixed chunks: both sides compute it identically."""
        return self.c.through_flow(v, self.c.m.p_u.coupling_steps()[::-1], lambda y, s, t: y * np.exp(-s) - t)

    @staticmethod
    def chosen_nats(prior: Prior, top: Tensor) -> tuple[Tensor, Tensor]:
        return -std_normal_log_prob(top), prior.inverse(top)

    def probe(self, u: Tensor) -> list[np.ndarray]:
        return self.c.flow_probe(u)

    def initial_bits(self, n: int) -> float:
        """Each latent value's position on the flow's finer grid."""
        return n * float(np.prod(self.c.latent_shape)) * float(np.log2(self.c.fine_per_bin))


PRIOR_CODINGS: dict[type[Prior], type[PriorCoding]] = {
    StandardNormal: StandardCoding,
    MixtureOfGaussians: MixtureCoding,
    RealNVP: FlowCoding,
}


def coding_class(prior: Prior) -> type[PriorCoding]:
    """The coding registered for ``prior``'s class (or the nearest registered base class)."""
    for cls in type(prior).__mro__:
        if cls in PRIOR_CODINGS:
            return PRIOR_CODINGS[cls]
    raise SelfVAEError(f"the codec cannot code the prior {type(prior).__name__} (no coding registered for it in "
                       "selfvae.codec.prior_coding.PRIOR_CODINGS)")
