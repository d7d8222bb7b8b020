"""The renormalised ("consistent") likelihood of a downscaling selfVAE, in one place (``ModelConfig.consistent``).

A level ``l`` generated from ``p(l | y, z)`` with independent pixels puts mass on images whose box average is not
``y``; renormalised onto ``d(l) = y`` it is a proper likelihood on the images that can occur, and the bound it gives
is valid and tighter (docs/METHOD.md). Everything that computes with it lives here:

* the blocks: :func:`lowest_block_sum` (the sums an ``f x f`` block may have for its average to round to ``y``);
* scoring (training and evaluation, torch): :func:`log_mass_block_average`, ``log P(d(l) = y)`` from each block's
  sum distribution (:func:`sum_distribution`, by FFT) over windows of values (:class:`WindowTables`);
* coding and sampling (numpy, float64, bit for bit alike on both sides): :class:`BlockConstraint`, the chain rule
  inside each block.

The transforms ask for it through :meth:`selfvae.transforms.Transform.log_mass_consistent` and
:meth:`~selfvae.transforms.Transform.block_constraint`; nothing else reads a transform's factor.

Coding and sampling, pixel by pixel:

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
import torch
from torch import Tensor


def lowest_block_sum(y, factor: int):  # noqa: ANN001, ANN201 - an int64 tensor or numpy array, the same back
    """The smallest sum of an ``f x f`` block that ``downscale:f`` maps to ``y``: ``(s + n // 2) // n = y`` for
    ``n = f * f`` exactly when ``s`` is one of the ``n`` sums ``n y - n // 2 .. n y + n - 1 - n // 2``."""
    n = factor * factor
    return n * y - n // 2


def group_window(average: Tensor, earlier: list[Tensor], g: int, groups: int = 4) -> tuple[Tensor, Tensor]:
    """The values ``lo .. hi`` (int64 ``[B, C, h, w]``) a pixel of x's sub-pixel group ``g``
    (:mod:`selfvae.nn.context`) may take for its 2x2 block to average (``downscale:2``) to ``average`` (``[B, C, h,
    w]``, the level above x): the block's sum is one of the four allowed (:func:`lowest_block_sum`), ``earlier``
    (values 0..255 of the groups before ``g``, at least ``g`` of them) fix part of it, and each of the
    ``groups - 1 - g`` pixels still to come adds 0..255. Never empty when the earlier pixels lay in their windows;
    the last group's holds at most four values."""
    first = lowest_block_sum(average.long(), 2)
    known = sum((e.long() for e in earlier[:g]), torch.zeros_like(first))
    lo = (first - known - 255 * (groups - 1 - g)).clamp(min=0)
    hi = (first + 3 - known).clamp(max=255)
    return lo, hi


_WINDOWS = (2, 8, 32, 128, 256)  # window widths log_mass_block_average groups blocks by
# Above the absolute error of a sum's distribution by FFT (tables that sum to 1, up to 4096 terms; tested): added to
# each block's mass, so a mass that rounding pulls down is never taken below the exact one, and tiny masses are
# floored here rather than lost to rounding noise.
FFT_ERROR = {torch.float64: 1e-13, torch.float32: 1e-6}


class WindowTables(Protocol):
    """A likelihood with independent pixels that gives 256-way tables on windows of values (the first channel of
    :class:`selfvae.distributions.DiscretizedLogisticMixture`)."""

    def window_bin_probs(self, pixels: Tensor, lo: Tensor, length: int, dtype: torch.dtype) -> Tensor:
        """Probabilities ``[P, length]`` of the values ``lo .. lo + length - 1`` (0 above 255) of the flat
        pixels ``pixels`` ``[P]`` (index into ``B * H * W``)."""
        ...


def sum_distribution(tables: Tensor) -> Tensor:
    """Distribution ``[..., m (L - 1) + 1]`` of the sum of ``m`` independent values with ``L``-way ``tables``
    ``[..., m, L]``: the product of their spectra (FFT long enough for no wrap-around)."""
    m, top = tables.shape[-2], tables.shape[-2] * (tables.shape[-1] - 1)
    if m == 1:
        return tables[..., 0, :]
    size = 1 << top.bit_length()  # a power of two above the largest sum
    return torch.fft.irfft(torch.fft.rfft(tables, n=size, dim=-1).prod(dim=-2), n=size, dim=-1)[..., : top + 1]


def log_mass_block_average(p: WindowTables, y: Tensor, factor: int, dtype: torch.dtype = torch.float64) -> Tensor:
    """``log P(d(x) = y)`` per image ``[B]`` for ``d`` the round-half-up box average of ``factor x factor`` blocks
    (``downscale:factor``) and independent pixels (:meth:`selfvae.transforms.Transform.log_mass_consistent`).

    A block of ``n = f * f`` pixels averages to ``y`` exactly when its sum lies in ``n y - n // 2 ..
    n y + n - 1 - n // 2``, so each of its pixels lies in a window ``lo .. hi`` (``0 .. 1`` where ``y = 0``: most
    of an MNIST digit). The sum's distribution is the convolution of the block's tables over the window, by
    FFT; each block's mass is raised by a bound on the FFT's absolute error (1e-13 in float64, what
    evaluation uses; 1e-6 in float32, what training uses), so the renormalised likelihood never exceeds the
    exact one. Blocks are grouped by window width, so the cost follows the widths, not 256 values a pixel."""
    b, h2, w2 = y.shape
    f, n = factor, factor**2
    first = lowest_block_sum(y.long(), f)  # the allowed sums: first .. first + n - 1
    lo = (first - 255 * (n - 1)).clamp(min=0)
    width = (first + n - 1).clamp(max=255) - lo + 1
    # flat pixel index of each block's n pixels, [B, H', W', n]
    rows = torch.arange(h2, device=y.device).view(h2, 1) * f + torch.arange(f, device=y.device)
    cols = torch.arange(w2, device=y.device).view(w2, 1) * f + torch.arange(f, device=y.device)
    within = rows.view(h2, 1, f, 1) * (w2 * f) + cols.view(1, w2, 1, f)
    pixels = (torch.arange(b, device=y.device).view(b, 1, 1, 1) * (h2 * f * w2 * f)
              + within.reshape(1, h2, w2, n))
    log_mass = torch.zeros(b * h2 * w2, dtype=dtype, device=y.device)
    done = torch.zeros_like(width, dtype=torch.bool)
    for length in _WINDOWS:
        group = ((width <= length) & ~done).flatten().nonzero().squeeze(1)
        done |= width <= length
        if not len(group):
            continue
        g_lo = lo.flatten()[group]
        tables = p.window_bin_probs(pixels.reshape(-1, n)[group].flatten(), g_lo.repeat_interleave(n), length,
                                    dtype).view(len(group), n, length)
        sums = sum_distribution(tables)  # of the offsets from lo: [G, n (length - 1) + 1]
        allowed = (first.flatten()[group] - n * g_lo).unsqueeze(1) + torch.arange(n, device=y.device)
        top = n * (length - 1)
        mass = (sums.gather(1, allowed.clamp(0, top)) * ((allowed >= 0) & (allowed <= top))).sum(1)
        mass = mass + FFT_ERROR[dtype]  # never below the exact mass: the bound stays valid
        log_mass = log_mass.index_put((group,), torch.log(mass.clamp(min=FFT_ERROR[dtype])))
    return log_mass.view(b, -1).sum(1)




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
