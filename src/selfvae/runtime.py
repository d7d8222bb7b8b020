"""How the process and the networks run: threads, the allocator, deterministic algorithms, memory format,
mixed precision and compilation. Commands apply these here, in one place; nothing else sets them for the
process.

The allocator: keep freed memory inside the process, so that CPU training does not page-fault its activations
in anew each step.

PyTorch's CPU tensors come from ``malloc``. glibc serves every block of 32 MiB or more (and, by its dynamic
threshold, many smaller ones) with a fresh ``mmap`` and gives it back to the kernel on ``free``; the next step's
tensor of the same size then faults in every page again, each one zeroed by the kernel: a large share of a
paper-size step's time goes to the kernel this way (``benchmarks/bench.py --retain-memory``, docs/RESULTS.md).
:func:`retain_freed_memory` tells glibc to take every block
from its heap and to keep freed memory there for reuse: the process keeps its peak, as a caching allocator does.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import sys
from collections import Counter
from collections.abc import Callable, Iterator

import torch
from torch import Tensor, nn

from selfvae.config import TrainConfig
from selfvae.errors import SelfVAEError
from selfvae.nn.layers import Network

# glibc's mallopt parameters (malloc.h)
_M_TRIM_THRESHOLD, _M_MMAP_MAX = -1, -4
_KEEP = 2**31 - 1  # the largest trim threshold mallopt takes (an int): never give the heap's top back


def retain_freed_memory() -> bool:
    """Serve all allocations from glibc's heap and never trim it (``mallopt``; for the whole process, and not
    undone: memory freed stays reserved for the process's later tensors). Returns whether it took effect: False
    on other platforms or C libraries (nothing changes there)."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # musl and others have no mallopt
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return bool(mallopt(_M_MMAP_MAX, 0)) and bool(mallopt(_M_TRIM_THRESHOLD, _KEEP))


@contextlib.contextmanager
def torch_threads(n: int | None) -> Iterator[None]:
    """Run the block with ``n`` intra-op threads (None: as they are); the old number is restored after."""
    old = torch.get_num_threads()
    try:
        if n:
            torch.set_num_threads(n)
        yield
    finally:
        torch.set_num_threads(old)


@contextlib.contextmanager
def flushed_subnormals(on: bool = True) -> Iterator[None]:
    """Run the block with subnormal floats flushed to zero (``on``); torch's default (off) after, as torch has
    no way to read the setting back."""
    if not on:
        yield
        return
    torch.set_flush_denormal(True)
    try:
        yield
    finally:
        torch.set_flush_denormal(False)


@contextlib.contextmanager
def process_settings(t: TrainConfig) -> Iterator[None]:
    """Threads, deterministic algorithms, subnormal flushing and the allocator for a training run; the process's
    settings are restored after (but for ``retain_memory``, which stays: :func:`retain_freed_memory`)."""
    determ = torch.are_deterministic_algorithms_enabled()
    if t.retain_memory:
        retain_freed_memory()
    try:
        if t.deterministic:
            torch.use_deterministic_algorithms(True)
        with flushed_subnormals(t.flush_denormal), torch_threads(t.num_threads):
            yield
    finally:
        torch.use_deterministic_algorithms(determ)


def prepare(model: nn.Module, t: TrainConfig) -> None:
    """Put a model in the form a training run asks for: channels-last memory, float32 network outputs under
    ``--amp``, compiled networks (after the data-dependent initialisation, whose first pass branches in
    Python)."""
    if t.channels_last:
        model.to(memory_format=torch.channels_last)
    if t.amp:
        install_fp32_outputs(model)
    if t.compile:
        compile_nets(model, t.compile_mode, t.compile_backend)


def _to_float32(out):  # noqa: ANN001, ANN202 - any nesting of tensors
    if isinstance(out, Tensor):
        return out.float() if out.is_floating_point() and out.dtype != torch.float32 else out
    if isinstance(out, tuple):
        return tuple(_to_float32(o) for o in out)
    if isinstance(out, list):
        return [_to_float32(o) for o in out]
    return out


def install_fp32_outputs(model: nn.Module) -> None:
    """Make every network return float32 so that likelihoods, KLs and the flow's log-determinant are
    computed in float32 under ``--amp bf16`` (only the convolutions inside the nets run in bfloat16)."""
    for m in model.modules():
        if isinstance(m, Network) and not getattr(m, "_fp32_hook", False):
            m.register_forward_hook(lambda _m, _i, out: _to_float32(out))
            m._fp32_hook = True


