"""The paper-table columns (parameters, generation time, FID) and their formatting; `selfvae fid`."""

from __future__ import annotations

import csv
import json
import math

import numpy as np
import pytest

from selfvae.cli import main
from selfvae.errors import SelfVAEError
from selfvae.evaluation import fid as fidlib
from selfvae.evaluation.rows import paper_row
from selfvae.evaluation.run_fid import cache_dir, run_fid
from selfvae.evaluation.table import MISSING, columns, format_markdown, write_csv
from selfvae.runs.loading import load_run

pytest_plugins = ["conftest_report"]  # fixtures: srvae_tiny, vae_tiny, fake_inception, copy_run


def test_paper_row_keys_params_and_timings(srvae_tiny):
    _, model = load_run(srvae_tiny)
    row = paper_row(model, srvae_tiny, "cpu", repeats=(3, 1))
    assert set(row) == {"params", "gen_time_1_s", "gen_time_100_s"}  # no fid.json yet
    assert row["params"] == sum(p.numel() for p in model.parameters()) > 1000
    assert all(math.isfinite(row[k]) and row[k] > 0 for k in ("gen_time_1_s", "gen_time_100_s"))
    # (how long generation takes is a benchmark's business: benchmarks/bench.py, not an assertion here)


def test_paper_row_reads_fid_json(srvae_tiny, tmp_path, copy_run):
    run = copy_run(srvae_tiny, tmp_path)
    (run / "final" / "fid.json").write_text(json.dumps({"fid": 12.5, "n": 100, "ref": "test"}))
    _, model = load_run(run)
    row = paper_row(model, run, "cpu", repeats=(1, 1))
    assert (row["fid"], row["fid_n"], row["fid_ref"]) == (12.5, 100, "test")


def test_markdown_table_has_paper_columns_per_level_and_dashes():
    rows = [
        {"model": "VAE", "bpd_iw": 3.51, "bpd_elbo": 3.55, "re_x": 5540.0, "kl_u": 1966.0, "fid": 41.36,
         "params": 4_000_000, "gen_time_1_s": 0.01, "gen_time_100_s": 0.2},
        {"model": "3-level", "bpd_iw": 3.7, "bpd_elbo": 3.8, "re_x": 5000.0, "re_y1": 300.0, "re_y2": 1200.0,
         "kl_z1": 400.0, "kl_z2": 600.0, "kl_u": 800.0, "params": 12_000_000},
    ]
    headers = [h for _, h in columns(rows)]
    assert headers[:6] == ["model", "nll bpd (IWAE)", "bpd (ELBO)", "RE_x", "RE_y1", "RE_y2"]
    assert headers[6:9] == ["KL_z1", "KL_z2", "KL_u"] and "FID" in headers and "params" in headers
    md = format_markdown(rows).splitlines()
    assert len(md) == 4 and len({line.count("|") for line in md}) == 1
    vae = [c.strip() for c in md[2].strip("|").split("|")]
    deep = [c.strip() for c in md[3].strip("|").split("|")]
    assert vae[:4] == ["VAE", "3.510", "3.550", "5540"] and vae[4:8] == [MISSING] * 4
    assert vae[headers.index("FID")] == "41.36" and vae[headers.index("params")] == "4.00M"
    assert deep[headers.index("FID")] == MISSING and deep[headers.index("gen time 1 (s)")] == MISSING
    assert deep[headers.index("KL_z2")] == "600"


def test_csv_keeps_raw_values(tmp_path):
    rows = [{"model": "a", "bpd_iw": 1.23456789, "extra": "x"}, {"model": "b", "re_y1": 2.0}]
    with open(write_csv(rows, tmp_path / "t.csv"), newline="") as f:
        got = list(csv.DictReader(f))
    assert [r["model"] for r in got] == ["a", "b"]
    assert float(got[0]["bpd_iw"]) == 1.23456789 and got[1]["bpd_iw"] == "" and got[0]["extra"] == "x"


def test_cache_dir_follows_env(monkeypatch, tmp_path):
    monkeypatch.setenv("SELFVAE_CACHE", str(tmp_path))
    assert cache_dir() == tmp_path / "fid"
    monkeypatch.delenv("SELFVAE_CACHE")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))  # never the real home directory
    assert cache_dir() == tmp_path / "home" / ".cache" / "selfvae" / "fid"


def test_fid_command_with_fake_extractor(srvae_tiny, tmp_path, fake_inception, capsys, copy_run):
    run = copy_run(srvae_tiny, tmp_path)
    main(["fid", str(run), "--n", "40", "--batch-size", "16", "--no-progress"])
    assert "FID" in capsys.readouterr().out
    first = json.loads((run / "final" / "fid.json").read_text())
    assert first["n"] == 40 and first["ref"] == "test" and first["n_ref"] == 64 and first["method"] == "eigh"
    assert math.isfinite(first["fid"]) and first["fid"] > 0
    assert sum(fake_inception) == 64 + 40  # the whole test split once, then the samples
    assert len(list((tmp_path / "cache" / "fid").glob("*.npz"))) == 1
    # Second call: reference statistics come from the cache; same seed -> same samples -> same FID.
    main(["fid", str(run), "--n", "40", "--batch-size", "16", "--no-progress"])
    assert sum(fake_inception) == 64 + 40 + 40
    assert json.loads((run / "final" / "fid.json").read_text())["fid"] == pytest.approx(first["fid"])
    # The table picks it up.
    main(["eval", str(run), "--iw-samples", "2", "--limit", "8", "--json", "--table"])
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert out["fid"] == pytest.approx(first["fid"]) and out["params"] > 0 and out["gen_time_100_s"] > 0


