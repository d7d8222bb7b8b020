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
deterministic chunks. The encoder tries a few grids and keeps the cheapest (the grid is in the file's header);
as the decoder pops whatever indices were sent, the encoder may also send better ones than the rounded means:
:func:`search` descends the chosen code's length itself (straight-through rounding) on the coarsest grid.
Such an image costs more than its negative ELBO (a coarse ``u`` costs few bits but fits ``x`` worse) but much
less than the initial bits, and its bytes fund the next image's pops: a file codes its first images so until
the stack holds enough bits for bits back (``selfvae.codec.files._encode_all``).
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Callable

import numpy as np
import torch
from torch import Tensor

from selfvae.codec.ans import Grid, Stack
from selfvae.codec.bitsback import BitsBackCoder, Hook, Latents, Levels, LossyTop, growth_hook
from selfvae.codec.images import Cover
from selfvae.codec.prior_coding import coding_class
from selfvae.models.selfvae import SelfVAE
from selfvae.runtime import torch_threads

PRECISIONS = (0, 1, 2)  # the grids 2**-p the encoder tries for a chosen image (mnist-vae takes 0 or 1)
# the encoder also searches latents on this grid by gradient descent (search): on the first five MNIST test digits
# it cut their cheapest chosen code from 1180 to 984 bytes at 60 steps; the coarsest grid won every time
SEARCH_PRECISION = 0
SEARCH_STEPS = 60
SEARCH_BATCH = 8  # images searched together: a file's first chosen images (mnist-vae codes 4-5 so)
# by default only files of at most this many tiles are searched: the search is a fixed cost (seconds) for a fixed
# gain (tens of bytes), which pays for a file of one to a few images and not for a larger one (docs/CODEC.md)
SEARCH_MAX_TILES = 4


class ChosenCoder:
    """Codes groups of images with chosen latents on the grid ``2**-precision`` and no bits back."""

    def __init__(self, coder: BitsBackCoder, precision: int) -> None:
        self.c = coder
        self.grid = Grid(precision)

    # ------------------------------------------------------------------ u under its prior
    def latent_values(self, k: np.ndarray) -> Tensor:
        return self.c.latent_values(k, self.grid).view(-1, *self.c.latent_shape)

    def _u_of(self, k: np.ndarray) -> Tensor:
        """The ``u`` that the grid indices sent for it give (for a flow they index ``v = f(u)``)."""
        return self.c.prior_coding.from_base(self.latent_values(k))

    def rounded(self, start: list[Tensor]) -> list[np.ndarray]:
        """Grid indices of the continuous latents ``start`` (:func:`posterior_means`) rounded to this grid."""
        return [self.grid.index(t.double().numpy()) for t in start]

    # ------------------------------------------------------------------ whole groups
    def encode(self, stack: Stack, x: Tensor, keys: list[np.ndarray], hook: Hook | None = None,
               lossy: LossyTop | None = None, cover: Cover | None = None) -> None:
        """Push the images ``x`` (uint8 ``[n, C, H, W]``), the reverse of :meth:`decode`; pops nothing. ``keys``:
        the grid indices to send for ``[u, z_1, ..., z_K]`` (``u``'s of ``v = f(u)`` for a flow): the posterior
        means :meth:`rounded`, or what :func:`search` found. With ``lossy`` x is not coded, and ``lossy`` codes
        what it keeps of ``z_K`` in place of ``keys``' last. ``cover``: as :meth:`BitsBackCoder.encode`'s."""
        hook = hook or (lambda part: None)
        c, K = self.c, self.c.m.K
        levels: Levels = c.m.levels(x)
        k_u, k_z = keys[0], keys[1:]
        u = self._u_of(k_u)
        latents: Latents = [u, *(self.latent_values(k) for k in k_z)]
        top = K
        if lossy is not None:
            lossy.push(c, stack, levels, latents[K - 1])
            hook(c.latent_name(K))
            top = K - 1
        for j in range(top, 0, -1):
            c.push_level(stack, j, levels[j], latents[j], levels[j - 1], whole_mixture=True, cover=cover)
            hook(c.level_name(j))
            stack.push_gaussian(k_z[j - 1], *c.p_latent(j, levels[j - 1], latents[j - 1]), self.grid)
            hook(c.latent_name(j))
        c.push_level(stack, 0, levels[0], latents[0], None, whole_mixture=True, cover=cover)
        hook(c.level_name(0))
        self.c.prior_coding.push_chosen(stack, k_u, u, self.grid)
        hook("u")

    def decode(self, stack: Stack, n: int, on_level: Callable[[int, Tensor], None] | None = None,
               lossy: LossyTop | None = None, cover: Cover | None = None) -> Tensor:
        """Pop ``n`` images in the generative order; ``on_level(i, level)``, ``lossy`` and ``cover`` as
        :meth:`BitsBackCoder.decode` (with ``lossy`` the result is its reconstruction of ``x``)."""
        c = self.c
        top = c.m.K if lossy is None else c.m.K - 1
        latent = self.c.prior_coding.pop_chosen(stack, n, self.grid)
        level = c.pop_level(stack, 0, latent, None, whole_mixture=True, cover=cover)
        if on_level:
            on_level(0, level)
        for j in range(1, top + 1):
            mu, std = c.p_latent(j, level, latent)
            latent = self.latent_values(stack.pop_gaussian(mu, std, self.grid))
            level = c.pop_level(stack, j, latent, level, whole_mixture=True, cover=cover)
            if on_level:
                on_level(j, level)
        if lossy is None:
            return level
        return lossy.reconstruct(c, level, lossy.pop(c, stack, level, latent))


def encode_cheapest(coder: BitsBackCoder, stack: Stack, x: Tensor, searched: list[np.ndarray] | None = None,
                    lossy: LossyTop | None = None, cover: Cover | None = None) -> tuple[Stack, int, dict[str, float]]:
    """Code ``x`` with the rounded posterior means on each grid of :data:`PRECISIONS` and, if given, with the
    ``searched`` grid indices of :func:`search_keys` (on the grid ``2**-SEARCH_PRECISION``); keep the smallest:
    returns the stack it leaves, its precision and the bits each part (``u``, ``y1``, ..., ``x``) took."""
    start = posterior_means(coder, coder.m.levels(x))  # the same on every grid
    trials = [(p, ChosenCoder(coder, p).rounded(start)) for p in PRECISIONS]
    if searched is not None:
        trials.append((SEARCH_PRECISION, searched))
    best: tuple[Stack, int, dict[str, float]] | None = None
    kept = None  # what the lossy coder remembers of the best trial (the z_K its decoder will use)
    for p, keys in trials:
        trial, parts = stack.clone(), defaultdict(float)
        ChosenCoder(coder, p).encode(trial, x, keys, growth_hook(trial, parts), lossy, cover)
        if best is None or trial.num_bits() < best[0].num_bits():
            best = (trial, p, dict(parts))
            kept = dict(vars(lossy)) if lossy is not None else None
    assert best is not None
    if kept is not None:
        vars(lossy).update(kept)
    return best


def posterior_means(coder: BitsBackCoder, levels: Levels) -> list[Tensor]:
    """The continuous latents ``[u, z_1, ..., z_K]`` a chosen code rounds or :func:`search` starts from: the
    posterior means, ``u``'s in a flow prior's base space (``v = f(mu)``)."""
    mu_u = coder.prior_coding.to_base(torch.from_numpy(coder.q(0, levels[0])[0]).float())
    return [mu_u, *(torch.from_numpy(coder.q(j, levels[j])[0]).float() for j in range(1, coder.m.K + 1))]


def search_keys(coder: BitsBackCoder, x: Tensor, steps: int, on_step: Callable[[], None] | None = None,
                ) -> list[list[np.ndarray]]:
    """Per image of ``x``: the grid indices :func:`search` finds on the grid ``2**-SEARCH_PRECISION``, for
    :func:`encode_cheapest`. The images are searched together (each on its own: the search is elementwise per
    image), on the coder's threads; nothing the decoder computes depends on how."""
    levels = coder.m.levels(x)
    with torch_threads(coder.run.threads):
        keys = search(coder.m, levels, posterior_means(coder, levels), SEARCH_PRECISION, steps, on_step=on_step)
    return [[k[i : i + 1] for k in keys] for i in range(len(x))]


def _on_grid(t: Tensor, delta: float) -> Tensor:
    """``t`` rounded to the grid, with the gradient of the identity (straight-through)."""
    return t + (torch.round(t / delta) * delta - t).detach()


def chosen_nats(model: SelfVAE, levels: Levels, free: list[Tensor], delta: float) -> Tensor:
    """``[n]``: about the nats :meth:`ChosenCoder.encode` takes to send ``levels`` with the latents ``free``
    (``[u, z_1, ..., z_K]``, ``u``'s in the flow's base space) rounded to the grid ``delta``, up to a constant:
    the latents under their priors (densities), the levels under the whole mixtures. Differentiable in ``free``."""
    nats, latent = coding_class(model.p_u).chosen_nats(model.p_u, _on_grid(free[0], delta))
    nats = nats - model.p_y_given(latent).log_prob(model.target(levels[0]))
    for k in range(model.K):
        z = _on_grid(free[k + 1], delta)
        nats = (nats - model.p_z_given(k, levels[k], latent).log_prob(z)
                + model.re_level(k, model.p_x_given(k, levels[k], z), levels))
        latent = z
    return nats


def search(model: SelfVAE, levels: Levels, start: list[Tensor], precision: int, steps: int, lr: float = 0.05,
           on_step: Callable[[], None] | None = None) -> list[np.ndarray]:
    """Grid indices of latents that code ``levels`` with fewer bits than ``start`` rounded: ``steps`` of Adam on
    :func:`chosen_nats` from ``start`` (straight-through rounding); the indices of the cheapest point seen, each
    image's own. Only the encoder runs this: the decoder pops whatever indices were sent. ``on_step`` is called
    after each of the ``steps + 1`` evaluations (a progress bar)."""
    delta = 2.0**-precision
    free = [t.detach().clone().requires_grad_(True) for t in start]
    opt = torch.optim.Adam(free, lr=lr)
    best = [torch.round(t.detach() / delta) for t in free]
    best_nats = torch.full((len(start[0]),), math.inf)
    with torch.enable_grad():
        for step in range(steps + 1):
            nats = chosen_nats(model, levels, free, delta)
            better = nats.detach() < best_nats
            best_nats = torch.where(better, nats.detach(), best_nats)
            for b, t in zip(best, free, strict=True):
                b[better] = torch.round(t.detach()[better] / delta)
            if step < steps:
                for t, g in zip(free, torch.autograd.grad(nats.sum(), free), strict=True):
                    t.grad = g
                opt.step()
            if on_step is not None:
                on_step()
    return [b.double().numpy().astype(np.int64) for b in best]
