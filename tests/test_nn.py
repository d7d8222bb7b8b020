"""Weight norm with data-dependent init gives the intended output statistics; nets have the right shapes."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

from selfvae.nn.layers import (
    DenseLayer,
    WNConv2d,
    data_dependent_init,
    elu,
    exact_elu,
    frozen_weights,
    spatial_mean,
)
from selfvae.nn.nets import DenseDecoder, DenseEncoder, DenseNetwork, NetSpec


def test_data_dependent_init_normalises_each_output_channel():
    torch.manual_seed(0)
    for transposed, stride in ((False, 1), (False, 2), (True, 2)):
        layer = WNConv2d(5, 7, 3, stride=stride, transposed=transposed, init_scale=0.5)
        x = torch.randn(64, 5, 8, 8) * 3 + 2
        data_dependent_init(layer, lambda layer=layer, x=x: layer(x))
        assert bool(layer.initialized)
        y = layer(x)
        mean, std = y.mean(dim=(0, 2, 3)), y.std(dim=(0, 2, 3))
        assert torch.allclose(mean, torch.zeros(7), atol=1e-4), mean
        assert torch.allclose(std, torch.full((7,), 0.5), atol=1e-3), std


def test_weight_is_g_times_unit_direction():
    layer = WNConv2d(3, 4, 3)
    w = layer.weight()
    norms = w.flatten(1).norm(dim=1)
    assert torch.allclose(norms, layer.g.abs(), atol=1e-6)


def test_init_runs_once_and_survives_a_state_dict_round_trip():
    torch.manual_seed(0)
    net = DenseNetwork(3, 4, NetSpec(width=8, growth=4, steps=2, blocks=2))
    x = torch.randn(16, 3, 8, 8)
    data_dependent_init(net, lambda: net(x))
    before = net(x)
    clone = DenseNetwork(3, 4, NetSpec(width=8, growth=4, steps=2, blocks=2))
    clone.load_state_dict(net.state_dict())
    data_dependent_init(clone, lambda: clone(x * 10))  # already initialised: must not change anything
    assert torch.allclose(clone(x), before)


def test_hidden_activations_are_normalised_after_init():
    """Every layer sees unit-scale inputs after init, so a deep net's output is not exploding or vanishing."""
    torch.manual_seed(0)
    enc = DenseEncoder(1, 6, NetSpec(width=8, growth=8, steps=3), n_down=2)
    x = torch.randn(32, 1, 16, 16)
    data_dependent_init(enc, lambda: enc(x))
    out = enc(x)
    assert out.shape == (32, 6, 4, 4)
    assert 0.05 < float(out.std()) < 0.2  # the output layer's init_scale is 0.1


def test_shapes_of_nets():
    spec = NetSpec(width=8, growth=4, steps=2)
    assert DenseDecoder(4, 9, spec, n_up=2)(torch.randn(2, 4, 4, 4)).shape == (2, 9, 16, 16)
    assert DenseEncoder(3, 5, spec, n_down=0)(torch.randn(2, 3, 4, 4)).shape == (2, 5, 4, 4)
    dense = DenseLayer(6, 4, 3)
    assert dense.out_channels == 18 and dense(torch.randn(1, 6, 5, 5)).shape == (1, 18, 5, 5)


def test_dense_layer_matches_its_definition():
    """The forward activates each new piece once; it must equal re-activating the whole concatenation."""
    torch.manual_seed(0)
    dense = DenseLayer(6, 4, 3)
    x = torch.randn(2, 6, 5, 5)
    data_dependent_init(dense, lambda: dense(x))
    h = x
    for conv1, conv3 in dense.units:
        h = torch.cat([h, conv3(F.elu(conv1(F.elu(h))))], dim=1)
    torch.testing.assert_close(dense(x), dense.attention(h))


def test_transition_resamples_on_the_narrow_width():
    plain, narrow = NetSpec(width=32, growth=4, steps=2), NetSpec(width=32, growth=4, steps=2, transition=True)
    for spec in (plain, narrow):
        assert DenseEncoder(3, 5, spec, n_down=2)(torch.randn(2, 3, 16, 16)).shape == (2, 5, 4, 4)
        assert DenseDecoder(4, 9, spec, n_up=2)(torch.randn(2, 4, 4, 4)).shape == (2, 9, 16, 16)
    resampling = [m for m in DenseDecoder(4, 9, narrow, n_up=2).modules() if isinstance(m, WNConv2d) and m.transposed]
    # after a transition the transposed conv maps the next stage's width to itself, not the concatenation
    assert [(m.v.shape[0], m.v.shape[1]) for m in resampling] == [(16, 16), (8, 8)]
    n_params = [sum(p.numel() for p in DenseDecoder(4, 9, s, n_up=2).parameters()) for s in (plain, narrow)]
    assert n_params[1] < n_params[0]


