"""Bits-back coding at the importance-weighted bound: BB-IS (Ruan et al. 2021, "Improving Lossless Compression
Rates via Monte Carlo Bits-Back Coding").

One posterior sample makes bits-back coding cost the negative ELBO. With ``S`` samples it costs, in expectation,
the negative IW bound ``log S - log sum_s w_s`` (``w_s = p(x, L^s) / q(L^s | x)``, ``L^s`` a whole set of latents
``u, z_1, ..., z_K``). It is ordinary bits-back coding on an extended latent space::

    Q(L^1..L^S, j | x) = prod_s q(L^s | x) * w_j / sum_s w_s
    P(x, L^1..L^S, j)  = 1/S * p(x, L^j) * prod_{s != j} q(L^s | x)

``-log P + log Q = log S - log sum_s w_s``. The encoder pops the ``S`` sets from ``q`` and the index ``j`` from
the normalised weights, pushes the ``S - 1`` other sets back with ``q``, then codes the images under set ``j``
in the generative order (``u``, ``y_1``, ``z_1``, ..., ``x``, as plain BB-ANS does without Bit-Swap's
interleaving) and ``j`` uniformly. The decoder pops ``j``, the levels coarse first (a prefix still decodes
``y_1`` first), the other sets; then it knows every set and both sides' weights, pushes ``j`` with them and the
``S`` sets with ``q``, and so returns every borrowed bit.

The weights are ``log p(x | L) + log p(L) - log q(L | x)`` with the model's densities (the coded masses up to
the shared grid volume), computed on chunks of a fixed size from values both sides hold exactly, so they agree
bit for bit. The cost: the encoder's first pops take ``S`` times the bits of one sample (the file's first
images are coded with fewer samples, see :func:`selfvae.codec.files._encode_all`), and the likelihood and prior are
evaluated for every sample (only set ``j``'s probability tables are built).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from torch import Tensor

from selfvae.codec.ans import Stack
from selfvae.codec.bitsback import BitsBackCoder, Hook, Levels
from selfvae.codec.images import Cover

_HALF_LOG_2PI = 0.5 * np.log(2.0 * np.pi)


def _gaussian_log_density(v: Tensor, mu: np.ndarray, std: np.ndarray) -> np.ndarray:
    """``log N(v; mu, std^2)`` summed over each row's dimensions (float64)."""
    z = (v.double().numpy() - mu) / std
    return (-0.5 * z * z - np.log(std) - _HALF_LOG_2PI).reshape(len(mu), -1).sum(1)


def _normalised(log_w: np.ndarray) -> np.ndarray:
    """``[n, S]`` probabilities ``w_s / sum w`` from log weights ``[S, n]``."""
    e = np.exp(log_w.T - log_w.max(0)[:, None])
    return e / e.sum(1, keepdims=True)


