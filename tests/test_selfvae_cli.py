"""A briefly trained srVAE: super-resolution keeps the given content; the CLI operations write pictures."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from conftest import tiny_config
from PIL import Image

from selfvae.cli import main
from selfvae.models.ops import super_resolve
from selfvae.runs.loading import load_run
from selfvae.training.loop import train


@pytest.fixture(scope="module")
def srvae_run(blob_npz, tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "srvae"
    cfg = tiny_config(blob_npz, "downscale", steps=150)
    cfg.train.eval_every = 75
    train(cfg, out, progress=False)
    return out


def test_superres_keeps_the_low_resolution_content(srvae_run, blob_npz):
    _, model = load_run(srvae_run)
    x = torch.from_numpy(np.load(blob_npz)["x_test"][:32]).permute(0, 3, 1, 2).contiguous()
    y = model.levels(x)[-2]
    torch.manual_seed(0)
    out = super_resolve(model, y)[-1]
    back = model.chain[0](out)
    err = (back.float() - y.float()).abs().mean()
    baseline = (y.float() - y.float().mean()).abs().mean()  # error of predicting a flat image
    assert float(err) < 0.5 * float(baseline), (float(err), float(baseline))
    # and not just a copy: the output has the finer resolution and differs from nearest-neighbour upsampling
    assert out.shape[-1] == 2 * y.shape[-1]
    nearest = y.repeat_interleave(2, -1).repeat_interleave(2, -2)
    assert (out != nearest).float().mean() > 0.5


@torch.no_grad()
def test_reconstruction_modes_use_what_they_are_given(srvae_run, blob_npz):
    """With the means decoded: the more a mode is given, the closer it gets (modes given y beat modes that
    generate it; every mode beats a sample that was given nothing); interpolation starts and ends at the RS1
    reconstructions of its end points; the trade-off's PSNR is the one computed here by hand."""
    from selfvae.evaluation.tradeoff import tradeoff
    from selfvae.models.ops import generate, interpolate, memory_cost, reconstruct

    _, model = load_run(srvae_run)
    x = torch.from_numpy(np.load(blob_npz)["x_test"][:32]).permute(0, 3, 1, 2).contiguous()

    def psnr(a):  # per image, then the mean: the trade-off's definition, written out
        mse = ((a.double() - x.double()) ** 2).flatten(1).mean(1)
        return float((10 * torch.log10(255.0**2 / mse)).mean())

    got = {m: psnr(reconstruct(model, x, m, decode="mean")[-1]) for m in ("rs1", "rs2", "cr", "cg")}
    torch.manual_seed(0)
    nothing = psnr(generate(model, 32, decode="mean")[-1])
    assert min(got.values()) > nothing + 1, (got, nothing)
    # the modes given y (CR, CG) beat those that generate y; (z carries little in so short a training, so RS2
    # is not reliably above RS1 here: docs/RESULTS.md)
    assert min(got["cr"], got["cg"]) > max(got["rs1"], got["rs2"]) + 1, got
    rows = {r["mode"]: r for r in tradeoff(model, [x], decode="mean")}
    for m, value in got.items():
        assert rows[m]["psnr"] == pytest.approx(value, rel=1e-6)
        assert rows[m]["values"] == memory_cost(model, m)["values"]
    assert [rows[m]["values"] for m in ("rs1", "rs2", "cg", "cr")] == [64, 128, 64, 128]  # u, u+z, y, y+z
    path = interpolate(model, x[:3], x[3:6], steps=5)
    assert torch.equal(path[:, 0], reconstruct(model, x[:3], "rs1", decode="mean")[-1])
    assert torch.equal(path[:, -1], reconstruct(model, x[3:6], "rs1", decode="mean")[-1])
    assert not torch.equal(path[:, 2], path[:, 0])


def _write_png(path, arr):
    Image.fromarray(arr).save(path)
    return str(path)


