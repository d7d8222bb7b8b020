"""Training survives SIGKILL and SIGTERM (bit-exact resume in a fresh process), non-finite or huge gradients,
and every kind of bad input reaches the command line as one line with exit status 2."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from conftest import tiny_config
from PIL import Image

from selfvae.cli import main
from selfvae.config import Config
from selfvae.errors import SelfVAEError
from selfvae.runs.checkpoint import load_checkpoint, save_checkpoint
from selfvae.training.loop import train
from selfvae.training.step import train_step

STEPS = 12
CLI = [sys.executable, "-c", "import sys; from selfvae.cli import main; main(sys.argv[1:])"]


def exact_config(blob_npz, steps: int = STEPS) -> Config:
    """A tiny srVAE checkpointing and logging every step, deterministic, one thread, with EMA."""
    cfg = tiny_config(blob_npz, "downscale", steps=steps)
    t = cfg.train
    t.checkpoint_every, t.log_every, t.eval_every = 1, 1, 1000
    t.final_iw_samples, t.final_eval_limit = 2, 32
    t.num_threads, t.deterministic, t.ema_decay = 1, True, 0.9
    return cfg


@pytest.fixture(scope="module")
def straight_run(blob_npz, tmp_path_factory):
    out = tmp_path_factory.mktemp("straight") / "run"
    train(exact_config(blob_npz), out, progress=False, final_eval=False)
    return load_checkpoint(out / "last.pt")


def _launch(args: list[str]) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen([*CLI, *args], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def _wait_for_checkpoint(proc: subprocess.Popen, out, timeout: float = 60.0) -> None:
    """Poll until the run has written a checkpoint and a log line (then it is mid-run)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        log = out / "log.jsonl"
        if (out / "last.pt").is_file() and log.is_file() and log.stat().st_size > 0:
            return
        if proc.poll() is not None:
            raise AssertionError(f"run ended before its first checkpoint: {proc.communicate()}")
        time.sleep(0.005)
    proc.kill()
    raise AssertionError("no checkpoint within the timeout")


def _assert_same_weights(a: dict, b: dict) -> None:
    assert a["step"] == b["step"] == STEPS
    for key in ("model", "ema"):
        for k, v in a[key].items():
            assert torch.equal(v, b[key][k]), (key, k)
    assert a["sampler"] == b["sampler"]


def _resume(out) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([*CLI, "train", "--out", str(out), "--resume",
                           "--no-progress"], env=env, capture_output=True, text=True, timeout=120)


@pytest.mark.slow
def test_sigkill_mid_run_then_resume_is_bit_identical(blob_npz, tmp_path, straight_run):
    cfg_file = tmp_path / "tiny.json"
    exact_config(blob_npz).save(cfg_file)
    out = tmp_path / "run"
    proc = _launch(["train", "--config", str(cfg_file), "--out", str(out), "--no-progress"])
    _wait_for_checkpoint(proc, out)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    killed_at = load_checkpoint(out / "last.pt")["step"]
    assert 1 <= killed_at < STEPS, killed_at
    res = _resume(out)
    assert res.returncode == 0, res.stderr
    assert "test bits/dim" in res.stdout
    _assert_same_weights(straight_run, load_checkpoint(out / "last.pt"))
    steps = [json.loads(line)["step"] for line in (out / "log.jsonl").read_text().splitlines()
             if json.loads(line)["split"] == "train"]
    assert steps == list(range(1, STEPS + 1))  # records logged after the last checkpoint were dropped


@pytest.mark.slow
def test_sigterm_checkpoints_and_exits_clearly_then_resumes_identically(blob_npz, tmp_path, straight_run):
    cfg_file = tmp_path / "tiny.json"
    exact_config(blob_npz).save(cfg_file)
    out = tmp_path / "run"
    proc = _launch(["train", "--config", str(cfg_file), "--out", str(out), "--no-progress"])
    _wait_for_checkpoint(proc, out)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert f"stopped by signal {int(signal.SIGTERM)}" in err and "resume with --resume" in err
    stopped_at = load_checkpoint(out / "last.pt")["step"]
    assert 1 <= stopped_at < STEPS
    assert "Traceback" not in err
    res = _resume(out)
    assert res.returncode == 0, res.stderr
    _assert_same_weights(straight_run, load_checkpoint(out / "last.pt"))


