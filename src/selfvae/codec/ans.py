"""The ANS stack that bits-back coding pushes to and pops from: a thin layer over ``constriction``'s AnsCoder.

Three kinds of symbols are coded:

* 256-way categoricals, one per sub-pixel, from a probability table ``[n, 256]``;
* uniform integers (a latent's position inside a coarser grid's bin);
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

from selfvae.errors import SelfVAEError

_models = constriction.stream.model
_CATEGORICAL = _models.Categorical(perfect=False)
_MIN_STD = 1e-3  # in grid steps: a narrower Gaussian puts (almost) all its mass on one value anyway
WINDOW = 6.0  # a tight Gaussian is coded within mean +- about this many standard deviations
_LADDER = 2.0**0.25  # window half-widths are rounded up on this geometric ladder (a few coder calls a batch)


class StackUnderflow(SelfVAEError):
    """A pop found fewer bits on the stack than it needed: its samples would come from the coder's tails, not
    from the distribution, and cost dearly. The encoder retries with more initial bits or a smaller group."""


def _probs(probs: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(probs, dtype=np.float64).reshape(-1, probs.shape[-1])


class Stack:
    """An ANS stack of 32-bit words; ``words`` (bottom first) are what a file stores."""

    def __init__(self, words: np.ndarray | None = None, decoding: bool = False) -> None:
        self._ans = constriction.stream.stack.AnsCoder(
            np.ascontiguousarray(words, dtype=np.uint32)
        ) if words is not None and len(words) else constriction.stream.stack.AnsCoder()
        # a decoder's pops that reach the stack's last two words take the file's first pushes, which an empty
        # coder holds in fewer bits than their information (measured: 864 for 969): no underflow (see _popped)
        self.decoding = decoding
        self.ideal_bits = 0.0
        self.low_water = self.num_bits()  # the fewest bits the stack held after a pop (see StackUnderflow)
        self.rows: np.ndarray | None = None  # per image, its pushes' ideal bits minus its pops' (see track)

    def clone(self) -> Stack:
        other = Stack(decoding=self.decoding)
        other._ans, other.ideal_bits, other.low_water = self._ans.clone(), self.ideal_bits, self.low_water
        other.rows = None if self.rows is None else self.rows.copy()
        return other

    def track(self, n: int) -> None:
        """From now on, split the ideal bits of every push and pop among ``n`` images (``rows``): each coded array
        holds the ``n`` images' values in equal runs, first image first, as a group's ``[n, ...]`` arrays do. What
        each image of a group cost, net of its bits back, read from :attr:`rows` (:meth:`untrack`)."""
        self.rows = np.zeros(n)

    def untrack(self) -> np.ndarray:
        """Stop :meth:`track`ing; the bits each image cost since it began."""
        rows, self.rows = self.rows, None
        return rows

    def _account(self, info: np.ndarray | float, n: int, sign: float) -> float:
        """Add the ideal bits of ``n`` values to the totals (``sign`` -1 for a pop): ``info`` each value's (flat), or
        one figure for all (uniform values: no array of ``n`` copies); returns their sum."""
        per_value = isinstance(info, np.ndarray)
        total = float(info.sum()) if per_value else float(info) * n
        self.ideal_bits += sign * total
        if self.rows is not None:
            if n % len(self.rows):
                raise SelfVAEError(f"{n} values do not split among the {len(self.rows)} images tracked")
            self.rows += sign * (info.reshape(len(self.rows), -1).sum(axis=1) if per_value
                                 else total / len(self.rows))
        return total

    # ----- sizes
    def num_words(self) -> int:
        return int(self._ans.num_words())

    def num_bits(self) -> int:
        return int(self._ans.num_bits())

    def words(self) -> np.ndarray:
        """The stack's content, bottom first (``constriction``'s order)."""
        return np.asarray(self._ans.get_compressed(), dtype=np.uint32)

    # ----- categoricals
    def push_categorical(self, symbols: np.ndarray, probs: np.ndarray, normalised: bool = False) -> None:
        """Push ``symbols`` (any shape, values 0..n-1) with ``probs`` shaped ``symbols.shape + (n,)``;
        ``normalised``: the rows sum to 1 (to float rounding), so the accounting need not sum them."""
        p = _probs(probs)
        s = np.ascontiguousarray(symbols, dtype=np.int32).reshape(-1)
        self._ans.encode_reverse(s, _CATEGORICAL, p)
        self._account(_info(p, s, normalised), len(s), 1.0)

    def pop_categorical(self, probs: np.ndarray, normalised: bool = False) -> np.ndarray:
        """Pop symbols shaped ``probs.shape[:-1]`` (``normalised`` as for :meth:`push_categorical`)."""
        p = _probs(probs)
        before = self.num_bits()
        s = np.asarray(self._ans.decode(_CATEGORICAL, p), dtype=np.int64)
        self._popped(before, _info(p, s, normalised), len(s))
        return s.reshape(probs.shape[:-1])

    def _popped(self, before: int, values: np.ndarray | float, n: int) -> None:
        """Account a pop of ``n`` values, ``info`` ideal bits; raise :class:`StackUnderflow` if the stack did not
        hold them. The coder's 24-bit quantised probabilities make the bits a pop really takes differ from the
        ideal ones by a few hundredths of a bit per value (and the count moves in 32-bit words), so the
        tolerance is 64 bits plus 0.05 per value: mnist-vae's 32k-value flow pops took 0.4% fewer bits
        than ideal, which a flat 64 mistook for an empty stack. ``values``: each popped value's ideal bits, or
        one figure for all (:meth:`_account`)."""
        info = self._account(values, n, -1.0)
        self.low_water = min(self.low_water, self.num_bits())
        if self.decoding and self.num_bits() <= 64:
            return
        if before - self.num_bits() < info - 64 - 0.05 * n:
            raise StackUnderflow(f"a pop needed {info:.0f} bits and found {before - self.num_bits()} on the stack")

    # ----- uniform integers
    def push_uniform(self, symbols: np.ndarray, size: int) -> None:
        """Push integers in ``[0, size)``, each at ``log2(size)`` bits."""
        s = np.ascontiguousarray(symbols, dtype=np.int32).reshape(-1)
        self._ans.encode_reverse(s, _models.Uniform(size))
        self._account(np.log2(size), len(s), 1.0)

    def pop_uniform(self, size: int, shape: tuple[int, ...]) -> np.ndarray:
        """Pop integers in ``[0, size)`` shaped ``shape``."""
        n = int(np.prod(shape))
        before = self.num_bits()
        s = np.asarray(self._ans.decode(_models.Uniform(size), n), dtype=np.int64)
        self._popped(before, np.log2(size), n)
        return s.reshape(shape)

    # ----- discretised Gaussians
    def push_gaussian(self, k: np.ndarray, mean: np.ndarray, std: np.ndarray, grid: Grid, tight: bool = False,
                      reach: np.ndarray | None = None) -> None:
        """Push grid indices ``k`` under ``N(mean, std^2)`` discretised on ``grid`` (means and stds in value units).

        ``tight=True`` codes within a window of about ``WINDOW`` standard deviations around the mean, or at
        least ``reach`` grid steps: use it for every distribution the encoder *samples* from (the posteriors),
        because the 24-bit coder gives each value of the alphabet at least ``2**-24``, and over the whole grid
        that leak would now and then draw a latent far in the tail; and on grids too large for a whole-grid
        model. Push and pop of one variable must use the same ``tight`` and ``reach``; a value outside its window
        is refused.
        """
        m, s = grid.scaled(mean, std)
        kk = np.ascontiguousarray(k, dtype=np.int64).reshape(-1)
        radius = grid.radius(s, reach) if tight else None
        info = grid.info(kk, m, s, radius)  # first: it refuses a value outside its window
        if tight:
            for idx, model, centre in reversed(grid.windows(m, radius)):
                self._ans.encode_reverse((kk[idx] - centre).astype(np.int32), model, m[idx] - centre, s[idx])
        else:
            self._ans.encode_reverse(kk.astype(np.int32), grid.model(), m, s)
        self._account(info, len(kk), 1.0)

    def pop_gaussian(self, mean: np.ndarray, std: np.ndarray, grid: Grid, tight: bool = False,
                     reach: np.ndarray | None = None) -> np.ndarray:
        """Pop grid indices shaped like ``mean`` (see :meth:`push_gaussian`)."""
        m, s = grid.scaled(mean, std)
        kk = np.empty(len(m), dtype=np.int64)
        radius = grid.radius(s, reach) if tight else None
        before = self.num_bits()
        if tight:
            for idx, model, centre in grid.windows(m, radius):
                kk[idx] = np.asarray(self._ans.decode(model, m[idx] - centre, s[idx]), dtype=np.int64) + centre
        else:
            kk[:] = np.asarray(self._ans.decode(grid.model(), m, s), dtype=np.int64)
        self._popped(before, grid.info(kk, m, s, radius), len(kk))
        return kk.reshape(np.shape(mean))


def _info(p: np.ndarray, s: np.ndarray, normalised: bool = False) -> np.ndarray:
    """``-log2 p(s)`` of each value, for rows of probabilities (normalised here unless ``normalised``)."""
    chosen = p[np.arange(len(s)), s]
    if not normalised:
        chosen = chosen / p.sum(axis=1)
    return -np.log2(np.maximum(chosen, 2.0**-24))


class Grid:
    """Values ``k * delta`` for integers ``|k| <= limit``: how the continuous latents are discretised.

    ``delta = 2**-precision``; ``limit * delta = 2**range_log2`` bounds the values (a Gaussian is truncated there
    and renormalised, identically on both sides).
    """

    def __init__(self, precision: int, range_log2: int = 6) -> None:
        self.precision = precision
        self.delta = 2.0**-precision
        self.limit = 2 ** (range_log2 + precision)
        self._model: object | None = None
        self._window_models: dict[int, object] = {}

    def model(self) -> object:
        """The whole-grid model (built on first use: a grid of ``2**24`` values or more has none)."""
        if self._model is None:
            if 2 * self.limit + 1 >= 2**23:
                raise SelfVAEError(f"a grid of {2 * self.limit + 1} values is too large to code whole; code it tight")
            self._model = _models.QuantizedGaussian(-self.limit, self.limit)
        return self._model

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

    def windows(self, m: np.ndarray, radius: np.ndarray) -> list[tuple[np.ndarray, object, np.ndarray]]:
        """For tight coding: ``(indices, model, centres)`` per window half-width (``radius``, from
        :meth:`radius`), in a fixed order. A value is coded as its offset from ``centre = round(mean)`` in
        ``[-R, R]``."""
        centre = np.rint(m).astype(np.int64)
        out = []
        for r in np.unique(radius):
            idx = np.flatnonzero(radius == r)
            if int(r) not in self._window_models:
                self._window_models[int(r)] = _models.QuantizedGaussian(-int(r), int(r))
            out.append((idx, self._window_models[int(r)], centre[idx]))
        return out

    def radius(self, s: np.ndarray, reach: np.ndarray | None = None) -> np.ndarray:
        """Window half-widths: at least ``WINDOW`` stds, 2 steps and ``reach``, rounded up on a geometric ladder."""
        need = np.maximum(WINDOW * s, 2.0)
        if reach is not None:
            need = np.maximum(need, np.ascontiguousarray(reach, dtype=np.float64).reshape(-1))
        return np.minimum(np.ceil(_LADDER ** np.ceil(np.log(need) / np.log(_LADDER))), self.limit).astype(np.int64)

    def info(self, k: np.ndarray, m: np.ndarray, s: np.ndarray, radius: np.ndarray | None = None) -> np.ndarray:
        """``-log2`` of the (truncated, renormalised) discretised Gaussian's mass at each ``k``: over the
        window of half-width ``radius`` around ``round(m)`` (tight coding), else over the whole grid. Raises if
        a value lies outside its window (a tight push that could not be decoded)."""
        mass = _normal_mass(k - 0.5, k + 0.5, m, s)
        if radius is not None:
            c = np.rint(m)
            if np.any(np.abs(k - c) > radius):
                raise SelfVAEError(f"{int(np.sum(np.abs(k - c) > radius))} value(s) lie outside their coding window")
            total = _mass_within(c - radius - 0.5, c + radius + 0.5, m, s)
        else:
            total = _mass_within(np.full_like(m, -self.limit - 0.5), np.full_like(m, self.limit + 0.5), m, s)
        return -np.log2(np.maximum(mass / total, 2.0**-24))


def _mass_within(lo: np.ndarray, hi: np.ndarray, m: np.ndarray, s: np.ndarray) -> np.ndarray:
    """``P(lo < X < hi)`` for bounds that hold nearly all the mass (a coding window or the grid), as the
    accounting needs it: taken as 1 where both bounds lie ``WINDOW`` (6) standard deviations or more from the
    mean, which misstates a value's information by under 3e-9 bits, and computed elsewhere. Tight windows span
    more than that by construction, so this skips most of the work."""
    near = (lo - m > -WINDOW * s) | (hi - m < WINDOW * s)
    total = np.ones_like(m)
    if near.any():
        total[near] = _normal_mass(lo[near], hi[near], m[near], s[near])
    return total


def _normal_mass(lo: np.ndarray, hi: np.ndarray, m: np.ndarray, s: np.ndarray) -> np.ndarray:
    """``P(lo < X < hi)`` for ``X ~ N(m, s^2)``, accurate in both tails (mirrored so the bin lies left of the mean)."""
    a, b = (lo - m) / s, (hi - m) / s
    right = a > 0
    a, b = np.where(right, -b, a), np.where(right, -a, b)
    return ndtr(b) - ndtr(a)
