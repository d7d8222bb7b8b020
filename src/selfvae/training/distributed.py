"""Data-parallel training across processes (``torchrun``).

Data parallelism (launched by ``torchrun --nproc_per_node N selfvae train ...``):

* the process group is initialised from the environment (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``,
  ``MASTER_ADDR``/``MASTER_PORT``), with ``gloo`` on the CPU and ``nccl`` on CUDA;
* the *global* batch is ``train.batch_size``; it is split into ``world_size * train.accum_steps``
  equal micro-batches and rank ``r`` takes micro-batches ``r, r + world, ...`` (disjoint shards);
* the data-dependent initialisation runs on rank 0 and its parameters are broadcast to every rank;
* gradients are averaged with one ``all_reduce`` of a flat buffer (no ``DistributedDataParallel``
  wrapper: the model's training entry point is ``terms``, not ``forward``); clipping and the skip decision
  use the averaged gradient, so every rank takes the same decision;
* only rank 0 writes checkpoints, logs and the progress bar.

Randomness does not depend on the number of processes: micro-batch ``j`` of step ``t`` (augmentation and the
posterior noise) draws from its own generator seeded by ``(seed, t, j)``, so a 2-process run equals a
1-process run with ``accum_steps = 2`` up to the summation order of the gradient (and a resumed run continues
exactly).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import Tensor, nn

from selfvae.errors import SelfVAEError


@dataclass(frozen=True)
class DistEnv:
    """This process's place in the (possibly one-process) group."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world_size > 1


def init_from_env(device: str) -> tuple[DistEnv, str]:
    """Join the process group described by ``torchrun``'s environment (a no-op for a single process).

    Returns the environment and the device this rank uses (``cuda:LOCAL_RANK`` on CUDA).
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistEnv(), device
    rank, local = int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0"))
    if device.startswith("cuda"):
        device = f"cuda:{local}"
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.startswith("cuda") else "gloo", rank=rank, world_size=world)
    return DistEnv(rank, world, local), device


def shutdown(env: DistEnv) -> None:
    if env.active and dist.is_initialized():
        dist.destroy_process_group()


@torch.no_grad()
def broadcast_module(module: nn.Module, env: DistEnv) -> None:
    """Copy rank 0's parameters and buffers to every rank."""
    if not env.active:
        return
    for t in [*module.parameters(), *module.buffers()]:
        dist.broadcast(t.data, src=0)


@torch.no_grad()
def average_gradients(params: list[Tensor], env: DistEnv) -> None:
    """Average ``p.grad`` over ranks in place (one flat all-reduce). Every rank must pass the same list."""
    if not env.active or not params:
        return
    grads = [p.grad for p in params]
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat)
    flat.div_(env.world_size)
    offset = 0
    for g in grads:
        n = g.numel()
        g.copy_(flat[offset : offset + n].view_as(g))
        offset += n


def all_mean(value: float, env: DistEnv, device: str | torch.device) -> float:
    """The mean of a scalar over ranks (the loss that is logged and that decides a skip)."""
    if not env.active:
        return value
    t = torch.tensor([value], dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return float(t) / env.world_size


def micro_batches(idx: Tensor, env: DistEnv, accum: int) -> list[tuple[int, Tensor]]:
    """This rank's ``(global micro-batch number, indices)`` pairs of one global batch."""
    n_micro = env.world_size * accum
    if len(idx) % n_micro:
        raise SelfVAEError(
            f"batch size {len(idx)} is not divisible by world size x accum_steps = {env.world_size} x {accum}"
        )
    size = len(idx) // n_micro
    return [(j, idx[j * size : (j + 1) * size]) for j in range(env.rank, n_micro, env.world_size)]


def micro_seed(seed: int, step: int, micro: int) -> int:
    """Seed of micro-batch ``micro`` at ``step`` (independent of the number of processes)."""
    return (seed * 1_000_003 + step * 8_191 + micro * 131 + 17) % (2**63 - 1)


@contextlib.contextmanager
def seeded(seed: int, device: str | torch.device) -> Iterator[None]:
    """Run the block on the global RNGs seeded with ``seed``; the outer RNG state is restored after."""
    devices = [torch.device(device)] if torch.device(device).type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        yield
