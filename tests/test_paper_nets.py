"""The ``*-paper`` presets are the srVAE authors' networks: their layer structure, activations, squeezes and
likelihood parametrisation, pinned here (figures from reading ioangatop/srVAE: 86 / 132 ELUs per forward)."""

from __future__ import annotations

import math
from collections import Counter

import pytest
import torch
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode

from selfvae.distributions import DiscretizedLogisticMixture
from selfvae.models.build import build_model
from selfvae.nn.layers import data_dependent_init, exact_elu, frozen_weights
from selfvae.nn.paper import (
    PaperDenseLayer,
    PaperDMoLParams,
    PaperUnit,
    _CatELU,
    fuse_units,
    paper_decoder,
    paper_encoder,
)
from selfvae.presets import get_preset
from selfvae.priors import _squeeze, _squeeze_alt


class _Ops(TorchDispatchMode):
    def __init__(self) -> None:
        super().__init__()
        self.count: Counter[str] = Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # noqa: ANN001, ANN204
        self.count[func.overloadpacket.__name__] += 1
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize(
    ("preset", "params", "elus", "convs", "hardtanhs"),
    [("cifar10-vae-realnvp-paper", 34_276_092, 86, 218, 1), ("cifar10-srvae-paper", 39_272_298, 132, 345, 3)],
)
def test_paper_presets_have_the_authors_layer_structure(preset, params, elus, convs, hardtanhs):
    model = build_model(get_preset(preset))
    assert sum(p.numel() for p in model.parameters()) == params
    x = torch.randint(0, 256, (1, 3, 32, 32), dtype=torch.uint8)
    fuse_units(model, False)  # their arithmetic: every unit as its two convs
    with torch.no_grad(), exact_elu(), _Ops() as ops:  # exact: one aten elu per activation
        model.terms(x)
    # theirs: an ELU after each dense unit, one in p_z; none elsewhere
    assert ops.count["elu"] + ops.count["elu_"] == elus
    assert ops.count["convolution"] == convs
    assert ops.count["hardtanh"] == hardtanhs  # one per Gaussian net: q_z (VAE); q_u, q_z, p_z (srVAE)


def test_composed_dense_units_compute_the_same_function_and_gradients():
    """A unit's 1x1 and 3x3 convs composed into one 3x3 conv (bias map at the borders included) give the two convs'
    outputs and the same gradients for every parameter and the input, to float64 rounding; the data-dependent init
    runs through the two convs (the same init either way); frozen kernels compose too."""
    torch.manual_seed(0)
    for c, growth, size, batch in [(3, 4, 5, 4), (8, 8, 1, 64), (16, 8, 4, 4), (40, 16, 7, 4)]:
        layer = PaperDenseLayer(c, growth, 3).double()
        x = torch.randn(batch, c, size, size, dtype=torch.float64)
        inits = []
        for on in (False, True):
            fuse_units(layer, on)
            for conv in layer.modules():
                if hasattr(conv, "initialized"):
                    conv.initialized.fill_(False)
            data_dependent_init(layer, lambda: layer(x))  # noqa: B023
            inits.append([p.detach().clone() for p in layer.parameters()])
        assert all(torch.equal(a, b) for a, b in zip(*inits, strict=True))
        assert layer.units[0].pays(x)  # at least the first unit composes
        results = []
        for on in (False, True):
            fuse_units(layer, on)
            layer.zero_grad()
            xx = x.clone().requires_grad_()
            out = layer(xx)
            out.sin().sum().backward()
            with torch.no_grad(), frozen_weights(layer):
                frozen = layer(x)
            results.append((out.detach(), frozen, xx.grad, [p.grad.clone() for p in layer.parameters()]))
        (out0, frozen0, gx0, g0), (out1, frozen1, gx1, g1) = results
        assert torch.allclose(out0, out1, rtol=1e-10, atol=1e-12)
        assert torch.allclose(frozen0, frozen1, rtol=1e-10, atol=1e-12) and torch.allclose(out1, frozen1)
        assert torch.allclose(gx0, gx1, rtol=1e-10, atol=1e-12)
        assert all(torch.allclose(a, b, rtol=1e-9, atol=1e-11) for a, b in zip(g0, g1, strict=True))


