"""No decoder sees the pixels it scores.

A decoder whose distribution over x (or over a y) depended on the values it is asked to score would give a
superb bits/dim and pass every other test. For one model of every preset family, with the latents and the
conditioning held fixed: changing one pixel of the scored image changes the log-probability of that pixel
only (:func:`test_each_decoder_scores_each_pixel_on_its_own`), and in the model's own bound, with its latents
fixed, changing x in a way that leaves every y unchanged changes only RE_x, by exactly that pixel's change
(:func:`test_the_bound_scores_x_without_seeing_it`). Within a pixel, the RGB coupling lets a channel see only
earlier ones: ``test_distributions.test_dlm_rgb_normalises`` checks that summing p(r, g, b) over b gives a
marginal built from locations of r and g that see no later channel.
"""

from __future__ import annotations

import pytest
import torch

from selfvae.distributions import DiagonalGaussian
from selfvae.models.selfvae import SelfVAE
from selfvae.nn.layers import data_dependent_init
from selfvae.presets import PRESETS


def _families() -> list[str]:
    """One preset per distinct architecture (the prior does not touch the decoders)."""
    seen, names = set(), []
    for name, cfg in PRESETS.items():
        m = cfg.model
        key = (m.image_shape, m.transforms, m.latent_shape, m.n_mix, m.p_y, m.p_x, m.p_z)
        if key not in seen:
            seen.add(key)
            names.append(name)
    return names


FAMILIES = _families()


def test_every_architecture_is_covered():
    assert {"fashion-mnist-vae", "fashion-mnist-srvae", "fashion-mnist-sketch", "fashion-mnist-2lvl", "cifar10-vae",
            "cifar10-srvae",
            "celeba64-sketch", "celeba64-3lvl"} <= set(FAMILIES)


def _model(name: str) -> SelfVAE:
    torch.manual_seed(0)
    model = SelfVAE(PRESETS[name].model)
    x = torch.randint(0, 256, (2, *model.shapes[-1]), dtype=torch.uint8)
    data_dependent_init(model, lambda: model.terms(x))
    return model.eval()


def _decoders(model: SelfVAE, x: torch.Tensor):
    """(distribution, target) of every level, from latents drawn once and the true coarser levels."""
    levels = model.levels(x)
    u = torch.randn(x.shape[0], *model.cfg.latent_shape)
    out = [(model.p_y_given(u), model.target(levels[0]))]
    for k in range(model.K):
        z = torch.randn_like(u)
        out.append((model.p_x_given(k, levels[k], z), model.target(levels[k + 1])))
    return out


@pytest.mark.parametrize("name", FAMILIES)
@torch.no_grad()
def test_each_decoder_scores_each_pixel_on_its_own(name):
    model = _model(name)
    x = torch.randint(0, 256, (1, *model.shapes[-1]), dtype=torch.uint8)
    g = torch.Generator().manual_seed(1)
    for dist, target in _decoders(model, x):
        lp = dist.log_prob_per_dim(target)
        _, c, h, w = target.shape
        for _ in range(3):
            ch, i, j = (int(torch.randint(n, (1,), generator=g)) for n in (c, h, w))
            changed = target.clone()
            changed[0, ch, i, j] = (changed[0, ch, i, j] + 0.5) % 1.0  # another level on the grid
            changed = (changed * 255).round() / 255
            diff = (dist.log_prob_per_dim(changed) - lp).abs()[0]
            assert diff[i, j] > 0  # the pixel itself is scored
            diff[i, j] = 0
            assert diff.max() == 0, f"{name}: changing pixel ({ch}, {i}, {j}) changed other pixels' scores"


@pytest.mark.parametrize("name", FAMILIES)
@torch.no_grad()
def test_the_bound_scores_x_without_seeing_it(name, monkeypatch):
    """``model.terms`` with every latent fixed: swapping two pixels of x changes RE_x by exactly those pixels'
    change in log-probability under the decoder fed the same latents; RE of every y stays, when the swap
    leaves every y unchanged (two pixels of one 2x2 block for downscaling; for other transforms every y is
    recomputed, so RE_x is compared with the decoder fed the new y). In float64: RE_x sums up to 12288 pixels."""
    model = _model(name).double()
    fixed: dict[tuple, torch.Tensor] = {}

    def rsample(self: DiagonalGaussian) -> torch.Tensor:  # the same latent for a given shape, every call
        key = tuple(self.mu.shape)
        if key not in fixed:
            fixed[key] = torch.randn(key, generator=torch.Generator().manual_seed(len(fixed)), dtype=self.mu.dtype)
        return fixed[key]

    monkeypatch.setattr(DiagonalGaussian, "rsample", rsample)
    g = torch.Generator().manual_seed(2)
    x = torch.randint(0, 256, (1, *model.shapes[-1]), dtype=torch.uint8, generator=g)
    x[0, 0, 0, 0], x[0, 0, 0, 1] = 10, 240  # two pixels of one 2x2 block, far apart in value
    swapped = x.clone()
    swapped[0, 0, 0, 0], swapped[0, 0, 0, 1] = 240, 10
    t, t2 = model.terms(x), model.terms(swapped)
    z = fixed[(1, *model.cfg.latent_shape)]  # u and every z share one shape, so one fixed value
    for xi, ti in ((x, t), (swapped, t2)):  # RE_x is the decoder's score given (y_K, z_K) and nothing else
        levels = model.levels(xi)
        dist = model.p_x_given(model.K - 1, levels[-2], z) if model.K else model.p_y_given(z)
        torch.testing.assert_close(ti.re[0, -1], -dist.log_prob(model.target(xi))[0], atol=1e-6, rtol=1e-9)
    same_y = all(torch.equal(a, b) for a, b in zip(model.levels(x)[:-1], model.levels(swapped)[:-1], strict=True))
    if model.cfg.transforms.startswith("downscale") or model.K == 0:
        assert same_y  # the swap stays inside one 2x2 block
        assert torch.equal(t.re[:, :-1], t2.re[:, :-1]), f"{name}: RE of a y moved though no y changed"
        lp = dist.log_prob_per_dim(model.target(x))[0]
        lp2 = dist.log_prob_per_dim(model.target(swapped))[0]
        moved = (lp2 - lp).abs()
        assert moved[0, :2].min() > 0 and moved[:, 2:].max() == 0 and moved[1:].max() == 0
        torch.testing.assert_close(t2.re[0, -1] - t.re[0, -1], -(lp2 - lp)[0, :2].sum(), atol=1e-6, rtol=1e-6)