def test_checkpoint_is_never_missing_between_saves(tmp_path):
    """The old file stays in place until the new one replaces it; .prev holds the one before."""
    path = tmp_path / "last.pt"
    base = {"config": {}, "model": {}, "optimizer": {}, "sampler": {}, "rng": {}}
    save_checkpoint({**base, "step": 1}, path)
    save_checkpoint({**base, "step": 2}, path)
    save_checkpoint({**base, "step": 3}, path)
    assert load_checkpoint(path)["step"] == 3
    assert load_checkpoint(tmp_path / "last.pt.prev")["step"] == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.pt", "last.pt.prev"]


class _RunsCode:
    """Unpickling this calls ``Path.touch``: what a tampered checkpoint would do."""

    def __init__(self, target) -> None:
        self.target = target

    def __reduce__(self):  # noqa: ANN204 - pickle's protocol
        return (type(self.target).touch, (self.target,))


def test_tampered_checkpoint_is_refused_and_runs_nothing(tmp_path):
    """Checkpoints load weights-only: a file with a code-running object is refused, the code never runs."""
    marker = tmp_path / "ran"
    base = {"format": "selfvae-checkpoint", "version": 1, "config": {}, "model": {}, "optimizer": {},
            "sampler": {}, "rng": {}, "step": 1, "extra": _RunsCode(marker)}
    torch.save(base, tmp_path / "last.pt")
    with pytest.raises(SelfVAEError, match="refused: the file holds objects other than tensors"):
        load_checkpoint(tmp_path / "last.pt")
    assert not marker.exists()
    tiny_config(None).save(tmp_path / "config.json")  # a run directory: the CLI refuses it in one line
    with pytest.raises(SystemExit) as e:
        main(["eval", str(tmp_path), "--limit", "1"])
    assert e.value.code == 2 and not marker.exists()


def test_rng_state_round_trips_through_a_weights_only_checkpoint(tmp_path):
    import random

    from selfvae.runs.checkpoint import rng_state, set_rng_state

    torch.manual_seed(3)
    np.random.seed(4)
    random.seed(5)
    base = {"config": {}, "model": {}, "optimizer": {}, "sampler": {}, "step": 0}
    save_checkpoint({**base, "rng": rng_state()}, tmp_path / "c.pt")
    want = (torch.rand(3), np.random.rand(3), random.random())
    set_rng_state(load_checkpoint(tmp_path / "c.pt")["rng"])
    got = (torch.rand(3), np.random.rand(3), random.random())
    assert torch.equal(want[0], got[0]) and np.array_equal(want[1], got[1]) and want[2] == got[2]


# ----- non-finite and huge gradients -------------------------------------------------------------------
def _model_and_opt(blob_npz, **train_kw):
    from selfvae.models.build import build_model
    from selfvae.nn.layers import data_dependent_init
    from selfvae.training.batches import gather, open_datasets

    cfg = tiny_config(blob_npz, steps=5)
    for k, v in train_kw.items():
        setattr(cfg.train, k, v)
    torch.manual_seed(0)
    ds, _ = open_datasets(cfg)
    model = build_model(cfg, "cpu")
    x = gather(ds, torch.arange(32))
    data_dependent_init(model, lambda: model.terms(x))
    return cfg, model, torch.optim.Adamax(model.parameters(), lr=1e-3), x


def test_huge_gradient_norm_is_skipped_and_weights_untouched(blob_npz):
    cfg, model, opt, x = _model_and_opt(blob_npz, grad_skip=1e-6, grad_clip=None)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    res = train_step(model, opt, x, cfg, None)
    assert res.skipped and res.grad_norm > 1e-6 and np.isfinite(res.loss)
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k
    assert not opt.state  # the optimiser never stepped


def test_gradient_clipping_is_optional(blob_npz):
    cfg, model, opt, x = _model_and_opt(blob_npz, grad_clip=None)
    res = train_step(model, opt, x, cfg, None)
    assert not res.skipped
    norm = torch.sqrt(sum(p.grad.pow(2).sum() for p in model.parameters() if p.grad is not None))
    assert float(norm) == pytest.approx(res.grad_norm, rel=1e-4)  # unclipped
    cfg.train.grad_clip = 1e-3
    res = train_step(model, opt, x, cfg, None)
    norm = torch.sqrt(sum(p.grad.pow(2).sum() for p in model.parameters() if p.grad is not None))
    assert res.grad_norm > 1e-3 and float(norm) == pytest.approx(1e-3, rel=1e-3)  # clipped to grad_clip