def test_a_unit_composes_only_where_that_saves_multiply_adds():
    narrow, wide = PaperUnit(16, 64), PaperUnit(1024, 64)  # 9 c g against 4 c g + 36 g^2 an output pixel
    assert narrow.pays(torch.empty(32, 16, 32, 32)) and not wide.pays(torch.empty(32, 1024, 32, 32))
    # composing the kernel costs 36 c g^2 a pass: one 1x1 image does not repay it
    assert not PaperUnit(300, 128).pays(torch.empty(1, 300, 1, 1)) and PaperUnit(300, 128).pays(
        torch.empty(32, 300, 8, 8))
    calls = []
    narrow[0].register_forward_hook(lambda *_: calls.append(1))
    narrow(torch.randn(2, 16, 8, 8))
    assert not calls  # composed: the 1x1 conv never runs on the batch
    narrow.fused = False
    narrow(torch.randn(2, 16, 8, 8))
    assert calls == [1]


def test_dense_unit_reactivates_the_whole_concatenation_and_has_no_inner_activation():
    torch.manual_seed(0)
    layer = PaperDenseLayer(3, 4, 2)
    x = torch.randn(2, 3, 5, 5)
    (c1, c3), (d1, d3) = layer.units[0], layer.units[1]
    h = F.elu(torch.cat([x, c3(c1(x))], 1))  # the first unit sees x raw; conv1x1 -> conv3x3 directly
    h = F.elu(torch.cat([h, d3(d1(h))], 1))  # the earlier channels go through the ELU again
    gate = torch.sigmoid(layer.attention.excite(layer.attention.squeeze(h.mean((2, 3), keepdim=True))))
    assert torch.allclose(layer(x), h * gate, atol=1e-6)
    assert [m.v.shape[0] for m in (c1, c3)] == [16, 4] and layer.out_channels == 11
    enc, dec = paper_encoder(3, 32, 16, 8, 2), paper_decoder(16, 100, 128, 6, 2)
    assert [tuple(m.v.shape[:2]) for m in (enc[1], enc[3])] == [(262, 131), (1036, 518)]  # no transition
    assert tuple(dec[1].v.shape[:2]) == (784, 392) and tuple(dec[-1].v.shape[:2]) == (100, 388)


def test_a_channels_last_dense_layer_keeps_every_unit_channels_last():
    """A dense layer's raw input (an image, a latent) arrives contiguous; with channels-last weights the first
    concatenation would mix the two formats, come out contiguous, and every unit would convert it back."""
    torch.manual_seed(0)
    layer = PaperDenseLayer(3, 4, 3)
    x = torch.randn(2, 3, 6, 6)
    want = layer(x)
    layer.to(memory_format=torch.channels_last)
    formats = []
    hook = lambda _m, args: formats.append(args[0].is_contiguous(memory_format=torch.channels_last))  # noqa: E731
    for unit in layer.units:
        unit.register_forward_pre_hook(hook)
    got = layer(x)
    assert formats == [True, True, True]
    assert got.is_contiguous(memory_format=torch.channels_last) and torch.allclose(got, want, atol=1e-6)


@pytest.mark.parametrize("fmt", [torch.contiguous_format, torch.channels_last])
def test_the_one_pass_elu_of_the_concatenation_is_theirs(fmt):
    """Training's ELU(cat(x, new)) in one pass: their cat-then-ELU-in-place, bit for bit in contiguous memory (to
    float rounding in channels-last, whose strided ELU kernel rounds differently), gradients included."""
    torch.manual_seed(0)
    a = torch.randn(2, 37, 8, 8, dtype=torch.float64).contiguous(memory_format=fmt).requires_grad_()
    b = torch.randn(2, 16, 8, 8, dtype=torch.float64).contiguous(memory_format=fmt).requires_grad_()
    g = torch.randn(2, 53, 8, 8, dtype=torch.float64)
    ours, theirs = _CatELU.apply(a, b, fmt), F.elu(torch.cat([a, b], 1), inplace=True)
    assert ours.is_contiguous(memory_format=fmt)
    exact = fmt == torch.contiguous_format
    for u, v in zip([ours, *torch.autograd.grad(ours, (a, b), g)], [theirs, *torch.autograd.grad(theirs, (a, b), g)],
                    strict=True):
        assert torch.equal(u, v) if exact else torch.allclose(u, v, rtol=0, atol=1e-14)
    assert torch.autograd.gradcheck(lambda a, b: _CatELU.apply(a, b, fmt), (a, b))


