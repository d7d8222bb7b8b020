"""Training really lowers the bound, resumes exactly, survives corrupt checkpoints and skips NaN steps."""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

import pytest
import torch
from conftest import tiny_config

from selfvae.config import check_config
from selfvae.errors import SelfVAEError
from selfvae.runs.checkpoint import load_checkpoint, load_latest, save_checkpoint
from selfvae.runs.loading import load_run
from selfvae.training.batches import EpochSampler
from selfvae.training.loop import train
from selfvae.training.state import minutes_spent
from selfvae.training.step import learning_rate


def val_curve(run_dir) -> list[float]:
    recs = [json.loads(line) for line in (run_dir / "log.jsonl").read_text().splitlines()]
    return [r["bpd"] for r in recs if r["split"] == "val"]


def test_short_training_lowers_the_bound_and_writes_results(blob_npz, tmp_path):
    cfg = tiny_config(blob_npz, "downscale", steps=60)
    cfg.train.eval_every = 20
    out = tmp_path / "run"
    m = train(cfg, out, progress=False)
    curve = val_curve(out)
    assert len(curve) == 3 and curve[-1] < curve[0] - 0.3, curve
    assert m["n_images"] == m["iw_n_images"] == 32 and m["iw_samples"] == 4
    stored = json.loads((out / "final" / "metrics.json").read_text())
    assert stored.pop("provenance") == m["provenance"]
    assert stored == pytest.approx({k: v for k, v in m.items() if k != "provenance"})
    for f in ("config.json", "best.pt", "last.pt", "curves.png", "final/samples.png", "final/metrics.json"):
        assert (out / f).is_file(), f
    assert any((out / "tb").iterdir())
    _, model = load_run(out)
    assert model.K == 1
    from selfvae.runs.weights import digest  # the record names the weights it measured and the images

    assert m["version"] == 2 and m["provenance"]["weights"] == {"sha256": digest(model.state_dict()), "steps": 60}
    assert m["provenance"]["images"] == {"data": cfg.data.name, "split": m["split"], "n": 32, "rule": "first"}


def test_resume_continues_exactly_where_it_stopped(blob_npz, tmp_path):
    straight = tmp_path / "straight"
    train(tiny_config(blob_npz, "downscale", steps=16), straight, progress=False, final_eval=False)
    cut = tmp_path / "cut"
    train(tiny_config(blob_npz, "downscale", steps=8), cut, progress=False, final_eval=False)
    cfg = tiny_config(blob_npz, "downscale", steps=16)
    train(cfg, cut, resume=True, progress=False, final_eval=False)
    a = load_checkpoint(straight / "last.pt")
    b = load_checkpoint(cut / "last.pt")
    assert a["step"] == b["step"] == 16
    for k, v in a["model"].items():
        assert torch.equal(v, b["model"][k]), k
    assert a["sampler"] == b["sampler"]


def test_resume_can_start_ema_weights_on_a_run_saved_without(blob_npz, tmp_path):
    """A run trained without EMA resumed with ``train.ema_decay``: the EMA starts from the resumed weights (as
    a new run's does) and is saved; it moves away from them as training goes on."""
    run = tmp_path / "r"
    cfg = tiny_config(blob_npz, "downscale", steps=4)
    cfg.train.ema_decay = None
    train(cfg, run, progress=False, final_eval=False)
    assert load_checkpoint(run / "last.pt").get("ema") is None
    cfg = tiny_config(blob_npz, "downscale", steps=8)
    cfg.train.ema_decay = 0.5
    train(cfg, run, resume=True, progress=False, final_eval=False)
    state = load_checkpoint(run / "last.pt")
    assert state["step"] == 8 and state["ema"] is not None
    assert any(not torch.equal(v, state["model"][k]) for k, v in state["ema"].items())


def test_refuses_to_overwrite_and_to_resume_nothing(blob_npz, tmp_path):
    with pytest.raises(SelfVAEError, match="nothing to resume"):
        train(tiny_config(blob_npz), tmp_path / "none", resume=True, progress=False)
    train(tiny_config(blob_npz, steps=2), tmp_path / "r", progress=False, final_eval=False)
    with pytest.raises(SelfVAEError, match="already holds a run"):
        train(tiny_config(blob_npz, steps=2), tmp_path / "r", progress=False)
    cfg = tiny_config(blob_npz, steps=2)
    cfg.train.lr = 0.0  # the library refuses what the CLI refuses, before any work
    with pytest.raises(SelfVAEError, match=r"train\.lr=0\.0: must be above 0"):
        train(cfg, tmp_path / "zero", progress=False)
    assert not (tmp_path / "zero").exists()


