"""The authors' architectures rebuilt for the side-by-side speed benchmark (benchmarks/reference.py) have the
authors' sizes, so the speed-up the benchmark prints compares like with like."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

from reference import REFERENCES  # noqa: E402


@pytest.mark.filterwarnings("ignore:.*weight_norm.*:FutureWarning")
@pytest.mark.parametrize(("name", "millions"), [("authors-vae-realnvp", 34.3), ("authors-srvae", 39.3)])
def test_rebuilt_models_have_the_published_parameter_counts_and_a_finite_loss(name, millions):
    torch.manual_seed(0)
    model = REFERENCES[name]()
    assert round(sum(p.numel() for p in model.parameters()) / 1e6, 1) == millions
    loss = model(torch.randint(0, 256, (2, 3, 32, 32), dtype=torch.uint8))
    loss.backward()
    assert torch.isfinite(loss)
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