def test_frozen_weights_compute_the_same_function_once_and_thaw():
    torch.manual_seed(0)
    net = DenseNetwork(3, 5, NetSpec(width=8, growth=4, steps=2))
    x = torch.randn(2, 3, 8, 8)
    data_dependent_init(net, lambda: net(x))
    with torch.no_grad():
        expected = net(x)
        with frozen_weights(net):
            layer = next(m for m in net.modules() if isinstance(m, WNConv2d))
            assert layer._frozen is not None
            layer.v.mul_(2.0).add_(1.0)  # a changed direction is not seen while frozen
            assert torch.equal(net(x), expected)
            layer.v.sub_(1.0).div_(2.0)
    assert layer._frozen is None
    net(x).sum().backward()  # thawed: gradients reach the weight-norm parameters again
    assert layer.v.grad is not None and layer.v.grad.abs().sum() > 0


def test_elu_without_autograd_is_elu():
    """The no-grad form max(x, exp(min(x, 0)) - 1) is ELU to float32 rounding, in place too; with autograd
    and inside exact_elu() it is F.elu itself."""
    x = torch.cat([torch.linspace(-30, 30, 100_001), torch.tensor([0.0, -0.0, 1e-30, -1e-30, -88.0, 88.0])])
    ref = F.elu(x.double()).float()
    with torch.no_grad():
        fast = elu(x)
        assert not torch.equal(fast, F.elu(x))  # really the other form (it differs in the last bits)
        torch.testing.assert_close(fast, ref, atol=1.2e-7, rtol=0)
        assert torch.all(fast >= x) and torch.all(fast >= -1)  # ELU(x) >= x, >= -1
        y = x.clone()
        assert elu(y, inplace=True).data_ptr() == y.data_ptr() and torch.equal(y, fast)
        with exact_elu():
            assert torch.equal(elu(x), F.elu(x))
    w = x.clone().requires_grad_(True)
    out = elu(w)
    assert torch.equal(out.detach(), F.elu(x))
    out.sum().backward()
    torch.testing.assert_close(w.grad, torch.where(x > 0, 1.0, torch.exp(x)))


def test_data_dependent_init_is_exact_elu():
    """Initialisation runs under no_grad but keeps F.elu, so training is what it always was, bit for bit."""
    torch.manual_seed(0)
    a, x = DenseLayer(6, 4, 2), torch.randn(2, 6, 5, 5)
    b = copy.deepcopy(a)
    data_dependent_init(a, lambda: a(x))
    with exact_elu():
        data_dependent_init(b, lambda: b(x))
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters(), strict=True))


def test_spatial_mean_is_the_mean_with_a_broadcast_gradient():
    torch.manual_seed(0)
    x = torch.randn(3, 5, 7, 6, dtype=torch.float64).contiguous(memory_format=torch.channels_last).requires_grad_()
    g = torch.randn(3, 5, 1, 1, dtype=torch.float64)
    assert torch.equal(spatial_mean(x), x.mean(dim=(2, 3), keepdim=True))
    ours = torch.autograd.grad(spatial_mean(x), x, g)[0]
    assert torch.equal(ours, torch.autograd.grad(x.mean(dim=(2, 3), keepdim=True), x, g)[0])
    assert ours.stride()[2:] == (0, 0)  # a view of [B, C, 1, 1]: no dense tensor of the input's size is made


@pytest.mark.parametrize("transposed", [False, True])
def test_the_gpu_s_fused_weight_norm_is_the_explicit_one_with_its_gradients(transposed):
    from selfvae.nn.layers import WNConv2d, fused_weight_norm

    conv = WNConv2d(6, 5, 3, transposed=transposed).double()
    with torch.no_grad():
        conv.g.uniform_(0.5, 2.0)
    explicit = conv.weight()  # the CPU path
    fused = fused_weight_norm(conv.v, conv.g, transposed)  # the CUDA path, computed here on the CPU
    assert torch.allclose(fused, explicit, rtol=1e-12, atol=1e-14)
    probe = torch.randn_like(explicit)
    grads_e = torch.autograd.grad((explicit * probe).sum(), [conv.v, conv.g])
    grads_f = torch.autograd.grad((fused * probe).sum(), [conv.v, conv.g])
    for a, b in zip(grads_e, grads_f, strict=True):
        assert torch.allclose(a, b, rtol=1e-10, atol=1e-12)