def test_corrupt_checkpoint_is_rejected_and_the_previous_kept(tmp_path):
    path = tmp_path / "last.pt"
    good = {"config": {}, "model": {"w": torch.ones(3)}, "optimizer": {}, "step": 1, "sampler": {}, "rng": {}}
    save_checkpoint(good, path)
    save_checkpoint({**good, "step": 2}, path)
    assert load_checkpoint(path)["step"] == 2 and (tmp_path / "last.pt.prev").is_file()
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])  # truncated
    with pytest.raises(SelfVAEError, match="corrupt or truncated"):
        load_checkpoint(path)
    with pytest.warns(UserWarning, match="previous checkpoint"):
        assert load_latest(path)["step"] == 1
    (tmp_path / "x.pt").write_bytes(b"not a checkpoint at all")
    with pytest.raises(SelfVAEError):
        load_checkpoint(tmp_path / "x.pt")
    torch.save({"format": "selfvae-checkpoint", "version": 99}, tmp_path / "v.pt")
    with pytest.raises(SelfVAEError, match="version 99"):
        load_checkpoint(tmp_path / "v.pt")


def test_nan_steps_are_skipped_and_counted(blob_npz, tmp_path, monkeypatch):
    """An injected NaN loss is skipped: weights stay finite; many in a row stop the run clearly."""
    from selfvae.models import selfvae as sv

    cfg = tiny_config(blob_npz, steps=12)
    cfg.train.max_consecutive_skips = 5
    real = sv.SelfVAE.terms
    calls = {"n": 0}

    def poisoned(self, x, n_samples=1, analytic_kl=True):
        t = real(self, x, n_samples, analytic_kl)
        if self.training:
            calls["n"] += 1
            if calls["n"] in (3, 4):
                t.kl_u = t.kl_u * float("nan")
        return t

    monkeypatch.setattr(sv.SelfVAE, "terms", poisoned)
    train(cfg, tmp_path / "nan", progress=False, final_eval=False)
    state = load_checkpoint(tmp_path / "nan" / "last.pt")
    assert state["skips_total"] == 2 and state["step"] == 12
    assert all(torch.isfinite(v).all() for v in state["model"].values() if v.is_floating_point())

    calls["n"] = 0

    def always_nan(self, x, n_samples=1, analytic_kl=True):
        t = real(self, x, n_samples, analytic_kl)
        if self.training:
            t.kl_u = t.kl_u * float("nan")
        return t

    monkeypatch.setattr(sv.SelfVAE, "terms", always_nan)
    res = train(tiny_config(blob_npz, steps=50), tmp_path / "nan2", progress=False)
    assert "consecutive steps skipped" in res["stopped"]


def test_sampler_covers_each_epoch_once_and_restores():
    s = EpochSampler(10, 3, seed=0)
    first = torch.cat([s.next() for _ in range(3)])
    assert len(set(first.tolist())) == 9
    state = s.state_dict()
    nxt = s.next()
    s2 = EpochSampler(10, 3, seed=0)
    s2.load_state_dict(state)
    assert torch.equal(s2.next(), nxt)
    with pytest.raises(SelfVAEError):
        EpochSampler(2, 3, 0)


def test_learning_rate_decays_to_the_floor():
    cfg = tiny_config(None)
    cfg.train.lr_decay = 0.9
    assert learning_rate(cfg, 0) == pytest.approx(2e-3)
    assert learning_rate(cfg, 1) == pytest.approx(1.8e-3)
    assert learning_rate(cfg, 10_000) == cfg.train.lr_min
    assert math.isclose(learning_rate(cfg, 5), 2e-3 * 0.9**5)


