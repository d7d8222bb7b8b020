"""Renormalising p(x | y, z) onto the images with d(x) = y (``ModelConfig.consistent``): the block-sum mass of
``Downscale.log_mass_consistent`` against a direct convolution, the renormalised likelihood sums to one over the
consistent images, and the model's bound with it is tighter, valid-shaped and trainable."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
from conftest import tiny_config

from selfvae.distributions import DiscretizedLogisticMixture
from selfvae.errors import SelfVAEError
from selfvae.models.selfvae import SelfVAE
from selfvae.nn.layers import data_dependent_init
from selfvae.transforms import build_transform


def random_dlm(h: int, w: int, seed: int, centre: float = 0.0, spread: float = 1.0, log_scale: float = -2.5,
               n_mix: int = 3) -> DiscretizedLogisticMixture:
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(1, n_mix, h, w, generator=g, dtype=torch.float64)
    locs = centre + spread * (2 * torch.rand(1, n_mix, h, w, generator=g, dtype=torch.float64) - 1)
    scales = log_scale + 0.5 * torch.randn(1, n_mix, h, w, generator=g, dtype=torch.float64)
    return DiscretizedLogisticMixture(torch.cat([logits, locs, scales], 1), 1, n_mix)


@pytest.mark.parametrize("factor", [2, 3])
def test_block_mass_is_the_convolution_of_the_coding_tables(factor):
    """Against numpy's direct convolution of the full 256-way coding tables (``bin_probs``, another code path),
    for y values that fall in every window class (0, small, middle, near and at 255)."""
    ys = [0, 1, 3, 20, 100, 128, 200, 250, 254, 255]
    h = w = factor * len(ys)
    p = random_dlm(h, w, seed=factor)
    y = torch.tensor(ys, dtype=torch.uint8).view(1, 1, -1).expand(1, len(ys), len(ys)).contiguous()
    d = build_transform(f"downscale:{factor}")
    tables = p.bin_probs(0)[0].numpy()  # [H, W, 256]
    n = factor * factor
    for i, j in itertools.product(range(len(ys)), range(len(ys))):  # block by block
        s = np.ones(1)
        for a, b in itertools.product(range(factor), range(factor)):
            s = np.convolve(s, tables[factor * i + a, factor * j + b])
        lo = n * int(y[0, i, j]) - n // 2
        want = s[max(lo, 0): lo + n].sum()
        block = DiscretizedLogisticMixture(p.params[:, :, factor * i : factor * (i + 1), factor * j : factor * (j + 1)],
                                           1, p.n_mix)
        got = d.log_mass_consistent(block, y[:, i : i + 1, j : j + 1]).exp().item()
        assert want <= got <= want + 2e-13  # never below the exact mass (the bound stays valid), and close to it


def test_float32_training_path_agrees_where_block_masses_are_not_tiny():
    """Training computes the masses in float32 (each raised by 1e-6); with broad pixel distributions, as early in
    training, it matches float64 within 0.003 nats a block."""
    p = random_dlm(8, 8, seed=5, log_scale=-0.5)
    y = torch.randint(0, 256, (1, 4, 4), generator=torch.Generator().manual_seed(0), dtype=torch.int64).to(torch.uint8)
    d = build_transform("downscale")
    exact = d.log_mass_consistent(p, y, torch.float64)
    assert d.log_mass_consistent(p, y, torch.float32).item() == pytest.approx(exact.item(), abs=16 * 3e-3)
    assert exact.item() < -16 * 1.0  # masses of a few per mille: not a trivial agreement near log 1 = 0


@pytest.mark.parametrize("y, centre, top", [(0, -1.0, 1), (1, -0.97, 5), (255, 1.0, 255)])
def test_renormalised_likelihood_sums_to_one_over_the_consistent_images(y, centre, top):
    """Every 2x2 image whose box average is y, enumerated: sum of p(x) / P(d(x) = y) is 1."""
    p = random_dlm(2, 2, seed=y, centre=centre, spread=0.02, log_scale=-4.0)
    d = build_transform("downscale")
    values = range(max(0, top - 5), top + 1)
    images = [v for v in itertools.product(values, repeat=4) if (sum(v) + 2) // 4 == y]
    x = torch.tensor(images, dtype=torch.uint8).view(-1, 1, 2, 2)
    assert torch.equal(d(x), torch.full((len(images), 1, 1, 1), y, dtype=torch.uint8))
    params = p.params.expand(len(images), -1, -1, -1)
    log_p = DiscretizedLogisticMixture(params, 1, 3).log_prob(x.double() / 255.0)
    log_mass = d.log_mass_consistent(p, torch.full((1, 1, 1), y, dtype=torch.uint8))
    total = torch.logsumexp(log_p, 0) - log_mass[0]
    assert total.item() == pytest.approx(0.0, abs=1e-4)
    assert log_mass.item() < -1e-3  # the constraint does cut mass: the renormalisation is not a no-op


def consistent_pair(transforms: str) -> tuple[SelfVAE, SelfVAE]:
    torch.manual_seed(0)
    cfg = tiny_config(None, transforms).model
    model = SelfVAE(cfg)
    x = torch.randint(0, 256, (16, 1, 16, 16), dtype=torch.uint8)
    data_dependent_init(model, lambda: model.terms(x))
    cfg2 = type(cfg)(**{**cfg.__dict__, "consistent": True})
    twin = SelfVAE(cfg2)
    twin.load_state_dict(model.state_dict())
    return model.double().eval(), twin.double().eval()


@pytest.mark.parametrize("transforms", ["downscale", "downscale,downscale"])
def test_consistent_bound_is_the_plain_one_plus_each_levels_log_mass(transforms, rand_images):
    plain, consistent = consistent_pair(transforms)
    x = rand_images(5)
    torch.manual_seed(3)
    t0 = plain.terms(x, analytic_kl=False)
    torch.manual_seed(3)
    t1 = consistent.terms(x, analytic_kl=False)
    torch.testing.assert_close(t1.kl_u, t0.kl_u)
    torch.testing.assert_close(t1.kl_z, t0.kl_z)
    torch.testing.assert_close(t1.re[:, 0], t0.re[:, 0])  # p(y_1 | u) has nothing to renormalise
    gain = t0.re[:, 1:] - t1.re[:, 1:]
    assert (gain > 0).all()  # each level's likelihood gives its consistent images more mass
    levels = plain.levels(x)  # rebuild the gain of the finest level by hand
    torch.manual_seed(3)
    plain.q_u_given(levels[0]).rsample()
    zs = [plain.q_z_given(k, levels[k + 1]).rsample() for k in range(plain.K)]
    k = plain.K - 1
    p = plain.p_x[k](plain.inp(levels[k]), zs[k])
    want = -plain.chain[0].log_mass_consistent(p, levels[k][:, 0])
    torch.testing.assert_close(gain[:, -1], want)


def test_consistent_training_step_has_finite_gradients_and_lowers_the_loss(rand_images):
    _, model = consistent_pair("downscale")
    model = model.float().train()
    x = rand_images(16)
    opt = torch.optim.Adamax(model.parameters(), lr=2e-3)
    losses = []
    for _ in range(15):
        torch.manual_seed(0)
        loss = model(x)
        opt.zero_grad()
        loss.backward()
        assert all(torch.isfinite(q.grad).all() for q in model.parameters() if q.grad is not None)
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0] - 0.05


def test_consistent_needs_a_renormalisable_transform():
    cfg = tiny_config(None, "sketch").model
    cfg.consistent = True
    with pytest.raises(SelfVAEError, match="model.consistent"):
        SelfVAE(cfg)
    with pytest.raises(SelfVAEError, match="cannot renormalise"):
        build_transform("sketch").log_mass_consistent(random_dlm(2, 2, 0), torch.zeros(1, 1, 1, dtype=torch.uint8))


@pytest.mark.parametrize("transforms", ["downscale", "downscale,downscale"])
def test_a_consistent_model_samples_images_whose_downscaling_is_y(transforms):
    """Generation from a consistent model draws each level from the renormalised likelihood: every level is
    exactly d of the level below it, which the plain per-pixel sampling almost never gives."""
    from selfvae.models.ops import generate

    plain, consistent = consistent_pair(transforms)
    for model, exact in ((consistent, True), (plain, False)):
        torch.manual_seed(0)
        levels = generate(model.float(), 6)
        agree = [torch.equal(model.chain[model.K - 1 - k](levels[k + 1]), levels[k]) for k in range(model.K)]
        assert all(agree) if exact else not any(agree)


def test_block_sampling_follows_the_renormalised_conditionals():
    """Empirical frequencies of one block's first pixel against its conditional table (y = 1: sums 2..5)."""
    from selfvae.renormalise import BlockConstraint

    p = random_dlm(2, 2, seed=7, centre=-0.98, spread=0.02, log_scale=-4.0)
    probs = p.bin_probs(0).numpy()
    bc = BlockConstraint(np.repeat(probs, 20000, 0), np.ones((20000, 1, 1), np.int64), 2)
    draws = bc.sample(np.random.default_rng(0))
    assert ((draws.reshape(20000, -1).sum(1) + 2) // 4 == 1).all()
    freq = np.bincount(draws[:, 0, 0], minlength=256) / 20000
    want = bc.table(0, np.zeros((1, 1, 1), np.int64))[0, 0, 0]
    assert np.abs(freq - want).max() < 0.02 and want[:6].sum() > 0.999


def test_tempered_mixture_scales_every_logistic_and_keeps_the_rest():
    p = random_dlm(3, 3, seed=1)
    t = p.tempered(0.5)
    assert p.tempered(1.0) is p
    torch.testing.assert_close(t.log_scales, p.log_scales + math.log(0.5))
    torch.testing.assert_close(t.locs, p.locs)
    torch.testing.assert_close(t.logits, p.logits)
