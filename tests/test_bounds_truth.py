"""The bounds against independent truth.

A real :class:`SelfVAE` with one-dimensional latents (``u``, and ``z`` for K = 1) has a marginal likelihood
that numerical integration over a fine grid computes to high accuracy from the model's own distributions:
``log p(x) = log sum_u p(x|u) p(u) du`` (K = 0) and ``log p(x, y) = log sum_{u,z} p(y|u) p(z|y,u) p(x|y,z)
p(u) du dz`` (K = 1). Against it, through the real ``evaluate()`` path: the ELBO is below ``log p(x)`` for
every image, its gap equals ``KL(q || posterior)`` computed on the same grid, the IW bound approaches
``log p(x)`` as S grows, and ``evaluate()`` takes the bound per image before averaging over images.
"""

from __future__ import annotations

import math

import pytest
import torch
from conftest import TINY, tiny_config

from selfvae.config import ModelConfig
from selfvae.data import load_dataset
from selfvae.distributions import DiagonalGaussian
from selfvae.errors import SelfVAEError
from selfvae.evaluation.bounds import ActiveUnits, evaluate, log_weights
from selfvae.models.build import build_model
from selfvae.models.selfvae import SelfVAE
from selfvae.nn.layers import WNConv2d, data_dependent_init

GRID = torch.linspace(-9.0, 9.0, 3001, dtype=torch.float64)  # the latents' integration grid
STEP = float(GRID[1] - GRID[0])


def one_d_model(transforms: str, seed: int = 0) -> SelfVAE:
    """4x4 grey images, 1x1x1 latents, a standard normal prior; weights spread so the posterior is not flat."""
    torch.manual_seed(seed)
    cfg = ModelConfig(image_shape=(1, 4, 4), transforms=transforms, latent_shape=(1, 1, 1), prior="standard",
                      n_mix=2, q_u=TINY, p_y=TINY, q_z=TINY, p_z=TINY, p_x=TINY)
    model = SelfVAE(cfg)
    x = torch.randint(0, 256, (32, 1, 4, 4), dtype=torch.uint8)
    data_dependent_init(model, lambda: model.terms(x))
    with torch.no_grad():  # sharper decoders: a posterior that is not the prior (the encoders stay near N(0, 1))
        for net in (model.p_y, model.p_x, model.p_z):
            for m in net.modules():
                if isinstance(m, WNConv2d):
                    m.g.mul_(1.5)
    return model.double().eval()


