"""Lossy coding with a selfVAE: send ``y = d(x)`` losslessly and ``z_K`` quantised, or ``y`` alone.

The levels ``y_1, ..., y_K`` are coded exactly as in a lossless file (bits back over ``u, z_1..z_{K-1}``);
``x`` is not coded. What is kept of ``z_K``:

* :class:`QuantisedZ`: the posterior mean of ``q(z_K | x)`` rounded to the grid ``2**-precision`` and coded
  (without bits back: it is chosen, not sampled) under the conditional prior ``p(z_K | y_K, z_{K-1})`` on
  that grid. A coarser grid costs fewer bits and gives a blurrier ``x``.
* ``QuantisedZ(None)``: nothing; ``z_K`` is the prior's mean, so ``x`` is the model's super-resolution of ``y_K``.

The decoder rebuilds ``x`` as the mean (or mode) of ``p(x | y_K, z_K)``, rounded to 8 bits.
"""

from __future__ import annotations

import torch
from torch import Tensor

from selfvae.codec.ans import Grid, Stack
from selfvae.codec.bitsback import BitsBackCoder, Levels
from selfvae.errors import SelfVAEError
from selfvae.models.selfvae import to_uint8


class QuantisedZ:
    """Keeps ``z_K`` on the grid ``2**-precision`` (``precision=None``: keeps nothing); see the module docstring."""

    def __init__(self, precision: int | None, decode: str = "mean") -> None:
        if decode not in ("mean", "mode"):
            raise SelfVAEError(f"lossy decode {decode!r}: expected mean or mode")
        self.grid = None if precision is None else Grid(precision)
        self.decode = decode
        self.last: Tensor | None = None
        self.y_k: Tensor | None = None

    @property
    def precision(self) -> int | None:
        return None if self.grid is None else self.grid.precision

    def push(self, coder: BitsBackCoder, stack: Stack, levels: Levels, latent_above: Tensor) -> None:
        """Code what is kept of ``z_K``; :attr:`last` is then the ``z_K`` the decoder will use."""
        K = coder.m.K
        self.y_k = levels[K - 1]
        p_mu, p_std = coder.p_latent(K, levels[K - 1], latent_above)
        if self.grid is None:
            self.last = torch.from_numpy(p_mu).float()
            return
        k = self.grid.index(coder.q(K, levels[K])[0])
        stack.push_gaussian(k, p_mu, p_std, self.grid)
        self.last = torch.from_numpy(self.grid.value(k)).float()

    def pop(self, coder: BitsBackCoder, stack: Stack, y_k: Tensor, latent_above: Tensor) -> Tensor:
        p_mu, p_std = coder.p_latent(coder.m.K, y_k, latent_above)
        if self.grid is None:
            return torch.from_numpy(p_mu).float()
        return torch.from_numpy(self.grid.value(stack.pop_gaussian(p_mu, p_std, self.grid))).float()

    def reconstruct(self, coder: BitsBackCoder, y_k: Tensor, z_k: Tensor) -> Tensor:
        m = coder.m

        def chunk(y: Tensor, z: Tensor) -> Tensor:
            dlm = m.p_x_given(m.K - 1, y, z)
            return to_uint8(dlm.mean() if self.decode == "mean" else dlm.mode())

        return coder.run.map(chunk, y_k, z_k)