def test_cosine_schedule_runs_from_lr_to_lr_min_after_a_linear_warm_up():
    cfg = tiny_config(None)
    t = cfg.train
    t.lr_schedule, t.steps, t.lr, t.lr_min, t.lr_warmup_steps = "cosine", 1000, 2e-3, 1e-4, 10
    assert learning_rate(cfg, 0) == pytest.approx(2e-3 / 10)
    assert learning_rate(cfg, 4) == pytest.approx((1e-4 + 0.95e-3 * (1 + math.cos(math.pi * 4 / 1000))) * 5 / 10)
    assert learning_rate(cfg, 500) == pytest.approx((2e-3 + 1e-4) / 2)
    assert learning_rate(cfg, 1000) == pytest.approx(1e-4)
    assert learning_rate(cfg, 5000) == pytest.approx(1e-4)
    lrs = [learning_rate(cfg, s) for s in range(10, 1001)]
    assert all(a >= b for a, b in zip(lrs, lrs[1:], strict=False))
    t.lr_schedule = "linear"
    with pytest.raises(SelfVAEError, match="train.lr_schedule='linear': must be one of exp, cosine"):
        check_config(cfg)


def test_cosine_time_schedule_anneals_over_the_time_budget_not_the_steps():
    cfg = tiny_config(None)
    t = cfg.train
    t.lr_schedule, t.steps, t.lr, t.lr_min = "cosine-time", 1000, 2e-3, 1e-4
    with pytest.raises(SelfVAEError, match="max_minutes"):
        check_config(cfg)
    t.max_minutes = 60
    check_config(cfg)
    assert learning_rate(cfg, 3, 0.0) == pytest.approx(2e-3)
    assert learning_rate(cfg, 3, 0.5) == pytest.approx((2e-3 + 1e-4) / 2)  # half the clock, whatever the step
    assert learning_rate(cfg, 900, 0.5) == learning_rate(cfg, 3, 0.5)
    assert learning_rate(cfg, 3, 1.2) == pytest.approx(1e-4)


def test_time_budget_stops_cleanly_and_validates_the_last_weights(blob_npz, tmp_path):
    cfg = tiny_config(blob_npz, steps=1000)
    cfg.train.max_minutes = 0.0  # stops before the first step
    cfg.train.eval_every = 10_000
    out = tmp_path / "budget"
    m = train(cfg, out, progress=False)
    assert val_curve(out) and (out / "best.pt").is_file() and m["n_images"] == 32
    assert load_checkpoint(out / "last.pt")["step"] == 0


def test_cpu_clock_is_kept_exported_and_carried_by_a_run_started_from_the_export(blob_npz, tmp_path):
    """``train.clock="cpu"``: the CPU time of the steps is logged, checkpointed, written by export as the
    training the weights had, and a run started from them (``train.init``) records it and counts it in its own
    export (equal-CPU-budget runs continued across machines count their whole clock)."""
    from selfvae.runs.export import export

    cfg = tiny_config(blob_npz, steps=10)
    cfg.train.clock = "gpu"
    with pytest.raises(SelfVAEError, match="train.clock='gpu'"):
        check_config(cfg)
    cfg.train.clock = "cpu"
    train(cfg, tmp_path / "a", progress=False, final_eval=False)
    recs = [json.loads(line) for line in (tmp_path / "a" / "log.jsonl").read_text().splitlines()]
    cpu = [r["cpu_seconds"] for r in recs if r["split"] == "train"]
    assert len(cpu) == 2 and 0 < cpu[0] <= cpu[1]
    state = load_checkpoint(tmp_path / "a" / "last.pt")
    assert state["cpu_seconds"] == pytest.approx(cpu[1], abs=0.05)  # the log rounds to 0.1 s
    exported = export(tmp_path / "a", tmp_path / "e", which="last")
    training = json.loads((exported / "metrics.json").read_text())["training"]
    assert training == {"steps": 10, "seconds": state["train_seconds"], "cpu_seconds": state["cpu_seconds"]}
    cfg.train.init, cfg.train.steps = str(tmp_path / "e"), 1
    train(cfg, tmp_path / "b", progress=False, final_eval=False)
    init = json.loads((tmp_path / "b" / "init.json").read_text())
    assert (init["steps"], init["cpu_seconds"]) == (10, state["cpu_seconds"])
    (tmp_path / "e" / "log.jsonl").write_bytes((tmp_path / "a" / "log.jsonl").read_bytes())  # shipped with its log
    spec = importlib.util.spec_from_file_location("ttq", Path(__file__).parents[1] / "tools" / "time_to_quality.py")
    ttq = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(ttq)
    points, _, _ = ttq.curve(tmp_path / "b", "cpu")  # the source's curve, then this run's after its clock
    b_val = [json.loads(line) for line in (tmp_path / "b" / "log.jsonl").read_text().splitlines()]
    b_val = [r for r in b_val if r["split"] == "val"]
    assert [s for _, _, s in points] == [10] + [10 + r["step"] for r in b_val]
    assert points[-1][0] == pytest.approx((state["cpu_seconds"] + b_val[-1]["cpu_seconds"]) / 3600)
    b_state = load_checkpoint(tmp_path / "b" / "last.pt")  # a chain: b's export counts a's training and b's own
    again = json.loads((export(tmp_path / "b", tmp_path / "e2", which="last") / "metrics.json").read_text())
    assert again["training"]["steps"] == 11
    assert again["training"]["cpu_seconds"] == pytest.approx(state["cpu_seconds"] + b_state["cpu_seconds"])
    cfg.train.init, cfg.train.max_minutes = None, 0.0  # a CPU budget of nothing stops before the first step
    train(cfg, tmp_path / "c", progress=False, final_eval=False)
    assert load_checkpoint(tmp_path / "c" / "last.pt")["step"] == 0


