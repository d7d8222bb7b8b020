"""selfvae.runtime: after retain_freed_memory, a training step's large tensors, freed and made again the next
step, reuse the process's pages instead of faulting them in anew (glibc on Linux, where CI and this project's
machines run), and the process's memory settles instead of growing step after step."""

from __future__ import annotations

import resource
import sys

import pytest
import torch

from selfvae.runtime import retain_freed_memory

SIZES_MIB = (40, 130, 80, 33, 130, 64)  # all above glibc's largest mmap threshold (32 MiB), as a paper srVAE's


def _step() -> tuple[int, int]:
    """(minor page faults, peak resident KiB) of making, filling and freeing one 'step' of tensors."""
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    tensors = [torch.ones(n * 2**20 // 4) for n in SIZES_MIB]
    del tensors
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_minflt - before, usage.ru_maxrss


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt: Linux only")
def test_retained_memory_is_reused_without_page_faults():
    pages = sum(SIZES_MIB) * 2**20 // resource.getpagesize()
    assert retain_freed_memory()
    steps = [_step() for _ in range(6)]
    faults, peak = zip(*steps, strict=True)
    assert max(faults[-2:]) < pages // 20  # without it every page of every tensor faults again each step
    assert peak[-1] == peak[-3]  # settled: no growth over the last steps
