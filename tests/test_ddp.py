"""Data-parallel training (torchrun, gloo on the CPU) equals one process on the same global batch."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch
from conftest import tiny_config

from selfvae.errors import SelfVAEError
from selfvae.runs.checkpoint import load_checkpoint
from selfvae.training import distributed as D
from selfvae.training.loop import train

STEPS = 6


def ddp_config(blob_npz, accum: int):
    cfg = tiny_config(blob_npz, "downscale", steps=STEPS)
    t = cfg.train
    t.accum_steps, t.num_threads, t.ema_decay = accum, 1, 0.9
    t.eval_every, t.log_every, t.checkpoint_every = 1000, 1, STEPS // 2  # last.pt.prev: the weights half-way
    t.final_iw_samples, t.final_eval_limit = 2, 16
    return cfg


@pytest.mark.slow
def test_two_gloo_processes_match_one_process_on_the_same_global_batch(blob_npz, tmp_path):
    # one process: the global batch of 32 as 2 micro-batches of 16 (the random numbers of micro-batch j
    # depend only on (seed, step, j), not on which process computes it)
    single = tmp_path / "single"
    train(ddp_config(blob_npz, accum=2), single, progress=False, final_eval=False)

    cfg_file = tmp_path / "cfg.json"
    ddp_config(blob_npz, accum=1).save(cfg_file)
    script = tmp_path / "selfvae_main.py"
    script.write_text("import sys\nfrom selfvae.cli import main\nmain(sys.argv[1:])\n")
    out = tmp_path / "ddp"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    res = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", str(script),
         "train", "--config", str(cfg_file), "--out", str(out), "--no-progress"],
        env=env, capture_output=True, text=True, timeout=180,
    )
    assert res.returncode == 0, res.stderr[-3000:]
    assert res.stdout.count("test bits/dim") == 1  # only rank 0 reports

    a, b = load_checkpoint(single / "last.pt"), load_checkpoint(out / "last.pt")
    assert a["step"] == b["step"] == STEPS and a["sampler"] == b["sampler"]
    for key in ("model", "ema"):
        for k, v in a[key].items():
            if v.is_floating_point():
                torch.testing.assert_close(b[key][k], v, atol=1e-5, rtol=1e-5, msg=f"{key}.{k}")
    half = load_checkpoint(out / "last.pt.prev")
    assert half["step"] == STEPS // 2
    moved = [k for k, v in b["model"].items() if v.is_floating_point() and not torch.equal(v, half["model"][k])]
    weights = [k for k, v in b["model"].items() if v.is_floating_point() and k.endswith((".v", ".g", ".b"))]
    assert set(weights) <= set(moved)  # every conv weight of the data-parallel run changed in its last steps
    recs = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in recs if r["split"] == "train"] == list(range(1, STEPS + 1))  # rank 0 only
    la = [json.loads(line)["bpd"] for line in (single / "log.jsonl").read_text().splitlines()]
    lb = [r["bpd"] for r in recs]
    assert la == pytest.approx(lb, abs=1e-4)  # the logged loss is the global mean over ranks


def test_micro_batches_shard_the_global_batch_disjointly():
    idx = torch.arange(12)
    shards = [D.micro_batches(idx, D.DistEnv(rank=r, world_size=2), accum=3) for r in range(2)]
    numbers = sorted(j for s in shards for j, _ in s)
    assert numbers == list(range(6))
    got = torch.cat([b for _, b in sorted((j, b) for s in shards for j, b in s)])
    assert torch.equal(got, idx)
    with pytest.raises(SelfVAEError, match="not divisible"):
        D.micro_batches(torch.arange(10), D.DistEnv(rank=0, world_size=4), accum=1)


def test_accumulation_changes_nothing_but_the_noise_split(blob_npz, tmp_path):
    """Same global batch, different micro-batching: same data order, finite, close-ish bound."""
    a, b = tmp_path / "a", tmp_path / "b"
    train(ddp_config(blob_npz, accum=1), a, progress=False, final_eval=False)
    train(ddp_config(blob_npz, accum=4), b, progress=False, final_eval=False)
    sa, sb = load_checkpoint(a / "last.pt"), load_checkpoint(b / "last.pt")
    assert sa["sampler"] == sb["sampler"]
    ba = [json.loads(x)["bpd"] for x in (a / "log.jsonl").read_text().splitlines()]
    bb = [json.loads(x)["bpd"] for x in (b / "log.jsonl").read_text().splitlines()]
    assert ba[0] == pytest.approx(bb[0], rel=0.05)  # same weights and images at step 1, other noise


def test_workers_give_the_same_batches_as_the_main_process(blob_npz, tmp_path):
    """A DataLoader with worker processes (augmentation on) feeds exactly the main-process batches."""
    from selfvae.training.batches import EpochSampler, batch_stream, open_datasets

    cfg = ddp_config(blob_npz, accum=2)
    ds, _ = open_datasets(cfg)
    ds.augment = True
    sampler = EpochSampler(len(ds), 32, 0)
    sampler.next()
    main_proc = list(batch_stream(ds, sampler, 1, 4, cfg, D.DistEnv(), "cpu"))
    cfg.train.workers = 2
    workers = list(batch_stream(ds, sampler, 1, 4, cfg, D.DistEnv(), "cpu"))
    assert [s for s, _, _ in main_proc] == [s for s, _, _ in workers] == [1, 2, 3]
    for (_, ma, sa), (_, wa, sw) in zip(main_proc, workers, strict=True):
        assert sa == sw
        for (ja, xa), (jb, xb) in zip(ma, wa, strict=True):
            assert ja == jb and torch.equal(xa, xb)


def test_bf16_autocast_keeps_likelihoods_in_float32_and_channels_last_trains(blob_npz, tmp_path):
    from selfvae import distributions as dist_mod

    seen = []
    real = dist_mod.DiscretizedLogisticMixture.__init__

    def spy(self, params, *a, **k):
        seen.append((params.dtype, torch.is_autocast_enabled("cpu")))
        return real(self, params, *a, **k)

    cfg = ddp_config(blob_npz, accum=1)
    cfg.train.steps, cfg.train.amp, cfg.train.channels_last = 3, "bf16", True
    dist_mod.DiscretizedLogisticMixture.__init__ = spy
    try:
        train(cfg, tmp_path / "amp", progress=False, final_eval=False)
    finally:
        dist_mod.DiscretizedLogisticMixture.__init__ = real
    # the nets ran under bf16 autocast, but the likelihood gets float32 parameters
    assert any(on for _, on in seen) and all(d == torch.float32 for d, _ in seen)
    state = load_checkpoint(tmp_path / "amp" / "last.pt")
    assert state["step"] == 3
    assert all(v.dtype == torch.float32 and torch.isfinite(v).all() for v in state["model"].values()
               if v.is_floating_point())
    recs = [json.loads(x) for x in (tmp_path / "amp" / "log.jsonl").read_text().splitlines()]
    assert all(r["skipped"] is False for r in recs if r["split"] == "train")