def test_final_evaluation_is_the_full_elbo_plus_an_iw_subset(blob_npz, tmp_path):
    """ELBO over every test image, the IW bound over the first final_iw_limit; both recomputable by evaluate()."""
    from selfvae.data import batches_of, load_split
    from selfvae.evaluation.bounds import evaluate

    cfg = tiny_config(blob_npz, steps=4)
    cfg.train.final_eval_limit, cfg.train.final_iw_limit, cfg.train.final_iw_samples = None, 8, 4
    m = train(cfg, tmp_path / "r", progress=False)
    assert (m["split"], m["n_images"], m["iw_n_images"], m["iw_samples"]) == ("test", 64, 8, 4)
    _, model = load_run(tmp_path / "r")
    ds = load_split(cfg, "test")
    torch.manual_seed(cfg.train.seed)
    full = evaluate(model, batches_of(ds, 64), 1, progress=False)
    torch.manual_seed(cfg.train.seed)
    sub = evaluate(model, batches_of(ds, 64, 8), 4, progress=False)
    assert m["bpd_elbo"] == pytest.approx(full["bpd_elbo"], rel=1e-5)
    assert m["bpd_iw"] == pytest.approx(sub["bpd_iw"], rel=1e-5)
    assert m["bpd_elbo_iw_subset"] == pytest.approx(sub["bpd_elbo"], rel=1e-5)
    for key in ("nll_iw_nats", "bpd_joint_iw", "bpd_iw_padded"):  # every IW figure from the IW pass, none a copy
        assert (key in m) == (key in sub), key  # present in both or in neither
        if key in m:
            assert m[key] == pytest.approx(sub[key], rel=1e-5), key


def test_validation_scores_raw_and_ema_weights_and_the_better_one_is_loaded(blob_npz, tmp_path):
    """An EMA that lags behind the weights must not decide the run's bound: both are validated."""
    cfg = tiny_config(blob_npz, steps=10)
    cfg.train.ema_decay = 0.999  # over 10 steps the average is still close to the initial weights
    train(cfg, tmp_path / "run", progress=False, final_eval=False)
    val = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()
           if json.loads(line)["split"] == "val"]
    assert val and all(r["bpd"] == min(r["bpd_raw"], r["bpd_ema"]) for r in val)
    assert all(r["weights"] == ("ema" if r["bpd_ema"] < r["bpd_raw"] else "model") for r in val)
    state = load_checkpoint(tmp_path / "run" / "best.pt")
    assert state["eval_weights"] == val[-1]["weights"] or state["step"] < val[-1]["step"]
    _, model = load_run(tmp_path / "run")
    chosen = state["ema"] if state["eval_weights"] == "ema" else state["model"]
    other = state["model"] if state["eval_weights"] == "ema" else state["ema"]
    key = next(k for k in chosen if not torch.equal(chosen[k], other[k]))
    assert torch.equal(model.state_dict()[key], chosen[key])


