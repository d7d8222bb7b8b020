"""Deterministic model arithmetic for coding: the encoder and the decoder must compute bit-identical
probabilities, or the decoder silently goes astray.

PyTorch's CPU kernels give results that depend on how work is split: a convolution's result depends on the
batch size it runs at, and an elementwise ``exp``/``sigmoid``/``tanh`` computes the last few elements of
each thread's share with a scalar routine that can differ in the last bit from the vectorised one, so the
thread count changes results. The codec therefore

* runs every network and every probability computation on *chunks* of a fixed number of images (the last
  chunk padded with zeros), so shapes never depend on how many images a file holds;
* computes each chunk with PyTorch's intra-op threads set to 1, and spreads chunks over a pool of
  ``threads`` Python threads, so the thread count changes the speed and never a result;
* flushes subnormal floats to zero, and fixes the model's memory format (channels-last).

What can still differ is the machine (CPU instruction set, PyTorch build): :func:`probe` hashes the model's
outputs on a fixed input, a file records it, and decoding refuses when this machine's probe differs.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager, nullcontext

import numpy as np
import torch
from torch import Tensor

from selfvae.nn.layers import exact_elu, frozen_weights
from selfvae.runtime import flushed_subnormals, torch_threads

Result = Tensor | tuple[Tensor, ...]


class ChunkRunner:
    """Maps a function over fixed-size chunks of a batch, deterministically (see the module docstring)."""

    def __init__(self, chunk: int, threads: int, small: bool = False) -> None:
        if chunk < 1 or threads < 1:
            raise ValueError(f"chunk ({chunk}) and threads ({threads}) must be >= 1")
        self.chunk = chunk
        self.threads = threads
        self.small = small  # a batch of n < 2 chunks runs at chunks of n // 2 (CodingParams.small_chunks)
        self._pool = ThreadPoolExecutor(threads) if threads > 1 else None

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown()

    def map(self, fn: Callable[..., Result], *inputs: Tensor | None, chunk: int | None = None,
            dtype: torch.dtype | None = None) -> Result:
        """``fn`` applied to chunks of ``inputs`` (tensors sharing their first dimension ``n``, each given to ``fn``
        contiguous; ``None`` passes through), results gathered into ``n`` rows. ``fn`` returns a tensor or a
        tuple. ``chunk`` overrides the runner's chunk size (for a network that runs best at another one). Each
        worker copies its chunk's rows
        into the output itself, so gathering large tables runs in parallel too; ``dtype`` (given) is the
        output's, converted in that copy (float32 -> float64 there is exact, and faster than ``.double()``)."""
        size = chunk or self.chunk
        n = next(t.shape[0] for t in inputs if t is not None)
        if self.small:  # a function of n alone, which the decoder knows
            size = min(size, max(1, n // 2))
        starts = list(range(0, n, size))
        outs: list[Tensor] = []
        lock = threading.Lock()

        def run(start: int) -> bool:
            torch.set_num_threads(1)
            torch.set_flush_denormal(True)  # per thread: a pool thread made before coding_mode would keep subnormals
            with torch.inference_mode():
                # one memory layout for every input: a convolution's rounding follows its input's strides, and the
                # encoder's latents (from a channels-last network's output) and the decoder's (popped) differ in them
                res = fn(*(None if t is None else _padded(t[start : start + size], size).contiguous() for t in inputs))
                parts = res if isinstance(res, tuple) else (res,)
                with lock:
                    if not outs:
                        outs.extend(_empty_rows(p, n, dtype) for p in parts)
                for out, p in zip(outs, parts, strict=True):
                    out[start : start + size].copy_(p[: n - start])
            return isinstance(res, tuple)

        pool = self._pool if len(starts) > 1 else None  # one chunk: no thread hop
        is_tuple = list(pool.map(run, starts)) if pool else [run(s) for s in starts]
        return tuple(outs) if is_tuple[0] else outs[0]


def _empty_rows(like: Tensor, n: int, dtype: torch.dtype | None = None) -> Tensor:
    """An uninitialised ``[n, *like.shape[1:]]`` tensor in ``like``'s memory format (channels-last results stay
    channels-last, as ``torch.cat`` kept them) and ``dtype`` (default ``like``'s)."""
    channels_last = like.dim() == 4 and not like.is_contiguous() and like.is_contiguous(
        memory_format=torch.channels_last)
    return torch.empty((n, *like.shape[1:]), dtype=dtype or like.dtype,
                       memory_format=torch.channels_last if channels_last else torch.contiguous_format)


def _padded(t: Tensor, size: int) -> Tensor:
    if t.shape[0] == size:
        return t
    pad = t.new_zeros((size - t.shape[0], *t.shape[1:]))
    return torch.cat([t, pad])


@contextmanager
def coding_mode(model: torch.nn.Module, exact: bool = False):
    """The process settings coding needs (restored afterwards: subnormals to torch's default, kept): intra-op
    threads 1 in this thread, subnormals flushed, the model in eval mode and channels-last, its weight-normed
    kernels computed once; with ``exact`` its ELUs computed by ``F.elu`` (:func:`selfvae.nn.layers.elu`: files
    of format 3 and older). The model's mode and its kernels' memory formats are given back afterwards (a
    kernel's layout decides how noise drawn like its outputs is laid out: a model used after coding draws
    what it drew before)."""
    was_training = model.training
    kernels = [(p, p.stride()) for p in model.parameters() if p.dim() == 4]  # 1x1 too: their strides tell convs
    model.eval()
    model.to(memory_format=torch.channels_last)
    try:
        with flushed_subnormals(), torch_threads(1), frozen_weights(model), exact_elu() if exact else nullcontext():
            yield
    finally:
        model.train(was_training)
        with torch.no_grad():
            for p, stride in kernels:
                if p.stride() != stride:
                    p.data = torch.empty_strided(p.shape, stride, dtype=p.dtype, device=p.device).copy_(p.data)


def digest(arrays: Sequence[np.ndarray | Tensor], n_bytes: int = 8) -> bytes:
    """A short hash of arrays' exact bytes."""
    h = hashlib.sha256()
    for a in arrays:
        a = a.detach().cpu().numpy() if isinstance(a, Tensor) else np.asarray(a)
        h.update(np.ascontiguousarray(a).tobytes())
    return h.digest()[:n_bytes]
