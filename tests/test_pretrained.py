"""Exported and shipped models: safetensors round trips, names in every command, refusals."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from conftest import tiny_config
from PIL import Image

from selfvae.cli import main
from selfvae.codec.container import Container
from selfvae.errors import SelfVAEError
from selfvae.runs import layout
from selfvae.runs.checkpoint import load_checkpoint
from selfvae.runs.export import export
from selfvae.runs.layout import pretrained_names, resolve
from selfvae.runs.loading import load_run
from selfvae.training.loop import train


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory, blob_npz):
    run = tmp_path_factory.mktemp("run") / "tiny"
    cfg = tiny_config(blob_npz, "downscale", steps=6)
    cfg.train.ema_decay = 0.9
    train(cfg, run, progress=False)
    return run


def _same_outputs(a, b, x):
    torch.manual_seed(0)
    ta = a.terms(x, analytic_kl=False).nelbo
    torch.manual_seed(0)
    tb = b.terms(x, analytic_kl=False).nelbo
    return ta, tb


def test_export_float32_is_the_runs_model_exactly_and_float16_close(tiny_run, tmp_path, rand_images):
    _, model = load_run(tiny_run)
    x = rand_images(4)
    out = export(tiny_run, tmp_path / "f32")
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "metrics.json", "model.safetensors"]
    _, exported = load_run(out)
    ta, tb = _same_outputs(model, exported, x)
    assert torch.equal(ta, tb)  # the EMA weights, bit for bit
    out16 = export(tiny_run, tmp_path / "f16", dtype="float16")
    assert (out16 / "model.safetensors").stat().st_size < 0.6 * (out / "model.safetensors").stat().st_size
    _, half = load_run(out16)
    ta, tc = _same_outputs(model, half, x)
    assert not torch.equal(ta, tc) and torch.allclose(ta, tc, rtol=2e-3)
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["dims"] == 256 and "bpd_elbo" in metrics


def test_an_exported_model_file_is_readable_as_the_umask_allows(tiny_run, tmp_path):
    """safetensors' save_file creates its file for its owner alone (0600); an export is for others to load."""
    import os

    old = os.umask(0o022)
    try:
        weights = export(tiny_run, tmp_path / "m") / "model.safetensors"
    finally:
        os.umask(old)
    assert weights.stat().st_mode & 0o777 == 0o644, oct(weights.stat().st_mode)


def test_damaged_or_foreign_model_files_are_refused(tiny_run, tmp_path):
    out = export(tiny_run, tmp_path / "m")
    weights = out / "model.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(data[: len(data) // 2])
    with pytest.raises(SelfVAEError, match="corrupt or truncated model file"):
        load_run(out)
    from safetensors.torch import save_file

    save_file({"w": torch.zeros(2)}, str(weights))  # a safetensors file, but not ours
    with pytest.raises(SelfVAEError, match="not a selfvae model file"):
        load_run(out)
    save_file({"w": torch.zeros(2)}, str(weights), metadata={"format": "selfvae-model", "version": "1"})
    with pytest.raises(SelfVAEError, match="do not fit the model"):
        load_run(out)
    with pytest.raises(SelfVAEError, match="no pretrained model of that name"):
        resolve("no-such-model")
    with pytest.raises(SelfVAEError, match="is the run being exported"):
        export(tiny_run, tiny_run)