def test_objective_warms_up_the_kl_and_floors_each_z_level_at_free_bits():
    from selfvae.config import TrainConfig
    from selfvae.models.selfvae import Terms
    from selfvae.training.step import objective

    re = torch.tensor([[10.0, 20.0], [12.0, 22.0]])
    kl_u = torch.tensor([3.0, 5.0])
    kl_z = torch.tensor([[0.2], [0.4]], requires_grad=True)
    terms = Terms(re=re, kl_u=kl_u, kl_z_channels=[kl_z])  # one level of one channel
    assert torch.equal(objective(terms, TrainConfig(), 7), terms.nelbo)
    half = objective(terms, TrainConfig(kl_warmup_steps=10), 5)
    assert torch.allclose(half, re.sum(1) + 0.5 * (kl_u + kl_z.sum(1)))
    floored = objective(terms, TrainConfig(free_bits=1.0), 0)
    assert floored.mean().item() == pytest.approx(re.sum(1).mean() + kl_u.mean() + 1.0)
    floored.mean().backward()
    assert torch.equal(kl_z.grad, torch.zeros_like(kl_z))  # below the floor: no push towards zero
    kl_z.grad = None
    above = objective(terms, TrainConfig(free_bits=0.1), 0)
    assert torch.allclose(above, terms.nelbo)
    above.mean().backward()
    assert torch.allclose(kl_z.grad, torch.full_like(kl_z, 0.5))


def test_free_bits_per_channel_floor_each_channel_of_each_z_level():
    from selfvae.config import TrainConfig
    from selfvae.models.selfvae import Terms
    from selfvae.training.step import objective

    # one z level of three channels: KL 0.1, 2.0 and 0.0 nats on average over the batch of two
    channels = torch.tensor([[0.1, 1.5, 0.0], [0.1, 2.5, 0.0]], requires_grad=True)
    terms = Terms(re=torch.tensor([[10.0, 20.0], [12.0, 22.0]]), kl_u=torch.tensor([3.0, 5.0]),
                  kl_z_channels=[channels])
    t = TrainConfig(free_bits=0.5, free_bits_per="channel")
    shaped = objective(terms, t, 0)
    assert shaped.mean().item() == pytest.approx(terms.re.sum(1).mean() + terms.kl_u.mean() + 0.5 + 2.0 + 0.5)
    shaped.mean().backward()
    assert torch.equal(channels.grad[:, [0, 2]], torch.zeros(2, 2))  # below the floor: no push towards zero
    assert torch.allclose(channels.grad[:, 1], torch.full((2,), 0.5))
    # the level's floor would see 2.1 nats and not act: a collapsed channel beside a used one goes unnoticed
    assert torch.allclose(objective(terms, TrainConfig(free_bits=0.5), 0), terms.nelbo)


def test_kl_z_channels_sum_to_kl_z_for_the_analytic_and_the_sampled_kl(blob_npz):
    from selfvae.models.build import build_model

    cfg = tiny_config(blob_npz, "downscale", steps=1)
    torch.manual_seed(0)
    model = build_model(cfg)
    x = torch.randint(0, 256, (3, *model.shapes[-1]), dtype=torch.uint8)
    for analytic in (True, False):
        t = model.terms(x, analytic_kl=analytic)
        assert [c.shape for c in t.kl_z_channels] == [(3, model.cfg.latent_shape[0])] * model.K
        assert torch.allclose(torch.stack([c.sum(1) for c in t.kl_z_channels], 1), t.kl_z)


def test_shaped_objective_changes_the_update_but_reports_the_plain_bound(blob_npz):
    import copy

    from selfvae.models.build import build_model
    from selfvae.nn.layers import data_dependent_init
    from selfvae.training.batches import gather, open_datasets
    from selfvae.training.step import train_step

    cfg = tiny_config(blob_npz, "downscale", steps=4)
    cfg.train.grad_clip = None  # clipping rescales every gradient together; here only the KL's may differ
    torch.manual_seed(0)
    ds, _ = open_datasets(cfg)
    x = gather(ds, torch.arange(32))
    model = build_model(cfg)
    data_dependent_init(model, lambda: model.terms(x))
    results = []
    for free_bits in (0.0, 50.0):
        cfg.train.free_bits = free_bits
        m = copy.deepcopy(model)
        res = train_step(m, torch.optim.Adamax(m.parameters(), lr=1e-3), x, cfg, None, step=0)
        results.append((res, m))
    (plain, m0), (shaped, m1) = results
    assert plain.loss == shaped.loss  # the same forward pass: the logged figure is the bound
    assert shaped.terms["kl_z1"] < 50.0  # so the floor was active
    changed = [n for (n, a), b in zip(m0.named_parameters(), m1.parameters(), strict=True) if not torch.equal(a, b)]
    # the KL of z_1 reaches q(z|x), p(z|y,u) and, through u, q(u|y); p(u), p(y|u) and p(x|y,z) not at all
    assert changed and all(n.startswith(("q_z", "p_z", "q_u")) for n in changed)
    assert any(n.startswith("p_z") for n in changed)


