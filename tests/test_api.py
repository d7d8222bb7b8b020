"""The library's face (selfvae.api): every input form, typed results equal to the command line's, the latent tools,
training from tensors, save / load, and the tutorial's code run as written."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import SHARED_DATA, tiny_config
from PIL import Image
from torch.utils.data import DataLoader, TensorDataset

import selfvae
from selfvae.api import Model, as_images
from selfvae.cli import main
from selfvae.errors import SelfVAEError
from selfvae.models import ops

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def srvae() -> Model:
    return selfvae.load("cifar10-srvae-small")


@pytest.fixture(scope="module")
def cifar() -> np.ndarray:
    rng = np.random.default_rng(0)  # smooth random images: cheap, and far from noise
    base = rng.integers(0, 256, (8, 4, 4, 3)).astype(np.float64)
    return np.stack([np.asarray(Image.fromarray(b.astype(np.uint8)).resize((32, 32), Image.BILINEAR)) for b in base])


def test_every_input_form_gives_the_same_uint8_batch(tmp_path, cifar):
    want = torch.from_numpy(cifar).permute(0, 3, 1, 2)
    paths = []
    for i, a in enumerate(cifar[:2]):
        Image.fromarray(a).save(tmp_path / f"{i}.png")
        paths.append(tmp_path / f"{i}.png")
    shape = (3, 32, 32)
    forms = {
        "NHWC uint8 array": cifar, "NCHW uint8 tensor": want, "NCHW float tensor": want.float() / 255,
        "NHWC float64 array": cifar / 255.0, "list of CHW": list(want),
        "list of PIL": [Image.fromarray(a) for a in cifar],
    }
    for name, x in forms.items():
        assert torch.equal(as_images(x, shape), want), name
    assert torch.equal(as_images(paths, shape), want[:2]) and torch.equal(as_images(str(paths[0]), shape), want[:1])
    assert torch.equal(as_images(cifar[0], shape), want[:1])  # one HWC image
    digits = np.zeros((2, 28, 28), np.uint8)
    digits[:, 10:18, 12:16] = 200
    framed = as_images(digits[:, :, :, None], (1, 32, 32), own=(1, 28, 28))  # placed in its frame as MNIST is
    assert framed.shape == (2, 1, 32, 32) and torch.equal(framed[:, 0, 2:30, 2:30], torch.from_numpy(digits))


@pytest.mark.parametrize("x, message", [
    (np.zeros((2, 32, 32, 1), np.uint8), "x: grey images .1 channel.s..; this model takes RGB"),
    (np.zeros((2, 3, 24, 24), np.uint8), "x: images of 24x24 pixels; this model takes 32x32"),
    (np.full((1, 3, 32, 32), 2.0), r"x: floats from 2 to 2; expected \[0, 1\]"),
    (torch.zeros(1, 3, 32, 32, dtype=torch.bool), "x: dtype torch.bool"),
    (np.zeros((2, 5, 32, 32), np.uint8), "no channel axis of 1 or 3"),
    (np.zeros((2, 2, 3, 32, 32), np.uint8), "x: shape .2, 2, 3, 32, 32."),
    ({"a": 1}, "x: a dict; expected images"),
    (torch.full((1, 3, 32, 32), float("nan")), "NaN"),
])
def test_a_wrong_input_is_refused_naming_it(x, message):
    with pytest.raises(SelfVAEError, match=message):
        as_images(x, (3, 32, 32))


def test_bits_per_dim_are_the_numbers_selfvae_eval_prints(tmp_path, capsys):
    with np.load(SHARED_DATA / "mnist.npz") as f:
        digits = f["x_test"][:40]
        np.savez(tmp_path / "mnist.npz", x_train=digits, y_train=f["y_test"][:40], x_test=digits,
                 y_test=f["y_test"][:40])  # 40 digits in MNIST's own file layout
    main(["eval", "mnist-vae", "--data-dir", str(tmp_path), "--iw-samples", "4", "--json"])
    cli = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    model = selfvae.load("mnist-vae")
    b = model.bits_per_dim(digits, iw_samples=4)  # 28x28 digits: placed in the 32x32 frame, 784 dims
    assert (b.bpd_elbo, b.bpd_iw, b.n_images, b.dims) == (cli["bpd_elbo"], cli["bpd_iw"], 40, 784)
    assert b.terms == {k: v for k, v in cli.items() if k[:3] in ("re_", "kl_")}
    assert b.active_units["u"] == (cli["au_u"], cli["units_u"]) and b.bpd_iw <= b.bpd_elbo
    assert b.informative_units == {}  # a VAE's u has a fixed prior: Burda's test is its own
    log_p = model.log_prob(digits, iw_samples=4, seed=0)  # the same noise: the same bound, image by image
    assert log_p.shape == (40,) and float(-log_p.mean() / (784 * np.log(2))) == pytest.approx(b.bpd_iw, abs=1e-9)


def test_one_temperature_per_latent_level(srvae):
    """t_u draws u and y_1, t_z1 draws z_1 and x: changing t_z1 leaves y_1 as it was and changes x."""
    y_a, x_a = srvae.sample(4, temperature=[1.0, 1.0], levels=True, seed=3)
    y_b, x_b = srvae.sample(4, temperature=[1.0, 0.2], levels=True, seed=3)
    y_c, x_c = srvae.sample(4, temperature=1.0, levels=True, seed=3)
    assert torch.equal(y_a, y_b) and not torch.equal(x_a, x_b) and torch.equal(x_a, x_c)
    assert ops.temperatures(srvae, 0.5) == [0.5, 0.5]
    with pytest.raises(SelfVAEError, match="3 values given; this model has 2 latent levels .u, z1."):
        srvae.sample(2, temperature=[1, 1, 1])


def test_encode_decode_reconstruct_and_traverse_agree(srvae, cifar):
    lat = srvae.encode(cifar)
    assert lat.u.shape == (8, 16, 8, 8) and [z.shape for z in lat.z] == [(8, 16, 8, 8)]
    decoded = srvae.decode(lat, decode="mean")
    assert torch.equal(decoded, srvae.reconstruct(cifar, first=2, decode="mean"))  # every latent inferred
    assert torch.equal(srvae.reconstruct(cifar, "rs1", seed=1), srvae.reconstruct(cifar, first=1, seed=1))
    for mode in ("rs1", "rs2", "cr", "cg"):
        assert srvae.reconstruct(cifar, mode).shape == (8, 3, 32, 32)
    with pytest.raises(SelfVAEError, match="first=3: this model has latent levels 1..2"):
        srvae.reconstruct(cifar, first=3)
    unit = (2, 4, 5)
    pair = srvae.encode(cifar[:2])  # at the walk's batch size: a convolution's float results depend on it, and a
    at_mean = float(pair.u[0, unit[0], unit[1], unit[2]])  # decoded mean on a rounding edge can flip a pixel
    walk = srvae.traverse(cifar[:2], "u", unit=unit, values=[at_mean, at_mean + 4.0])
    own = srvae.decode(pair, decode="mean")
    assert walk.shape == (2, 2, 3, 32, 32) and torch.equal(walk[0, 0], own[0])  # its own value: unchanged
    assert not torch.equal(walk[0, 1], walk[0, 0])
    with pytest.raises(SelfVAEError, match="level='z2': this model's latents are u, z1"):
        srvae.traverse(cifar[:1], "z2")


def test_super_resolve_a_batch_or_one_image_of_any_size(srvae, cifar):
    small = cifar[:, ::2, ::2]
    assert srvae.super_resolve(small, seed=0).shape == (8, 3, 32, 32)
    big = srvae.super_resolve(np.tile(cifar[0], (2, 3, 1))[:40, :50], decode="mean")
    assert big.shape == (1, 3, 80, 100)
    with pytest.raises(SelfVAEError, match="factor=4: this model super-resolves by 2"):
        srvae.super_resolve(small, factor=4)
    with pytest.raises(SelfVAEError, match="factor=2: this model super-resolves by nothing"):
        selfvae.load("mnist-vae").super_resolve(small[:, :, :, :1], factor=2)


def test_a_model_at_another_size_measures_larger_images_and_stays_a_model(srvae, cifar):
    same, wide = srvae.at_size(32, 32), srvae.at_size(32, 64)
    assert isinstance(wide, Model) and wide.config.model.image_shape == (3, 32, 64)
    assert same.bits_per_dim(cifar[:4]).bpd_elbo == pytest.approx(srvae.bits_per_dim(cifar[:4]).bpd_elbo, abs=1e-4)
    pairs = np.concatenate([cifar[:4], cifar[4:]], axis=2)  # two images side by side
    assert 0 < wide.bits_per_dim(pairs).bpd_elbo < 8
    with pytest.raises(SelfVAEError, match="multiples of the model's frame 32x32"):
        srvae.at_size(48, 32)


def test_interpolation_runs_from_a_to_b(srvae, cifar):
    path = srvae.interpolate(cifar[:2], cifar[2:4], steps=5)
    lat_a, lat_b = srvae.encode(cifar[:2]), srvae.encode(cifar[2:4])
    assert path.shape == (2, 5, 3, 32, 32)
    ends = [srvae.decode(lat_a.u), srvae.decode(lat_b.u)]  # u at the ends, z from its prior mean
    assert torch.equal(path[:, 0], ends[0]) and torch.equal(path[:, -1], ends[1])
    with pytest.raises(SelfVAEError, match="2 images in a and 1 in b"):
        srvae.interpolate(cifar[:2], cifar[:1])


def test_train_on_a_tensor_dataset_resume_save_and_load(tmp_path, blob_npz):
    """Images held in memory train as a data set does: the run folder holds them, resume goes on, and a saved model
    loads with the same numbers."""
    images = torch.from_numpy(np.load(blob_npz)["x_train"][:96]).permute(0, 3, 1, 2).contiguous()
    cfg = tiny_config(None, "downscale", steps=10)
    out = tmp_path / "run"
    model = selfvae.train(cfg, train_data=TensorDataset(images[:80], torch.zeros(80)), val_data=images[80:],
                          out=out, progress=False, eval_every=5, final_iw_samples=2)
    assert isinstance(model, Model) and not model.training and (out / "data.npz").is_file()
    log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert max(r["step"] for r in log) == 10 and model.config.data.name == "npz"
    saved = np.load(out / "data.npz")
    assert saved["x_train"].shape == (80, 16, 16, 1) and saved["x_val"].shape == (16, 16, 16, 1)
    more = selfvae.train(cfg, out=out, resume=True, steps=15, progress=False)
    assert max(json.loads(line)["step"] for line in (out / "log.jsonl").read_text().splitlines()) == 15
    folder = more.save_pretrained(tmp_path / "saved")
    back = selfvae.from_pretrained(folder)
    assert back.trained["steps"] == 15  # the saved folder keeps its training: a run started from it counts it
    assert back.bits_per_dim(images[:16]).bpd_elbo == more.bits_per_dim(images[:16]).bpd_elbo
    loader = DataLoader(TensorDataset(images[:64].float() / 255), batch_size=16)  # floats in [0, 1], batched
    other = selfvae.train(cfg, train_data=loader, out=tmp_path / "run2", steps=2, progress=False, train__seed=1)
    assert other.config.train.seed == 1 and np.load(tmp_path / "run2" / "data.npz")["x_train"].shape[0] == 64
    with pytest.raises(SelfVAEError, match="learning_rate=0.1: learning_rate is no setting; name it as section__field"):
        selfvae.train(cfg, train_data=images, out=tmp_path / "run3", learning_rate=0.1)
    with pytest.raises(SelfVAEError, match="holds a run already; pass resume=True"):
        selfvae.train(cfg, train_data=images, out=out)


def test_the_public_api_is_named_and_documented():
    for name in selfvae.__all__:
        obj = getattr(selfvae, name)
        assert name == "__version__" or (obj.__doc__ and len(obj.__doc__) > 40), name
    for name in ("bits_per_dim", "log_prob", "sample", "encode", "decode", "reconstruct", "super_resolve",
                 "interpolate", "traverse", "save_pretrained", "from_pretrained"):
        doc = getattr(Model, name).__doc__
        assert doc and any(w in doc for w in ("uint8", "[N", "nats", "folder")), name  # its shapes or units


@pytest.mark.slow
def test_the_tutorial_runs_as_written(tmp_path, monkeypatch):
    """Every ```python block of docs/TUTORIAL.md, in order, in one namespace, where the data files sit."""
    text = (ROOT / "docs" / "TUTORIAL.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, flags=re.S)
    assert len(blocks) >= 8
    for name in ("cifar10-official-part.npz", "mnist.npz"):
        os.symlink(SHARED_DATA / name, tmp_path / name)
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    for i, block in enumerate(blocks):
        exec(compile(block, f"TUTORIAL.md block {i + 1}", "exec"), namespace)  # noqa: S102 - our own docs
    assert isinstance(namespace["back"], Model) and (tmp_path / "my-model" / "model.safetensors").is_file()


@pytest.mark.slow
def test_the_api_reference_builds_without_warnings(tmp_path):
    import subprocess
    import sys

    res = subprocess.run([sys.executable, str(ROOT / "tools" / "api_docs.py"), "--out", str(tmp_path)],
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    page = (tmp_path / "selfvae" / "api.html").read_text()
    for name in ("bits_per_dim", "super_resolve", "traverse", "save_pretrained", "Bound", "Latents", "train"):
        assert f'id="{name}"' in page or f'id="Model.{name}"' in page, name


def test_every_shell_line_of_the_docs_names_a_real_command_and_its_options(capsys):
    """The ``selfvae ...`` lines of README.md and docs/*.md, checked against each command's --help, and README's
    Python blocks run: documentation that names a command or option the tool lacks fails here."""
    helps: dict[str, str | None] = {}
    wrong = []
    for doc in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        text = doc.read_text()
        for block in re.findall(r"```(?:bash|sh|shell)\n(.*?)```", text, flags=re.S):
            for line in block.splitlines():
                for part in re.split(r"&&|;|\|", line.split("  #")[0]):
                    words = part.split()
                    if len(words) < 2 or words[0] != "selfvae" or words[1].startswith("-"):
                        continue
                    if words[1] not in helps:
                        try:
                            main([words[1], "--help"])
                        except SystemExit as e:
                            out = capsys.readouterr().out
                            helps[words[1]] = out if e.code == 0 else None
                    options = [w.split("=")[0].rstrip("]|)") for w in words[2:] if w.startswith("--")]
                    if helps[words[1]] is None:
                        wrong.append(f"{doc.name}: selfvae {words[1]}: no such command")
                    known = helps[words[1]] or ""
                    wrong += [f"{doc.name}: selfvae {words[1]} {o}" for o in options if o not in known]
    assert len(helps) >= 12 and not wrong, wrong
    for block in re.findall(r"```python\n(.*?)```", (ROOT / "README.md").read_text(), flags=re.S):
        exec(compile(block, "README.md", "exec"), {})  # noqa: S102 - our own docs
