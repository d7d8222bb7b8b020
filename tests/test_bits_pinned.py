"""Bits/dim pinned to a known value: a model whose every likelihood is the uniform distribution over the 256
levels, and whose every posterior equals its prior, has ``-log p = D log 256`` exactly, so 8.000 bits per
joint dimension, in ``evaluate()``, ``selfvae eval --json``, the paper table and the HTML report; bits per
dimension of x are the same nats over x's dimensions only."""

from __future__ import annotations

import json
import math

import pytest
import torch
from conftest import tiny_config

from selfvae.cli import main
from selfvae.data import batches_of, load_split
from selfvae.distributions import DiscretizedLogisticMixture
from selfvae.evaluation.bounds import evaluate
from selfvae.evaluation.rows import run_row
from selfvae.evaluation.table import format_markdown
from selfvae.nn.layers import WNConv2d
from selfvae.runs.checkpoint import load_checkpoint, save_checkpoint
from selfvae.runs.loading import load_run
from selfvae.training.loop import train


def _uniform_log_prob(self, x: torch.Tensor) -> torch.Tensor:
    """log of the uniform distribution over 256 levels, summed over the image: -D log 256 per image (float32
    in a float32 model, hence tolerances of 1e-6)."""
    return torch.full((x.shape[0],), -x[0].numel() * math.log(256.0), dtype=x.dtype)


@pytest.fixture
def uniform(monkeypatch):
    monkeypatch.setattr(DiscretizedLogisticMixture, "log_prob", _uniform_log_prob)


@pytest.fixture(scope="module", params=["", "downscale"])
def flat_run(request, blob_npz, tmp_path_factory):
    """A run whose weights make every conv output 0: every Gaussian is N(0, 1), posteriors equal priors."""
    cfg = tiny_config(blob_npz, request.param, prior="standard", steps=2)
    run = tmp_path_factory.mktemp("flat") / f"flat-{request.param or 'vae'}"
    train(cfg, run, progress=False, final_eval=False)
    state = load_checkpoint(run / "best.pt")
    _, model = load_run(run)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, WNConv2d):
                m.g.zero_()
                m.b.zero_()
    state["model"] = model.state_dict()
    save_checkpoint(state, run / "best.pt")
    return run


def _dims(run) -> tuple[int, int]:
    _, model = load_run(run)
    return model.x_dims, model.joint_dims


def test_evaluate_gives_exactly_8_bits_per_joint_dimension(flat_run, uniform):
    cfg, model = load_run(flat_run)
    d_x, d_joint = _dims(flat_run)
    assert (d_x, d_joint) == ((256, 256) if model.K == 0 else (256, 256 + 64))
    m = evaluate(model, batches_of(load_split(cfg, "test"), 16, 32), 4, progress=False)
    nats = d_joint * math.log(256)  # computed here, not by the code under test
    assert m["nelbo_nats"] == pytest.approx(nats, rel=1e-6) and m["nll_iw_nats"] == pytest.approx(nats, rel=1e-6)
    assert m["bpd_joint_elbo"] == pytest.approx(8.0, abs=1e-6) and m["bpd_joint_iw"] == pytest.approx(8.0, abs=1e-6)
    assert m["bpd_elbo"] == pytest.approx(8.0 * d_joint / d_x, abs=1e-6)  # 8.000 (VAE) or 10.000 (srVAE)
    assert m["kl_u"] == 0 and all(m[k] == 0 for k in m if k.startswith("kl_z"))
    assert m["re_x"] == pytest.approx(d_x * math.log(256))


def test_eval_json_table_and_report_print_the_same_figure(flat_run, uniform, tmp_path, capsys):
    d_x, d_joint = _dims(flat_run)
    want = 8.0 * d_joint / d_x
    main(["eval", str(flat_run), "--iw-samples", "3", "--limit", "16", "--json"])
    m = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert m["bpd_iw"] == pytest.approx(want, abs=1e-6) and m["bpd_joint_iw"] == pytest.approx(8.0, abs=1e-6)
    row = run_row(flat_run, n_eval=16, iw_samples=2, timing=False)
    assert row["bpd_iw"] == pytest.approx(want, abs=1e-6)
    cells = format_markdown([row]).splitlines()[2]
    assert f"| {want:.3f} | {want:.3f} |" in cells  # IWAE and ELBO columns
    main(["report", str(flat_run), "-o", str(tmp_path / "rep"), "--n-eval", "16", "--iw-samples", "2",
          "--n-tradeoff", "16"])
    page = (tmp_path / "rep" / "index.html").read_text()
    assert f"<td>{want:.3f}</td><td>{want:.3f}</td>" in page
