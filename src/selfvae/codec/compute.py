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
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager

import numpy as np
import torch
from torch import Tensor

from selfvae.nn.layers import frozen_weights

Result = Tensor | tuple[Tensor, ...]


class ChunkRunner:
    """Maps a function over fixed-size chunks of a batch, deterministically (see the module docstring)."""

    def __init__(self, chunk: int, threads: int) -> None:
        if chunk < 1 or threads < 1:
            raise ValueError(f"chunk ({chunk}) and threads ({threads}) must be >= 1")
        self.chunk = chunk
        self.threads = threads
        self._pool = ThreadPoolExecutor(threads) if threads > 1 else None

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown()

    def map(self, fn: Callable[..., Result], *inputs: Tensor | None) -> Result:
        """``fn`` applied to chunks of ``inputs`` (tensors sharing their first dimension ``n``; ``None`` passes
        through), results concatenated and cut back to ``n`` rows. ``fn`` returns a tensor or a tuple."""
        n = next(t.shape[0] for t in inputs if t is not None)
        starts = list(range(0, n, self.chunk))

        def run(start: int) -> Result:
            torch.set_num_threads(1)
            torch.set_flush_denormal(True)  # per thread: a pool thread made before coding_mode would keep subnormals
            with torch.inference_mode():
                return fn(*(None if t is None else _padded(t[start : start + self.chunk], self.chunk) for t in inputs))

        outs = list(self._pool.map(run, starts)) if self._pool else [run(s) for s in starts]
        if isinstance(outs[0], tuple):
            return tuple(torch.cat(parts)[:n] for parts in zip(*outs, strict=True))
        return torch.cat(outs)[:n]


def _padded(t: Tensor, size: int) -> Tensor:
    if t.shape[0] == size:
        return t
    pad = t.new_zeros((size - t.shape[0], *t.shape[1:]))
    return torch.cat([t, pad])


@contextmanager
def coding_mode(model: torch.nn.Module):
    """The process settings coding needs (restored afterwards): intra-op threads 1 in this thread, subnormals
    flushed, the model in eval mode and channels-last, its weight-normed kernels computed once."""
    threads = torch.get_num_threads()
    torch.set_flush_denormal(True)
    torch.set_num_threads(1)
    model.eval()
    model.to(memory_format=torch.channels_last)
    try:
        with frozen_weights(model):
            yield
    finally:
        torch.set_num_threads(threads)


def digest(arrays: Sequence[np.ndarray | Tensor], n_bytes: int = 8) -> bytes:
    """A short hash of arrays' exact bytes."""
    h = hashlib.sha256()
    for a in arrays:
        a = a.detach().cpu().numpy() if isinstance(a, Tensor) else np.asarray(a)
        h.update(np.ascontiguousarray(a).tobytes())
    return h.digest()[:n_bytes]