def test_cli_superres_reconstruct_interpolate_tradeoff(srvae_run, blob_npz, tmp_path, capsys):
    rng = np.random.default_rng(0)
    low = [_write_png(tmp_path / f"low{i}.png", rng.integers(0, 256, (8, 8), dtype=np.uint8)) for i in range(2)]
    main(["superres", str(srvae_run), *low, "-o", str(tmp_path / "sr.png"), "--samples", "2"])
    img = Image.open(tmp_path / "sr.png")
    assert img.size[0] > 16 and img.size[1] > 16
    for mode in ("all", "rs1", "rs2", "cr", "cg", "superres", "cond"):
        main(["reconstruct", str(srvae_run), "--mode", mode, "-n", "4", "-o", str(tmp_path / f"rec_{mode}.png")])
        assert (tmp_path / f"rec_{mode}.png").is_file()
    assert "columns: x, y1, rs1, rs2, cr, cg" in capsys.readouterr().out
    one = Image.open(tmp_path / "rec_cg.png")
    wide = Image.open(tmp_path / "rec_all.png")  # x, y1 and four modes side by side vs x, y1 and one mode
    assert wide.size[1] == one.size[1] and wide.size[0] - one.size[0] >= 3 * (2 * 16 + 4)  # 3 more columns
    a = _write_png(tmp_path / "a.png", rng.integers(0, 256, (16, 16), dtype=np.uint8))
    b = _write_png(tmp_path / "b.png", rng.integers(0, 256, (16, 16), dtype=np.uint8))
    main(["interpolate", str(srvae_run), a, b, "--steps", "4", "-o", str(tmp_path / "int.png")])
    assert (tmp_path / "int.png").is_file()
    main(["sample", str(srvae_run), "-n", "4", "--levels", "-o", str(tmp_path / "s.png")])
    assert (tmp_path / "s_levels.png").is_file()
    main(["tradeoff", str(srvae_run), "--limit", "16", "--out", str(tmp_path / "to")])
    rows = (tmp_path / "to" / "tradeoff.csv").read_text().splitlines()
    assert rows[0].startswith("mode,") and len(rows) == 5
    capsys.readouterr()
    main(["eval", str(srvae_run), "--iw-samples", "4", "--limit", "8", "--json", "--seed", "3"])
    m = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    # the command evaluates the first 8 test images with S = 4 and the seed given, as evaluate() does directly
    from selfvae.evaluation.bounds import evaluate

    _, model = load_run(srvae_run)
    x = torch.from_numpy(np.load(blob_npz)["x_test"][:8]).permute(0, 3, 1, 2).contiguous()
    torch.manual_seed(3)
    direct = evaluate(model, [x], 4, progress=False)
    assert m["split"] == "test" and m["n_images"] == 8 and m["iw_samples"] == 4
    assert {k: m[k] for k in direct} == pytest.approx(direct, rel=1e-5)
    main(["eval", str(srvae_run), "--iw-samples", "auto", "--auto-images", "4", "--max-samples", "8",
          "--limit", "8", "--json"])
    m = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    curve = {int(k): v for k, v in m["auto_curve"].items()}
    s = m["iw_samples"]
    assert sorted(curve) == [1, 2, 4, 8] and s == m["iw_samples_chosen"] and m["auto_images"] == 4
    assert abs(curve[s] - curve[8]) < 0.005 and all(abs(curve[k] - curve[8]) >= 0.005 for k in curve if k < s)
    with pytest.raises(SystemExit):
        main(["eval", str(srvae_run), "--iw-samples", "many"])


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["train", "--preset", "no-such-preset"], "unknown preset"),
        (["eval", "/nonexistent/run"], "no such run directory and no pretrained model of that name"),
        (["train", "--preset", "mnist-vae", "--data-dir", "/nonexistent/dir", "--out", "OUT"], "/nonexistent/dir"),
    ],
)
def test_cli_errors_are_one_clear_line(argv, message, tmp_path, capsys):
    argv = [a.replace("OUT", str(tmp_path / "o")) for a in argv]
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("selfvae: error:") and message in err[0], err


