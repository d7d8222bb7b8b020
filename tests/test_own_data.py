"""A user's own images: resize policies, grey/RGB conversion, data.name inferred from --data-dir, a folder of
92x112 PGM faces (plus JPEGs of other sizes) trained at 32x32 and by a 3-level model at 64x64, and the final
evaluation that falls back to the validation split of a folder without test/."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from conftest import tiny_config
from PIL import Image

from selfvae.cli import main
from selfvae.data import infer_dataset, load_dataset
from selfvae.data.images import convert_channels, resize_image
from selfvae.errors import SelfVAEError
from selfvae.transforms import build_transform


def _faces(root, n: int = 40, seed: int = 0):
    """``n`` grey 92x112 (WxH) PGM 'faces' (a bright ellipse) and three RGB JPEGs of other sizes."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    yy, xx = np.mgrid[0:112, 0:92]
    for i in range(n):
        cx, cy = 46 + rng.normal(0, 4), 56 + rng.normal(0, 4)
        face = 200 * np.exp(-(((xx - cx) / 25) ** 2 + ((yy - cy) / 33) ** 2)) + 30
        Image.fromarray(face.clip(0, 255).astype(np.uint8)).save(root / f"s{i:02d}.pgm")
    for i, (w, h) in enumerate([(70, 50), (40, 90), (64, 64)]):
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(root / f"photo{i}.jpg")
    return root


def test_crop_keeps_the_centre_and_pad_adds_black_bars():
    a = np.zeros((112, 92), np.uint8)
    a[10:102, :] = 200  # the centre 92x92 square is bright, the top and bottom 10 rows dark
    crop = np.asarray(resize_image(Image.fromarray(a), 46, "crop"))
    assert crop.shape == (46, 46) and (crop == 200).all()  # area average of the bright square only
    pad = np.asarray(resize_image(Image.fromarray(np.full((112, 92), 200, np.uint8)), 56, "pad"))
    # 112x112 canvas with 10 black columns each side -> at half size 5 black columns each side
    assert pad.shape == (56, 56)
    assert (pad[:, :5] == 0).all() and (pad[:, -5:] == 0).all() and (pad[:, 5:-5] == 200).all()
    with pytest.raises(SelfVAEError, match="resize='stretch'"):
        resize_image(Image.fromarray(a), 32, "stretch")


def test_downscaling_is_an_area_average():
    checker = (np.indices((64, 64)).sum(0) % 2 * 255).astype(np.uint8)  # 0/255 alternating pixels
    small = np.asarray(resize_image(Image.fromarray(checker), 32))
    assert np.abs(small.astype(int) - 128).max() <= 1  # every 2x2 block averages to 127.5


def test_channels_follow_the_luma_of_the_grayscale_transform():
    rgb = np.random.default_rng(0).integers(0, 256, (4, 8, 8, 3), dtype=np.uint8)
    grey = convert_channels(rgb, 1)
    want = build_transform("grayscale")(torch.from_numpy(rgb).permute(0, 3, 1, 2))
    assert torch.equal(torch.from_numpy(grey).permute(0, 3, 1, 2), want)
    assert (convert_channels(grey, 3) == grey).all() and convert_channels(grey, 3).shape[-1] == 3


def test_mixed_folder_loads_at_any_size_and_channel_count(tmp_path):
    root = _faces(tmp_path / "faces", n=6)
    with pytest.raises(SelfVAEError, match="image_size"):  # mixed sizes need a target size
        load_dataset("folder", root, "train", val_fraction=0.0)
    grey = load_dataset("folder", root, "train", val_fraction=0.0, image_size=32, channels=1)
    rgb = load_dataset("folder", root, "train", val_fraction=0.0, image_size=24, resize="pad", channels=3)
    assert grey.shape == (1, 32, 32) and rgb.shape == (3, 24, 24) and len(grey) == len(rgb) == 9


def test_data_dir_of_images_is_inferred_as_a_folder(tmp_path, blob_npz):
    root = _faces(tmp_path / "faces", n=2)
    assert infer_dataset("mnist", root) == "folder"
    assert infer_dataset("cifar10", blob_npz) == "npz"
    with pytest.raises(SelfVAEError):
        infer_dataset("mnist", tmp_path / "missing")


def _train(args, capsys) -> dict:
    main(["train", "--no-progress", "--set", "train.batch_size=8", "--set", "train.init_batch=16",
          "--set", "train.final_iw_samples=2", *args])
    out = capsys.readouterr()
    assert "data.name=folder" in out.err and "evaluating on the validation split" in out.err
    return out


