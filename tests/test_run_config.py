"""The precedence of preset / config file / --init / --resume / flags / --set / length (selfvae.run_config)."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest

from selfvae.errors import SelfVAEError
from selfvae.presets import get_preset
from selfvae.run_config import DEFAULT_PRESET, TrainRequest, base_config, default_out, train_config


def _never(*_a):  # an inference or count the request must not need
    raise AssertionError("called")


def test_set_beats_flags_beat_base_and_base_is_untouched():
    base = get_preset("mnist-vae")
    before = copy.deepcopy(base)
    req = TrainRequest(preset="mnist-vae", settings={"train.batch_size": 16, "train.amp": "bf16"},
                       sets=("train.batch_size=8", "train.lr=1e-3"), steps=7)
    cfg, out, notes = train_config(req, base, _never, _never)
    assert (cfg.train.batch_size, cfg.train.amp, cfg.train.lr, cfg.train.steps) == (8, "bf16", 1e-3, 7)
    assert base == before  # a copy was changed, not the caller's config
    assert out == Path("runs/mnist-vae") and notes == []


def test_epochs_count_training_images_after_the_batch_size_is_settled():
    req = TrainRequest(preset="mnist-vae", settings={"train.batch_size": 10}, epochs=3)
    cfg, _, _ = train_config(req, get_preset("mnist-vae"), _never, lambda c: 95)
    assert cfg.train.steps == 3 * (95 // 10)


@pytest.mark.parametrize("req, match", [
    (TrainRequest(init="mnist-vae", resume=True), "--init starts a new run"),
    (TrainRequest(steps=3, epochs=1), "--steps or --epochs"),
])
def test_contradictions_are_refused(req, match):
    with pytest.raises(SelfVAEError, match=match):
        train_config(req, get_preset(DEFAULT_PRESET), _never, _never)


def test_data_dir_of_another_data_set_renames_the_run_and_says_so(tmp_path):
    photos = tmp_path / "photos"
    req = TrainRequest(preset="mnist-vae", data_dir=str(photos))
    cfg, out, notes = train_config(req, get_preset("mnist-vae"), lambda name, root: "folder", _never)
    assert (cfg.data.name, cfg.data.root, cfg.data.augment) == ("folder", str(photos), None)
    assert out == Path("runs/mnist-vae-photos") and "data.name=folder" in notes[0]
    # --set data.name, --config and --resume keep the data set they name; --out keeps its folder
    for kw in ({"sets": ("data.name=mnist",)}, {"config_file": "c.json"}, {"resume": True}):
        cfg, out, notes = train_config(TrainRequest(preset="mnist-vae", data_dir=str(photos), **kw),
                                       get_preset("mnist-vae"), _never, _never)
        assert cfg.data.name == "mnist" and cfg.data.root == str(photos) and notes == []
    _, out, _ = train_config(TrainRequest(preset="mnist-vae", data_dir=str(photos), out="x"),
                             get_preset("mnist-vae"), lambda name, root: "folder", _never)
    assert out == Path("x")


def test_default_out_and_base(tmp_path):
    assert default_out(TrainRequest()) == Path("runs") / DEFAULT_PRESET
    assert default_out(TrainRequest(init="some/dir/mnist-vae")) == Path("runs/mnist-vae-tuned")
    assert base_config(TrainRequest(init="mnist-vae")).name == "mnist-vae"  # --init alone: its own config
    assert base_config(TrainRequest(init="mnist-vae", preset="mnist-srvae")).name == "mnist-srvae"
    get_preset("mnist-srvae").save(tmp_path / "c.json")
    assert base_config(TrainRequest(config_file=str(tmp_path / "c.json"), preset="mnist-vae")).name == "mnist-srvae"
    with pytest.raises(SelfVAEError, match="cannot resume"):
        base_config(TrainRequest(resume=True, out=str(tmp_path / "none")))