def test_ema_decay_warms_up_so_the_initial_weights_fade_fast():
    from selfvae.training.step import ema_decay

    assert ema_decay(0.999, 0) == pytest.approx(0.1) and ema_decay(0.999, 10**6) == 0.999
    weight_of_init = math.prod(ema_decay(0.999, s) for s in range(2500))
    assert weight_of_init < 1e-9 < 0.999**2500  # with warm-up the random start is gone; without, 8% remains


def test_init_starts_from_another_runs_weights_with_a_fresh_optimiser(blob_npz, tmp_path, capsys):
    """``train.init``: the new run starts from the source's evaluation weights (stopped before its first step
    it holds them exactly), records where they came from, and refuses a source of another architecture. From the command
    line, ``--init`` takes the source's config as the base."""
    from selfvae.cli import main

    src = tmp_path / "src"
    train(tiny_config(blob_npz, "downscale", steps=10), src, progress=False, final_eval=False)
    _, source_model = load_run(src)
    cfg = tiny_config(blob_npz, "downscale", steps=2)
    cfg.train.init, cfg.train.max_minutes = str(src), 0.0
    train(cfg, tmp_path / "tuned", progress=False, final_eval=False)
    tuned = load_checkpoint(tmp_path / "tuned" / "last.pt")["model"]
    for k, v in source_model.state_dict().items():
        assert torch.equal(v, tuned[k]), k
    assert json.loads((tmp_path / "tuned" / "init.json").read_text())["steps"] == 10
    other = tiny_config(blob_npz, "downscale", steps=2)
    other.model.latent_shape = (2, 4, 4)
    other.train.init = str(src)
    with pytest.raises(SelfVAEError, match=r"model\.latent_shape"):
        train(other, tmp_path / "other", progress=False, final_eval=False)
    main(["train", "--init", str(src), "--out", str(tmp_path / "cli"), "--steps", "3", "--no-progress",
          "--set", "train.final_iw_samples=1"])
    saved = json.loads((tmp_path / "cli" / "config.json").read_text())
    assert saved["model"]["transforms"] == "downscale" and saved["train"]["init"] == str(src)
    capsys.readouterr()
    with pytest.raises(SystemExit):
        main(["train", "--init", str(src), "--out", str(tmp_path / "cli"), "--resume"])
    assert "--init starts a new run" in capsys.readouterr().err


def test_the_bar_of_a_budget_run_counts_the_budget_not_a_ceiling_of_steps(tmp_path, capsys):
    """A run under ``train.max_minutes`` has ``train.steps`` as a mere ceiling (often a million): its bar counts
    the budget's minutes on its clock, with the step beside, so the rate and ETA mean something."""
    from selfvae.training.journal import Journal

    journal = Journal(tmp_path, "run", 1_000_000, 0, False, True, True, budget=30.0, clock="cpu")
    journal.advance(4.5, 0, 120, spent=0.25)
    assert journal.bar.total == 30.0 and journal.bar.n == pytest.approx(7.5)
    journal.advance(4.4, 0, 121, spent=1.7)  # past the budget: the bar stops at its end
    assert journal.bar.n == pytest.approx(30.0)
    journal.close()
    err = capsys.readouterr().err
    assert "min of the cpu budget" in err and "step=121" in err and "/1000000" not in err
    steps = Journal(tmp_path, "run", 500, 0, True, True, True)  # no budget: steps, as before
    steps.advance(4.5, 0, 1)
    assert (steps.bar.total, steps.bar.n) == (500, 1)
    steps.close()