def test_infinite_gradient_is_skipped_logged_and_stops_clearly(blob_npz, tmp_path, monkeypatch, capsys):
    """A huge-loss step (inf gradient) never reaches the weights; skips are logged; a run of them stops
    the CLI with one clear line."""
    from selfvae.models import selfvae as sv

    real = sv.SelfVAE.terms
    calls = {"n": 0}

    def blowup(self, x, n_samples=1, analytic_kl=True):
        t = real(self, x, n_samples, analytic_kl)
        if self.training and torch.is_grad_enabled():  # training steps, not the data-dependent init
            calls["n"] += 1
            if calls["n"] >= 3:
                t.kl_u = t.kl_u * 1e38 * 1e38  # inf loss and gradient
        return t

    monkeypatch.setattr(sv.SelfVAE, "terms", blowup)
    cfg = tiny_config(blob_npz, steps=30)
    cfg.train.max_consecutive_skips = 4
    cfg_file = tmp_path / "c.json"
    cfg.save(cfg_file)
    out = tmp_path / "run"
    with pytest.raises(SystemExit) as e:
        main(["train", "--config", str(cfg_file), "--out", str(out), "--no-progress"])
    assert e.value.code == 130
    err = capsys.readouterr().err
    assert "4 consecutive steps skipped" in err and "last good state" in err
    state = load_checkpoint(out / "last.pt")
    assert all(torch.isfinite(v).all() for v in state["model"].values() if v.is_floating_point())
    recs = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    skipped = [r for r in recs if r.get("skipped")]
    assert [r["step"] for r in skipped] == [3, 4, 5, 6] and skipped[-1]["skipped_total"] == 4


# ----- bad input reaches the CLI as one line ----------------------------------------------------------
def _cli_error(argv: list[str], capsys) -> str:
    with pytest.raises(SystemExit) as e:
        main(argv)
    err = capsys.readouterr().err.strip()
    assert e.value.code == 2, err
    assert len(err.splitlines()) == 1 and err.startswith("selfvae: error: "), err
    return err


def _tiny_file(tmp_path, cfg: Config, name: str = "cfg.json"):
    path = tmp_path / name
    cfg.save(path)
    return str(path)


def test_wrong_image_size_for_a_preset(blob_npz, tmp_path, capsys):
    err = _cli_error(["train", "--preset", "mnist-vae", "--set", "data.name=npz", "--data-dir", str(blob_npz),
                      "--out", str(tmp_path / "r"), "--no-progress"], capsys)
    assert "(1, 16, 16)" in err and "(1, 32, 32)" in err


def test_wrong_channels_for_a_config(tmp_path, capsys):
    """RGB data follow a grey model unless data.channels insists on RGB, which then fails clearly."""
    path = tmp_path / "rgb.npz"
    np.savez(path, x_train=np.zeros((40, 16, 16, 3), np.uint8), x_test=np.zeros((8, 16, 16, 3), np.uint8))
    cfg = tiny_config(path)
    cfg.data.channels = 3
    err = _cli_error(["train", "--config", _tiny_file(tmp_path, cfg), "--out",
                      str(tmp_path / "r"), "--no-progress"], capsys)
    assert "(3, 16, 16)" in err and "(1, 16, 16)" in err


def test_size_not_divisible_by_the_transform_chain(tmp_path, capsys):
    path = tmp_path / "odd.npz"
    np.savez(path, x_train=np.zeros((40, 18, 18, 1), np.uint8), x_test=np.zeros((8, 18, 18, 1), np.uint8))
    cfg = tiny_config(path, "downscale,downscale")
    cfg.model.image_shape = (1, 18, 18)
    err = _cli_error(["train", "--config", _tiny_file(tmp_path, cfg), "--out", str(tmp_path / "r"),
                      "--no-progress"], capsys)
    assert "not divisible" in err or "power of two" in err


def _image_folder(root, n: int, bad: int = 0, n_test: int = 8):
    """``root/train`` with ``n`` good and ``bad`` corrupt PNGs, ``root/test`` with ``n_test`` good ones."""
    rng = np.random.default_rng(0)
    for part, count in (("train", n), ("test", n_test)):
        (root / part).mkdir(parents=True, exist_ok=True)
        for i in range(count):
            Image.fromarray(rng.integers(0, 256, (16, 16), dtype=np.uint8)).save(root / part / f"img{i:03d}.png")
    for i in range(bad):
        (root / "train" / f"broken{i}.png").write_bytes(b"\x89PNG\r\n\x1a\n this is not a png")
    return root