def test_a_shipped_name_works_in_the_commands_and_writes_nothing_into_the_package(
    tiny_run, tmp_path, monkeypatch, capsys, blob_npz, rand_images
):
    """A model exported into the package folder is found by name; commands write to ./NAME instead."""
    pkg = tmp_path / "pkg"
    monkeypatch.setattr(layout, "PACKAGED", pkg)
    export(tiny_run, pkg / "tiny-shipped", dtype="float16")
    assert pretrained_names() == ["tiny-shipped"]
    before = sorted(p.name for p in (pkg / "tiny-shipped").iterdir())
    monkeypatch.chdir(tmp_path)
    main(["sample", "tiny-shipped", "-n", "4", "-o", str(tmp_path / "s.png")])
    main(["eval", "tiny-shipped", "--iw-samples", "2", "--limit", "8", "--json", "--data-dir",
          str(blob_npz)])
    m = json.loads(capsys.readouterr().out.splitlines()[-1])
    assert m["n_images"] == 8 and m["bpd_iw"] <= m["bpd_elbo"] + 1e-9
    main(["reconstruct", "tiny-shipped", "-n", "2", "-o", str(tmp_path / "r.png")])
    main(["superres", "tiny-shipped", str(tmp_path / "s.png"), "--resize", "-o", str(tmp_path / "sr.png")])
    main(["tradeoff", "tiny-shipped", "--limit", "8"])
    assert (tmp_path / "tiny-shipped" / "tradeoff" / "tradeoff.csv").is_file()
    Image.fromarray(rand_images(1)[0, 0].numpy()).save(tmp_path / "grey.png")
    main(["compress", "tiny-shipped", str(tmp_path / "grey.png"), "-o", str(tmp_path / "s.svae")])
    main(["decompress", str(tmp_path / "s.svae"), "-o", str(tmp_path / "dec")])  # finds the model by name
    assert (tmp_path / "dec" / "grey.png").is_file()
    main(["compress", "tiny-shipped", str(blob_npz), "--limit", "24", "--samples", "4", "--model-only", "-o",
          str(tmp_path / "m.svae")])
    header, _ = Container.parse_header((tmp_path / "m.svae").read_bytes(), "m.svae")
    assert header["params"]["samples"] == 4
    main(["decompress", str(tmp_path / "m.svae"), "-o", str(tmp_path / "dec4")])
    first = np.asarray(Image.open(sorted((tmp_path / "dec4").glob("*.png"))[0]))
    assert len(list((tmp_path / "dec4").glob("*.png"))) == 24
    assert np.array_equal(first.reshape(16, 16), np.load(blob_npz)["x_test"][0, ..., 0])
    assert sorted(p.name for p in (pkg / "tiny-shipped").iterdir()) == before
    main(["pretrained"])
    assert "tiny-shipped" in capsys.readouterr().out
    import selfvae

    model = selfvae.from_pretrained("tiny-shipped")
    assert model.config.name == "tiny-downscale" and not model.training
    assert selfvae.load(str(pkg / "tiny-shipped")).cfg == model.cfg


def test_shipped_metrics_take_every_iw_figure_from_the_iw_bound():
    """The shipping script measures the ELBO over the whole test set at S = 1 (whose IW keys are ELBO copies) and
    the IW bound on a subset: every IW key of the shipped metrics must come from the latter."""
    import math

    script = _shipping_script()
    s1 = {"dims": 784, "padded_dims": 1024, "bpd_elbo": 1.2, "bpd_iw": 1.2, "bpd_joint_elbo": 0.9,
          "bpd_joint_iw": 0.9, "nll_iw_nats": 1.2 * 784 * math.log(2), "bpd_iw_padded": 1.2 * 784 / 1024}
    out = script.iw_figures(s1, 1.1)
    assert out["bpd_iw"] == 1.1
    assert out["nll_iw_nats"] == pytest.approx(1.1 * 784 * math.log(2))
    assert out["bpd_iw_padded"] == pytest.approx(1.1 * 784 / 1024)
    assert out["bpd_joint_iw"] == pytest.approx(0.9 * 1.1 / 1.2)


def test_weights_with_nan_or_inf_are_refused_naming_the_tensor(tiny_run, tmp_path):
    from safetensors.torch import load_file, save_file

    out = export(tiny_run, tmp_path / "exp")
    state = load_file(str(out / "model.safetensors"))
    name = sorted(k for k, v in state.items() if v.is_floating_point())[3]
    state[name] = state[name].clone()
    state[name].view(-1)[0] = float("inf")
    from safetensors import safe_open

    with safe_open(str(out / "model.safetensors"), framework="pt") as f:
        meta = f.metadata()
    meta.pop("sha256")  # a file without a recorded hash (a run's diverged weights, exported as they were)
    save_file(state, str(out / "model.safetensors"), metadata=meta)
    with pytest.raises(SelfVAEError, match=f"NaN or infinite.*{name}"):
        load_run(out)


