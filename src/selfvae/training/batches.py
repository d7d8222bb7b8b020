"""Training batches: a resumable shuffled sampler and the stream of (step, micro-batches) it drives.

With ``train.workers = 0`` batches are gathered in the main process; with ``workers > 0`` a ``DataLoader``
over keys ``(step, micro-batches, sampler state after the batch)`` gathers them in worker processes (pinned
memory on CUDA). Keys come from the :class:`EpochSampler` in order and the checkpoint stores the sampler state
of the last *consumed* key, so prefetching never breaks resume. Augmentation of micro-batch ``j`` of step
``t`` draws from a generator seeded by ``(seed, t, j)``, so neither a restart nor the number of processes
changes the batches.
"""

from __future__ import annotations

import torch
from torch import Tensor

from selfvae.config import Config
from selfvae.data import ImageDataset, load_split
from selfvae.errors import SelfVAEError
from selfvae.training import distributed as D


class EpochSampler:
    """Shuffled mini-batches of indices, reshuffled each epoch from ``seed + epoch`` (resumable)."""

    def __init__(self, n: int, batch_size: int, seed: int) -> None:
        if n < batch_size:
            raise SelfVAEError(f"the training split has {n} images, fewer than the batch size {batch_size}: pass "
                               f"--batch-size {max(1, n // 2)} (or fewer), or give more images")
        self.n, self.batch_size, self.seed = n, batch_size, seed
        self.epoch, self.pos = 0, 0
        self._perm: Tensor | None = None

    def _order(self) -> Tensor:
        if self._perm is None:
            g = torch.Generator().manual_seed(self.seed + self.epoch)
            self._perm = torch.randperm(self.n, generator=g)
        return self._perm

    def next(self) -> Tensor:
        if self.pos + self.batch_size > self.n:
            self.epoch, self.pos, self._perm = self.epoch + 1, 0, None
        idx = self._order()[self.pos : self.pos + self.batch_size]
        self.pos += self.batch_size
        return idx

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.epoch, "pos": self.pos}

    def load_state_dict(self, s: dict[str, int]) -> None:
        self.epoch, self.pos, self._perm = s["epoch"], s["pos"], None


def gather(ds: ImageDataset, idx: Tensor) -> Tensor:
    """A uint8 batch ``[B, C, H, W]`` of dataset items (augmentation applied per item)."""
    return torch.stack([ds[int(i)] for i in idx])


class BatchFetcher(torch.utils.data.Dataset):
    """Maps a key ``(step, [(micro, indices), ...], sampler_state)`` to ``(step, [(micro, uint8 batch)],
    sampler_state)``; augmentation of micro-batch ``j`` draws from a generator seeded by ``(seed, step, j)``,
    so the batch is the same in the main process, in a worker, and on any rank."""

    def __init__(self, ds: ImageDataset, seed: int) -> None:
        self.ds, self.seed = ds, seed

    def __len__(self) -> int:  # keys are not integers; the loader asks only through its sampler
        return len(self.ds)

    def __getitem__(self, key):  # noqa: ANN001, ANN204
        step, micro, state = key
        out = []
        for j, idx in micro:
            if self.ds.augment:
                with D.seeded(D.micro_seed(self.seed + 1, step, j), "cpu"):
                    out.append((j, gather(self.ds, idx)))
            else:
                out.append((j, self.ds.images[idx]))
        return step, out, state


def _identity(b):  # noqa: ANN001, ANN202 - a picklable no-op collate
    return b


class _Keys:
    """The loader's keys from ``start`` to ``stop`` (iterates a private copy of the sampler)."""

    def __init__(self, sampler: EpochSampler, start: int, stop: int, env: D.DistEnv, accum: int) -> None:
        self.state, self.start, self.stop, self.env, self.accum = sampler.state_dict(), start, stop, env, accum
        self.n, self.batch_size, self.seed = sampler.n, sampler.batch_size, sampler.seed

    def __len__(self) -> int:
        return max(0, self.stop - self.start)

    def __iter__(self):  # noqa: ANN204
        s = EpochSampler(self.n, self.batch_size, self.seed)
        s.load_state_dict(self.state)
        for step in range(self.start, self.stop):
            idx = s.next()
            yield step, D.micro_batches(idx, self.env, self.accum), s.state_dict()


def batch_stream(ds: ImageDataset, sampler: EpochSampler, start: int, stop: int, cfg: Config,
                 env: D.DistEnv, device: str):
    """``(step, [(micro, batch on device)], sampler_state)`` for steps ``start..stop-1`` (see module doc)."""
    t = cfg.train
    fetch = BatchFetcher(ds, t.seed)
    keys = _Keys(sampler, start, stop, env, t.accum_steps)
    cuda = torch.device(device).type == "cuda"
    if t.workers > 0:
        loader = torch.utils.data.DataLoader(fetch, batch_size=None, sampler=keys, num_workers=t.workers,
                                             pin_memory=cuda, collate_fn=_identity)
        source = iter(loader)
    else:
        source = (fetch[k] for k in keys)
    for step, micro, state in source:
        yield step, [(j, xb.to(device, non_blocking=cuda)) for j, xb in micro], state


def open_datasets(cfg: Config) -> tuple[ImageDataset, ImageDataset]:
    """The training split (augmented as configured) and the validation split, shaped for the model."""
    return load_split(cfg, "train", augment=None), load_split(cfg, "val")
