"""The ``presets`` command and a real ``train --preset`` run, end to end through the command line."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest

from selfvae.cli import main
from selfvae.models.selfvae import SelfVAE
from selfvae.presets import PRESETS, get_preset


def test_presets_lists_every_preset_with_its_parameter_count(capsys):
    main(["presets", "--params"])
    lines = capsys.readouterr().out.strip().splitlines()
    assert [line.split()[0] for line in lines] == list(PRESETS)
    for line in lines:
        name = line.split()[0]
        got = float(re.search(r"\[([\d.]+)M parameters\]", line).group(1))
        want = sum(p.numel() for p in SelfVAE(PRESETS[name].model).parameters()) / 1e6
        assert abs(got - want) < 0.051, name
        assert PRESETS[name].description in line


def test_train_a_preset_from_the_command_line(tmp_path, capsys):
    """mnist-srvae, as a user runs it, on an mnist.npz in the official array layout (28x28, padded to 32)."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:28, 0:28]

    def digits(n):  # a bright blob somewhere: learnable in a few steps
        c = rng.uniform(8, 20, (n, 2))
        img = 255 * np.exp(-((yy - c[:, :1, None]) ** 2 + (xx - c[:, 1:, None]) ** 2) / 18)
        return img.astype(np.uint8)[..., None]

    np.savez(tmp_path / "mnist.npz", x_train=digits(120), y_train=np.zeros(120, np.uint8), x_test=digits(24),
             y_test=np.zeros(24, np.uint8))
    out = tmp_path / "run"
    main(["train", "--preset", "mnist-srvae", "--data-dir", str(tmp_path), "--out", str(out), "--steps", "3",
          "--batch-size", "16", "--no-progress", "--set", "train.init_batch=32", "--set", "train.final_iw_samples=2",
          "--set", "train.eval_limit=16"])
    printed = capsys.readouterr().out
    assert f"run directory: {out}" in printed and "test bits/dim" in printed
    cfg = json.loads((out / "config.json").read_text())
    want = get_preset("mnist-srvae").to_dict()
    want["data"]["root"], want["train"]["batch_size"] = str(tmp_path), 16
    want["train"].update(steps=3, init_batch=32, final_iw_samples=2, eval_limit=16)
    want["model"]["data_shape"] = [1, 28, 28]  # recorded from the data set: bits/dim per 784 pixels
    assert cfg == json.loads(json.dumps(want))  # the preset, with exactly the overrides given
    metrics = json.loads((out / "final" / "metrics.json").read_text())
    assert metrics["n_images"] == 24 and metrics["iw_samples"] == 2 and metrics["split"] == "test"
    assert f"{metrics['bpd_elbo']:.4f}" in printed
    assert (out / "final" / "samples.png").is_file() and (out / "best.pt").is_file()


def test_compile_takes_an_optional_mode_and_refuses_an_unknown_one(capsys):
    """``--compile`` alone compiles in torch's default mode; ``--compile reduce-overhead`` asks for CUDA graphs;
    a misspelt mode stops at the command line, naming the choices."""
    import pytest

    from selfvae.cli import build_parser
    from selfvae.commands.train import train_request

    def settings(*flags: str) -> dict:
        return train_request(build_parser().parse_args(["train", *flags])).settings

    assert settings("--compile") == {"train.compile": True, "train.compile_mode": "default"}
    assert settings("--compile", "reduce-overhead")["train.compile_mode"] == "reduce-overhead"
    assert "train.compile" not in settings()
    with pytest.raises(SystemExit):
        build_parser().parse_args(["train", "--compile", "reduce-overheads"])
    assert "reduce-overhead" in capsys.readouterr().err


@pytest.mark.parametrize("name", ["cifar10-vae-small", "cifar10-srvae-small", "cifar10-2lvl-small", "photo-vae"])
def test_the_shippable_cifar10_presets_write_a_float16_file_of_at_most_8_mb(name, tmp_path):
    """Issue 33's shipping budget holds for every shippable natural-image preset, the hierarchy's too."""
    from selfvae.runs.weights import write_weights

    cfg = get_preset(name)
    path = write_weights(SelfVAE(cfg.model), tmp_path, "float16", name)
    assert path.stat().st_size <= 8_000_000, path.stat().st_size / 1e6
    assert cfg.model.transforms.count("downscale") == {"cifar10-vae-small": 0, "photo-vae": 0, "cifar10-srvae-small": 1,
                                                       "cifar10-2lvl-small": 2}[name]
