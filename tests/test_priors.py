"""Maths checks for selfvae.priors: exact densities, flow invertibility and log-determinants."""

from __future__ import annotations

import math

import pytest
import torch

from selfvae.errors import SelfVAEError
from selfvae.priors import PRIORS, MixtureOfGaussians, RealNVP, StandardNormal, build_prior


def _randomise(flow: RealNVP, std: float = 0.1, seed: int = 0) -> None:
    """Move every weight away from the identity initialisation."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in flow.named_parameters():
            noise = torch.randn(p.shape, generator=g, dtype=p.dtype)
            if name.endswith("scale"):
                p.copy_(1.0 + 0.3 * noise)
            else:
                p.copy_(std * noise)


def test_registry_and_build():
    assert set(PRIORS) == {"standard", "mog", "realnvp"}
    assert isinstance(build_prior("standard", (2, 4, 4)), StandardNormal)
    assert isinstance(build_prior("mog", (2, 4, 4), n_components=3), MixtureOfGaussians)
    assert isinstance(build_prior("realnvp", (2, 4, 4), mid_channels=8, num_blocks=1), RealNVP)
    with pytest.raises(SelfVAEError, match="mog.*realnvp.*standard"):
        build_prior("vamp", (2, 4, 4))
    with pytest.raises(SelfVAEError):
        RealNVP((2, 6, 6), num_scales=3)  # 6 not divisible by 4
    with pytest.raises(SelfVAEError):
        StandardNormal((2, 4, 4)).log_prob(torch.zeros(3, 2, 4, 5))


def test_standard_normal():
    prior = StandardNormal((3, 2, 2))
    u = torch.randn(5, 3, 2, 2)
    ref = torch.distributions.Normal(0.0, 1.0).log_prob(u).flatten(1).sum(1)
    torch.testing.assert_close(prior.log_prob(u), ref)
    assert prior.sample(7).shape == (7, 3, 2, 2)
    assert torch.equal(prior.sample(4, temperature=0.0), torch.zeros(4, 3, 2, 2))
    torch.manual_seed(0)
    for temperature, s in ((None, prior.sample(20000)), (0.5, prior.sample(20000, temperature=0.5))):
        want = 1.0 if temperature is None else temperature  # the default temperature is 1
        assert abs(float(s.std()) / want - 1) < 0.02 and abs(float(s.mean())) < 0.02


def test_mog_log_prob_matches_direct_and_samples():
    torch.manual_seed(0)
    prior = MixtureOfGaussians((2, 2, 2), n_components=4).double()
    with torch.no_grad():
        prior.logvars.normal_(0, 0.5)
        prior.logits.normal_(0, 1.0)
    u = torch.randn(6, 2, 2, 2, dtype=torch.float64)
    mix = torch.distributions.MixtureSameFamily(
        torch.distributions.Categorical(logits=prior.logits),
        torch.distributions.Independent(
            torch.distributions.Normal(prior.means, torch.exp(0.5 * prior.logvars)), 1
        ),
    )
    torch.testing.assert_close(prior.log_prob(u), mix.log_prob(u.flatten(1)))
    assert prior.means.detach().std() < 0.5  # small initial spread
    # Sampling: components far apart (means -10, 0, 10, 20 in every dimension), unequal weights and variances, so
    # a sampler that ignored the weights, the means or the variances gives other frequencies or moments.
    with torch.no_grad():
        prior.means.copy_(torch.tensor([-10.0, 0.0, 10.0, 20.0], dtype=torch.float64)[:, None].expand(4, 8))
        prior.logvars.copy_(torch.log(torch.tensor([0.25, 1.0, 0.04, 0.5], dtype=torch.float64))[:, None]
                            .expand(4, 8))
        prior.logits.copy_(torch.log(torch.tensor([0.1, 0.2, 0.3, 0.4], dtype=torch.float64)))
    torch.manual_seed(1)
    n = 20000
    s = prior.sample(n)
    assert s.shape == (n, 2, 2, 2) and s.dtype == torch.float64
    first = s.flatten(1)[:, 0]
    comp = torch.bucketize(first, torch.tensor([-5.0, 5.0, 15.0], dtype=torch.float64))  # nearest mean
    freq = torch.bincount(comp, minlength=4).double() / n
    se = (0.25 / n) ** 0.5
    torch.testing.assert_close(freq, torch.tensor([0.1, 0.2, 0.3, 0.4], dtype=torch.float64), atol=5 * se, rtol=0)
    for k, (mu, var) in enumerate([(-10.0, 0.25), (0.0, 1.0), (10.0, 0.04), (20.0, 0.5)]):
        part = first[comp == k]
        assert abs(float(part.mean()) - mu) < 5 * (var / len(part)) ** 0.5
        assert abs(float(part.var()) / var - 1) < 0.1
    # every dimension of one sample comes from the same component (a joint draw, not per dimension)
    flat = s.flatten(1)
    assert torch.equal(torch.bucketize(flat, torch.tensor([-5.0, 5.0, 15.0], dtype=torch.float64)),
                       comp[:, None].expand(n, 8))


@pytest.mark.parametrize(("shape", "num_scales", "st_net"), [((2, 4, 4), 1, "resnet"), ((2, 4, 4), 2, "resnet"),
                                                              ((1, 4, 4), 3, "resnet"), ((2, 8, 8), 3, "resnet"),
                                                              ((2, 4, 4), 2, "dense")])
def test_realnvp_roundtrip_and_logdet_match_brute_force_jacobian(shape, num_scales, st_net):
    torch.manual_seed(0)
    flow = RealNVP(shape, mid_channels=8, num_blocks=2, num_scales=num_scales, st_net=st_net).double()
    _randomise(flow)
    u = torch.randn(3, *shape, dtype=torch.float64)
    v, logdet = flow(u)
    assert v.shape == u.shape and logdet.shape == (3,)
    assert (v - u).abs().max() > 1e-2  # really away from the identity
    torch.testing.assert_close(flow.inverse(v), u, atol=1e-5, rtol=0)
    d = math.prod(shape)
    for i in range(2):
        jac = torch.autograd.functional.jacobian(
            lambda x: flow(x.view(1, *shape))[0].reshape(-1), u[i].reshape(-1)
        )
        assert jac.shape == (d, d)
        sign, brute = torch.linalg.slogdet(jac)
        assert sign > 0
        torch.testing.assert_close(logdet[i], brute, atol=1e-8, rtol=1e-8)


@pytest.mark.parametrize(("num_scales", "st_net"), [(1, "resnet"), (3, "resnet"), (2, "dense")])
def test_coupling_steps_compose_to_the_flow_and_each_is_elementwise_given_what_it_keeps(num_scales, st_net):
    torch.manual_seed(0)
    shape = (2, 8, 8)
    flow = RealNVP(shape, mid_channels=8, num_blocks=1, num_scales=num_scales, st_net=st_net).double()
    _randomise(flow)
    u = torch.randn(3, *shape, dtype=torch.float64)
    v, logdet = flow(u)
    steps = flow.coupling_steps()
    assert len(steps) == 6 * (num_scales - 1) + 4
    h, total = u, torch.zeros(3, dtype=torch.float64)
    for step in steps:
        x = step.view(h)
        changed = step.coupling.changed(x)
        assert changed.shape == x.shape[1:] and changed.float().mean() == 0.5  # half of the entries, each time
        s, t = step.coupling.affine(x)
        assert (s[:, ~changed] == 0).all() and (t[:, ~changed] == 0).all()
        # s and t see the kept entries only
        s2, t2 = step.coupling.affine(x.masked_fill(changed, 7.0))
        torch.testing.assert_close((s2, t2), (s, t), rtol=0, atol=0)
        total += s.flatten(1).sum(1)
        h = step.put(h, torch.where(changed, (x + t) * torch.exp(s), x))
    torch.testing.assert_close(h, v, rtol=0, atol=1e-12)
    torch.testing.assert_close(total, logdet, rtol=0, atol=1e-12)


def test_realnvp_starts_at_identity_and_default_config_roundtrips():
    flow = RealNVP((16, 8, 8))  # the papers' latent with default mid_channels=64, num_blocks=5, num_scales=2
    u = torch.randn(2, 16, 8, 8)
    v, logdet = flow(u)
    torch.testing.assert_close(v, u)
    torch.testing.assert_close(logdet, torch.zeros(2))
    _randomise(flow, std=0.02)
    v, _ = flow(u)
    assert (v - u).abs().max() > 1e-3
    torch.testing.assert_close(flow.inverse(v), u, atol=1e-5, rtol=0)
    s = flow.sample(3, temperature=0.7)
    assert s.shape == (3, 16, 8, 8) and torch.isfinite(s).all()


def test_realnvp_log_prob_is_normalised_monte_carlo():
    """int p(u) du = E_q[p(u)/q(u)] with a wide Gaussian proposal q, on a 4-dimensional latent."""
    torch.manual_seed(0)
    flow = RealNVP((1, 2, 2), mid_channels=8, num_blocks=1, num_scales=2).double()
    _randomise(flow, std=0.15, seed=3)
    n, sigma = 30_000, 1.7
    u = sigma * torch.randn(n, 1, 2, 2, dtype=torch.float64)
    log_q = torch.distributions.Normal(0.0, sigma).log_prob(u).flatten(1).sum(1)
    with torch.no_grad():
        w = torch.exp(flow.log_prob(u) - log_q)
    est, se = w.mean().item(), w.std().item() / math.sqrt(n)
    assert se < 0.02
    assert abs(est - 1.0) < 5 * se + 1e-3, (est, se)
    # and it is not just N(0, I): the flow density really differs
    assert (flow.log_prob(u[:100]) - StandardNormal((1, 2, 2)).log_prob(u[:100])).abs().max() > 1e-2


def test_realnvp_log_prob_of_samples_consistent_with_inverse():
    torch.manual_seed(0)
    flow = RealNVP((2, 4, 4), mid_channels=8, num_blocks=1).double()
    _randomise(flow)
    v = torch.randn(4, 2, 4, 4, dtype=torch.float64)
    u = flow.inverse(v)
    expected = StandardNormal((2, 4, 4)).double().log_prob(v) + flow(u)[1]
    torch.testing.assert_close(flow.log_prob(u), expected)


@pytest.mark.parametrize("name", ["standard", "mog", "realnvp"])
def test_gradients_finite_and_sample_device_dtype(name):
    torch.manual_seed(0)
    kwargs = {"mid_channels": 8, "num_blocks": 1} if name == "realnvp" else {}
    prior = build_prior(name, (2, 4, 4), **kwargs)
    u = torch.randn(5, 2, 4, 4, requires_grad=True)
    lp = prior.log_prob(u)
    assert lp.shape == (5,) and torch.isfinite(lp).all()
    lp.sum().backward()
    assert torch.isfinite(u.grad).all()
    grads = [p.grad for p in prior.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    if grads:
        assert any(g.abs().sum() > 0 for g in grads)
    s = prior.double().sample(3)
    assert s.shape == (3, 2, 4, 4) and s.dtype == torch.float64
    assert "_anchor" not in prior.state_dict()


@pytest.mark.parametrize("reverse", [False, True])
def test_checkerboard_mask_pattern(reverse):
    from selfvae.priors import _checkerboard

    like = torch.zeros(1, dtype=torch.float64)
    mask = _checkerboard(3, 4, reverse, like)
    even = torch.tensor([[1, 0, 1, 0], [0, 1, 0, 1], [1, 0, 1, 0]], dtype=torch.float64)
    assert mask.shape == (1, 1, 3, 4) and mask.dtype == torch.float64
    assert torch.equal(mask[0, 0], 1 - even if reverse else even)


def _scales(flow: RealNVP) -> list:
    out, s = [], flow.flow
    while True:
        out.append(s)
        if s.is_last:
            return out
        s = s.next


def test_realnvp_architecture_is_pinned():
    """The multi-scale structure of the class docstring (Dinh et al. 2017): per scale 3 alternating checkerboard
    couplings, then 3 alternating channel-wise couplings on the squeezed 4C channels with 2x the width; the next
    scale has 2C channels and 2x the width; the last has 4 checkerboard couplings. A flow with other counts, masks
    or widths is still invertible, so the round-trip tests alone would not notice."""
    flow = RealNVP((2, 8, 8), mid_channels=8, num_blocks=2, num_scales=3)
    scales = _scales(flow)
    assert [s.is_last for s in scales] == [False, False, True] and flow.num_scales == 3
    for i, s in enumerate(scales):
        c, mid = 2 * 2**i, 8 * 2**i
        ins = list(s.in_couplings)
        assert [(m.checkerboard, m.reverse_mask) for m in ins] == [(True, bool(k % 2)) for k in range(len(ins))]
        assert len(ins) == (4 if s.is_last else 3)
        for m in ins:
            assert m.net.inp.in_channels == c + 1 and m.net.inp.out_channels == mid and len(m.net.blocks) == 2
            assert m.net.out.out_channels == 2 * c and m.scale.shape == (1, c, 1, 1)
        if not s.is_last:
            outs = list(s.out_couplings)
            assert [(m.checkerboard, m.reverse_mask) for m in outs] == [(False, False), (False, True), (False, False)]
            for m in outs:
                assert m.net.inp.in_channels == 2 * c and m.net.inp.out_channels == 2 * mid
                assert m.net.out.out_channels == 2 * 2 * c and m.scale.shape == (1, 2 * c, 1, 1)
    default = RealNVP((2, 4, 4))  # defaults: mid 64, 5 residual blocks, 2 scales
    first = default.flow.in_couplings[0].net
    assert first.inp.out_channels == 64 and len(first.blocks) == 5 and len(_scales(default)) == 2


def test_realnvp_on_non_square_latents_and_its_errors():
    torch.manual_seed(0)
    flow = RealNVP((2, 4, 8), mid_channels=8, num_blocks=1, num_scales=2).double()
    _randomise(flow)
    u = torch.randn(3, 2, 4, 8, dtype=torch.float64)
    v, logdet = flow(u)
    torch.testing.assert_close(flow.inverse(v), u)
    jac = torch.autograd.functional.jacobian(lambda a: flow(a.view(1, 2, 4, 8))[0].flatten(), u[0].flatten())
    torch.testing.assert_close(logdet[0], torch.linalg.slogdet(jac)[1])
    with pytest.raises(SelfVAEError, match="num_scales: must be >= 1, got 0"):
        RealNVP((2, 4, 4), num_scales=0)
    for shape in ((2, 4, 6), (2, 6, 4)):  # either side not divisible by 2**(num_scales - 1) = 4
        with pytest.raises(SelfVAEError, match=r"H and W must be divisible by 2\*\*\(num_scales-1\) = 4"):
            RealNVP(shape, num_scales=3)


def test_realnvp_samples_follow_the_temperature():
    flow = RealNVP((2, 4, 4), mid_channels=8, num_blocks=1)  # identity at initialisation: samples are N(0, T^2)
    torch.manual_seed(0)
    for temperature, s in ((1.0, flow.sample(5000)), (0.5, flow.sample(5000, temperature=0.5))):
        assert abs(float(s.std()) / temperature - 1) < 0.03
