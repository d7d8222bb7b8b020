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
* RealNVP ``v = f(u)``: coded in the flow's base space with the Jacobian accounted for. The encoder pops
  ``v ~ N(f(u), s^2)`` (grid ``2**-flow_precision``), pushes ``u`` with ``N(f^{-1}(v), t^2)`` where
  ``t = s |det df/du|^(-1/D)`` at ``f^{-1}(v)``, then pushes ``v`` with ``N(0, 1)``. The decoder pops ``v``,
  pops ``u`` given ``f^{-1}(v)`` and pushes ``v`` back. To first order in ``s`` the net cost is
  ``-log p(u)`` plus ``D/2 (a/g - 1)`` nats, where ``a`` and ``g`` are the arithmetic and geometric means of
  the eigenvalues of ``(J^T J)^-1`` (zero for a conformal Jacobian); the decoder always recovers ``u`` exactly.
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
from selfvae.distributions import DiagonalGaussian, DiscretizedLogisticMixture
from selfvae.errors import SelfVAEError
from selfvae.models.selfvae import SelfVAE
from selfvae.priors import MixtureOfGaussians, RealNVP, StandardNormal


@dataclass(frozen=True)
class CodingParams:
    """What encoder and decoder must agree on; every field is stored in the file."""

    precision: int = 6  # latent grid 2**-precision
    flow_precision: int = 12  # RealNVP base-space grid 2**-flow_precision
    flow_noise: int = 7  # RealNVP base-space noise s = 2**-flow_noise
    chunk: int = 16  # images per network call (results depend on it; see selfvae.codec.compute)


Levels = list[Tensor]  # uint8 image levels [y_1, ..., y_K, x]
Latents = list[Tensor]  # float32 latents [u, z_1, ..., z_K] on the grid