def _folder_config(root) -> Config:
    cfg = tiny_config(None, steps=2)
    cfg.data.name, cfg.data.root = "folder", str(root)
    cfg.train.batch_size, cfg.train.init_batch = 8, 8
    cfg.train.final_eval_limit, cfg.train.final_iw_samples = 8, 2
    return cfg


def test_corrupt_files_in_a_folder_fail_or_are_skipped(tmp_path, capsys):
    root = _image_folder(tmp_path / "imgs", 40, bad=2)
    cfg_file = _tiny_file(tmp_path, _folder_config(root))
    err = _cli_error(["train", "--config", cfg_file, "--out", str(tmp_path / "a"), "--no-progress"], capsys)
    assert "broken" in err
    with pytest.warns(UserWarning, match="broken"):
        main(["train", "--config", cfg_file, "--out", str(tmp_path / "b"), "--no-progress", "--on-bad-file", "skip"])
    assert (tmp_path / "b" / "final" / "metrics.json").is_file()
    assert Config.load(tmp_path / "b" / "config.json").data.on_bad_file == "skip"


def test_empty_data_sets(tmp_path, capsys):
    root = _image_folder(tmp_path / "empty", 0, n_test=0)
    _cli_error(["train", "--config", _tiny_file(tmp_path, _folder_config(root)), "--out", str(tmp_path / "a"),
                "--no-progress"], capsys)
    only_bad = _image_folder(tmp_path / "bad", 0, bad=3)
    with pytest.warns(UserWarning):
        _cli_error(["train", "--config", _tiny_file(tmp_path, _folder_config(only_bad), "b.json"), "--out",
                    str(tmp_path / "b"), "--no-progress", "--on-bad-file", "skip"], capsys)
    path = tmp_path / "zero.npz"
    np.savez(path, x_train=np.zeros((0, 16, 16, 1), np.uint8), x_test=np.zeros((0, 16, 16, 1), np.uint8))
    _cli_error(["train", "--config", _tiny_file(tmp_path, tiny_config(path), "z.json"), "--out",
                str(tmp_path / "z"), "--no-progress"], capsys)


def test_run_directory_from_an_incompatible_version(blob_npz, tmp_path, capsys):
    out = tmp_path / "old"
    out.mkdir()
    d = tiny_config(blob_npz).to_dict()
    d["version"] = 99
    (out / "config.json").write_text(json.dumps(d))
    err = _cli_error(["train", "--out", str(out), "--resume", "--no-progress"], capsys)
    assert "version 99" in err and str(out) in err
    err = _cli_error(["eval", str(out)], capsys)
    assert "version 99" in err
    (out / "config.json").write_text("{not json")
    _cli_error(["train", "--out", str(out), "--resume"], capsys)
    _cli_error(["train", "--config", str(tmp_path / "missing.json"), "--out", str(tmp_path / "x")], capsys)


def test_batch_not_divisible_by_accumulation(blob_npz, tmp_path):
    cfg = tiny_config(blob_npz, steps=2)
    cfg.train.accum_steps = 3
    with pytest.raises(SelfVAEError, match="not divisible"):
        train(cfg, tmp_path / "r", progress=False)


def test_configs_saved_before_the_transition_option_still_load():
    """Run directories written before ``NetSpec.transition`` existed build the same network as before."""
    from selfvae.models.selfvae import SelfVAE
    from selfvae.presets import get_preset

    cfg = get_preset("mnist-2lvl")
    old = cfg.to_dict()
    for role in ("q_u", "p_y", "q_z", "p_z", "p_x"):
        del old["model"][role]["transition"]
    loaded = Config.from_dict(old)
    assert loaded == cfg
    shapes = {k: v.shape for k, v in SelfVAE(cfg.model).state_dict().items()}
    assert {k: v.shape for k, v in SelfVAE(loaded.model).state_dict().items()} == shapes