class ImportanceCoder:
    """Encodes and decodes groups of images with ``samples`` latent sets each, on a :class:`BitsBackCoder`'s
    networks, grid and chunking (lossless files only)."""

    def __init__(self, coder: BitsBackCoder, samples: int) -> None:
        if samples < 2:
            raise ValueError(f"samples {samples}: BB-IS needs at least 2 (1 is plain bits-back coding)")
        self.c, self.m, self.S = coder, coder.m, samples

    def _posteriors(self, levels: Levels) -> list[tuple[np.ndarray, np.ndarray]]:
        """Each latent's posterior, repeated for the ``S`` sets (sample-major rows: set ``s`` of image ``i`` is row
        ``s * n + i``)."""
        out = []
        for j in range(self.m.K + 1):
            mu, std = self.c.q(j, levels[j])
            out.append((np.concatenate([mu] * self.S), np.concatenate([std] * self.S)))
        return out

    def log_weights(self, levels: Levels, sets: list[Tensor], post: list[tuple[np.ndarray, np.ndarray]]
                    ) -> np.ndarray:
        """``[S, n]`` log importance weights ``log p(levels, L^s) - log q(L^s | levels)`` (nats, float64) of the
        sets ``sets`` (one ``[S * n, ...]`` tensor per latent) under the posteriors ``post`` (as
        :meth:`_posteriors` gives)."""
        c, m, run = self.c, self.m, self.c.run
        rep = [torch.cat([level] * self.S) for level in levels]
        log_w = (run.map(lambda u: m.p_u.log_prob(u).double(), sets[0], chunk=c.flow_chunk(len(sets[0]))).numpy()
                 + run.map(lambda u, y: m.p_y_given(u).log_prob(m.target(y)).double(), sets[0], rep[0]).numpy())
        for k in range(1, m.K + 1):
            log_w += _gaussian_log_density(sets[k], *c.p_latent(k, rep[k - 1], sets[k - 1]))

            def likelihood(y_above: Tensor, z: Tensor, y: Tensor, k: int = k) -> Tensor:
                both: list = [None] * (k + 1)  # re_level reads levels k-1 and k (renormalised if consistent)
                both[k - 1], both[k] = y_above, y
                return -m.re_level(k - 1, m.p_x_given(k - 1, y_above, z), both).double()

            log_w += run.map(likelihood, rep[k - 1], sets[k], rep[k]).numpy()
        for j in range(m.K + 1):
            log_w -= _gaussian_log_density(sets[j], *post[j])
        return log_w.reshape(self.S, -1)

    def _others(self, pick: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Rows of the chosen sets and a mask of the others, in the sample-major layout."""
        n = len(pick)
        rows = pick.astype(np.int64) * n + np.arange(n)
        others = np.ones(self.S * n, bool)
        others[rows] = False
        return rows, others

    def encode(self, stack: Stack, x: Tensor, hook: Hook, cover: Cover | None = None) -> None:
        """Push the images ``x`` (uint8 ``[n, C, H, W]``); ``hook`` and ``cover`` as for
        :meth:`BitsBackCoder.encode`, with the index ``j`` reported as part ``"j"``. (The weights that pick a set
        count every pixel, those outside the images too: both sides compute them alike, which is all a pick
        needs.)"""
        c, m = self.c, self.m
        levels = m.levels(x)
        tiled = self._posteriors(levels)
        sets: list[Tensor] = [torch.empty(0)] * (m.K + 1)
        for j in reversed(range(m.K + 1)):
            sets[j] = c.pop_gaussian(stack, *tiled[j], tight=True).view(-1, *c.latent_shape)
            hook(c.latent_name(j))
        pick = stack.pop_categorical(_normalised(self.log_weights(levels, sets, tiled)))
        hook("j")
        rows, others = self._others(pick)
        mask, at = torch.from_numpy(others), torch.from_numpy(rows)
        for j in range(m.K + 1):
            c.push_gaussian(stack, sets[j][mask], tiled[j][0][others], tiled[j][1][others], tight=True)
            hook(c.latent_name(j))
        chosen = [s[at] for s in sets]
        for i in range(m.K, 0, -1):
            c.push_level(stack, i, levels[i], chosen[i], levels[i - 1], cover=cover)
            hook(c.level_name(i))
            c.push_gaussian(stack, chosen[i], *c.p_latent(i, levels[i - 1], chosen[i - 1]))
            hook(c.latent_name(i))
        c.push_level(stack, 0, levels[0], chosen[0], None, cover=cover)
        hook(c.level_name(0))
        c.push_prior(stack, chosen[0])
        hook("u")
        stack.push_uniform(pick, self.S)
        hook("j")

    def decode(self, stack: Stack, n: int, on_level: Callable[[int, Tensor], None] | None = None,
               cover: Cover | None = None) -> Tensor:
        """Pop ``n`` images; ``on_level(i, level)`` sees ``y_1, ..., x`` as each becomes known (``cover`` as given
        to :meth:`encode`)."""
        c, m = self.c, self.m
        pick = stack.pop_uniform(self.S, (n,))
        latent = c.pop_prior(stack, n)
        chosen, levels = [latent], [c.pop_level(stack, 0, latent, None, cover=cover)]
        if on_level:
            on_level(0, levels[0])
        for i in range(1, m.K + 1):
            z = c.pop_gaussian(stack, *c.p_latent(i, levels[-1], chosen[-1])).view(-1, *c.latent_shape)
            chosen.append(z)
            levels.append(c.pop_level(stack, i, z, levels[i - 1], cover=cover))
            if on_level:
                on_level(i, levels[i])
        tiled = self._posteriors(levels)
        rows, others = self._others(pick)
        mask, at = torch.from_numpy(others), torch.from_numpy(rows)
        sets: list[Tensor] = [torch.empty(0)] * (m.K + 1)
        for j in reversed(range(m.K + 1)):
            full = torch.empty((self.S * n, *c.latent_shape))
            full[mask] = c.pop_gaussian(stack, tiled[j][0][others], tiled[j][1][others], tight=True).view(
                -1, *c.latent_shape)
            full[at] = chosen[j]
            sets[j] = full
        stack.push_categorical(pick, _normalised(self.log_weights(levels, sets, tiled)))
        for j in range(m.K + 1):
            c.push_gaussian(stack, sets[j], *tiled[j], tight=True)
        return levels[-1]