def images(n: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    base = torch.randint(60, 200, (n, 1, 1, 1), generator=g)
    return (base + torch.randint(-40, 40, (n, 1, 4, 4), generator=g)).clamp(0, 255).to(torch.uint8)


def _std_normal(v: torch.Tensor) -> torch.Tensor:
    return -0.5 * (math.log(2 * math.pi) + v**2)


@torch.no_grad()
def truth(model: SelfVAE, x: torch.Tensor) -> tuple[float, float]:
    """(log p(x [, y]), ELBO) of one image by integration over the grid; ELBO = log p - KL(q || posterior)."""
    levels = model.levels(x)
    n = GRID.numel()
    u = GRID.view(n, 1, 1, 1)
    log_py_u = model.p_y_given(u).log_prob(model.target(levels[0]).expand(n, -1, -1, -1))  # [n] over u
    q_u = model.q_u_given(levels[0])
    log_q_u = DiagonalGaussian(q_u.mu.expand(n, -1, -1, -1), q_u.logvar.expand(n, -1, -1, -1)).log_prob(u)
    if model.K == 0:
        log_joint = log_py_u + _std_normal(GRID)  # log p(x, u) on the grid
        log_p = float(torch.logsumexp(log_joint, 0) + math.log(STEP))
        q = log_q_u.exp() * STEP
        kl_post = float((q * (log_q_u - (log_joint - log_p))).sum())
        return log_p, log_p - kl_post
    # K = 1: p(x|y, z) depends on z only (y is given), p(z|y, u) on u: a 2-D grid as an outer sum
    y_in = model.inp(levels[0]).expand(n, -1, -1, -1)
    log_px_z = model.p_x[0](y_in, u).log_prob(model.target(levels[1]).expand(n, -1, -1, -1))  # [n] over z
    p_z = model.p_z[0](model.p_z[0].encode_y(y_in), u)  # one Gaussian over z per grid u
    mu, lv = p_z.mu.view(n, 1), p_z.logvar.view(n, 1)
    log_pz_u = -0.5 * (math.log(2 * math.pi) + lv + (GRID.view(1, n) - mu) ** 2 * torch.exp(-lv))  # [u, z]
    log_joint = (log_py_u + _std_normal(GRID)).view(n, 1) + log_pz_u + log_px_z.view(1, n)
    log_p = float(torch.logsumexp(log_joint.flatten(), 0) + 2 * math.log(STEP))
    q_z = model.q_z_given(0, levels[1])
    log_q_z = -0.5 * (math.log(2 * math.pi) + q_z.logvar.view(1) + (GRID - q_z.mu.view(1)) ** 2
                      * torch.exp(-q_z.logvar.view(1)))
    log_q = log_q_u.view(n, 1) + log_q_z.view(1, n)
    q = log_q.exp() * STEP**2
    kl_post = float((q * (log_q - (log_joint - log_p))).sum())
    return log_p, log_p - kl_post


@pytest.mark.parametrize("transforms", ["", "downscale"])
def test_the_grid_holds_all_the_mass(transforms):
    """The integration is trustworthy: q(u|x) and the prior put all their mass on the grid."""
    model = one_d_model(transforms)
    x = images(1, 0)
    q_u = model.q_u_given(model.levels(x)[0])
    with torch.no_grad():
        n = GRID.numel()
        mass = DiagonalGaussian(q_u.mu.expand(n, -1, -1, -1), q_u.logvar.expand(n, -1, -1, -1)).log_prob(
            GRID.view(-1, 1, 1, 1)).exp().sum() * STEP
    assert abs(float(mass) - 1) < 1e-6
    assert abs(float(_std_normal(GRID).exp().sum() * STEP) - 1) < 1e-6


@pytest.mark.parametrize("transforms", ["", "downscale"])
def test_elbo_gap_is_the_kl_to_the_posterior_and_iw_approaches_log_p(transforms):
    model = one_d_model(transforms)
    x = images(3, 1)
    for i in range(3):
        xi = x[i : i + 1]
        log_p, elbo_true = truth(model, xi)
        assert elbo_true < log_p - 1e-3  # q is not the posterior: a strict gap
        torch.manual_seed(i)
        logw, _ = log_weights(model, xi, 20000)
        logw = logw[:, 0]
        # the ELBO is the mean log-weight: within 4 standard errors of the integral
        se = float(logw.std()) / math.sqrt(logw.numel())
        assert abs(float(logw.mean()) - elbo_true) < 4 * se + 1e-6, (float(logw.mean()), elbo_true, se)
        # the IW bound with all 20000 samples is close to log p(x); with 1 sample it is the ELBO's distance away
        iw_big = float(torch.logsumexp(logw, 0) - math.log(logw.numel()))
        gap = log_p - elbo_true
        assert abs(iw_big - log_p) < 0.05 and gap > 1, (iw_big, log_p, gap)
        # in expectation the bound grows with S towards log p(x): means over disjoint groups
        means = [float((torch.logsumexp(logw.view(-1, s), 1) - math.log(s)).mean()) for s in (1, 10, 100, 1000)]
        assert means[0] < means[1] < means[2] < means[3] < log_p + 0.05, (means, log_p)


def test_evaluate_takes_the_bound_per_image_before_averaging():
    """Two images with very different log p(x): evaluate()'s nats are the mean of the two truths; pooling the
    weights of both images before the logmeanexp (a common bug) would give a value far from it."""
    model = one_d_model("")
    x = torch.cat([images(1, 2), torch.full((1, 1, 4, 4), 3, dtype=torch.uint8)])
    truths = [truth(model, x[i : i + 1])[0] for i in range(2)]
    assert abs(truths[0] - truths[1]) > 1  # apart, so the two orders of averaging differ
    torch.manual_seed(0)
    m = evaluate(model, [x], 8000, progress=False)
    assert abs(-m["nll_iw_nats"] - sum(truths) / 2) < 0.05, (m["nll_iw_nats"], truths)
    pooled = max(truths) + math.log((1 + math.exp(-abs(truths[0] - truths[1]))) / 2)
    assert abs(pooled - sum(truths) / 2) > 0.15
    assert m["bpd_iw"] == pytest.approx(m["nll_iw_nats"] / (16 * math.log(2)))
    assert m["bpd_elbo"] == pytest.approx(m["nelbo_nats"] / (16 * math.log(2)))


def test_bits_per_dim_count_the_digits_784_dimensions_not_the_padded_frame():
    """MNIST sits zero-padded in a 32x32 frame; bits/dim divide the same bound by 28*28."""
    from selfvae.models.build import build_model, frame_ratio, resolved
    from selfvae.presets import get_preset
    from selfvae.runs.records import per_data_dims

    for name in ("mnist-vae", "fashion-mnist-srvae"):
        cfg = get_preset(name)
        model = build_model(cfg)
        assert cfg.model.data_shape is None  # building leaves the config it was given as it was ...
        assert resolved(cfg).model.data_shape == (1, 28, 28)  # ... what a run saves records the digit's shape
        assert (model.x_dims, model.padded_dims) == (784, 1024)
        assert frame_ratio(cfg) == 1024 / 784
    cfg = get_preset("mnist-vae")
    cfg.data.image_size, cfg.model.image_shape, cfg.model.latent_shape = 28, (1, 28, 28), (8, 7, 7)
    assert frame_ratio(cfg) == 1.0  # no padding at the data's own size
    assert build_model(get_preset("cifar10-vae")).x_dims == 3 * 32 * 32

    torch.manual_seed(0)
    cfg = ModelConfig(image_shape=(1, 16, 16), data_shape=(1, 12, 12), latent_shape=(4, 4, 4), prior="standard",
                      n_mix=3, q_u=TINY, p_y=TINY, q_z=TINY, p_z=TINY, p_x=TINY)
    model = SelfVAE(cfg).eval()
    x = torch.zeros(6, 1, 16, 16, dtype=torch.uint8)
    x[:, :, 2:14, 2:14] = torch.randint(0, 256, (6, 1, 12, 12), dtype=torch.uint8)
    m = evaluate(model, [x], n_samples=4, progress=False)
    assert m["dims"] == 144 and m["padded_dims"] == 256
    assert m["bpd_elbo"] == pytest.approx(m["nelbo_nats"] / (144 * math.log(2)))
    assert m["bpd_iw_padded"] == pytest.approx(m["nll_iw_nats"] / (256 * math.log(2)))
    # metrics saved before bits/dim counted the data's own dimensions are read per those dimensions
    old = {"bpd_elbo": 1.0, "bpd_iw": 0.9, "bpd_joint_elbo": 0.5, "nelbo_nats": 700.0}
    new = per_data_dims(old, 784, 1024)
    assert new["bpd_elbo"] == pytest.approx(1024 / 784) and new["bpd_iw_padded"] == 0.9
    assert new["bpd_joint_elbo"] == 0.5 and new["dims"] == 784
    assert per_data_dims(m, 144, 256) == {**m}
    with pytest.raises(SelfVAEError, match="data_shape"):
        SelfVAE(ModelConfig(image_shape=(1, 16, 16), data_shape=(3, 12, 12), latent_shape=(4, 4, 4)))


@pytest.mark.parametrize("tol", [0.5, 1e-6])
def test_choose_iw_samples_picks_the_first_s_within_tol_of_the_largest(tol):
    from selfvae.evaluation.bounds import choose_iw_samples

    torch.manual_seed(0)
    cfg = ModelConfig(image_shape=(1, 8, 8), latent_shape=(2, 4, 4), prior="standard", n_mix=2,
                      q_u=TINY, p_y=TINY)
    model = SelfVAE(cfg).eval()
    x = torch.randint(0, 256, (6, 1, 8, 8), dtype=torch.uint8)
    s, curve = choose_iw_samples(model, x, max_s=16, tol=tol)
    assert sorted(curve) == [1, 2, 4, 8, 16]
    assert curve[1]["bpd_iw"] == pytest.approx(curve[1]["bpd_elbo"])  # one sample: the bound is the ELBO
    assert all(curve[k]["bpd_iw"] <= curve[k]["bpd_elbo"] + 1e-9 for k in curve)
    gap = {k: abs(curve[k]["bpd_iw"] - curve[16]["bpd_iw"]) for k in curve}
    assert gap[s] < tol and all(gap[k] >= tol for k in curve if k < s)
    if tol == 0.5:
        assert s < 16  # an untrained model's bound is flat to well within half a bit
    else:
        assert s == 16


def test_active_units_are_the_units_whose_posterior_mean_varies_over_the_images():
    """Burda et al. (2015): unit i is active when Cov_x(E_q[z_i]) > 0.01. The variance is of the whole set, however
    it arrives in batches, and a latent whose mean is the same for every image has no active unit."""
    g = torch.Generator().manual_seed(0)
    n = 300
    mu = torch.zeros(n, 3, 2, 2)
    mu[:, 0] = torch.randn(n, 2, 2, generator=g)  # 4 units of variance ~1
    mu[:, 1, 0, 0] = 0.5 + 0.05 * torch.randn(n, generator=g)  # variance ~0.0025: inactive
    mu[:, 2] = 7.0  # constant: inactive
    mu[:, 1, 1, 1] = 0.2 * torch.randn(n, generator=g)  # variance ~0.04: active
    au = ActiveUnits()
    for part in mu.split([7, 100, 193]):
        au.add({"u": part, "z1": torch.full_like(part, 3.0)})
    var = au.variances()
    assert torch.allclose(var["u"], mu.double().flatten(1).var(0), atol=1e-9)
    assert au.result() == {"au_u": 5, "units_u": 12, "au_z1": 0, "units_z1": 12}


def test_informative_units_measure_the_posterior_from_its_own_prior(blob_npz, monkeypatch):
    """Under a N(0, 1) prior the offsets are the posterior means (Burda's test unchanged); a posterior that equals
    its image-dependent prior has offsets 0 (no informative unit) while Burda's test counts its units active; the
    offset is in the prior's standard deviations."""
    from selfvae.distributions import DiagonalGaussian
    from selfvae.models.selfvae import SelfVAE

    cfg = tiny_config(blob_npz, "downscale")
    torch.manual_seed(0)
    model = build_model(cfg).eval()
    x = load_dataset("npz", blob_npz, "test").images[:40]
    untrained = SelfVAE.q_z_given  # its means barely vary over images: spread them, so Burda's test counts units
    monkeypatch.setattr(SelfVAE, "q_z_given", lambda self, k, y: DiagonalGaussian(20 * untrained(self, k, y).mu,
                                                                                   untrained(self, k, y).logvar))
    with torch.no_grad():
        means = model.posterior_means(x)["z1"]
        q_z = SelfVAE.q_z_given

        def prior(mu_of, logvar: float):  # noqa: ANN202  (a prior for the 40 images x)
            return lambda self, k, y, above: DiagonalGaussian(mu_of(self, k), torch.full_like(means, logvar))

        monkeypatch.setattr(SelfVAE, "p_z_given", prior(lambda self, k: torch.zeros_like(means), 0.0))
        assert torch.allclose(model.prior_offsets(x)["z1"], means, atol=1e-6)
        monkeypatch.setattr(SelfVAE, "p_z_given", prior(lambda self, k: torch.zeros_like(means), math.log(4.0)))
        assert torch.allclose(model.prior_offsets(x)["z1"], means / 2, atol=1e-6)
        given = model.posterior_means(x)  # the means passed in (evaluate's): the same offsets, those means used
        assert torch.equal(model.prior_offsets(x, given)["z1"], model.prior_offsets(x)["z1"])
        assert torch.allclose(model.prior_offsets(x, {**given, "z1": 2 * given["z1"]})["z1"], means, atol=1e-6)
        monkeypatch.setattr(SelfVAE, "p_z_given", prior(lambda self, k: q_z(self, k, model.levels(x)[k + 1]).mu, 0.0))
        assert model.prior_offsets(x)["z1"].abs().max() == 0
        m = evaluate(model, [x], 1, progress=False)
    assert m["iu_z1"] == 0 and m["au_z1"] == int((means.double().flatten(1).var(0) > 0.01).sum()) > 0


def test_evaluate_reports_the_active_units_of_every_latent(blob_npz):
    cfg = tiny_config(blob_npz, "downscale")
    torch.manual_seed(0)
    model = build_model(cfg)
    x = load_dataset("npz", blob_npz, "test").images[:40]
    m = evaluate(model, [x[:25], x[25:]], 1, progress=False)
    want, informative = ActiveUnits(), ActiveUnits("iu")
    want.add(model.posterior_means(x))
    informative.add(model.prior_offsets(x))
    assert {k: m[k] for k in m if k.startswith(("au_", "units_", "iu_"))} == {**want.result(), **informative.result()}
    assert m["units_u"] == m["units_z1"] == 4 * 4 * 4 and 0 < m["au_u"] <= 64 and "iu_u" not in m
