"""Maths checks for selfvae.distributions: normalisation, edge cases, sampling law, Gaussian KL."""

from __future__ import annotations

import math

import pytest
import torch

from selfvae.distributions import DiagonalGaussian, DiscretizedLogisticMixture
from selfvae.errors import SelfVAEError

GRID = torch.arange(256, dtype=torch.float64) / 255.0


def _random_params(channels: int, n_mix: int, h: int = 1, w: int = 1, seed: int = 0, extreme: bool = False):
    g = torch.Generator().manual_seed(seed)
    n = DiscretizedLogisticMixture.n_params(channels, n_mix)
    p = torch.randn(1, n, h, w, generator=g, dtype=torch.float64)
    m, c = n_mix, channels
    p[:, m : m + c * m] *= 0.7  # locations in [-1, 1] units
    if extreme:
        p[:, :m] *= 20.0
        p[:, m : m + c * m] *= 10.0
        p[:, m + c * m : m + 2 * c * m] = torch.where(p[:, m + c * m : m + 2 * c * m] > 0, 6.0, -12.0)
    else:
        p[:, m + c * m : m + 2 * c * m] = p[:, m + c * m : m + 2 * c * m] * 1.5 - 2.5  # log-scales
    return p


def _chi2_ok(counts: torch.Tensor, probs: torch.Tensor) -> tuple[float, int]:
    """Chi-square of counts vs probs, bins with expected < 5 merged into one; returns (stat, dof)."""
    n = counts.sum()
    exp = probs * n
    big = exp >= 5
    obs_b = torch.cat([counts[big], counts[~big].sum().view(1)])
    exp_b = torch.cat([exp[big], exp[~big].sum().view(1)])
    keep = exp_b > 0
    stat = (((obs_b - exp_b) ** 2)[keep] / exp_b[keep]).sum().item()
    return stat, int(keep.sum().item()) - 1


def _chi2_threshold(dof: int) -> float:
    return dof + 6.0 * math.sqrt(2.0 * dof) + 10.0  # ~6 sigma: fails only on a real mismatch


# ------------------------------------------------------------------ layout / validation


def test_n_params():
    assert DiscretizedLogisticMixture.n_params(3, 10) == 100
    assert DiscretizedLogisticMixture.n_params(1, 10) == 30
    assert DiscretizedLogisticMixture.n_params(2, 5) == 25
    with pytest.raises(SelfVAEError):
        DiscretizedLogisticMixture(torch.zeros(1, 7, 2, 2), channels=3, n_mix=10)


def test_wrong_x_shape_raises():
    d = DiscretizedLogisticMixture(torch.zeros(2, 30, 4, 4), channels=1)
    with pytest.raises(SelfVAEError):
        d.log_prob(torch.zeros(2, 3, 4, 4))


# ------------------------------------------------------------------ normalisation


@pytest.mark.parametrize("extreme", [False, True])
def test_dlm_c1_normalises_over_256_values(extreme):
    p = _random_params(1, 5, h=2, w=3, extreme=extreme)
    d = DiscretizedLogisticMixture(p.expand(256, -1, -1, -1), channels=1, n_mix=5)
    x = GRID.view(256, 1, 1, 1).expand(256, 1, 2, 3)
    lp = d.log_prob_per_dim(x)  # [256, 2, 3]
    assert torch.isfinite(lp).all()
    total = lp.exp().sum(dim=0)
    torch.testing.assert_close(total, torch.ones_like(total), atol=1e-4, rtol=0)


def test_dlm_c2_independent_channels_normalise_jointly():
    p = _random_params(2, 4, seed=3)
    xa, xb = torch.meshgrid(GRID, GRID, indexing="ij")
    x = torch.stack([xa.reshape(-1), xb.reshape(-1)], dim=1).view(-1, 2, 1, 1)
    d = DiscretizedLogisticMixture(p.expand(x.shape[0], -1, -1, -1), channels=2, n_mix=4)
    total = d.log_prob(x).exp().sum().item()
    assert abs(total - 1.0) < 1e-4


