"""`selfvae report` (one self-contained HTML page per run) and `selfvae compare` (several runs)."""

from __future__ import annotations

import base64
import csv
import io
import re

import pytest
from PIL import Image

from selfvae.cli import main
from selfvae.compare import compare
from selfvae.errors import SelfVAEError
from selfvae.report import SECTIONS, build_report

pytest_plugins = ["conftest_report"]  # fixtures: srvae_tiny, vae_tiny, fake_inception, copy_run

DATA_URI = re.compile(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"')


def sections(page: str) -> dict[str, str]:
    """``id -> inner HTML`` of every ``<section>``."""
    return dict(re.findall(r'<section id="([\w-]+)">(.*?)</section>', page, flags=re.S))


def decoded_images(fragment: str) -> list[Image.Image]:
    out = []
    for b64 in DATA_URI.findall(fragment):
        img = Image.open(io.BytesIO(base64.b64decode(b64)))
        img.load()  # really decodes (raises on a broken PNG)
        out.append(img)
    return out


def test_report_of_a_selfvae_has_every_section_with_images(srvae_tiny, tmp_path, capsys):
    main(["report", str(srvae_tiny), "-o", str(tmp_path / "rep")])
    assert "index.html" in capsys.readouterr().out
    page = (tmp_path / "rep" / "index.html").read_text()
    got = sections(page)
    assert list(got) == [sid for sid, _ in SECTIONS]
    for sid, title in SECTIONS:
        assert f"<h2>{title}</h2>" in got[sid]
    assert "http" not in DATA_URI.sub("", page).replace("http-equiv", "")  # nothing fetched from outside
    # Every picture section shows pictures (no "skipped" notes for a K = 1 model with its test data).
    counts = {sid: len(decoded_images(got[sid])) for sid in got}
    assert counts["config"] == 0 and counts["table"] == 0
    assert counts["curves"] == 1 and counts["samples"] == 1 and counts["tradeoff"] == 1
    assert counts["chain"] == 2  # y_1 and x
    assert counts["superres"] == 5  # input, 3 samples, original
    assert counts["reconstructions"] == 6  # original, y1, RS1, RS2, CR, CG
    assert counts["interpolations"] == 4  # four pairs
    for label in ("original x", "y1 = d(x)", "RS1: u", "RS2: u, z1", "CR: y1, z1", "CG: y1 (super-res.)"):
        assert f">{label}<" in got["reconstructions"]
    assert '"transforms": "downscale"' in got["config"]
    assert "RE_y1" in got["table"] and "final/metrics.json" in got["table"]
    # Super-resolution rows: 8 images each, all resized to the size of x.
    sr = decoded_images(got["superres"])
    assert len({im.size for im in sr}) == 1


def test_report_of_a_plain_vae_notes_what_does_not_apply(vae_tiny, tmp_path, copy_run):
    page = build_report(copy_run(vae_tiny, tmp_path), n_eval=32, iw_samples=2).read_text()
    got = sections(page)
    assert list(got) == [sid for sid, _ in SECTIONS]
    assert "plain VAE" in got["chain"] and not decoded_images(got["chain"])
    assert "plain VAE" in got["superres"] and not decoded_images(got["superres"])
    assert ">RS1: u<" in got["reconstructions"] and "RS2" not in got["reconstructions"]
    assert "evaluated now (test, 32 images, S=2)" in got["table"]
    assert len(decoded_images(page)) >= 5


def test_report_reuses_tradeoff_csv(srvae_tiny, tmp_path, copy_run):
    run = copy_run(srvae_tiny, tmp_path)
    (run / "tradeoff").mkdir()
    rows = [{"mode": "rs1", "latent_values": 64, "y_values": 0, "values": 64, "fraction": 0.25,
             "mse": 1234.5, "psnr": 17.25, "n_images": 10}]
    with open(run / "tradeoff" / "tradeoff.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    got = sections(build_report(run).read_text())
    assert "1234.50" in got["tradeoff"] and "from tradeoff/tradeoff.csv" in got["tradeoff"]
    assert (run / "report" / "index.html").is_file()


def test_report_without_test_data_still_builds(srvae_tiny, tmp_path, copy_run):
    run = copy_run(srvae_tiny, tmp_path)
    cfg = (run / "config.json").read_text()
    (run / "config.json").write_text(re.sub(r'"root": "[^"]*"', f'"root": "{tmp_path / "gone.npz"}"', cfg))
    got = sections(build_report(run).read_text())
    assert "test images not available" in got["superres"] and "test images not available" in got["interpolations"]
    assert len(decoded_images(got["samples"])) == 1 and len(decoded_images(got["chain"])) == 2


def test_compare_two_runs(srvae_tiny, vae_tiny, tmp_path, capsys):
    out = tmp_path / "cmp"
    main(["compare", str(srvae_tiny), str(vae_tiny), "-o", str(out), "--n-eval", "32", "--iw-samples", "2"])
    printed = capsys.readouterr().out
    assert "| srvae |" in printed and "| vae |" in printed
    md = (out / "table.md").read_text()
    assert md.count("\n| srvae |") == 1 and md.count("\n| vae |") == 1 and "RE_y1" in md
    with open(out / "table.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["model"] for r in rows] == ["srvae", "vae"]
    assert all(float(r["bpd_iw"]) > 0 and float(r["bpd_elbo"]) > 0 for r in rows)
    assert rows[1]["source"].startswith("evaluated now") and rows[0]["source"].startswith("final/metrics.json")
    assert rows[1]["re_y1"] == "" and float(rows[0]["re_y1"]) > 0
    plot = Image.open(out / "compare.png")
    assert plot.size[0] > 500
    page = (out / "index.html").read_text()
    assert len(decoded_images(page)) == 1 and "srvae" in page and "vae" in page


def test_compare_without_evaluation_shows_dashes(srvae_tiny, vae_tiny, tmp_path):
    r = compare([srvae_tiny, vae_tiny], tmp_path / "c", n_eval=None, timing=False)
    vae_line = [line for line in r["markdown"].read_text().splitlines() if line.startswith("| vae |")][0]
    cells = [c.strip() for c in vae_line.strip("|").split("|")]
    assert cells[1:4] == ["-", "-", "-"]  # no bounds, no RE_x
    assert r["rows"][1]["params"] > 0 and "gen_time_1_s" not in r["rows"][1]


def test_compare_labels_same_named_runs_by_path(srvae_tiny, tmp_path, copy_run):
    a = copy_run(srvae_tiny, tmp_path / "a")
    b = copy_run(srvae_tiny, tmp_path / "b")
    r = compare([a, b], tmp_path / "c", timing=False)
    assert [row["model"] for row in r["rows"]] == [str(a), str(b)]


def test_compare_bad_inputs(tmp_path, srvae_tiny):
    with pytest.raises(SelfVAEError, match="no such run directory"):
        compare([srvae_tiny, tmp_path / "missing"], tmp_path / "c")
    (tmp_path / "r").mkdir()
    (tmp_path / "r" / "config.json").write_text("{}")
    with pytest.raises(SelfVAEError, match="no checkpoint"):
        build_report(tmp_path / "r")


def test_the_report_command_says_what_it_is_doing(srvae_tiny, tmp_path, capsys):
    """Issue 36: `report` ran for minutes without a word; each part now announces itself on stderr."""
    main(["report", str(srvae_tiny), "-o", str(tmp_path / "rep")])
    err = capsys.readouterr().err
    for stage in ("bounds", "samples", "super-resolution", "memory/quality trade-off"):
        assert f"report: {stage}" in err
    assert (tmp_path / "rep" / "index.html").is_file()
