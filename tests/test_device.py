"""The paths a GPU run takes, on the device ``SELFVAE_TEST_DEVICE`` names (default ``cpu``; ``tools/gpu_session.py``
runs this file with ``cuda`` on a lent GPU): the bound computed there equals the CPU's, bf16 autocast and
channels-last train, ``torch.compile`` computes the eager function, training through the command line (and
``torchrun``) writes a run that loads on the CPU, and sampling stays on the device."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch
from conftest import TINY, tiny_config

from selfvae import runtime
from selfvae.config import Config, ModelConfig
from selfvae.models.ops import generate
from selfvae.models.selfvae import SelfVAE
from selfvae.nn.layers import data_dependent_init
from selfvae.runs.loading import load_run
from selfvae.training.step import train_step

pytestmark = pytest.mark.slow  # compiles networks and launches processes: the slow lane (CI runs it)


def _model(transforms: str = "downscale", channels: int = 1) -> SelfVAE:
    cfg = ModelConfig(image_shape=(channels, 16, 16), transforms=transforms, latent_shape=(4, 4, 4),
                      prior="realnvp", prior_kwargs={"mid_channels": 8, "num_blocks": 1, "num_scales": 1},
                      n_mix=3, q_u=TINY, p_y=TINY, q_z=TINY, p_z=TINY, p_x=TINY)
    torch.manual_seed(0)
    model = SelfVAE(cfg)
    x = torch.randint(0, 256, (32, channels, 16, 16), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))
    data_dependent_init(model, lambda: model.terms(x))
    return model


@pytest.fixture
def cpu_noise(monkeypatch):
    """``torch.randn_like`` drawn on the CPU from a fixed generator, then moved: the same posterior noise on
    every device and memory format (``randn_like`` fills a channels-last tensor in memory order), so a bound
    computed on two devices can be compared number for number."""
    def fixed(t: torch.Tensor, **kw) -> torch.Tensor:  # noqa: ANN003 - in logical order, whatever t's layout
        return torch.randn(t.shape, generator=fixed.generator).to(t.device, t.dtype)

    def reset() -> None:
        fixed.generator = torch.Generator().manual_seed(123)

    fixed.reset = reset
    reset()
    monkeypatch.setattr(torch, "randn_like", fixed)
    return fixed


@pytest.mark.parametrize("transforms", ["", "downscale"])
def test_the_bound_on_the_device_equals_the_cpu_bound(device, cpu_noise, transforms):
    model = _model(transforms, channels=3).eval()
    x = torch.randint(0, 256, (8, 3, 16, 16), dtype=torch.uint8, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        cpu_noise.reset()
        ref = model.terms(x).nelbo
        cpu_noise.reset()
        on = model.to(device).to(memory_format=torch.channels_last).terms(x.to(device)).nelbo
    assert on.device.type == torch.device(device).type
    # float32 arithmetic in another order (cuDNN/TF32 off by default for convolutions in PyTorch's fp32 tests)
    assert torch.allclose(on.cpu(), ref, rtol=2e-4, atol=1e-2), (on.cpu() - ref).abs().max()


def test_bf16_channels_last_training_lowers_the_loss_with_float32_likelihoods(device):
    model = _model().to(device).to(memory_format=torch.channels_last)
    runtime.install_fp32_outputs(model)
    cfg = tiny_config(None, "downscale")
    cfg.train.amp, cfg.train.channels_last, cfg.train.lr = "bf16", True, 3e-3
    opt = torch.optim.Adamax(model.parameters(), lr=cfg.train.lr)
    x = torch.randint(0, 256, (32, 1, 16, 16), dtype=torch.uint8, generator=torch.Generator().manual_seed(3))
    x = (x // 64 * 64).to(device)  # a few grey levels: learnable in a few dozen steps
    losses = [train_step(model, opt, x, cfg, None, step=i).loss for i in range(40)]
    assert all(torch.isfinite(torch.tensor(losses)))
    assert sum(losses[-5:]) / 5 < sum(losses[:5]) / 5 - 0.5, losses
    for p in model.parameters():
        assert p.dtype == torch.float32 and torch.isfinite(p).all()
    with torch.no_grad(), runtime.autocast(device, "bf16"):
        p_y = model.p_y_given(torch.zeros(2, 4, 4, 4, device=device))
    assert p_y.params.dtype == p_y.locs.dtype == torch.float32


def test_fp16_training_with_a_loss_scale_lowers_the_loss_and_resumes_its_scale(device, blob_npz, tmp_path):
    """``--amp fp16`` (GPUs without bfloat16): float16 autocast, a dynamic loss scale that the checkpoint keeps,
    overflowing steps skipped; the weights stay float32 and finite."""
    from selfvae.runs.checkpoint import load_checkpoint
    from selfvae.training.loop import train

    cfg = tiny_config(blob_npz, "downscale", steps=30)
    cfg.train.amp, cfg.train.lr, cfg.train.eval_every, cfg.train.checkpoint_every = "fp16", 3e-3, 1000, 10
    train(cfg, tmp_path / "run", device=device, progress=False, final_eval=False)
    state = load_checkpoint(tmp_path / "run" / "last.pt")
    assert state["scaler"] and state["scaler"]["scale"] > 0
    assert all(v.dtype == torch.float32 and torch.isfinite(v).all() for v in state["model"].values()
               if v.is_floating_point())
    recs = [json.loads(x) for x in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    losses = [r["bpd"] for r in recs if r["split"] == "train" and not r["skipped"]]
    assert len(losses) >= 4 and losses[-1] < losses[0] - 0.5, losses
    cfg.train.steps = 35
    cfg.save(tmp_path / "run" / "config.json")
    train(cfg, tmp_path / "run", device=device, resume=True, progress=False, final_eval=False)
    again = load_checkpoint(tmp_path / "run" / "last.pt")
    assert again["step"] == 35 and again["scaler"]["scale"] > 0


def test_compiled_nets_compute_the_eager_function(device, cpu_noise):
    model = _model("").to(device).eval()  # the VAE: fewer nets to compile (50 s on a 2-core CPU with all five)
    x = torch.randint(0, 256, (8, 1, 16, 16), dtype=torch.uint8, generator=torch.Generator().manual_seed(4))
    x = x.to(device)
    with torch.no_grad():
        cpu_noise.reset()
        eager = model.terms(x).nelbo
        runtime.compile_nets(model)
        cpu_noise.reset()
        compiled = model.terms(x).nelbo
    assert torch.allclose(compiled, eager, rtol=1e-4, atol=1e-2), (compiled - eager).abs().max()


@pytest.mark.parametrize("mode, backend", [("reduce-overhead", "inductor"), ("default", "cudagraphs")])
def test_compiled_training_steps_follow_the_eager_ones(device, mode, backend):
    """``--compile reduce-overhead`` (CUDA graphs of each network's generated kernels, forward and backward, on a
    GPU; compiled alone on the CPU) and the cudagraphs backend (CUDA graphs of the eager kernels; eager on the CPU):
    the first step's gradients, taken through the recorded graphs, and the losses of three steps equal the eager
    ones (the posterior noise, drawn outside the networks, is seeded by the step)."""
    cfg = tiny_config(None)
    runs = {}
    for compiled in (False, True):
        cfg.train.compile, cfg.train.compile_mode, cfg.train.compile_backend = compiled, mode, backend
        assert runtime.records_cuda_graphs(cfg.train) == compiled
        model = _model("").to(device)
        runtime.prepare(model, cfg.train)
        opt = torch.optim.Adamax(model.parameters(), lr=2e-3)
        x = torch.randint(0, 256, (16, 1, 16, 16), dtype=torch.uint8, generator=torch.Generator().manual_seed(5))
        losses = [train_step(model, opt, x.to(device), cfg, None, step=0).loss]
        grad = torch.cat([p.grad.flatten().cpu() for p in model.parameters()])
        losses += [train_step(model, opt, x.to(device), cfg, None, step=i).loss for i in (1, 2)]
        runs[compiled] = losses, grad
    (eager_losses, eager_grad), (losses, grad) = runs[False], runs[True]
    # convolutions may run in TF32 on a GPU, in either layout: agreement to 1%, where a broken backward is off by 100%
    assert (grad - eager_grad).norm() < 1e-2 * eager_grad.norm(), (grad - eager_grad).norm() / eager_grad.norm()
    assert losses == pytest.approx(eager_losses, rel=1e-3) and eager_losses[2] < eager_losses[0]


def test_sampling_stays_on_the_device(device):
    model = _model().to(device).eval()
    with torch.no_grad():
        chain = generate(model, 4)
    assert [tuple(y.shape) for y in chain] == [(4, 1, 8, 8), (4, 1, 16, 16)]
    assert all(y.device.type == torch.device(device).type and y.dtype == torch.uint8 for y in chain)


def test_a_model_trained_on_the_device_codes_on_the_cpu_and_is_refused_there(device):
    """The codec computes on the CPU (files must decode on any machine): a model on the device is refused with what
    to do, and the same model moved to the CPU codes its images exactly."""
    from selfvae.codec import CodecError, compress, decompress
    from selfvae.codec.images import InputImage

    model = _model().to(device)
    x = torch.randint(0, 256, (8, 1, 16, 16), dtype=torch.uint8, generator=torch.Generator().manual_seed(2))
    model.bpd(model.terms(x.to(device)).nelbo).mean().backward()
    with torch.no_grad():
        for p in model.parameters():
            p -= 1e-3 * p.grad.sign()  # one step on the device, so the weights are the device's own
    images = [InputImage(f"{i}", im.permute(1, 2, 0).numpy()) for i, im in enumerate(x[:3])]
    if device != "cpu":
        with pytest.raises(CodecError, match="the codec computes on the CPU"):
            compress(model, images)
    model = model.cpu()
    data, _ = compress(model, images, png_instead=False)
    back = decompress(model, data)
    assert all((a == b.pixels).all() for a, b in zip(back.images, images, strict=True))


def _cli(*args: str, cwd=None) -> subprocess.CompletedProcess:  # noqa: ANN001
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, env=env, cwd=cwd, timeout=600)


@pytest.mark.parametrize("launcher", ["python", "torchrun"])
def test_command_line_training_on_the_device_writes_a_run_the_cpu_loads(device, blob_npz, tmp_path, launcher):
    cfg = tiny_config(blob_npz, "downscale", steps=6)
    cfg.train.final_eval_limit, cfg.train.final_iw_samples = 16, 2
    cfg_file = tmp_path / "cfg.json"
    cfg.save(cfg_file)
    run = tmp_path / "run"
    train_args = ["train", "--config", str(cfg_file), "--out", str(run), "--no-progress", "--device",
                  device.split(":")[0], "--amp", "bf16", "--channels-last", "--threads", "1"]
    if launcher == "python" and device.startswith("cuda"):  # a whole run (validation, EMA, samples) through CUDA
        train_args += ["--compile", "reduce-overhead"]      # graphs; on the CPU compiling takes minutes
    if launcher == "python":
        res = _cli("-m", "selfvae.cli", *train_args)
    else:  # one process through torchrun's environment (NCCL on CUDA, gloo on the CPU)
        script = tmp_path / "selfvae_main.py"
        script.write_text("import sys\nfrom selfvae.cli import main\nmain(sys.argv[1:])\n")
        res = _cli("-m", "torch.distributed.run", "--nproc_per_node", "1", "--master_port", "29517", str(script),
                   *train_args)
    assert res.returncode == 0, res.stderr[-3000:]
    loaded_cfg, model = load_run(run, "cpu")
    assert isinstance(loaded_cfg, Config) and next(model.parameters()).device.type == "cpu"
    assert all(torch.isfinite(p).all() for p in model.parameters())
    assert (run / "final" / "metrics.json").exists()


def test_a_run_on_the_device_resumes_there(device, blob_npz, tmp_path):
    """A checkpoint is loaded onto the run's device; its RNG states must go back to the CPU generators (the first
    GPU session's resume failed with 'RNG state must be a torch.ByteTensor')."""
    cfg = tiny_config(blob_npz, "downscale", steps=4)
    cfg.train.final_eval_limit, cfg.train.final_iw_samples = 16, 2
    cfg_file = tmp_path / "cfg.json"
    cfg.save(cfg_file)
    run = tmp_path / "run"
    common = ["--out", str(run), "--no-progress", "--device", device.split(":")[0], "--threads", "1"]
    first = _cli("-m", "selfvae.cli", "train", "--config", str(cfg_file), *common)
    assert first.returncode == 0, first.stderr[-3000:]
    again = _cli("-m", "selfvae.cli", "train", "--resume", "--steps", "7", *common)
    assert again.returncode == 0, again.stderr[-3000:]
    steps = [json.loads(x)["step"] for x in (run / "log.jsonl").read_text().splitlines()]
    assert max(steps) == 7


def test_the_cli_device_flag_samples_on_cuda_or_says_there_is_none(tmp_path):
    res = _cli("-m", "selfvae.cli", "sample", "cifar10-srvae-cons", "--device", "cuda", "-n", "4", "-o",
               str(tmp_path / "s.png"))
    if torch.cuda.is_available():
        assert res.returncode == 0 and (tmp_path / "s.png").stat().st_size > 0, res.stderr[-2000:]
    else:
        assert res.returncode != 0 and "no CUDA device is available here" in res.stderr
