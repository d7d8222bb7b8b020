"""Posteriors optimised per image (selfvae.evaluation.refine) against the exact marginal likelihood of a model with
one-dimensional latents: the refined bound is still a bound, and closes most of the encoders' gap to log p(x)."""

from __future__ import annotations

import math

import pytest
import torch
from test_bounds_truth import images, one_d_model, truth

from selfvae.evaluation.refine import amortization_gap, mean_nelbo, refine


@pytest.mark.parametrize("transforms", ["", "downscale"])
def test_terms_given_the_encoders_posteriors_are_the_terms(transforms):
    model = one_d_model(transforms)
    x = images(4, 3)
    torch.manual_seed(0)
    a = model.terms(x, n_samples=3).nelbo
    torch.manual_seed(0)
    b = model.terms(x, n_samples=3, q=model.posteriors(x)).nelbo
    assert torch.equal(a, b)


@pytest.mark.parametrize("transforms", ["", "downscale"])
def test_refined_posteriors_stay_a_bound_and_close_most_of_the_gap(transforms):
    """Against log p(x) by integration: the encoders' ELBO is > 1 nat below it (test_bounds_truth); the refined
    posteriors' ELBO (20000 draws) is above the encoders' by at least half that gap and below log p(x)."""
    model = one_d_model(transforms)
    for i in range(2):
        x = images(1, 10 + i)
        log_p, elbo = truth(model, x)
        torch.manual_seed(i)
        q = refine(model, x, steps=300, lr=0.05, samples=8)
        torch.manual_seed(100 + i)
        nelbo = model.terms(x, n_samples=20000, q=q).nelbo.detach()
        refined, se = -float(nelbo.mean()), float(nelbo.std()) / math.sqrt(nelbo.numel())
        assert refined < log_p + 4 * se, (refined, log_p, se)
        assert refined > elbo + 0.5 * (log_p - elbo), (refined, elbo, log_p)


def test_refining_moves_only_the_posteriors():
    """The model's weights neither change nor get gradients; zero steps give the encoders' posteriors, whose gap
    is then exactly zero on the same draws."""
    model = one_d_model("downscale")
    x = images(3, 5)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    torch.manual_seed(0)
    q = refine(model, x, steps=5)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert all(p.grad is None for p in model.parameters())
    with torch.no_grad():  # as refine() starts from them (with gradients on, the last bits of a kernel differ)
        enc = model.posteriors(x)
    assert set(q) == {"u", "z1"} and not torch.equal(q["u"].mu, enc["u"].mu)
    same = refine(model, x, steps=0)
    assert all(torch.equal(same[k].mu, enc[k].mu) and torch.equal(same[k].logvar, enc[k].logvar) for k in enc)
    assert torch.equal(mean_nelbo(model, x, 4, 7), mean_nelbo(model, x, 4, 7, same))
    m = amortization_gap(model, [x], steps=0, eval_samples=4, progress=False)
    assert m["amortization_gap"] == 0 and m["refine_images"] == 3
