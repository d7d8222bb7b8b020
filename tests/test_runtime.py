"""selfvae.runtime: after retain_freed_memory, a training step's large tensors, freed and made again the next
step, reuse the process's pages instead of faulting them in anew (glibc on Linux, where CI and this project's
machines run), and the process's memory settles instead of growing step after step."""

from __future__ import annotations

import os
import resource
import subprocess
import sys
from pathlib import Path

import pytest
import torch

SIZES_MIB = (40, 130, 80, 33, 130, 64)  # all above glibc's largest mmap threshold (32 MiB), as a paper srVAE's


def _step() -> tuple[int, int]:
    """(minor page faults, peak resident KiB) of making, filling and freeing one 'step' of tensors."""
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    tensors = [torch.ones(n * 2**20 // 4) for n in SIZES_MIB]
    del tensors
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_minflt - before, usage.ru_maxrss


@pytest.mark.slow  # its own process: mallopt is for the whole process, and earlier tests' heap would blur it
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt: Linux only")
def test_retained_memory_is_reused_without_page_faults():
    """In a fresh process (the setting is process-wide and never undone; a worker's heap, fragmented by the tests
    it ran before, made the count depend on their order): after ``retain_freed_memory`` a step of large tensors
    reuses the pages of the last one."""
    code = (f"import sys; sys.path.insert(0, {str(Path(__file__).parent)!r})\n"
            "import resource, test_runtime as t\n"
            "from selfvae.runtime import retain_freed_memory\n"
            "assert retain_freed_memory()\n"
            "print(*[x for _ in range(6) for x in t._step()])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={**os.environ, "OMP_NUM_THREADS": "1"}).stdout.split()
    faults, peak = [int(v) for v in out[0::2]], [int(v) for v in out[1::2]]
    pages = sum(SIZES_MIB) * 2**20 // resource.getpagesize()
    assert max(faults[-2:]) < pages // 20, faults  # without it every page of every tensor faults again each step
    assert peak[-1] == peak[-3], peak  # settled: no growth over the last steps


def _tiny_srvae(nets: str, st_net: str):  # noqa: ANN202
    """A data-initialised srVAE of tiny nets (ours or the authors') and a batch of 16x16 images."""
    from dataclasses import replace

    from conftest import TINY

    from selfvae.config import ModelConfig
    from selfvae.models.selfvae import SelfVAE
    from selfvae.nn.layers import data_dependent_init

    spec = replace(TINY, steps=2)
    cfg = ModelConfig(image_shape=(3, 16, 16), transforms="downscale", latent_shape=(4, 4, 4), prior="realnvp",
                      prior_kwargs={"mid_channels": 8, "num_blocks": 1, "num_scales": 1, "st_net": st_net}, n_mix=3,
                      q_u=spec, p_y=spec, q_z=spec, p_z=spec, p_x=spec, p_z_y=spec, p_x_z=spec, nets=nets)
    torch.manual_seed(0)
    model = SelfVAE(cfg)
    x = torch.randint(0, 256, (4, 3, 16, 16), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))
    data_dependent_init(model, lambda: model.terms(x))
    return model, x


@pytest.mark.parametrize(("nets", "st_net"), [("selfvae", "resnet"), ("paper", "dense")])
def test_every_network_compiles_into_one_graph_computing_the_eager_function(nets, st_net):
    """``--compile`` pays on a GPU only if each network is one graph (its kernels fused, then replayed as one CUDA
    graph): no graph break, and no network whose layers dynamo compiles one by one (as it does below a top frame
    in torch.nn's files: a recompilation per width, past its limit, then eager). Traced with dynamo alone (a graph
    counter as backend, no code generation) in training mode, outputs equal to the eager ones."""
    from selfvae.nn.layers import Network

    model, x = _tiny_srvae(nets, st_net)
    calls: list[tuple[Network, tuple, dict]] = []
    nets_in = [m for m in model.modules() if isinstance(m, Network)]
    hooks = [n.register_forward_pre_hook(lambda m, a, k: calls.append((m, a, k)), with_kwargs=True) for n in nets_in]
    model.terms(x)
    for h in hooks:
        h.remove()
    assert {id(m) for m, _, _ in calls} == {id(n) for n in nets_in}  # every network ran
    for net, args, kwargs in calls:
        graphs = []

        def count(gm, _inputs, graphs=graphs):  # noqa: ANN001, ANN202
            graphs.append(gm)
            return gm.forward

        torch._dynamo.reset()
        eager = net(*args, **kwargs)
        net.compile(backend=count, fullgraph=True)  # in place, as selfvae.runtime.compile_nets does
        out = net(*args, **kwargs)
        assert len(graphs) == 1, (type(net).__name__, len(graphs))
        for a, b in zip(torch.utils._pytree.tree_leaves(out), torch.utils._pytree.tree_leaves(eager), strict=True):
            assert torch.allclose(a, b, rtol=1e-5, atol=1e-5), type(net).__name__


def test_compiled_nets_are_static_graphs_and_none_runs_eagerly(monkeypatch):
    """All the networks of a model compiled at once (``compile_nets``), as training does: dynamo keeps one
    function's graphs together, so by its defaults the second net of a class turned its graph into a symbolic-shape
    one (slow to compile: an H200 spent over four minutes on a paper srVAE's nets without a step) and, past eight
    graphs, the rest ran eagerly (the authors' srVAE has eight nets of one class, in training and evaluation).
    Each graph is static, and the evaluation pass gets its own graphs, as many as training's."""
    from selfvae import runtime

    model, x = _tiny_srvae("paper", "dense")
    graphs: list[bool] = []  # is the graph symbolic?

    def count(gm, inputs):  # noqa: ANN001, ANN202
        shapes = [s for i in inputs if isinstance(i, torch.Tensor) for s in i.shape]
        graphs.append(any(isinstance(v, torch.SymInt) for v in [*inputs, *shapes]))
        return gm.forward

    monkeypatch.setattr(torch._dynamo.config, "recompile_limit", torch._dynamo.config.recompile_limit)
    torch._dynamo.reset()
    try:
        runtime.compile_nets(model, backend=count)
        model.terms(x)
        model.terms(x)  # a second step compiles nothing new
        trained = len(graphs)
        assert trained >= 8, trained  # several shapes of PaperNet (and the flow's nets)
        model.eval()
        with torch.no_grad():
            model.terms(x)
        assert len(graphs) == 2 * trained, (trained, len(graphs))
        assert not any(graphs), graphs
        model.train()
        model.terms(x)
        assert len(graphs) == 2 * trained  # back in training: its graphs are kept
    finally:
        torch._dynamo.reset()