def _rgb_reference_marginal_rg(p: torch.Tensor, n_mix: int, r: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """p(r, g) = sum_k pi_k p_k(r) p_k(g | r) built from 1-channel single-component DLMs."""
    m = n_mix
    logits = p[0, :m, 0, 0]
    locs = p[0, m : 4 * m, 0, 0].view(3, m)
    ls = p[0, 4 * m : 7 * m, 0, 0].view(3, m)
    alpha = torch.tanh(p[0, 7 * m : 8 * m, 0, 0])
    logw = torch.log_softmax(logits, 0)
    out = torch.full(r.shape, -math.inf, dtype=torch.float64)
    for k in range(m):
        pr = torch.zeros(r.shape[0], 3, 1, 1, dtype=torch.float64)  # [logit, loc, log_scale]
        pr[:, 1] = locs[0, k]
        pr[:, 2] = ls[0, k]
        lr = DiscretizedLogisticMixture(pr, channels=1, n_mix=1).log_prob(r.view(-1, 1, 1, 1))
        pg = pr.clone()
        pg[:, 1] = (locs[1, k] + alpha[k] * (r * 2 - 1)).view(-1, 1, 1)
        pg[:, 2] = ls[1, k]
        lg = DiscretizedLogisticMixture(pg, channels=1, n_mix=1).log_prob(g.view(-1, 1, 1, 1))
        out = torch.logaddexp(out, logw[k] + lr + lg)
    return out


@pytest.mark.parametrize("extreme", [False, True])
def test_dlm_rgb_normalises(extreme):
    """Full 256^3 enumeration is too slow for a unit test (~2 min on 2 cores), so check it in two exact
    steps: (1) sum_b p(r, g, b) equals the coupled marginal p(r, g) for 512 (r, g) pairs incl. the corners,
    and (2) that marginal sums to 1 over all 65536 (r, g) pairs."""
    m = 6
    p = _random_params(3, m, seed=7, extreme=extreme)
    g = torch.Generator().manual_seed(1)
    r_idx = torch.cat([torch.tensor([0, 0, 255, 255, 128]), torch.randint(0, 256, (507,), generator=g)])
    g_idx = torch.cat([torch.tensor([0, 255, 0, 255, 3]), torch.randint(0, 256, (507,), generator=g)])
    n_pairs = r_idx.shape[0]
    r = GRID[r_idx].repeat_interleave(256)
    gg = GRID[g_idx].repeat_interleave(256)
    b = GRID.repeat(n_pairs)
    x = torch.stack([r, gg, b], dim=1).view(-1, 3, 1, 1)
    d = DiscretizedLogisticMixture(p.expand(x.shape[0], -1, -1, -1), channels=3, n_mix=m)
    lp = d.log_prob(x)
    assert torch.isfinite(lp).all()
    sum_b = torch.logsumexp(lp.view(n_pairs, 256), dim=1)
    ref = _rgb_reference_marginal_rg(p, m, GRID[r_idx], GRID[g_idx])
    torch.testing.assert_close(sum_b.exp(), ref.exp(), atol=1e-6, rtol=1e-4)

    ra, ga = torch.meshgrid(GRID, GRID, indexing="ij")
    total = _rgb_reference_marginal_rg(p, m, ra.reshape(-1), ga.reshape(-1)).exp().sum().item()
    assert abs(total - 1.0) < 1e-4


# ------------------------------------------------------------------ numerical robustness


@pytest.mark.parametrize("channels", [1, 3])
def test_dlm_finite_at_extremes(channels):
    m = 4
    n = DiscretizedLogisticMixture.n_params(channels, m)
    params = torch.stack(
        [
            torch.full((n, 2, 2), 0.0),
            torch.full((n, 2, 2), 100.0),
            torch.full((n, 2, 2), -100.0),
        ]
    )
    params[1, m + channels * m : m + 2 * channels * m] = -50.0  # tiny scales, far-away means
    params[2, m + channels * m : m + 2 * channels * m] = 50.0  # huge scales
    params.requires_grad_(True)
    x = torch.zeros(3, channels, 2, 2)
    x[:, :, 0, 0] = 1.0
    x[:, :, 1, 1] = 128 / 255
    d = DiscretizedLogisticMixture(params, channels=channels, n_mix=m)
    lp = d.log_prob(x)
    assert torch.isfinite(lp).all()
    assert (lp <= 1e-6).all()
    lp.sum().backward()
    assert torch.isfinite(params.grad).all()


def test_dlm_edge_bins_take_the_tails():
    # a component centred far below 0 puts (almost) all mass on x = 0, far above 255 on x = 1
    p = torch.zeros(2, 3, 1, 1)
    p[0, 1], p[1, 1] = -5.0, 5.0
    p[:, 2] = -3.0
    d = DiscretizedLogisticMixture(p, channels=1, n_mix=1)
    lp = d.log_prob(torch.tensor([0.0, 1.0]).view(2, 1, 1, 1))
    assert (lp > -1e-6).all()


# ------------------------------------------------------------------ sampling / summaries


def test_dlm_c1_sample_histogram_matches_log_prob():
    torch.manual_seed(0)
    p = _random_params(1, 3, seed=11).float()
    p[0, 6:9, 0, 0] = torch.tensor([-2.0, -3.0, -1.5])
    n = 100_000
    d = DiscretizedLogisticMixture(p.expand(n, -1, -1, -1), channels=1, n_mix=3)
    s = d.sample()
    k = torch.round(s * 255).long().view(-1)
    assert torch.allclose(s.view(-1) * 255, k.float(), atol=1e-4)
    counts = torch.bincount(k, minlength=256).double()
    d1 = DiscretizedLogisticMixture(p.double().expand(256, -1, -1, -1), channels=1, n_mix=3)
    probs = d1.log_prob(GRID.view(256, 1, 1, 1)).exp()
    stat, dof = _chi2_ok(counts, probs)
    assert dof > 10
    assert stat < _chi2_threshold(dof), (stat, dof)


def test_dlm_rgb_sample_law_matches_log_prob():
    torch.manual_seed(1)
    m = 3
    p = _random_params(3, m, seed=5)
    p[0, m * 4 : m * 7] = -3.5  # narrow components: a few hundred likely triples
    n = 100_000
    d = DiscretizedLogisticMixture(p.float().expand(n, -1, -1, -1), channels=3, n_mix=m)
    s = d.sample()
    assert s.shape == (n, 3, 1, 1)
    k = torch.round(s * 255).long().view(n, 3)
    assert torch.allclose(s.view(n, 3) * 255, k.float(), atol=1e-4)
    codes = k[:, 0] * 65536 + k[:, 1] * 256 + k[:, 2]
    # cells: the triples seen in an independent pilot sample (so the cells do not depend on the counts),
    # plus one cell for everything else
    kp = torch.round(d.sample() * 255).long().view(n, 3)
    uniq = torch.unique(kp[:, 0] * 65536 + kp[:, 1] * 256 + kp[:, 2])
    pos = torch.searchsorted(uniq, codes).clamp(max=uniq.shape[0] - 1)
    hit = uniq[pos] == codes
    counts = torch.bincount(pos[hit], minlength=uniq.shape[0]).double()
    counts = torch.cat([counts, (~hit).sum().double().view(1)])
    trip = torch.stack([uniq // 65536, (uniq // 256) % 256, uniq % 256], dim=1).double() / 255
    dref = DiscretizedLogisticMixture(p.expand(uniq.shape[0], -1, -1, -1), channels=3, n_mix=m)
    probs = dref.log_prob(trip.view(-1, 3, 1, 1)).exp()
    probs = torch.cat([probs, (1 - probs.sum()).clamp(min=0).view(1)])
    stat, dof = _chi2_ok(counts, probs)
    assert dof > 50
    assert stat < _chi2_threshold(dof), (stat, dof)


@pytest.mark.parametrize("channels", [1, 3])
def test_dlm_sample_temperature_grid_and_range(channels):
    torch.manual_seed(0)
    n = DiscretizedLogisticMixture.n_params(channels, 10)
    d = DiscretizedLogisticMixture(torch.randn(4, n, 5, 5) * 3, channels=channels)
    for t in (0.0, 0.5, 1.0):
        s = d.sample(temperature=t)
        assert s.shape == (4, channels, 5, 5)
        assert (s >= 0).all() and (s <= 1).all()
        assert torch.allclose(s * 255, torch.round(s * 255), atol=1e-4)
    mo, me = d.mode(), d.mean()
    assert mo.shape == me.shape == (4, channels, 5, 5)
    assert (mo >= 0).all() and (mo <= 1).all() and (me >= 0).all() and (me <= 1).all()
    assert torch.allclose(mo * 255, torch.round(mo * 255), atol=1e-4)


def test_dlm_c1_mean_matches_exact_expectation():
    p = _random_params(1, 4, h=3, w=3, seed=2)
    p[:, 4:8] *= 1.5  # some means beyond the edges
    d = DiscretizedLogisticMixture(p.expand(256, -1, -1, -1), channels=1, n_mix=4)
    probs = d.log_prob_per_dim(GRID.view(256, 1, 1, 1).expand(256, 1, 3, 3)).exp()  # [256, 3, 3]
    exact = (probs * GRID.view(256, 1, 1)).sum(0)
    approx = DiscretizedLogisticMixture(p, channels=1, n_mix=4).mean()[0, 0]
    torch.testing.assert_close(approx, exact, atol=2e-3, rtol=0)


def test_dlm_mode_is_dominant_component_location():
    m = 3
    p = torch.zeros(1, DiscretizedLogisticMixture.n_params(3, m), 1, 1)
    p[0, :m, 0, 0] = torch.tensor([0.0, 5.0, 0.0])  # component 1 dominates
    p[0, m : 4 * m, 0, 0] = torch.tensor([[0.9, -0.2, 0.0], [0.9, 0.1, 0.0], [0.9, 0.5, 0.0]]).reshape(-1)
    p[0, 4 * m : 7 * m, 0, 0] = -4.0
    p[0, 7 * m : 10 * m, 0, 0] = torch.tensor([[0.0, 0.5, 0.0], [0.0, 0.0, 0.0], [0.0, 0.0, 0.0]]).reshape(-1)
    d = DiscretizedLogisticMixture(p, channels=3, n_mix=m)
    r = round((-0.2 + 1) * 127.5) / 255
    g = round((0.1 + torch.tanh(torch.tensor(0.5)).item() * (r * 2 - 1) + 1) * 127.5) / 255
    b = round((0.5 + 1) * 127.5) / 255  # beta = gamma = 0 for component 1
    torch.testing.assert_close(d.mode().view(3), torch.tensor([r, g, b]), atol=1e-6, rtol=0)


# ------------------------------------------------------------------ DiagonalGaussian


def test_gaussian_log_prob_matches_torch():
    torch.manual_seed(0)
    mu, lv = torch.randn(3, 4, 2, 2), torch.randn(3, 4, 2, 2)
    z = torch.randn(3, 4, 2, 2)
    q = DiagonalGaussian(mu, lv)
    ref = torch.distributions.Normal(mu, torch.exp(0.5 * lv)).log_prob(z).flatten(1).sum(1)
    torch.testing.assert_close(q.log_prob(z), ref)
    torch.testing.assert_close(q.std, torch.exp(0.5 * lv))
    assert q.mean is q.mu and q.logvar is lv


def test_gaussian_kl_matches_monte_carlo():
    torch.manual_seed(0)
    q = DiagonalGaussian(torch.randn(1, 5, dtype=torch.float64), torch.randn(1, 5, dtype=torch.float64) * 0.5)
    p = DiagonalGaussian(torch.randn(1, 5, dtype=torch.float64), torch.randn(1, 5, dtype=torch.float64) * 0.5)
    n = 200_000
    qn = DiagonalGaussian(q.mu.expand(n, 5), q.logvar.expand(n, 5))
    pn = DiagonalGaussian(p.mu.expand(n, 5), p.logvar.expand(n, 5))
    z = qn.rsample()
    diff = qn.log_prob(z) - pn.log_prob(z)
    se = diff.std().item() / math.sqrt(n)
    analytic = q.kl(p).item()
    assert abs(diff.mean().item() - analytic) < 5 * se
    assert q.kl(q).abs().item() < 1e-12
    ref = torch.distributions.kl_divergence(
        torch.distributions.Normal(q.mu, q.std), torch.distributions.Normal(p.mu, p.std)
    ).sum()
    assert abs(ref.item() - analytic) < 1e-10


def test_gaussian_sampling_temperature_and_grad():
    torch.manual_seed(0)
    mu = torch.zeros(20_000, 3, requires_grad=True)
    lv = torch.full((20_000, 3), math.log(4.0), requires_grad=True)
    q = DiagonalGaussian(mu, lv)
    assert abs(q.sample(temperature=0.5).std().item() - 1.0) < 0.03
    assert torch.equal(q.sample(temperature=0.0), torch.zeros(20_000, 3))
    q.rsample().sum().backward()
    assert mu.grad is not None and lv.grad is not None and torch.isfinite(lv.grad).all()
    with pytest.raises(SelfVAEError):
        DiagonalGaussian(torch.zeros(2, 3), torch.zeros(2, 4))


def _rgb_one_component(seed: int) -> tuple[torch.Tensor, list[float], list[float]]:
    """Params of a one-component RGB mixture at one pixel with locations away from the edges and every
    coupling coefficient non-zero; returns (params, locations, tanh'd coefficients [R->G, R->B, G->B])."""
    g = torch.Generator().manual_seed(seed)
    locs = (torch.rand(3, generator=g, dtype=torch.float64) - 0.5).tolist()  # in [-0.5, 0.5]
    raw = (torch.rand(3, generator=g, dtype=torch.float64) * 1.2 + 0.3).tolist()  # tanh in (0.29, 0.92)
    p = torch.zeros(1, DiscretizedLogisticMixture.n_params(3, 1), 1, 1, dtype=torch.float64)
    p[0, 1:4, 0, 0] = torch.tensor(locs, dtype=torch.float64)
    p[0, 4:7, 0, 0] = -3.0  # log-scales
    p[0, 7:10, 0, 0] = torch.tensor(raw, dtype=torch.float64)
    return p, locs, [math.tanh(v) for v in raw]


def test_dlm_rgb_mode_couples_every_channel_by_hand():
    p, (lr, lg, lb), (a, b, c) = _rgb_one_component(3)

    def grid(v: float) -> float:  # [-1, 1] -> nearest of the 256 levels, back in [-1, 1]
        return round((min(max(v, -1.0), 1.0) + 1) * 127.5) / 127.5 - 1

    r = grid(lr)
    gg = grid(lg + a * r)
    bb = grid(lb + b * r + c * gg)
    got = DiscretizedLogisticMixture(p, channels=3, n_mix=1).mode().view(3)
    torch.testing.assert_close(got, (torch.tensor([r, gg, bb], dtype=torch.float64) + 1) / 2, atol=1e-9, rtol=0)


def test_dlm_rgb_mean_matches_the_sample_average():
    p, _, _ = _rgb_one_component(4)
    n = 200_000
    torch.manual_seed(0)
    samples = DiscretizedLogisticMixture(p.expand(n, -1, -1, -1), channels=3, n_mix=1).sample()
    mean = DiscretizedLogisticMixture(p, channels=3, n_mix=1).mean().view(3)
    se = samples.view(n, 3).std(0) / math.sqrt(n)
    assert ((samples.view(n, 3).mean(0) - mean).abs() < 5 * se + 2e-3).all()  # 2e-3: the bins' rounding


@pytest.mark.parametrize("channels", [1, 3])
def test_dlm_sample_temperature_scales_the_spread(channels):
    n_mix = 1
    p = torch.zeros(1, DiscretizedLogisticMixture.n_params(channels, n_mix), 1, 1, dtype=torch.float64)
    p[0, 1 + channels : 1 + 2 * channels] = -2.0  # scale 0.135 in [-1, 1] units: far from the edges
    n = 100_000
    d = DiscretizedLogisticMixture(p.expand(n, -1, -1, -1), channels=channels, n_mix=n_mix)
    torch.manual_seed(0)
    full, half = d.sample().view(n, channels)[:, 0], d.sample(0.5).view(n, channels)[:, 0]
    want = math.exp(-2.0) * math.pi / math.sqrt(3) / 2  # logistic std, in [0, 1] units
    assert abs(float(full.std()) / want - 1) < 0.03
    assert abs(float(half.std()) / (want / 2) - 1) < 0.05
