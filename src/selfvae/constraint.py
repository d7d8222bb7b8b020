"""A level's likelihood renormalised onto ``d(level) = y`` (``ModelConfig.consistent``), pixel by pixel: for
coding it (:mod:`selfvae.codec.bitsback`) and for sampling from it (:mod:`selfvae.models.ops`).

The renormalised ``p_c(l | y, z) = prod_pixels p(l_i) / P(every block's sum allowed)`` is not a product over
pixels, but it is one over ``f x f`` blocks, and within a block the chain rule gives each pixel (in raster order)
a 256-way conditional given the block's earlier pixels:

    p_c(v_j | v_<j) ∝ p_j(v_j) * P(v_j+1 + ... + v_m-1 in [lo - s_j - v_j, hi - s_j - v_j]),   s_j = v_0 + ... + v_j-1

with ``lo .. hi`` the block's allowed sums. The probabilities of the later pixels' sum come from its
distribution, the convolution of their tables (numpy FFT, float64), read off its cumulative sums. Coding the
pixels from these tables costs ``-log p_c`` of the level exactly (up to the coder's quantisation), so a
consistent model's file tracks its renormalised bound; encoder and decoder build the tables from the same
network outputs with the same float64 operations, so they agree bit for bit. Drawing the pixels from them in
the same order samples ``p_c`` exactly.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

import numpy as np

from selfvae.transforms import lowest_block_sum


class CategoricalStack(Protocol):
    """What :class:`BlockConstraint` codes with (:class:`selfvae.codec.ans.Stack`)."""

    def push_categorical(self, symbols: np.ndarray, probs: np.ndarray) -> None: ...

    def pop_categorical(self, probs: np.ndarray) -> np.ndarray: ...


def _to_blocks(a: np.ndarray, f: int) -> np.ndarray:
    """``[n, H, W, ...]`` -> ``[n, H/f, W/f, f*f, ...]``, each block's pixels in raster order."""
    n, h, w = a.shape[:3]
    rest = a.shape[3:]
    b = a.reshape(n, h // f, f, w // f, f, *rest).swapaxes(2, 3)
    return b.reshape(n, h // f, w // f, f * f, *rest)


def _from_blocks(b: np.ndarray, f: int) -> np.ndarray:
    """Inverse of :func:`_to_blocks` for ``[n, H/f, W/f, f*f]``."""
    n, h2, w2 = b.shape[:3]
    return b.reshape(n, h2, w2, f, f).swapaxes(2, 3).reshape(n, h2 * f, w2 * f)


class BlockConstraint:
    """The per-pixel conditional tables of a level whose ``f x f`` blocks must average (round half up) to ``y``.

    ``probs``: the level's first channel's 256-way tables ``[n, H, W, 256]`` (pixels independent); ``y``:
    ``[n, H/f, W/f]`` the level above's first channel.
    """

    def __init__(self, probs: np.ndarray, y: np.ndarray, factor: int) -> None:
        self.f = factor
        self.m = m = factor * factor
        self.p = _to_blocks(np.asarray(probs, dtype=np.float64), factor)  # [n, H', W', m, 256]
        self.lo = lowest_block_sum(y.astype(np.int64), factor)  # the allowed sums: lo .. lo + m - 1
        self.hi = self.lo + m - 1
        size = 1 << (255 * m).bit_length()
        spectra = np.fft.rfft(self.p, n=size, axis=-1)
        # cdf[j][..., t + 1] = P(pixels j..m-1 sum to at most t), cdf[j][..., 0] = 0, for j = 1..m-1
        self.cdf: dict[int, np.ndarray] = {}
        suffix = None
        for j in range(m - 1, 0, -1):
            suffix = spectra[..., j, :] if suffix is None else suffix * spectra[..., j, :]
            dist = np.clip(np.fft.irfft(suffix, n=size, axis=-1)[..., : 255 * (m - j) + 1], 0.0, None)
            self.cdf[j] = np.concatenate([np.zeros((*dist.shape[:-1], 1)), np.cumsum(dist, axis=-1)], axis=-1)

    def table(self, j: int, prefix: np.ndarray) -> np.ndarray:
        """``[n, H', W', 256]``: pixel ``j`` of every block given the sum ``prefix`` of the block's earlier pixels."""
        v = np.arange(256)
        a = (self.lo - prefix)[..., None] - v  # the later pixels must sum to a .. b
        b = (self.hi - prefix)[..., None] - v
        if j == self.m - 1:
            mass = ((a <= 0) & (0 <= b)).astype(np.float64)
        else:
            cdf, top = self.cdf[j + 1], 255 * (self.m - 1 - j)
            at = lambda t: np.take_along_axis(cdf, np.clip(t, -1, top) + 1, axis=-1)  # noqa: E731  P(sum <= t)
            mass = at(b) - at(a - 1)
        t = self.p[..., j, :] * mass
        total = t.sum(-1, keepdims=True)
        # Rounding can leave no mass where the true one is tiny: fall back to the plain table (both sides alike).
        return np.where(total > 0, t / np.where(total > 0, total, 1.0), self.p[..., j, :])

    def push(self, stack: CategoricalStack, level: np.ndarray) -> None:
        """Push ``level`` (uint8 ``[n, H, W]``) block pixel by block pixel, the last first (a stack)."""
        vals = _to_blocks(level.astype(np.int64), self.f)
        prefix = np.concatenate([np.zeros((*vals.shape[:3], 1), np.int64), np.cumsum(vals, axis=-1)], axis=-1)
        for j in reversed(range(self.m)):
            stack.push_categorical(vals[..., j], self.table(j, prefix[..., j]))

    def sample(self, rng: np.random.Generator) -> np.ndarray:
        """Draw the level from the renormalised likelihood: uint8 ``[n, H, W]`` whose blocks all average to ``y``."""
        return self._in_order(lambda probs: sample_tables(probs, rng))

    def pop(self, stack: CategoricalStack) -> np.ndarray:
        """Pop the level pushed by :meth:`push`: uint8 ``[n, H, W]``."""
        return self._in_order(stack.pop_categorical)

    def _in_order(self, draw: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
        """Each block's pixels in raster order, each drawn by ``draw`` from its table given the earlier ones."""
        vals = np.zeros((*self.lo.shape, self.m), np.int64)
        prefix = np.zeros(self.lo.shape, np.int64)
        for j in range(self.m):
            vals[..., j] = draw(self.table(j, prefix))
            prefix = prefix + vals[..., j]
        return _from_blocks(vals, self.f).astype(np.uint8)


def sample_tables(probs: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One value per table from probability tables ``[..., K]`` (by inverse CDF): int ``[...]``."""
    cdf = np.cumsum(probs, axis=-1)
    u = rng.random((*cdf.shape[:-1], 1)) * cdf[..., -1:]
    return np.minimum((cdf <= u).sum(-1), probs.shape[-1] - 1)