def test_cli_superres_of_another_size_doubles_each_whole_image(srvae_run, tmp_path, capsys):
    """An image of any size other than y_K's is super-resolved whole, tile by tile, into a PNG of its own."""
    rng = np.random.default_rng(0)
    one = _write_png(tmp_path / "wide.png", rng.integers(0, 256, (12, 20), dtype=np.uint8))
    main(["superres", str(srvae_run), one, "-o", str(tmp_path / "big.png"), "--decode", "mean"])
    assert "tile by tile" in capsys.readouterr().out
    assert np.asarray(Image.open(tmp_path / "big.png")).shape == (24, 40)
    two = _write_png(tmp_path / "small.png", rng.integers(0, 256, (5, 3), dtype=np.uint8))  # below one tile
    main(["superres", str(srvae_run), one, two, "-o", str(tmp_path / "sr.png"), "--overlap", "0"])
    assert np.asarray(Image.open(tmp_path / "sr_0.png")).shape == (24, 40)
    assert np.asarray(Image.open(tmp_path / "sr_1.png")).shape == (10, 6)
    with pytest.raises(SystemExit):
        main(["superres", str(srvae_run), one, "--overlap", "8"])  # the tile is 8x8: nothing would be left
    assert "overlap 8" in capsys.readouterr().err


def test_tiled_superres_is_the_tiles_own_superres_where_one_tile_covers_the_image(srvae_run):
    from selfvae.models.ops import super_resolve_tiled

    _, model = load_run(srvae_run)
    y = torch.from_numpy(np.random.default_rng(1).integers(0, 256, (1, 8, 14), dtype=np.uint8))
    whole = super_resolve_tiled(model, y, overlap=2, decode="mean")  # tiles at columns 0 and 6
    assert whole.shape == (1, 16, 28) and whole.dtype == torch.uint8
    left = super_resolve(model, y[None, :, :, :8].contiguous(), decode="mean")[-1][0]
    right = super_resolve(model, y[None, :, :, 6:].contiguous(), decode="mean")[-1][0]
    assert torch.equal(whole[:, :, :12], left[:, :, :12])  # columns only the left tile covers: its own pixels
    assert torch.equal(whole[:, :, 16:], right[:, :, 4:])
    blend = whole[:, :, 12:16].float()  # the overlap: between the two tiles' values, pixel by pixel
    lo, hi = torch.minimum(left[:, :, 12:], right[:, :, :4]).float(), torch.maximum(left[:, :, 12:], right[:, :, :4])
    assert bool(((blend >= lo - 0.5) & (blend <= hi.float() + 0.5)).all())
    one = super_resolve_tiled(model, y[:, :, :8].contiguous(), overlap=3, decode="mean")
    assert torch.equal(one, left)  # one tile: exactly the untiled super-resolution


def test_superres_by_4_from_the_coarsest_level_of_a_2_level_model(tmp_path, capsys):
    """Issue 33: --factor 4 where the model has two levels: y_1 given, y_2 and x generated."""
    from selfvae.models.ops import super_resolve_tiled

    _, model = load_run("mnist-2lvl")
    y1 = torch.from_numpy(np.random.default_rng(2).integers(0, 256, (3, 1, 8, 8), dtype=np.uint8))
    torch.manual_seed(0)
    levels = super_resolve(model, y1, decode="mean", level=1)
    assert [tuple(lv.shape[1:]) for lv in levels] == [(1, 8, 8), (1, 16, 16), (1, 32, 32)]
    assert torch.equal(levels[0], y1)  # the given level is kept as it is
    whole = super_resolve_tiled(model, y1[0, :, :, :6].contiguous(), decode="mean", level=1)
    assert whole.shape == (1, 32, 24)
    one = _write_png(tmp_path / "y1.png", np.random.default_rng(3).integers(0, 256, (12, 20), dtype=np.uint8))
    main(["superres", "mnist-2lvl", one, "--factor", "4", "-o", str(tmp_path / "big.png"), "--decode", "mean"])
    assert np.asarray(Image.open(tmp_path / "big.png")).shape == (48, 80)
    with pytest.raises(SystemExit):
        main(["superres", "mnist-srvae", one, "--factor", "4", "-o", str(tmp_path / "no.png")])
    assert "--factor 4: this model enlarges by 2 (from y_1)" in capsys.readouterr().err