def test_flipped_bits_and_zeroed_tensors_are_refused_by_the_weights_hash(tiny_run, tmp_path):
    """Issue 37: a flipped bit or a zeroed tensor in a weights file or a checkpoint loaded silently (eval gave
    3.7e15 or nan bits/dim); now the hash recorded with the weights refuses it."""
    import shutil

    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    out = export(tiny_run, tmp_path / "exp")
    path = out / "model.safetensors"
    data = bytearray(path.read_bytes())
    data[-5] ^= 0x10  # one bit of the last tensor's data
    path.write_bytes(bytes(data))
    with pytest.raises(SelfVAEError, match="do not match the hash"):
        load_run(out)
    # a shipped model's file (hash in its metrics, not in the file) with one tensor zeroed
    shipped = tmp_path / "mnist-vae"
    shutil.copytree(resolve("mnist-vae"), shipped)
    state = load_file(str(shipped / "model.safetensors"))
    with safe_open(str(shipped / "model.safetensors"), framework="pt") as f:
        meta = f.metadata()
    assert "sha256" not in meta and "weights_sha256" in json.loads((shipped / "metrics.json").read_text())
    load_run(shipped)  # as shipped: the hash matches
    name = sorted(state)[5]
    state[name] = torch.zeros_like(state[name])
    save_file(state, str(shipped / "model.safetensors"), metadata=meta)
    with pytest.raises(SelfVAEError, match="do not match the hash"):
        load_run(shipped)
    # a checkpoint whose weights changed after it was saved
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    ckpt = torch.load(run / "last.pt", weights_only=True)
    key = next(iter(ckpt["model"]))
    ckpt["model"][key] = torch.zeros_like(ckpt["model"][key])
    torch.save(ckpt, run / "last.pt")
    with pytest.raises(SelfVAEError, match="do not match the hash"):
        load_checkpoint(run / "last.pt")