def test_pgm_faces_train_at_32(tmp_path, capsys):
    root = _faces(tmp_path / "faces")
    run = tmp_path / "run"
    _train(["--preset", "mnist-vae", "--data-dir", str(root), "--set", "data.image_size=32", "--steps", "2",
            "--out", str(run), "--set", "model.q_u.width=8", "--set", "model.p_y.width=8"], capsys)
    cfg = json.loads((run / "config.json").read_text())
    assert cfg["data"]["name"] == "folder" and cfg["data"]["image_size"] == 32
    assert cfg["model"]["q_u"]["width"] == 8
    metrics = json.loads((run / "final" / "metrics.json").read_text())
    assert metrics["split"] == "val" and metrics["n_images"] == round(0.15 * 43)
    # eval (and every command that reads the test split) falls back as training did (issue 37: it refused)
    main(["eval", str(run), "--iw-samples", "1", "--json"])
    out = capsys.readouterr()
    assert json.loads(out.out)["split"] == "val" and "validation split instead" in out.err
    from selfvae.evaluation.rows import run_row
    from selfvae.evaluation.run_fid import run_fid

    (run / "final" / "metrics.json").unlink()  # the comparison table evaluates it now, on the same split
    assert run_row(run, n_eval=4, iw_samples=1, timing=False)["source"].startswith("evaluated now (val, 4 images")
    fid = run_fid(run, n=4, n_ref=4, progress=False, cache=tmp_path / "cache")
    assert fid["ref"] == "val" and fid["n_ref"] == 4 and math.isfinite(fid["fid"])


def test_pgm_faces_train_a_3_level_model_at_64(tmp_path, capsys):
    root = _faces(tmp_path / "faces")
    cfg = tiny_config(None, "downscale,downscale,downscale")
    cfg.model.image_shape = (1, 64, 64)
    cfg.data.name = "folder"
    path = tmp_path / "c.json"
    cfg.save(path)
    run = tmp_path / "run"
    main(["train", "--config", str(path), "--data-dir", str(root), "--image-size", "64", "--steps", "2",
          "--out", str(run), "--no-progress", "--set", "train.batch_size=8", "--set", "train.init_batch=16"])
    assert "validation split" in capsys.readouterr().err
    metrics = json.loads((run / "final" / "metrics.json").read_text())
    assert [k for k in metrics if k.startswith("re_")] == ["re_y1", "re_y2", "re_y3", "re_x"]


def test_size_mismatch_names_the_setting_that_fixes_it(tmp_path, capsys):
    root = _faces(tmp_path / "faces", n=12)
    with pytest.raises(SystemExit):
        main(["train", "--preset", "mnist-vae", "--data-dir", str(root), "--set", "data.image_size=28",
              "--steps", "1", "--out", str(tmp_path / "r"), "--no-progress"])
    err = capsys.readouterr().err
    assert "(1, 28, 28)" in err and "data.image_size=32" in err and "--image-size 32" in err


def test_a_run_on_ones_own_images_is_named_after_them_too(tmp_path, capsys, monkeypatch):
    """Issue 36: a run on a photo folder was written to runs/PRESET, as if it were the preset's data set."""
    root = _faces(tmp_path / "faces")
    monkeypatch.chdir(tmp_path)
    out = _train(["--preset", "mnist-vae", "--data-dir", str(root), "--set", "data.image_size=32", "--steps", "1",
                  "--set", "model.q_u.width=8", "--set", "model.p_y.width=8"], capsys)
    assert "into runs/mnist-vae-faces" in out.err
    assert (tmp_path / "runs" / "mnist-vae-faces" / "config.json").is_file()
    assert not (tmp_path / "runs" / "mnist-vae").exists()


def test_eval_of_a_model_on_an_npz_file_reads_it_as_one(tmp_path, capsys):
    """``selfvae eval cifar10-vae-small --data-dir FILE.npz`` measures the model on the file's test images (the
    model's own data set reads a tarball, and failed in it with a tarfile traceback)."""
    def bpd(x_test: np.ndarray, name: str) -> float:
        np.savez(tmp_path / name, x_train=x_test, x_test=x_test)
        main(["eval", "cifar10-vae-small", "--data-dir", str(tmp_path / name), "--limit", "2", "--iw-samples", "1",
              "--json"])
        rec = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
        assert rec["n_images"] == 2 and rec["dims"] == 3072 and rec["split"] == "test"
        return rec["bpd_elbo"]

    noise = np.random.default_rng(0).integers(0, 256, (3, 32, 32, 3), dtype=np.uint8)
    smooth = np.broadcast_to(np.arange(32, dtype=np.uint8)[None, :, None, None] * 4, (3, 32, 32, 3)).copy()
    assert bpd(smooth, "cifar10-official-part.npz") + 3 < bpd(noise, "noise.npz")  # it measured the file's images
    (tmp_path / "fake.tar.gz").write_bytes(b"not a tar archive at all")
    with pytest.raises(SelfVAEError, match="fake.tar.gz: not a readable tar archive"):
        load_dataset("cifar10-jpeg", tmp_path / "fake.tar.gz", "test")