def test_cli_eval_consistent_renormalises_a_trained_srvae(srvae_run, capsys):
    """`selfvae eval --consistent`: the same weights, the same posterior samples, a tighter bound in x alone."""
    runs = {}
    for extra in ([], ["--consistent"]):
        main(["eval", str(srvae_run), "--iw-samples", "2", "--limit", "16", "--json", *extra])
        runs[bool(extra)] = json.loads(capsys.readouterr().out)
    plain, consistent = runs[False], runs[True]
    assert consistent["bpd_elbo"] < plain["bpd_elbo"] and consistent["bpd_iw"] < plain["bpd_iw"]
    assert consistent["bpd_iw"] <= consistent["bpd_elbo"]
    assert consistent["re_y1"] == pytest.approx(plain["re_y1"]) and consistent["kl_u"] == pytest.approx(plain["kl_u"])
    assert consistent["re_x"] < plain["re_x"]


def test_cli_eval_refine_measures_the_amortization_gap_of_a_trained_srvae(srvae_run, capsys):
    """`selfvae eval --refine STEPS`: the ELBO with posteriors optimised per image beside the encoders', on the same
    images and draws; after 20 steps the refined bound of this briefly trained srVAE is the lower."""
    main(["eval", str(srvae_run), "--iw-samples", "1", "--limit", "8", "--refine", "20", "--json"])
    m = json.loads(capsys.readouterr().out)
    assert m["refine_steps"] == 20 and m["refine_images"] == 8
    assert m["amortization_gap"] == pytest.approx(m["bpd_elbo_encoders"] - m["bpd_elbo_refined"])
    assert m["bpd_elbo_refined"] < m["bpd_elbo_encoders"]
    assert abs(m["bpd_elbo_encoders"] - m["bpd_elbo"]) < 0.05  # the same bound, by 16 draws an image against 1


def test_cli_eval_on_the_training_split_reads_the_training_images_unaugmented(srvae_run, capsys):
    """`selfvae eval --split train`: the bound on the images the model trained on (not augmented), the same as
    evaluate() on the first images of load_split(cfg, "train"), and not the validation images' bound."""
    from selfvae.data import load_split
    from selfvae.evaluation.bounds import evaluate

    out = {}
    for split in ("train", "val"):
        main(["eval", str(srvae_run), "--split", split, "--iw-samples", "2", "--limit", "8", "--json", "--seed", "1"])
        out[split] = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    cfg, model = load_run(srvae_run)
    x = load_split(cfg, "train").images[:8]
    torch.manual_seed(1)
    direct = evaluate(model, [x], 2, progress=False)
    assert out["train"]["split"] == "train" and out["train"]["n_images"] == 8
    assert {k: out["train"][k] for k in direct} == pytest.approx(direct, rel=1e-5)
    assert out["train"]["bpd_elbo"] != pytest.approx(out["val"]["bpd_elbo"], abs=1e-6)


def test_eval_defaults_to_a_stated_s_and_shows_progress_with_json(srvae_run, capsys):
    """Issue 36: `eval --json` ran S = 512 over the whole test set with no output; now S is stated on stderr (a
    shipped model's measured S, else 64), the bar runs on stderr, and stdout holds only the JSON."""
    main(["eval", str(srvae_run), "--limit", "4", "--json"])
    out, err = capsys.readouterr()
    assert json.loads(out)["iw_samples"] == 64
    assert "S = 64 importance samples (the default" in err and "eval S=64" in err


def test_pictures_go_to_the_models_folder_and_never_over_a_file(srvae_run, tmp_path, capsys):
    """Issue 36: `sample` without -o wrote ./samples.png over an earlier grid; now a picture goes to its default
    name in the run's folder (./NAME for a shipped model), numbered past the ones there, and an existing -o file is
    written over only with --force."""
    for _ in range(2):
        main(["sample", str(srvae_run), "-n", "2"])
    assert (srvae_run / "samples.png").is_file() and (srvae_run / "samples_2.png").is_file()
    target = tmp_path / "mine.png"
    target.write_bytes(b"a user's picture")
    with pytest.raises(SystemExit):
        main(["sample", str(srvae_run), "-n", "2", "-o", str(target)])
    assert "exists; pass --force" in capsys.readouterr().err and target.read_bytes() == b"a user's picture"
    main(["sample", str(srvae_run), "-n", "2", "-o", str(target), "--force"])
    assert Image.open(target).size[0] > 0