def test_a_time_budget_counts_the_whole_run_across_its_sessions(blob_npz, tmp_path, capsys):
    """``train.max_minutes`` counts the run's steps over all its sessions, as ``train.steps`` does: a resumed
    run spends only what is left (a killed cosine-time run goes on along its curve), a larger budget extends it."""
    cfg = tiny_config(blob_npz, steps=3)
    cfg.train.clock, cfg.train.eval_every = "cpu", 10_000
    run = tmp_path / "r"
    train(cfg, run, progress=False, final_eval=False)
    state = load_checkpoint(run / "last.pt")
    spent = state["cpu_seconds"]
    assert spent > 0 and minutes_spent(run, "cpu") == spent / 60 and minutes_spent(run) == state["train_seconds"] / 60
    cfg.train.steps, cfg.train.max_minutes = 6, spent / 60 / 2  # already spent twice over
    train(cfg, run, resume=True, progress=False, final_eval=False)
    assert load_checkpoint(run / "last.pt")["step"] == 3
    said = capsys.readouterr().out
    assert "earlier sessions of this run spent it: a larger train.max_minutes goes on" in said
    assert f"resumed at step 3 of 6; {spent / 60:.1f} of the {spent / 120:g} minutes of its cpu budget spent" in said
    cfg.train.max_minutes = spent / 60 * 1000
    train(cfg, run, resume=True, progress=False, final_eval=False)
    assert load_checkpoint(run / "last.pt")["step"] == 6


def test_a_checkpoint_from_before_the_clock_was_kept_takes_it_from_the_log(blob_npz, tmp_path):
    """Checkpoints written before ``train_seconds`` was kept: the clock a budget counts is the log's up to the
    checkpoint's step (summed from its step times where it has none), for a resume and for ``minutes_spent``."""
    cfg = tiny_config(blob_npz, steps=4)
    cfg.train.log_every, cfg.train.eval_every = 1, 10_000
    run = tmp_path / "r"
    train(cfg, run, progress=False, final_eval=False)
    state = load_checkpoint(run / "last.pt")
    state["train_seconds"] = None
    save_checkpoint(state, run / "last.pt", keep_previous=False)
    logged = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    clock = [r["train_seconds"] for r in logged if r["split"] == "train" and r["step"] == 4][0]
    assert minutes_spent(run) == clock / 60
    cfg.train.steps = 5
    train(cfg, run, resume=True, progress=False, final_eval=False)
    assert load_checkpoint(run / "last.pt")["train_seconds"] > clock


def test_validation_logs_active_units_and_warns_once_of_a_collapsed_latent(blob_npz, tmp_path, capsys, monkeypatch):
    """Each validation record holds the active units of every latent and the informative units of z; the first
    validation that finds a latent collapsed says so once (here z1's posterior mean is made its prior's mean for every
    image: it follows its prior, carrying nothing, whatever Burda's test counts)."""
    from selfvae.models.selfvae import SelfVAE

    real = SelfVAE.prior_offsets

    def z1_follows_its_prior(self, x, means=None):  # noqa: ANN001, ANN202
        return {k: torch.zeros_like(v) for k, v in real(self, x, means).items()}

    monkeypatch.setattr(SelfVAE, "prior_offsets", z1_follows_its_prior)
    cfg = tiny_config(blob_npz, "downscale", steps=30)
    train(cfg, tmp_path / "run", progress=False)
    vals = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    vals = [r for r in vals if r["split"] == "val"]
    assert len(vals) == 3 and all(r["iu_z1"] == 0 and r["units_z1"] == r["units_u"] == 64 for r in vals)
    assert all("au_z1" in r and "iu_u" not in r for r in vals)  # u's prior is the same for every image
    err = capsys.readouterr()
    said = err.out + err.err
    assert said.count("latent z1 has collapsed: none of its 64 units is informative") == 1
    assert said.count("latent u has collapsed") == (min(r["au_u"] for r in vals) == 0)


def test_a_latent_is_collapsed_by_its_informative_units_where_it_has_them():
    """z with units active by Burda's test but none informative has collapsed; u (no informative count: a fixed
    prior) has when none is active; a latent is named once."""
    from types import SimpleNamespace

    from selfvae.training.loop import Session

    said: list[str] = []
    fake = SimpleNamespace(warned=set(), state=SimpleNamespace(step=7), journal=SimpleNamespace(say=said.append))
    m = {"au_u": 0, "units_u": 64, "au_z1": 60, "iu_z1": 0, "units_z1": 64, "au_z2": 0, "iu_z2": 3, "units_z2": 64,
         "au_z3": 0, "iu_z3": 0, "units_z3": 64, "kl_z1": 0.5}
    Session.warn_collapsed(fake, m)
    Session.warn_collapsed(fake, m)
    assert len(said) == 3 and "latent u has collapsed: none of its 64 units is active" in said[0]
    assert "Burda" not in said[2] and "latent z3 has collapsed: none of its 64 units is informative" in said[2]
    assert "latent z1 has collapsed: none of its 64 units is informative" in said[1]
    assert "60 are active by Burda's test" in said[1] and "KL 0.50 nats" in said[1]