def _their_squeeze_alt(x: torch.Tensor) -> torch.Tensor:
    """The alternate-order squeeze as their code builds it: a stride-2 convolution with a permutation kernel
    (per channel the sub-pixels (0,0), (1,1), (0,1), (1,0)), output channels then grouped by sub-pixel."""
    c = x.shape[1]
    pick = torch.zeros(4, 1, 2, 2)
    for k, (i, j) in enumerate([(0, 0), (1, 1), (0, 1), (1, 0)]):
        pick[k, 0, i, j] = 1.0
    weight = torch.zeros(4 * c, c, 2, 2)
    for ch in range(c):
        weight[4 * ch : 4 * ch + 4, ch : ch + 1] = pick
    order = [4 * ch + k for k in range(4) for ch in range(c)]
    return F.conv2d(x, weight[order], stride=2)


def test_squeezes_are_theirs():
    x = torch.randn(2, 3, 4, 6)
    assert torch.equal(_squeeze_alt(x), _their_squeeze_alt(x))
    b, c, h, w = x.shape  # theirs (non-alternate): channels-last view, (c, i, j) order
    theirs = x.permute(0, 2, 3, 1).reshape(b, h // 2, 2, w // 2, 2, c).permute(0, 1, 3, 5, 2, 4)
    theirs = theirs.reshape(b, h // 2, w // 2, 4 * c).permute(0, 3, 1, 2)
    assert torch.equal(_squeeze(x), theirs)


def _their_dmol_log_prob(raw: torch.Tensor, x01: torch.Tensor, m: int = 10) -> torch.Tensor:
    """Their discretized logistic mixture, written from their parametrisation in [0, 1] units."""
    b, _, h, w = raw.shape
    logits = F.log_softmax(raw[:, :m], 1)
    means = raw[:, m : 4 * m].reshape(b, m, 3, h, w)
    log_s = raw[:, 4 * m : 7 * m].reshape(b, m, 3, h, w).clamp(min=-7.0)
    co = torch.tanh(raw[:, 7 * m : 10 * m].reshape(b, m, 3, h, w))
    x = x01.unsqueeze(1)
    mean = torch.stack([means[:, :, 0], means[:, :, 1] + co[:, :, 0] * x[:, :, 0],
                        means[:, :, 2] + co[:, :, 1] * x[:, :, 0] + co[:, :, 2] * x[:, :, 1]], 2)
    half = 0.5 / 255.0
    plus, minus = (x - mean + half) * torch.exp(-log_s), (x - mean - half) * torch.exp(-log_s)
    cdf_plus = torch.where(x > 1 - half, torch.ones_like(plus), torch.sigmoid(plus))
    cdf_minus = torch.where(x < half, torch.zeros_like(minus), torch.sigmoid(minus))
    log_p = torch.log((cdf_plus - cdf_minus).clamp_min(1e-12))
    return torch.logsumexp(log_p.sum(2) + logits, 1).flatten(1).sum(1)


def test_their_likelihood_parametrisation_gives_their_log_likelihood():
    torch.manual_seed(1)
    raw = torch.randn(3, 100, 4, 4) * torch.tensor([2.0] * 10 + [0.4] * 30 + [0.5] * 30 + [1.0] * 30).view(1, -1, 1, 1)
    raw[:, 10:40] += 0.5  # means around the middle of [0, 1]
    raw[:, 40:70] -= 2.0
    x = torch.randint(0, 256, (3, 3, 4, 4), dtype=torch.uint8)
    ours = DiscretizedLogisticMixture(PaperDMoLParams(3, 10)(raw), 3, 10).log_prob(x.float() / 255.0)
    assert torch.allclose(ours, _their_dmol_log_prob(raw, x.float() / 255.0), rtol=1e-4, atol=1e-3)
    assert math.isfinite(float(ours.sum()))


def test_their_first_checkerboard_coupling_keeps_the_odd_sites():
    from selfvae.priors import RealNVP

    torch.manual_seed(0)
    theirs, ours = RealNVP((2, 4, 4), 8, 1, 1, st_net="dense"), RealNVP((2, 4, 4), 8, 1, 1)
    for flow in (theirs, ours):
        for p in flow.parameters():
            p.data.normal_(0, 0.3)
    u = torch.randn(1, 2, 4, 4)
    odd = (torch.arange(4).view(-1, 1) + torch.arange(4)) % 2 == 1
    v_theirs = theirs.flow.in_couplings[0](u, torch.zeros(1))[0]
    v_ours = ours.flow.in_couplings[0](u, torch.zeros(1))[0]
    assert torch.equal(v_theirs[..., odd], u[..., odd]) and not torch.equal(v_theirs[..., ~odd], u[..., ~odd])
    assert torch.equal(v_ours[..., ~odd], u[..., ~odd])  # ours keeps the even sites first


def test_bf16_autocast_gives_the_paper_nets_likelihoods_float32_inputs(monkeypatch):
    """Under ``--amp bf16`` the authors' nets (encoders, decoders, the flow's dense s/t nets) run in bfloat16,
    but what they hand to the likelihood, the Gaussians and the couplings is float32."""
    from selfvae import distributions as dist_mod
    from selfvae import runtime
    from selfvae.priors import _Coupling

    seen: list[tuple[str, torch.dtype]] = []
    for cls, name in ((dist_mod.DiscretizedLogisticMixture, "dmol"), (dist_mod.DiagonalGaussian, "gaussian")):
        real = cls.__init__

        def spy(self, first, *a, _real=real, _name=name, **k):  # noqa: ANN001
            seen.append((_name, first.dtype))
            return _real(self, first, *a, **k)

        monkeypatch.setattr(cls, "__init__", spy)
    torch.manual_seed(0)
    model = build_model(get_preset("cifar10-srvae-paper"))
    runtime.install_fp32_outputs(model)
    for m in model.modules():
        if isinstance(m, _Coupling):
            m.net.register_forward_hook(lambda _m, _i, out: seen.extend(("s/t", o.dtype) for o in out))
    x = torch.randint(0, 256, (1, 3, 32, 32), dtype=torch.uint8)
    with torch.no_grad(), runtime.autocast("cpu", "bf16"):
        model.terms(x)
    assert {n for n, _ in seen} == {"dmol", "gaussian", "s/t"}
    assert all(d == torch.float32 for _, d in seen), sorted({(n, d) for n, d in seen if d != torch.float32})


def test_a_model_joins_one_model_s_u_side_to_another_s_z_side():
    """``model.z_nets``: the u side (q_u, p_y, the prior) in one net family, the z side (q_z, p_z, p_x) in the other
    (experiments/z_hybrid.py). Joined from two models' weights, it computes the first model's terms of y (KL_u and
    re_y) and the second's re_x (p(x|y,z) reads only y and z) from the same noise, each side with its own input
    scaling ([-1, 1] ours, [0, 1] the authors')."""
    from selfvae.config import apply_overrides
    from selfvae.nn.nets import DenseEncoder

    thin = ["model.q_u.growth=4", "model.p_y.growth=4", "model.q_z.growth=4", "model.p_z.growth=4",
            "model.p_x.growth=4", "model.prior_kwargs.mid_channels=8"]
    ours, theirs = get_preset("cifar10-srvae-small"), get_preset("cifar10-srvae-small")
    apply_overrides(ours, [*thin, "model.z_nets=selfvae"])  # ours throughout
    apply_overrides(theirs, [*thin, "model.nets=paper"])
    joined_cfg = get_preset("cifar10-srvae-small")
    apply_overrides(joined_cfg, [*thin, "model.z_nets=paper"])
    x = torch.randint(0, 256, (3, 3, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    a, b, joined = (build_model(c) for c in (ours, theirs, joined_cfg))
    for m in (a, b):
        data_dependent_init(m, lambda m=m: m.terms(x))
    assert isinstance(joined.q_u, DenseEncoder) and not isinstance(joined.q_z[0], DenseEncoder)
    assert joined.paper_z and not joined.paper and b.paper and b.paper_z
    state = {k: v for k, v in a.state_dict().items() if k.split(".")[0] in ("q_u", "p_y", "p_u")}
    state.update({k: v for k, v in b.state_dict().items() if k.split(".")[0] in ("q_z", "p_z", "p_x")})
    joined.load_state_dict(state)
    terms = {}
    for name, m in (("a", a.eval()), ("b", b.eval()), ("joined", joined.eval())):
        torch.manual_seed(1)  # u is drawn first, then z: the same noise in all three
        with torch.no_grad():
            terms[name] = m.terms(x)
    assert torch.allclose(terms["joined"].kl_u, terms["a"].kl_u)
    assert torch.allclose(terms["joined"].re[:, 0], terms["a"].re[:, 0])  # re_y
    assert torch.allclose(terms["joined"].re[:, 1], terms["b"].re[:, 1])  # re_x
    assert not torch.allclose(terms["a"].re[:, 1], terms["b"].re[:, 1])  # the two z sides differ