def test_a_damaged_best_checkpoint_falls_back_to_last_with_a_warning(tiny_run, tmp_path):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    assert not (run / "best.pt.prev").exists()  # a run keeps last.pt, last.pt.prev and best.pt: three files
    data = (run / "best.pt").read_bytes()
    (run / "best.pt").write_bytes(data[: len(data) // 3])
    with pytest.warns(UserWarning, match="reading the model from .*last.pt"):
        _, model = load_run(run)
    assert model.training is False


@pytest.mark.slow
def test_the_listing_shows_the_whole_test_set_bound_and_stops_quietly_in_a_pipe():
    """Issue 36/37: `selfvae pretrained` showed first-200-image bounds where README quotes the whole test set's, and
    `selfvae pretrained | head -1` ended in a BrokenPipeError traceback."""
    import subprocess
    import sys

    full = subprocess.run([sys.executable, "-m", "selfvae.cli", "pretrained"], capture_output=True, text=True)
    line = next(x for x in full.stdout.splitlines() if x.startswith("mnist-vae "))
    assert "S=32, all 10000 images" in line
    srvae = next(x for x in full.stdout.splitlines() if x.startswith("cifar10-srvae-small "))
    assert "renormalised onto d(x) = y" in srvae
    import os

    for command in ("pretrained", "presets"):
        r, w = os.pipe()
        os.close(r)  # the reader has left before the first line: every write meets a broken pipe
        try:
            piped = subprocess.run([sys.executable, "-m", "selfvae.cli", command], stdout=w, stderr=subprocess.PIPE,
                                   text=True)
        finally:
            os.close(w)
        assert piped.returncode == 1 and "Traceback" not in piped.stderr, (command, piped.stderr)


def _shipping_script():
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "scripts" / "train_pretrained.py"
    spec = importlib.util.spec_from_file_location("train_pretrained", path)
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    return script


def test_card_pictures_are_the_models_samples_and_super_resolutions(tiny_run, tmp_path):
    """The shipping script draws a selfVAE's samples and super-resolutions beside its card (the sample grid is
    samples `selfvae sample NAME -n 32 --seed 0` draws); every shipped card shows pictures that are there."""
    import re

    from PIL import Image

    from selfvae.models.ops import generate
    from selfvae.runs.layout import PACKAGED
    from selfvae.viz import save_grid

    script = _shipping_script()
    out = export(tiny_run, tmp_path / "m")
    script.draw_pictures(out, None)
    _, model = load_run(out)
    torch.manual_seed(0)  # the samples `selfvae sample NAME -n 32 --seed 0` draws (there in a grid of its own)
    save_grid(generate(model, 32)[-1], tmp_path / "same.png", nrow=8)
    assert np.array_equal(np.asarray(Image.open(out / "samples.png")), np.asarray(Image.open(tmp_path / "same.png")))
    rows = np.asarray(Image.open(out / "superres.png"))
    assert rows.shape[:2] == (4 * 18 + 2, 8 * 18 + 2)  # y, two samples, x: 8 images of 16x16 a row, 2-pixel gaps
    assert "![super-resolution](superres.png)" in script.pictures_section("m", out)
    for name in pretrained_names():
        card = (PACKAGED / name / "card.md").read_text()
        shown = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", card)
        assert "samples.png" in shown, name
        assert all((PACKAGED / name / f).is_file() for f in shown), name


def test_each_shipping_call_trains_minutes_more_than_the_run_has_had(tiny_run, monkeypatch):
    """A run's ``train.max_minutes`` counts all its sessions: the shipping script resumes a run with a budget of
    what its clock holds plus ``--minutes`` (not ``--minutes``, which the run may already have spent)."""
    from selfvae.runs.checkpoint import load_checkpoint

    script = _shipping_script()
    calls = []
    monkeypatch.setattr(script.subprocess, "run", lambda cmd, check: calls.append(cmd))
    script.train("mnist-vae", tiny_run, 5.0, 0, None, [], 10)
    cmd = calls[0]
    assert "--resume" in cmd and "--preset" not in cmd
    budget = float(cmd[cmd.index("--set", cmd.index("--resume")) + 1].split("=")[1])
    had = load_checkpoint(tiny_run / "last.pt")["train_seconds"]
    assert had > 0 and budget == pytest.approx(5.0 + had / 60, abs=0.01)


def test_a_card_names_the_weights_a_run_started_from_as_a_reader_finds_them(tiny_run, blob_npz, tmp_path,
                                                                           monkeypatch):
    """A run started from a local run folder (``train.init``) is shipped with ``--started-from``: the card names the
    weights so (a path on the training machine means nothing to a reader), a later ``--card-only`` keeps it, and
    without it the card still says the run's path."""
    script = _shipping_script()
    cfg = tiny_config(blob_npz, "downscale", steps=2)
    cfg.train.init = str(tiny_run)
    run = tmp_path / "on"
    train(cfg, run, progress=False)
    monkeypatch.setattr(script, "PACKAGED", tmp_path / "pkg")
    dest = script.ship("mnist-srvae", run, None, 0, iw_limit=4, max_s=2, started_from="mnist-srvae as shipped before")
    card = (dest / layout.CARD).read_text()
    assert "started from the weights of `mnist-srvae as shipped before`" in card  # the Reproduce line
    assert "of the weights it started from, mnist-srvae as shipped before" in card  # and the training row
    assert f"the run `{tiny_run}`" not in card
    metrics = json.loads((dest / layout.METRICS).read_text())
    script.write_card("mnist-srvae", run, dest, metrics, 0)  # --card-only, not given again
    assert "started from the weights of `mnist-srvae as shipped before`" in (dest / layout.CARD).read_text()
    metrics.pop("started_from")
    script.write_card("mnist-srvae", run, dest, metrics, 0)
    assert f"the run `{tiny_run}`" in (dest / layout.CARD).read_text()


def test_a_card_says_how_weights_made_from_the_checkpoint_were_made(tiny_run, tmp_path, monkeypatch):
    """Weights shipped as a mix of the run's checkpoint and another model's (``--weights-note``, WiSE-FT) are named
    so on the card's weights row, around the checkpoint's own description, and a later ``--card-only`` keeps it."""
    script = _shipping_script()
    monkeypatch.setattr(script, "PACKAGED", tmp_path / "pkg")
    note = "0.9 of {checkpoint} mixed with 0.1 of the weights the run started from"
    dest = script.ship("mnist-srvae", tiny_run, None, 0, iw_limit=4, max_s=2, weights_note=note)
    row = next(line for line in (dest / layout.CARD).read_text().splitlines() if line.startswith("| weights |"))
    assert "; 0.9 of the " in row and " of step 6 " in row  # the checkpoint's description, inside the note
    assert row.endswith("mixed with 0.1 of the weights the run started from |")
    metrics = json.loads((dest / layout.METRICS).read_text())
    assert metrics["training"]["weights_note"] == note
    script.write_card("mnist-srvae", tiny_run, dest, metrics, 0)  # --card-only, not given again
    assert "mixed with 0.1 of the weights the run started from" in (dest / layout.CARD).read_text()


def test_a_card_gives_the_seed_the_run_trained_with_not_the_measurements(tiny_run, tmp_path, monkeypatch):
    """A run trained with train.seed=1 and shipped with the measurements' seed 0 (``--ship-only``'s default): its
    card and training record say seed 1 (the shipped cifar10-vae-ctx's card said seed 0 of a seed-1 run)."""
    import shutil

    from selfvae.config import Config

    script = _shipping_script()
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    cfg = Config.load(run / layout.CONFIG)
    cfg.train.seed = 1
    cfg.save(run / layout.CONFIG)
    monkeypatch.setattr(script, "PACKAGED", tmp_path / "pkg")
    dest = script.ship("mnist-srvae", run, None, 0, iw_limit=4, max_s=2)
    card = (dest / layout.CARD).read_text()
    assert ", seed 1, " in card and "train.seed=1`" in card and ", seed 0, " not in card
    assert json.loads((dest / layout.METRICS).read_text())["training"]["seed"] == 1


def test_shipping_keeps_the_runs_fids_and_measures_a_selfvaes_renormalised_bound(tiny_run, tmp_path, monkeypatch):
    """What ``selfvae fid RUN`` measured of the shipped weights goes into the model's metrics and card (it used to
    be copied in by hand; a FID of the run's earlier weights does not), a downscaling selfVAE's card gets its
    renormalised bound, which is tighter on the same noise, and a re-ship keeps the note on what the data set is."""
    import shutil

    from selfvae.evaluation.run_fid import run_fid

    script = _shipping_script()
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    steps = script.training_time(run, script.shipped_checkpoint(run)["step"])[0]
    assert steps == load_checkpoint(run / "best.pt")["step"]
    fid = run_fid(run, n=4, ref="test", n_ref=4, batch_size=4, progress=False, cache=tmp_path / "cache")
    assert fid["steps"] == steps  # selfvae fid says which weights it sampled
    stale = {"fid": 1.0, "n": 4, "n_ref": 4, "ref": "train", "seed": 0, "steps": steps - 1}
    (run / layout.fid_file("train")).write_text(json.dumps(stale))
    monkeypatch.setattr(script, "PACKAGED", tmp_path / "pkg")
    (tmp_path / "pkg" / "mnist-srvae").mkdir(parents=True)  # shipped before: what its data set is stays said
    (tmp_path / "pkg" / "mnist-srvae" / layout.METRICS).write_text(json.dumps({"data_note": "blobs, not digits"}))
    (tmp_path / "pkg" / "mnist-srvae" / layout.CONFIG).write_text(json.dumps({"description": "a blob srVAE"}))
    assert json.loads((run / layout.CONFIG).read_text())["name"] != "mnist-srvae"
    dest = script.ship("mnist-srvae", run, None, 0, iw_limit=4, max_s=2)
    shipped = json.loads((dest / layout.CONFIG).read_text())  # named as shipped, not as its run's config says
    assert shipped["name"] == "mnist-srvae" and shipped["description"] == "a blob srVAE"
    metrics = json.loads((dest / layout.METRICS).read_text())
    card = (dest / layout.CARD).read_text()
    assert metrics[layout.fid_key("test")]["fid"] == fid["fid"] and f"| FID (test) | **{fid['fid']:.1f}**" in card
    assert layout.fid_key("train") not in metrics and "FID (train)" not in card
    assert metrics["data_note"] == "blobs, not digits" and "blobs, not digits" in card
    assert metrics["bpd_elbo_consistent"] <= metrics["bpd_elbo"] + 1e-9
    assert "renormalised onto d(x) = y" in card