Hook = Callable[[str], None]  # called with the part just coded: progress and accounting


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
        self.flow_grid = Grid(params.flow_precision)
        self.latent_shape = tuple(model.cfg.latent_shape)
        prior = model.p_u
        if isinstance(prior, StandardNormal):
            self.push_prior, self.pop_prior = self._push_standard, self._pop_standard
        elif isinstance(prior, MixtureOfGaussians):
            self.push_prior, self.pop_prior = self._push_mog, self._pop_mog
        elif isinstance(prior, RealNVP):
            self.push_prior, self.pop_prior = self._push_flow, self._pop_flow
        else:
            raise SelfVAEError(f"the codec cannot code the prior {type(prior).__name__}")

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
        p_z = self.m.p_z[j - 1]
        return self._gaussian(lambda y, z: p_z(p_z.encode_y(self.m.inp(y)), z), level_above, latent_above)

    def _dlm_params(self, i: int, latent: Tensor, level_above: Tensor | None) -> Tensor:
        """Raw likelihood parameters of image level ``l_i``."""
        if i == 0:
            return self.run.map(lambda z: self.m.p_y(z), latent)
        net = self.m.p_x[i - 1]
        return self.run.map(lambda y, z: net(self.m.inp(y), z).params, level_above, latent)

    def _channel_probs(self, i: int, params: Tensor, level: Tensor, c: int) -> np.ndarray:
        """``[n, H, W, 256]`` probabilities of channel ``c`` of level ``l_i`` given its earlier channels."""
        channels, n_mix = self.m.shapes[i][0], self.m.cfg.n_mix

        def chunk(prm: Tensor, y: Tensor) -> Tensor:
            return DiscretizedLogisticMixture(prm, channels, n_mix).bin_probs(c, self.m.target(y))

        return self.run.map(chunk, params, level).numpy()

    # ------------------------------------------------------------------ image levels
    def push_level(self, stack: Stack, i: int, level: Tensor, latent: Tensor, level_above: Tensor | None) -> None:
        params = self._dlm_params(i, latent, level_above)
        probs = [self._channel_probs(i, params, level, c) for c in range(level.shape[1])]
        for c in reversed(range(level.shape[1])):
            stack.push_categorical(level[:, c].numpy(), probs[c])

    def pop_level(self, stack: Stack, i: int, latent: Tensor, level_above: Tensor | None) -> Tensor:
        params = self._dlm_params(i, latent, level_above)
        level = torch.zeros((latent.shape[0], *self.m.shapes[i]), dtype=torch.uint8)
        for c in range(level.shape[1]):
            level[:, c] = torch.from_numpy(stack.pop_categorical(self._channel_probs(i, params, level, c)))
        return level

    # ------------------------------------------------------------------ latents
    def _value(self, k: np.ndarray, grid: Grid | None = None) -> Tensor:
        return torch.from_numpy((grid or self.grid).value(k)).float()

    def pop_gaussian(self, stack: Stack, mu: np.ndarray, std: np.ndarray, tight: bool = False) -> Tensor:
        return self._value(stack.pop_gaussian(mu, std, self.grid, tight))

    def push_gaussian(self, stack: Stack, latent: Tensor, mu: np.ndarray, std: np.ndarray, tight: bool = False) -> None:
        stack.push_gaussian(self.grid.index(latent.double().numpy()), mu, std, self.grid, tight)

    # posteriors: the encoder samples from them, so they are coded tight (see Stack.push_gaussian)
    def pop_q(self, stack: Stack, j: int, level: Tensor) -> Tensor:
        return self.pop_gaussian(stack, *self.q(j, level), tight=True).view(-1, *self.latent_shape)

    def push_q(self, stack: Stack, j: int, level: Tensor, latent: Tensor) -> None:
        self.push_gaussian(stack, latent, *self.q(j, level), tight=True)

    # standard normal
    def _push_standard(self, stack: Stack, u: Tensor) -> None:
        zero = np.zeros(u.shape)
        self.push_gaussian(stack, u, zero, zero + 1.0)

    def _pop_standard(self, stack: Stack, n: int) -> Tensor:
        zero = np.zeros((n, *self.latent_shape))
        return self.pop_gaussian(stack, zero, zero + 1.0)

    # mixture of Gaussians: bits back on the component
    def _mog_parts(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        prior = self.m.p_u
        with torch.inference_mode():
            log_w = torch.log_softmax(prior.logits.double(), 0)
            std = torch.exp(0.5 * prior.logvars.double())
            return prior.means.double().numpy(), std.numpy(), torch.exp(log_w).numpy()

    def _responsibilities(self, u: Tensor) -> np.ndarray:
        prior = self.m.p_u

        def chunk(v: Tensor) -> Tensor:
            x = v.double().flatten(1).unsqueeze(1)
            logvars, means = prior.logvars.double(), prior.means.double()
            comp = (-0.5 * (logvars + (x - means) ** 2 * torch.exp(-logvars))).sum(2)
            return torch.softmax(comp + torch.log_softmax(prior.logits.double(), 0), dim=1)

        return self.run.map(chunk, u).numpy()

    def _push_mog(self, stack: Stack, u: Tensor) -> None:
        means, std, w = self._mog_parts()
        c = stack.pop_categorical(self._responsibilities(u))
        flat = u.flatten(1)
        stack.push_gaussian(self.grid.index(flat.double().numpy()), means[c], std[c], self.grid)
        stack.push_categorical(c, np.broadcast_to(w, (len(c), len(w))))

    def _pop_mog(self, stack: Stack, n: int) -> Tensor:
        means, std, w = self._mog_parts()
        c = stack.pop_categorical(np.broadcast_to(w, (n, len(w))))
        u = self._value(stack.pop_gaussian(means[c], std[c], self.grid)).view(n, *self.latent_shape)
        stack.push_categorical(c, self._responsibilities(u))
        return u

    # RealNVP: the flow's base space, with the Jacobian accounted for
    def _flow_forward(self, u: Tensor) -> np.ndarray:
        return self.run.map(lambda x: self.m.p_u(x)[0].double(), u).numpy()

    def _flow_inverse(self, v: Tensor) -> tuple[np.ndarray, np.ndarray]:
        """``f^{-1}(v)`` and the residual scale ``t`` per image (broadcastable to the latent)."""
        dims = float(np.prod(self.latent_shape))
        noise = 2.0**-self.p.flow_noise

        def chunk(x: Tensor) -> tuple[Tensor, Tensor]:
            u, logdet = self.m.p_u.inverse_and_logdet(x)
            return u.double(), noise * torch.exp(-logdet.double() / dims)

        u, t = self.run.map(chunk, v)
        return u.numpy(), t.numpy().reshape(-1, 1, 1, 1)

    def _push_flow(self, stack: Stack, u: Tensor) -> None:
        noise = 2.0**-self.p.flow_noise
        fu = self._flow_forward(u)
        v = self._value(stack.pop_gaussian(fu, np.full(fu.shape, noise), self.flow_grid, tight=True), self.flow_grid)
        u_mean, t = self._flow_inverse(v)
        self.push_gaussian(stack, u, u_mean, np.broadcast_to(t, u_mean.shape))
        stack.push_gaussian(self.flow_grid.index(v.double().numpy()), np.zeros(fu.shape), np.ones(fu.shape),
                            self.flow_grid)

    def _pop_flow(self, stack: Stack, n: int) -> Tensor:
        noise = 2.0**-self.p.flow_noise
        shape = (n, *self.latent_shape)
        v = self._value(stack.pop_gaussian(np.zeros(shape), np.ones(shape), self.flow_grid), self.flow_grid)
        u_mean, t = self._flow_inverse(v)
        u = self.pop_gaussian(stack, u_mean, np.broadcast_to(t, u_mean.shape))
        fu = self._flow_forward(u)
        stack.push_gaussian(self.flow_grid.index(v.double().numpy()), fu, np.full(fu.shape, noise), self.flow_grid,
                            tight=True)
        return u

    # ------------------------------------------------------------------ whole groups
    def latent_name(self, j: int) -> str:
        return "u" if j == 0 else f"z{j}"

    def level_name(self, i: int) -> str:
        return "x" if i == self.m.K else f"y{i + 1}"

    def encode(self, stack: Stack, x: Tensor, hook: Hook | None = None, lossy: LossyTop | None = None) -> None:
        """Push the images ``x`` (uint8 ``[n, C, H, W]``). ``hook(part)`` runs after each step, with ``part`` the
        variable just coded (``u``, ``z1``.., ``y1``.., ``x``), so a caller can attribute the stack's growth.

        With ``lossy``, ``x`` itself is not coded: the levels ``y_1..y_K`` are (losslessly, bits back), and
        ``lossy`` codes what it keeps of ``z_K`` (see :mod:`selfvae.codec.lossy`).
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
            self.push_level(stack, j, levels[j], latents[j], levels[j - 1])
            hook(self.level_name(j))
            latents[j - 1] = self.pop_q(stack, j - 1, levels[j - 1])
            hook(self.latent_name(j - 1))
            self.push_gaussian(stack, latents[j], *self.p_latent(j, levels[j - 1], latents[j - 1]))
            hook(self.latent_name(j))
        self.push_level(stack, 0, levels[0], latents[0], None)
        hook(self.level_name(0))
        self.push_prior(stack, latents[0])
        hook("u")

    def decode(self, stack: Stack, n: int, on_level: Callable[[int, Tensor], None] | None = None,
               lossy: LossyTop | None = None) -> Tensor:
        """Pop ``n`` images; ``on_level(i, level)`` is called as each level ``y_1, ..., x`` becomes known. With
        ``lossy`` (as given to :meth:`encode`) the result is ``lossy``'s reconstruction of ``x``."""
        top = self.m.K if lossy is None else self.m.K - 1
        latent = self.pop_prior(stack, n)
        level = self.pop_level(stack, 0, latent, None)
        if on_level:
            on_level(0, level)
        for j in range(1, top + 1):
            nxt = self.pop_gaussian(stack, *self.p_latent(j, level, latent)).view(-1, *self.latent_shape)
            self.push_q(stack, j - 1, level, latent)
            level_above, latent = level, nxt
            level = self.pop_level(stack, j, latent, level_above)
            if on_level:
                on_level(j, level)
        if lossy is None:
            self.push_q(stack, top, level, latent)
            return level
        z = lossy.pop(self, stack, level, latent)
        self.push_q(stack, top, level, latent)
        return lossy.reconstruct(self, level, z)

    def initial_words(self, x: Tensor) -> int:
        """32-bit words the first pop of :meth:`encode` on ``x`` takes from an empty stack (its posterior's
        discretised entropy, estimated, plus one): the initial-bits cost of a file."""
        _, std = self.q(self.m.K, self.m.levels(x)[-1])
        bits = np.maximum(np.log2(std / self.grid.delta) + 0.5 * np.log2(2 * np.pi * np.e), 0.0).sum()
        return int(np.ceil(bits / 32)) + 1