@pytest.mark.parametrize("argv, message", [
    (["sample", "mnist-vae", "-n", "-5"], "argument -n: -5: must be at least 1"),
    (["sample", "mnist-vae", "-n", "0"], "argument -n: 0: must be at least 1"),
    (["sample", "mnist-vae", "-n", "100000"], "argument -n: 100000: at most 4096"),
    (["sample", "mnist-vae", "--temperature", "-1"], "argument --temperature: -1.0: must be above 0"),
    (["sample", "mnist-vae", "--temperature", "nan"], "argument --temperature: nan: must be above 0"),
    (["sample", "mnist-vae", "-o", "OUT/noext"], "give the picture a file extension"),
    (["sample", "mnist-vae", "-o", "OUT/folder.png"], "is a folder"),
    (["eval", "mnist-vae", "--limit", "0"], "argument --limit: 0: must be at least 1"),
    (["eval", "mnist-vae", "--limit", "-1"], "argument --limit: -1: must be at least 1"),
    (["compress", "mnist-vae", "x.png", "-o", "OUT/f.svae", "--threads", "0"],
     "argument --threads: 0: must be at least 1"),
    (["compress", "mnist-vae", "x.png", "-o", "OUT/f.svae", "--limit", "0"], "argument --limit: 0: must be at least 1"),
    (["compress", "mnist-vae", "x.png", "-o", "OUT/f.svae", "--group", "0"], "argument --group: 0: must be at least 1"),
    (["interpolate", "mnist-vae", "a.png", "b.png", "--steps", "0"], "argument --steps: 0: must be at least 1"),
    (["train", "--steps", "0"], "argument --steps: 0: must be at least 1"),
    (["train", "--batch-size", "-4"], "argument --batch-size: -4: must be at least 1"),
    (["train", "--set", "train.lr=-1", "--out", "OUT/r"], "train.lr=-1.0: must be above 0"),
    (["train", "--set", "train.lr=nan", "--out", "OUT/r"], "train.lr=nan: must be above 0"),
    (["train", "--set", "train.grad_clip=-5", "--out", "OUT/r"], "train.grad_clip=-5.0: must be above 0"),
    (["train", "--set", "model.latent_shape=8", "--out", "OUT/r"], "model.latent_shape=(8,): must be three"),
    (["train", "--image-size", "100000", "--out", "OUT/r"], "data.image_size=100000: must be a side from 1"),
    (["train", "--set", "model.nets=papper", "--out", "OUT/r"], "model.nets='papper': must be one of selfvae, paper"),
    (["train", "--set", "data.resize=stretch", "--out", "OUT/r"], "data.resize='stretch': must be one of crop, pad"),
    (["train", "--set", "data.on_bad_file=ignore", "--out", "OUT/r"],
     "data.on_bad_file='ignore': must be one of error, skip"),
    (["train", "--data-dir", "OUT/folder.png", "--out", "OUT/r"], "holds no image files"),
    (["compress", "mnist-vae", "x.png", "-o", "OUT/missing/f.svae"], "no such folder"),
    (["compress", "mnist-vae", "x.png", "-o", "OUT/folder.png"], "is a folder"),
])
def test_out_of_range_numbers_and_outputs_are_refused_before_any_work(argv, message, tmp_path, capsys):
    """Issue 37: these gave tracebacks (or a blank picture, or trained with a negative batch) after loading."""
    (tmp_path / "folder.png").mkdir()
    argv = [a.replace("OUT", str(tmp_path)) for a in argv]
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 2 and message in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["folder.png"]  # nothing written


def test_a_folder_smaller_than_a_batch_names_batch_size_and_leaves_no_run_behind(tmp_path, capsys):
    """Issue 37: README's own-images command on a 34-image folder failed without naming --batch-size."""
    photos = tmp_path / "photos"
    photos.mkdir()
    rng = np.random.default_rng(0)
    for i in range(34):
        Image.fromarray(rng.integers(0, 256, (28, 28), dtype=np.uint8)).save(photos / f"{i}.png")
    with pytest.raises(SystemExit) as e:
        main(["train", "--preset", "mnist-vae", "--data-dir", str(photos), "--image-size", "32", "--out",
              str(tmp_path / "run")])
    err = capsys.readouterr().err
    assert e.value.code == 2 and "fewer than the batch size 64: pass --batch-size 14" in err
    assert not (tmp_path / "run").exists()


def test_a_config_file_with_a_field_of_the_wrong_kind_is_refused_naming_it(tmp_path):
    from selfvae.presets import get_preset

    d = get_preset("mnist-vae").to_dict()
    d["train"]["lr"] = "fast"
    (tmp_path / "c.json").write_text(json.dumps(d))
    with pytest.raises(SelfVAEError, match="train.lr='fast': must be above 0"):
        Config.load(tmp_path / "c.json")
    d["train"]["lr"], d["model"]["image_shape"] = 1e-3, [1, 32]
    (tmp_path / "c.json").write_text(json.dumps(d))
    with pytest.raises(SelfVAEError, match="model.image_shape"):
        Config.load(tmp_path / "c.json")