def test_fid_value_matches_manual_computation(srvae_tiny, tmp_path, fake_inception, copy_run):
    """ref=train uses the first N training images; FID equals the Frechet distance of the two feature sets."""
    import torch

    from selfvae.data import load_dataset
    from selfvae.models.ops import generate

    run = copy_run(srvae_tiny, tmp_path)
    r = run_fid(run, n=50, ref="train", batch_size=50, progress=False, seed=3)
    assert r["n_ref"] == 50 and r["ref"] == "train"
    cfg, model = load_run(run)
    d = cfg.data
    ds = load_dataset(d.name, d.root, "train", augment=False, val_fraction=d.val_fraction, seed=d.split_seed)
    ext = fidlib.InceptionFeatures()
    real = fidlib.gaussian_stats(ext(ds.images[:50]).numpy())
    torch.manual_seed(3)
    fake = fidlib.gaussian_stats(ext(generate(model, 50)[-1]).numpy())
    want = fidlib.fid_score(real, fake, method="sqrtm")
    assert r["fid"] == pytest.approx(want, rel=1e-6, abs=1e-9)
    assert not np.isclose(r["fid"], 0.0)
    # against train and against test (the papers report both): kept apart, and both carried by an export
    from selfvae.runs.export import export
    from selfvae.runs.stored import stored_fid

    assert (run / "final" / "fid-train.json").is_file() and not (run / "final" / "fid.json").exists()
    t = run_fid(run, n=50, ref="test", batch_size=50, progress=False, seed=3)
    assert stored_fid(run)["fid"] == t["fid"] != stored_fid(run, "train")["fid"] == r["fid"]
    metrics = json.loads((export(run, tmp_path / "exported") / "metrics.json").read_text())
    assert (metrics["fid"]["ref"], metrics["fid_train"]["ref"]) == ("test", "train")
    assert stored_fid(tmp_path / "exported", "train")["fid"] == r["fid"]
    # each names the weights it sampled and its reference images; weights trained on are not those weights
    from selfvae.runs.records import WeightsUsed, provenance_of, weights_used

    prov = provenance_of(r)
    assert prov.weights == weights_used(model, {"steps": r["steps"]})
    assert (prov.images.split, prov.images.n, prov.images.rule) == ("train", 50, "first")
    assert stored_fid(run, "train", prov.weights)["fid"] == r["fid"]
    assert stored_fid(run, "train", WeightsUsed("0" * 64, r["steps"])) is None


def test_fid_against_both_references_scores_one_set_of_samples(srvae_tiny, tmp_path, fake_inception, copy_run,
                                                               monkeypatch, capsys):
    """``selfvae fid RUN --ref test train``: the samples are drawn (and put through Inception) once, and each FID
    is the one its own call gives (same seed, same samples), written to its own file."""
    from selfvae.evaluation import run_fid as module

    run = copy_run(srvae_tiny, tmp_path)
    alone = {ref: run_fid(run, n=40, ref=ref, batch_size=20, progress=False, seed=5)["fid"]
             for ref in ("test", "train")}
    drawn = []
    sample_batches = module._sample_batches
    monkeypatch.setattr(module, "_sample_batches", lambda *a: drawn.append(a[1]) or sample_batches(*a))
    main(["fid", str(run), "--n", "40", "--batch-size", "20", "--seed", "5", "--ref", "test", "train",
          "--no-progress"])
    assert drawn == [40]
    out = capsys.readouterr().out
    for ref, name in (("test", "fid.json"), ("train", "fid-train.json")):
        stored = json.loads((run / "final" / name).read_text())
        assert stored["fid"] == pytest.approx(alone[ref], rel=1e-9) and f"FID {alone[ref]:.3f}" in out
    assert alone["test"] != alone["train"]
    from selfvae.evaluation.rows import run_row
    from selfvae.evaluation.table import format_markdown

    row = run_row(run, n_eval=None, timing=False)  # the comparison table shows both, as the papers do
    assert (row["fid"], row["fid_train"]) == (pytest.approx(alone["test"]), pytest.approx(alone["train"]))
    header, _, cells = format_markdown([row]).splitlines()
    assert "| FID | FID (train) |" in header and f"| {alone['test']:.2f} | {alone['train']:.2f} |" in cells


@pytest.mark.parametrize("cmd", ["fid", "report", "compare"])
def test_non_run_directory_is_one_line_error(cmd, tmp_path, capsys):
    (tmp_path / "notes.txt").write_text("not a run")
    with pytest.raises(SystemExit) as e:
        main([cmd, str(tmp_path)])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "selfvae: error:" in err and "not a selfvae run directory" in err


def test_run_fid_rejects_bad_arguments(srvae_tiny):
    with pytest.raises(SelfVAEError, match="--ref"):
        run_fid(srvae_tiny, n=10, ref="val", progress=False)
    with pytest.raises(SelfVAEError, match="--n 1"):
        run_fid(srvae_tiny, n=1, progress=False)


def test_kid_beside_fid_uses_the_references_features_and_leaves_the_fid_as_it_was(srvae_tiny, tmp_path,
                                                                                  fake_inception, copy_run, capsys):
    run = copy_run(srvae_tiny, tmp_path)
    plain = run_fid(run, n=40, ref="test", batch_size=20, progress=False, seed=5, cache=tmp_path / "c1")
    main(["fid", str(run), "--n", "40", "--batch-size", "20", "--seed", "5", "--kid", "--no-progress"])
    stored = json.loads((run / "final" / "fid.json").read_text())
    assert stored["fid"] == pytest.approx(plain["fid"], rel=1e-6) and "KID" in capsys.readouterr().out
    assert math.isfinite(stored["kid"]) and stored["kid_std"] >= 0 and stored["kid_subset_size"] <= 40
