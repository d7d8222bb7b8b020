"""Fixtures for the report/table/compare tests: two tiny trained runs and a cheap stand-in for Inception.

Loaded with ``pytest_plugins = ["conftest_report"]`` by ``tests/test_report.py`` and ``tests/test_table.py``.
Tests that write into a run directory (``fid.json``, ``report/``) work on a copy (fixture ``copy_run``).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
from conftest import tiny_config

from selfvae.training.loop import train


@pytest.fixture(scope="session")
def srvae_tiny(blob_npz, tmp_path_factory) -> Path:
    """A downscale selfVAE (K = 1) trained for 20 steps, with ``final/metrics.json``."""
    out = tmp_path_factory.mktemp("runs") / "srvae"
    train(tiny_config(blob_npz, "downscale", steps=20), out, progress=False)
    return out


@pytest.fixture(scope="session")
def vae_tiny(blob_npz, tmp_path_factory) -> Path:
    """A plain VAE (K = 0) trained for 20 steps *without* the final evaluation (no ``final/metrics.json``)."""
    out = tmp_path_factory.mktemp("runs") / "vae"
    train(tiny_config(blob_npz, "", steps=20), out, progress=False, final_eval=False)
    return out


@pytest.fixture
def copy_run():
    """``copy_run(run, dest)``: a private copy ``dest/run.name`` of a run directory (so a test may write into it)."""

    def copy(run: Path, dest: Path) -> Path:
        return Path(shutil.copytree(run, dest / run.name))

    return copy


class FakeInception:
    """Deterministic 17-d features (4x4 average-pooled intensity + mean) in place of the 2048-d Inception.

    Same constructor and call signature as :class:`selfvae.evaluation.fid.InceptionFeatures`; ``log`` (a list
    given by the fixture) records the number of images of every call.
    """

    weights_hash = "fake-inception-for-tests"

    def __init__(self, weights=None, device="cpu", batch_size=50, log: list[int] | None = None) -> None:
        self.log = log if log is not None else []

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        assert images.dtype == torch.uint8 and images.ndim == 4
        self.log.append(images.shape[0])
        x = images.double().mean(1, keepdim=True) / 255
        pooled = torch.nn.functional.adaptive_avg_pool2d(x, 4).flatten(1)
        return torch.cat([pooled, x.flatten(1).mean(1, keepdim=True)], 1)


@pytest.fixture
def fake_inception(monkeypatch, tmp_path) -> list[int]:
    """Replace the Inception network by :class:`FakeInception`, cache in ``tmp_path``; returns the call log."""
    from selfvae.evaluation import fid

    log: list[int] = []
    monkeypatch.setattr(fid, "InceptionFeatures", lambda *a, **kw: FakeInception(*a, log=log, **kw))
    monkeypatch.setenv("SELFVAE_CACHE", str(tmp_path / "cache"))
    return log