AMP_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def autocast(device: str | torch.device, amp: str | None):
    """The autocast context of ``--amp`` (``None``, ``"bf16"`` or ``"fp16"``; fp16 needs :func:`grad_scaler`)."""
    if not amp:
        return contextlib.nullcontext()
    if amp not in AMP_DTYPES:
        raise SelfVAEError(f"--amp {amp}: expected one of {', '.join(AMP_DTYPES)}")
    return torch.autocast(torch.device(device).type, dtype=AMP_DTYPES[amp])


def grad_scaler(device: str | torch.device, amp: str | None) -> torch.amp.GradScaler | None:
    """A dynamic loss scale for ``--amp fp16`` (float16 gradients underflow without one: GPUs without bfloat16,
    such as the V100 and T4, train this way); None otherwise."""
    return torch.amp.GradScaler(torch.device(device).type) if amp == "fp16" else None


# The named speed settings that benchmarks/bench.py measures (``PRESET:NAME,...``) and tools/gpu_session.py trains
# with (``--train-variant``): each as the TrainConfig fields it sets, so the two never disagree on what a name means
SPEED_SETTINGS: dict[str, tuple[str, ...]] = {
    "bf16": ("train.amp=bf16",),  # the networks under bfloat16 autocast
    "compile": ("train.compile=true",),  # torch.compile, inductor's generated kernels
    "cudagraphs": ("train.compile=true", "train.compile_mode=reduce-overhead"),  # inductor's, replayed as CUDA graphs
    # the eager kernels replayed as CUDA graphs (torch's cudagraphs backend: no code generation, compiled as fast as
    # dynamo traces)
    "graphs": ("train.compile=true", "train.compile_backend=cudagraphs"),
}


def speed_settings(names: set[str] | list[str]) -> list[str]:
    """The ``--set`` items of the named :data:`SPEED_SETTINGS` (unknown names raise, naming the known ones)."""
    unknown = set(names) - set(SPEED_SETTINGS)
    if unknown:
        raise SelfVAEError(f"speed settings {sorted(unknown)}: unknown; known: {', '.join(SPEED_SETTINGS)}")
    if {"cudagraphs", "graphs"} <= set(names):
        raise SelfVAEError("speed settings 'cudagraphs' and 'graphs' exclude each other (two ways to record graphs)")
    return [item for name in sorted(names) for item in SPEED_SETTINGS[name]]


CUDA_GRAPH_MODES = ("reduce-overhead", "max-autotune")  # the torch.compile modes that record CUDA graphs
# graphs one network may need: training and evaluation, with gradients and without, at two batch sizes
GRAPHS_PER_NET = 8


def compile_nets(model: nn.Module, mode: str = "default", backend: str | Callable = "inductor") -> None:
    """``torch.compile`` each network in place (state-dict keys unchanged) in ``mode`` (``"reduce-overhead"``:
    CUDA graphs too, where the step is on a GPU: :func:`mark_step`); call after the data-dependent initialisation,
    whose first pass branches in Python. ``backend``: torch's (``mode`` is inductor's alone) or a callable, as
    tests trace the graphs.

    Every network of a class runs one Python function, and dynamo keeps its graphs per function: a paper srVAE's
    eight nets of eight shapes, each in training and evaluation, are sixteen graphs of one ``forward``. So each
    graph is static (``dynamic=False``: dynamo's default turns a shape dynamic at its second size, and the nets
    compiled as symbolic-shape graphs, three compilations that held an H200 past four minutes on 2026-11-26
    without a step), and dynamo's recompile limit is raised for the process to hold them all (at its default of
    eight, the later nets ran eagerly)."""
    nets = [m for m in model.modules() if isinstance(m, Network)]
    graphs = GRAPHS_PER_NET * max(Counter(type(m) for m in nets).values(), default=0)
    torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, graphs)
    options = {"mode": None if mode == "default" else mode} if backend == "inductor" else {}
    for m in nets:
        m.compile(backend=backend, dynamic=False, **options)


def records_cuda_graphs(t: TrainConfig) -> bool:
    """Whether the compiled networks of ``t`` replay CUDA graphs (where they run on a GPU)."""
    return t.compile and (t.compile_mode in CUDA_GRAPH_MODES or t.compile_backend == "cudagraphs")


def mark_step(t: TrainConfig) -> None:
    """Tell the CUDA graphs of ``--compile reduce-overhead`` (or the cudagraphs backend) that a new training step
    begins, so that the outputs of the last one (read already) may be overwritten; nothing otherwise."""
    if records_cuda_graphs(t) and torch.cuda.is_available():
        torch.compiler.cudagraph_mark_step_begin()
