"""A model at another image size (selfvae.models.sizes): the local pool of its channel attention, the same
computation at its own frame, and what cannot run at another size refused."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from selfvae.errors import SelfVAEError
from selfvae.models.build import build_model
from selfvae.models.sizes import ATTENTIONS, at_size
from selfvae.nn.layers import box_mean
from selfvae.nn.nets import NetSpec
from selfvae.presets import get_preset

FAMILIES = [{}, {"nets": "paper"}, {"z_nets": "paper"}]  # ours, the authors', the two joined (model.z_nets)


def tiny(transforms: str, prior: str = "realnvp", nets: dict | None = None):
    cfg = get_preset("mnist-vae")
    m = cfg.model
    for key, value in (nets or {}).items():
        setattr(m, key, value)
    m.image_shape, m.transforms, m.latent_shape, m.n_mix = (3, 16, 16), transforms, (2, 4, 4), 3
    m.q_u = m.p_y = m.q_z = m.p_z = m.p_x = NetSpec(width=8, growth=8, steps=1)
    m.prior, m.data_shape = prior, None
    m.prior_kwargs = {"mid_channels": 8, "num_blocks": 1, "num_scales": 2} if prior == "realnvp" else {}
    torch.manual_seed(0)
    model = build_model(cfg).eval()
    with torch.no_grad():  # weights away from their init, so every layer matters
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return model


@pytest.mark.parametrize("window", [(1, 1), (3, 5), (7, 7), (15, 9)])
def test_box_mean_is_the_mean_over_the_box_cut_at_the_borders(window):
    x = torch.randn(2, 3, 11, 9, dtype=torch.float64)
    kh, kw = window
    ref = F.avg_pool2d(x, window, stride=1, padding=(kh // 2, kw // 2), count_include_pad=False)
    assert torch.allclose(box_mean(x, window), ref, atol=1e-12)


def test_a_box_twice_the_map_is_its_global_mean_everywhere():
    x = torch.randn(2, 4, 6, 10)
    expect = x.mean((2, 3), keepdim=True).expand_as(x)
    assert torch.allclose(box_mean(x, (11, 19)), expect, atol=1e-5)
    assert not torch.allclose(box_mean(x, (9, 19)), expect, atol=1e-3)  # one row short: no longer global


@pytest.mark.parametrize("nets", FAMILIES)
@pytest.mark.parametrize("transforms", ["", "downscale"])
def test_at_its_own_frame_the_model_computes_what_it_did(transforms, nets):
    model = tiny(transforms, nets=nets)
    same = at_size(model, 16, 16)
    x = torch.randint(0, 256, (3, 3, 16, 16), dtype=torch.uint8)
    with torch.no_grad():
        torch.manual_seed(1)
        a = model.terms(x, analytic_kl=False)
        torch.manual_seed(1)
        b = same.terms(x, analytic_kl=False)
    assert torch.allclose(a.nelbo, b.nelbo, rtol=1e-5)
    windows = [m.window for m in same.modules() if isinstance(m, ATTENTIONS)]
    assert windows and all(w is not None and w[0] % 2 == 1 for w in windows)


@pytest.mark.parametrize("nets", FAMILIES)
def test_at_a_larger_size_every_pixel_counts_and_attention_pools_locally(nets):
    model = tiny("downscale", nets=nets)
    big = at_size(model, 32, 48)
    assert big.shapes[-1] == (3, 32, 48) and big.x_dims == 3 * 32 * 48
    x = torch.randint(0, 256, (2, 3, 32, 48), dtype=torch.uint8)
    with torch.no_grad():
        local = big.terms(x).nelbo
        assert torch.isfinite(local).all()
        for m in big.modules():
            if isinstance(m, ATTENTIONS):
                m.window = None
        torch.manual_seed(0)
        global_ = big.terms(x).nelbo
    assert not torch.allclose(local, global_)  # the pool's extent matters at this size
    again = at_size(big, 16, 16)  # a moved model keeps the windows of its training frame
    y = x[:, :, :16, :16].contiguous()
    with torch.no_grad():
        torch.manual_seed(1)
        a = model.terms(y).nelbo
        torch.manual_seed(1)
        assert torch.allclose(again.terms(y).nelbo, a, rtol=1e-5)


def test_what_cannot_run_at_another_size_is_refused():
    with pytest.raises(SelfVAEError, match="multiples of the model's frame 16x16"):
        at_size(tiny(""), 24, 32)
    with pytest.raises(SelfVAEError, match="'mog' prior runs at its own frame only"):
        at_size(tiny("", "mog"), 32, 32)
    assert np.array_equal(at_size(tiny(""), 32, 16).shapes[-1], (3, 32, 16))