def test_the_curves_show_each_latents_kl_and_its_active_units(tmp_path):
    from selfvae.viz import active_units, kl_series, plot_curves

    recs = [{"step": 10, "split": "train", "bpd": 5.0, "lr": 1e-3, "kl_u": 30.0, "kl_z1": 2.0},
            {"step": 20, "split": "train", "bpd": 4.0, "lr": 1e-3, "kl_u": 40.0, "kl_z1": 0.01},
            {"step": 20, "split": "val", "bpd": 4.1, "kl_u": 41.0, "kl_z1": 0.0, "au_u": 50, "units_u": 64,
             "au_z1": 40, "iu_z1": 0, "units_z1": 64}]
    assert kl_series(recs[:2]) == {"u": ([10, 20], [30.0, 40.0]), "z1": ([10, 20], [2.0, 0.01])}
    assert active_units(recs[2:]) == {"u": "50/64 active", "z1": "40/64 active, 0 informative"}
    from PIL import Image

    wide = Image.open(plot_curves(recs, tmp_path / "with.png")).size[0]
    bare = [{k: v for k, v in r.items() if not k.startswith(("kl_", "au_"))} for r in recs]
    assert wide > 1.4 * Image.open(plot_curves(bare, tmp_path / "without.png")).size[0]  # a third panel: the KLs


def test_the_run_log_is_written_read_and_cut_back_in_one_place(tmp_path):
    """runs/log.py: records appended survive a reader at once (flushed), older records are brought to today's
    form (bits/dim per data dimension, a wall clock summed from step times), and a resume cuts the log back to the
    checkpoint's step, dropping a line a kill cut in half."""
    from selfvae.runs import layout
    from selfvae.runs.log import LogWriter, logged_seconds, read_log, truncate_log

    w = LogWriter(tmp_path)
    w.write({"step": 10, "split": "train", "bpd": 2.0, "dims": 784, "train_seconds": 5.0})
    assert read_log(tmp_path / layout.LOG) == [{"step": 10, "split": "train", "bpd": 2.0, "dims": 784,
                                                "train_seconds": 5.0}]
    w.write({"step": 20, "split": "train", "bpd": 1.5, "dims": 784, "train_seconds": 9.0})
    w.close()
    with open(tmp_path / layout.LOG, "a") as f:
        f.write('{"step": 30, "split": "train", "bpd": 1.0}\n{"step": 40, "spl')  # past the checkpoint, then cut
    truncate_log(tmp_path / layout.LOG, 20)
    assert [r["step"] for r in read_log(tmp_path / layout.LOG)] == [10, 20]
    assert logged_seconds(tmp_path / layout.LOG, 20) == 9.0 and logged_seconds(tmp_path / layout.LOG, 15) == 5.0
    legacy = tmp_path / "legacy.jsonl"
    legacy.write_text('{"step": 4, "split": "train", "bpd": 0.784, "sec_per_step": 0.5}\n'
                      '{"step": 8, "split": "val", "bpd": 0.784}\n')
    recs = read_log(legacy, frame_ratio=1024 / 784)
    assert [round(r["bpd"], 6) for r in recs] == [1.024, 1.024]  # per data dimension, as today's records
    assert logged_seconds(legacy, 8) == 2.0  # 4 steps of 0.5 s, summed where the log kept no clock


def test_a_second_training_into_a_folder_being_trained_is_refused_and_the_folder_is_free_after(blob_npz, tmp_path):
    """While one process holds a run directory (``held``, as ``train`` does), another ``train`` into it stops at
    once naming the holder, and writes nothing there; once the holder has ended the run starts."""
    from selfvae.training.loop import held

    out = tmp_path / "run"
    cfg = tiny_config(blob_npz, steps=2)
    with held(out):
        with pytest.raises(SelfVAEError, match=r"another process \(pid \d+\) is training into it"):
            train(cfg, out, progress=False, final_eval=False)
        assert not out.exists()
    train(cfg, out, progress=False, final_eval=False)
    assert (out / "last.pt").is_file()
