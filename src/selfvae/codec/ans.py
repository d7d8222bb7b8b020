"""The ANS stack that bits-back coding pushes to and pops from: a thin layer over ``constriction``'s AnsCoder.

Two kinds of symbols are coded:

* 256-way categoricals, one per sub-pixel, from a probability table ``[n, 256]``;
* Gaussians discretised on a uniform grid of step ``delta`` (values ``k * delta`` for integer ``k`` in
  ``[-limit, limit]``), for the latents. Encoder and decoder must see identical means and standard deviations,
  which :mod:`selfvae.codec.compute` makes sure of.

Every push and pop also adds ``-log2`` of the coded symbols' probabilities (as given, before constriction's
24-bit quantisation) to :attr:`Stack.ideal_bits`, so the real coded length can be checked against the
information content (pushes count positive, pops negative).
"""

from __future__ import annotations

import constriction
import numpy as np
from scipy.special import ndtr

_models = constriction.stream.model
_CATEGORICAL = _models.Categorical(perfect=False)
_MIN_STD = 1e-3  # in grid steps: a narrower Gaussian puts (almost) all its mass on one value anyway


def _probs(probs: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(probs, dtype=np.float64).reshape(-1, probs.shape[-1])


class Stack:
    """An ANS stack of 32-bit words; ``words`` (bottom first) are what a file stores."""

    def __init__(self, words: np.ndarray | None = None) -> None:
        self._ans = constriction.stream.stack.AnsCoder(
            np.ascontiguousarray(words, dtype=np.uint32)
        ) if words is not None and len(words) else constriction.stream.stack.AnsCoder()
        self.ideal_bits = 0.0

    def clone(self) -> Stack:
        other = Stack()
        other._ans, other.ideal_bits = self._ans.clone(), self.ideal_bits
        return other

    # ----- sizes
    def num_words(self) -> int:
        return int(self._ans.num_words())

    def num_bits(self) -> int:
        return int(self._ans.num_bits())

    def words(self) -> np.ndarray:
        """The stack's content, bottom first (``constriction``'s order)."""
        return np.asarray(self._ans.get_compressed(), dtype=np.uint32)

    # ----- categoricals
    def push_categorical(self, symbols: np.ndarray, probs: np.ndarray) -> None:
        """Push ``symbols`` (any shape, values 0..n-1) with ``probs`` shaped ``symbols.shape + (n,)``."""
        p = _probs(probs)
        s = np.ascontiguousarray(symbols, dtype=np.int32).reshape(-1)
        self._ans.encode_reverse(s, _CATEGORICAL, p)
        self.ideal_bits += _info(p, s)

    def pop_categorical(self, probs: np.ndarray) -> np.ndarray:
        """Pop symbols shaped ``probs.shape[:-1]``."""
        p = _probs(probs)
        s = np.asarray(self._ans.decode(_CATEGORICAL, p), dtype=np.int64)
        self.ideal_bits -= _info(p, s)
        return s.reshape(probs.shape[:-1])

    # ----- discretised Gaussians
    def push_gaussian(self, k: np.ndarray, mean: np.ndarray, std: np.ndarray, grid: Grid) -> None:
        """Push grid indices ``k`` under ``N(mean, std^2)`` discretised on ``grid`` (means and stds in value units)."""
        m, s = grid.scaled(mean, std)
        kk = np.ascontiguousarray(k, dtype=np.int32).reshape(-1)
        self._ans.encode_reverse(kk, grid.model, m, s)
        self.ideal_bits += grid.info(kk, m, s)

    def pop_gaussian(self, mean: np.ndarray, std: np.ndarray, grid: Grid) -> np.ndarray:
        """Pop grid indices shaped like ``mean``."""
        m, s = grid.scaled(mean, std)
        kk = np.asarray(self._ans.decode(grid.model, m, s), dtype=np.int64)
        self.ideal_bits -= grid.info(kk, m, s)
        return kk.reshape(np.shape(mean))


def _info(p: np.ndarray, s: np.ndarray) -> float:
    """``-log2 p(s)`` summed, for rows of (possibly unnormalised) probabilities."""
    chosen = p[np.arange(len(s)), s] / p.sum(axis=1)
    return float(-np.log2(np.maximum(chosen, 2.0**-24)).sum())


class Grid:
    """Values ``k * delta`` for integers ``|k| <= limit``: how the continuous latents are discretised.

    ``delta = 2**-precision``; ``limit * delta = 2**range_log2`` bounds the values (a Gaussian is truncated there
    and renormalised, identically on both sides).
    """

    def __init__(self, precision: int, range_log2: int = 6) -> None:
        self.precision = precision
        self.delta = 2.0**-precision
        self.limit = 2 ** (range_log2 + precision)
        self.model = _models.QuantizedGaussian(-self.limit, self.limit)

    def index(self, values: np.ndarray) -> np.ndarray:
        """Nearest grid index of each value (clipped to the range)."""
        return np.clip(np.rint(np.asarray(values, dtype=np.float64) / self.delta), -self.limit, self.limit).astype(
            np.int64)

    def value(self, k: np.ndarray) -> np.ndarray:
        return np.asarray(k, dtype=np.float64) * self.delta

    def scaled(self, mean: np.ndarray, std: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Means and standard deviations in grid steps, flat float64 (what constriction takes)."""
        m = np.ascontiguousarray(mean, dtype=np.float64).reshape(-1) / self.delta
        s = np.maximum(np.ascontiguousarray(std, dtype=np.float64).reshape(-1) / self.delta, _MIN_STD)
        return np.clip(m, -self.limit, self.limit), s

    def info(self, k: np.ndarray, m: np.ndarray, s: np.ndarray) -> float:
        """``-log2`` of the (truncated, renormalised) discretised Gaussian's mass at ``k``, summed."""
        mass = _normal_mass(k - 0.5, k + 0.5, m, s)
        total = _normal_mass(np.full_like(m, -self.limit - 0.5), np.full_like(m, self.limit + 0.5), m, s)
        return float(-np.log2(np.maximum(mass / total, 2.0**-24)).sum())


def _normal_mass(lo: np.ndarray, hi: np.ndarray, m: np.ndarray, s: np.ndarray) -> np.ndarray:
    """``P(lo < X < hi)`` for ``X ~ N(m, s^2)``, accurate in both tails (mirrored so the bin lies left of the mean)."""
    a, b = (lo - m) / s, (hi - m) / s
    right = a > 0
    a, b = np.where(right, -b, a), np.where(right, -a, b)
    return ndtr(b) - ndtr(a)
