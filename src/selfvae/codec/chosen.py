"""A file's first images, coded without bits back: chosen latents on a coarse grid (a two-part code).

Bits-back coding pops an image's latents from the stack before it pushes anything of it, so the first image a
file's encoder codes (the decoder's last) has nothing to borrow. Seeding the stack with random words for it
cost 876 bytes on ``mnist-vae``: the discretised entropy of ``q(u | x)`` at the latent grid plus the flow's
local bits-back pops, eight times the image's own 108-byte negative ELBO, and almost all of a one-image file.

Here the encoder *chooses* every latent instead of drawing it: the posterior mean, rounded to the grid
``2**-precision``, and sends it under its prior, then the image levels under the likelihood's whole-mixture
tables (a two-part code; :class:`~selfvae.codec.lossy.QuantisedZ` does the same for ``z_K`` alone). Nothing
is popped, so no bits are borrowed. A RealNVP prior's latent is chosen in the flow's base space: ``v = f(mu)``
rounded to the grid is sent under ``N(0, 1)`` and both sides take ``u = f^-1(v)``, computed on the coder's
deterministic chunks. The encoder tries a few grids and keeps the cheapest (the grid is in the file's header).
Such an image costs more than its negative ELBO (a coarse ``u`` costs few bits but fits ``x`` worse) but much
less than the initial bits, and its bytes fund the next image's pops: a file codes its first images so until
the stack holds enough bits for bits back (``selfvae.codec._encode_all``).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable

import numpy as np
import torch
from torch import Tensor

from selfvae.codec.ans import Grid, Stack
from selfvae.codec.bitsback import BitsBackCoder, Hook, Latents, Levels, growth_hook
from selfvae.priors import MixtureOfGaussians, RealNVP, StandardNormal

PRECISIONS = (0, 1, 2)  # the grids 2**-p the encoder tries for a chosen image (mnist-vae takes 0 or 1)
MAX_PRECISION = 8  # a header asking for a finer grid is refused


class ChosenCoder:
    """Codes groups of images with chosen latents on the grid ``2**-precision`` and no bits back."""

    def __init__(self, coder: BitsBackCoder, precision: int) -> None:
        self.c = coder
        self.grid = Grid(precision)
        self.prior = coder.m.p_u

    # ------------------------------------------------------------------ u under its prior
    def _value(self, k: np.ndarray) -> Tensor:
        return self.c._value(k, self.grid).view(-1, *self.c.latent_shape)

    def _flow_inverse(self, v: Tensor) -> Tensor:
        """``u = f^-1(v)`` one coupling at a time on the coder's fixed chunks: both sides compute it identically."""
        return self.c._through(v, self.prior.coupling_steps()[::-1], lambda y, s, t: y * np.exp(-s) - t)

    def _choose_u(self, mu: np.ndarray) -> tuple[np.ndarray, Tensor]:
        """Grid indices the encoder sends for ``u`` (of ``v = f(u)`` for a flow) and the ``u`` they give."""
        if isinstance(self.prior, RealNVP):
            with torch.inference_mode():
                v, _ = self.prior(torch.from_numpy(mu).float())
            k = self.grid.index(v.double().numpy())
            return k, self._flow_inverse(self._value(k))
        k = self.grid.index(mu)
        return k, self._value(k)

    def _push_u(self, stack: Stack, k: np.ndarray, u: Tensor) -> None:
        if isinstance(self.prior, MixtureOfGaussians):  # the component that explains u best, then u under it
            means, std, w = self.c._mog_parts()
            comp = self.c._responsibilities(u).argmax(1)
            stack.push_gaussian(k.reshape(len(comp), -1), means[comp], std[comp], self.grid)
            stack.push_categorical(comp, np.broadcast_to(w, (len(comp), len(w))))
            return
        assert isinstance(self.prior, (StandardNormal, RealNVP))
        stack.push_gaussian(k, np.zeros(k.shape), np.ones(k.shape), self.grid)

    def _pop_u(self, stack: Stack, n: int) -> Tensor:
        shape = (n, *self.c.latent_shape)
        if isinstance(self.prior, MixtureOfGaussians):
            means, std, w = self.c._mog_parts()
            comp = stack.pop_categorical(np.broadcast_to(w, (n, len(w))))
            return self._value(stack.pop_gaussian(means[comp], std[comp], self.grid))
        u = self._value(stack.pop_gaussian(np.zeros(shape), np.ones(shape), self.grid))
        return self._flow_inverse(u) if isinstance(self.prior, RealNVP) else u

    # ------------------------------------------------------------------ whole groups
    def encode(self, stack: Stack, x: Tensor, hook: Hook | None = None) -> None:
        """Push the images ``x`` (uint8 ``[n, C, H, W]``), the reverse of :meth:`decode`; pops nothing."""
        hook = hook or (lambda part: None)
        c, K = self.c, self.c.m.K
        levels: Levels = c.m.levels(x)
        k_u, u = self._choose_u(c.q(0, levels[0])[0])
        k_z = [self.grid.index(c.q(j, levels[j])[0]) for j in range(1, K + 1)]
        latents: Latents = [u, *(self._value(k) for k in k_z)]
        for j in range(K, 0, -1):
            c.push_level(stack, j, levels[j], latents[j], levels[j - 1], whole_mixture=True)
            hook(c.level_name(j))
            stack.push_gaussian(k_z[j - 1], *c.p_latent(j, levels[j - 1], latents[j - 1]), self.grid)
            hook(c.latent_name(j))
        c.push_level(stack, 0, levels[0], latents[0], None, whole_mixture=True)
        hook(c.level_name(0))
        self._push_u(stack, k_u, u)
        hook("u")

    def decode(self, stack: Stack, n: int, on_level: Callable[[int, Tensor], None] | None = None) -> Tensor:
        """Pop ``n`` images in the generative order; ``on_level(i, level)`` as :meth:`BitsBackCoder.decode`."""
        c = self.c
        latent = self._pop_u(stack, n)
        level = c.pop_level(stack, 0, latent, None, whole_mixture=True)
        if on_level:
            on_level(0, level)
        for j in range(1, c.m.K + 1):
            mu, std = c.p_latent(j, level, latent)
            latent = self._value(stack.pop_gaussian(mu, std, self.grid))
            level = c.pop_level(stack, j, latent, level, whole_mixture=True)
            if on_level:
                on_level(j, level)
        return level


def encode_cheapest(coder: BitsBackCoder, stack: Stack, x: Tensor) -> tuple[Stack, int, dict[str, float]]:
    """Code ``x`` with chosen latents on each grid of :data:`PRECISIONS` and keep the smallest: returns the stack
    it leaves, its precision and the bits each part (``u``, ``y1``, ..., ``x``) took."""
    best: tuple[Stack, int, dict[str, float]] | None = None
    for p in PRECISIONS:
        trial, parts = stack.clone(), defaultdict(float)
        ChosenCoder(coder, p).encode(trial, x, growth_hook(trial, parts))
        if best is None or trial.num_bits() < best[0].num_bits():
            best = (trial, p, dict(parts))
    assert best is not None
    return best
