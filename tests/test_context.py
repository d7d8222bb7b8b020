"""x's likelihood with sub-pixel context (selfvae.nn.context): a normalised, causal product over the 2x2 groups, a
model that starts as the one it was given, training that lowers the bound, and the codec's exact round trip."""

from __future__ import annotations

import dataclasses
import functools
import math

import numpy as np
import pytest
import torch
from test_codec import TINY, digits, tiny_model

from selfvae import codec
from selfvae.codec import decompress
from selfvae.config import ModelConfig
from selfvae.distributions import DiscretizedLogisticMixture, SubpixelMixture
from selfvae.errors import SelfVAEError
from selfvae.models.selfvae import SelfVAE
from selfvae.nn.context import GROUPS, SubpixelContext, group_of, join_groups
from selfvae.presets import get_preset

compress = functools.partial(codec.compress, png_instead=False)


def _shaken(context: SubpixelContext, scale: float = 0.3, seed: int = 0) -> SubpixelContext:
    """The context nets with random last layers (they start at zero: no context at all)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for net in context.nets:
            net[-1].weight.copy_(scale * torch.randn(net[-1].weight.shape, generator=g) / 30)
    return context


def _mixture(b: int = 2, c: int = 3, h: int = 6, w: int = 8, seed: int = 0, scale: float = 0.3) -> SubpixelMixture:
    torch.manual_seed(seed)
    n_params = DiscretizedLogisticMixture.n_params(c, 4)
    base = DiscretizedLogisticMixture(torch.randn(b, n_params, h, w), c, 4)
    return SubpixelMixture(base, _shaken(SubpixelContext(c, n_params, width=8, layers=2), scale))


def _smooth(n: int) -> torch.Tensor:
    """``n`` smooth RGB 16x16 blobs with a little noise, uint8 ``[n, 3, 16, 16]``."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:16, :16]
    out = []
    for _ in range(n):
        blob = np.exp(-((yy - rng.uniform(0, 16)) ** 2 + (xx - rng.uniform(0, 16)) ** 2) / rng.uniform(8, 40))
        rgb = 255 * blob[None] * rng.uniform(0.3, 1.0, (3, 1, 1)) + rng.integers(0, 12, (3, 16, 16))
        out.append(np.clip(rgb, 0, 255).astype(np.uint8))
    return torch.from_numpy(np.stack(out))


def _image(b: int, c: int, h: int, w: int, seed: int) -> torch.Tensor:
    return torch.randint(0, 256, (b, c, h, w), generator=torch.Generator().manual_seed(seed)).float() / 255


def test_groups_split_and_join_every_pixel_once():
    x = torch.arange(2 * 3 * 4 * 6).reshape(2, 3, 4, 6)
    parts = [group_of(x, g) for g in range(GROUPS)]
    assert all(p.shape == (2, 3, 2, 3) for p in parts)
    assert torch.equal(join_groups(parts), x)


@torch.no_grad()
def test_each_group_depends_only_on_the_groups_before_it_so_the_product_is_normalised():
    """``p(x) = prod_g p(x_g | x_<g)`` is normalised when every factor is a normalised distribution of ``x_g`` that
    does not read ``x_g`` or a later group: each factor's tables sum to 1, and changing ``x_g..x_3`` leaves
    group ``g``'s parameters as they were (while a change of an earlier group moves them: the context is used)."""
    p = _mixture()
    x, other = _image(2, 3, 6, 8, 1), _image(2, 3, 6, 8, 2)
    parts, other_parts = [group_of(x, g) for g in range(GROUPS)], [group_of(other, g) for g in range(GROUPS)]
    for g in range(GROUPS):
        d = p.group(g, parts)
        mixed = parts[:g] + other_parts[g:]
        assert torch.equal(p.group(g, mixed).params, d.params)
        if g:
            assert not torch.allclose(p.group(g, other_parts[:g] + parts[g:]).params, d.params)
        for c in range(3):
            sums = d.bin_probs(c, group_of(x, g)).sum(-1)
            assert torch.allclose(sums, torch.ones_like(sums), atol=1e-5)
    by_hand = sum(p.group(g, parts).log_prob(parts[g]) for g in range(GROUPS))
    assert torch.allclose(p.log_prob(x), by_hand)


@torch.no_grad()
def test_a_one_pixel_group_image_sums_to_one_over_all_its_values():
    """A grey 2x2 image (one pixel a group) with 4 mixture components: the product's mass summed over all
    256^4 images is 1, computed group by group (sum over x_3 inside x_2 inside ...) by the chain of tables."""
    torch.manual_seed(3)
    n_params = DiscretizedLogisticMixture.n_params(1, 4)
    base = DiscretizedLogisticMixture(torch.randn(1, n_params, 2, 2), 1, 4)
    p = SubpixelMixture(base, _shaken(SubpixelContext(1, n_params, width=4, layers=1), scale=3.0))
    values = torch.arange(256).float() / 255
    # the mass of x_0 = v0, x_1 = v1 over all x_2, x_3 is p(v0) p(v1 | v0) (each later table sums to 1): check the
    # inner sums on a grid of earlier values, and the outer exactly
    p0 = p.group(0, []).bin_probs(0).flatten()
    assert math.isclose(float(p0.sum()), 1.0, abs_tol=1e-6)
    for v0 in (0, 77, 255):
        for v1 in (3, 200):
            earlier = [values[v0].view(1, 1, 1, 1), values[v1].view(1, 1, 1, 1)]
            for g in (1, 2):
                table = p.group(g, earlier).bin_probs(0).flatten()
                assert math.isclose(float(table.sum()), 1.0, abs_tol=1e-6)
                earlier.append(values[int(table.argmax())].view(1, 1, 1, 1))
            table = p.group(3, earlier).bin_probs(0).flatten()
            assert math.isclose(float(table.sum()), 1.0, abs_tol=1e-6)


@torch.no_grad()
def test_samples_follow_the_scored_distribution():
    """80000 draws of a grey 2x2 image: group 1's values, drawn given each draw's group 0, match the scored tables
    of group 1 given those group-0 values, averaged over the draws, and not the decoder's table without context
    (group 0 matches its own table)."""
    p = _mixture(b=1, c=1, h=2, w=2, seed=5, scale=3.0)
    params = p.base.params.clone()
    params[:, 4:8] = 0.2 * params[:, 4:8]  # locations near the middle
    params[:, 8:12] = -2.5  # narrow logistics (scale 0.08 in [-1, 1]): the context's shifts show
    n = 80000
    torch.manual_seed(0)
    big = SubpixelMixture(DiscretizedLogisticMixture(params.expand(n, -1, -1, -1), 1, 4), p.context)
    x = big.sample()
    for g in (0, 1):
        draws = (group_of(x, g) * 255).round().long().flatten()
        hist = torch.bincount(draws, minlength=256).float() / n
        tables = big.group(g, [group_of(x, h) for h in range(g)]).bin_probs(0).reshape(n, 256).mean(0)
        assert 0.5 * (hist - tables).abs().sum() < 0.03  # total variation of the draws from their tables (0.015-0.02)
    no_context = big.base_group(1).bin_probs(0).reshape(n, 256).mean(0)
    assert 0.5 * (hist - no_context).abs().sum() > 0.05  # (0.065)


def assert_starts_as(model: SelfVAE, cfg: ModelConfig, added: str) -> SelfVAE:
    """A model of ``cfg`` given ``model``'s weights: only the weights named ``added...`` are new (its context nets,
    zero at the start), and its bound on smooth images is ``model``'s, sample for sample. Returns it."""
    with_ctx = SelfVAE(cfg).eval()
    missing, unexpected = with_ctx.load_state_dict(model.state_dict(), strict=False)
    assert not unexpected and missing and all(k.startswith(added) for k in missing)
    x = _smooth(4)
    torch.manual_seed(0)
    a = model.terms(x).nelbo
    torch.manual_seed(0)
    b = with_ctx.terms(x).nelbo
    assert torch.allclose(a, b)
    return with_ctx


@pytest.mark.parametrize("transforms", ["", "downscale"])
def test_a_model_given_a_context_starts_as_the_model_it_was(transforms):
    _, model = tiny_model(transforms, "standard", channels=3)
    cfg = dataclasses.replace(model.cfg, context_width=8, context_layers=2)
    with_ctx = assert_starts_as(model, cfg, "x_context.")
    x = _smooth(4)
    if transforms:  # the srVAE's context reads y_K (here 8x8, the half-size grid of x)
        assert with_ctx.x_context.cond_channels == 3
        p = with_ctx.p_x_given(0, x[:, :, ::2, ::2], torch.zeros(4, *cfg.latent_shape))
        assert isinstance(p, SubpixelMixture) and p.cond.shape == (4, 3, 8, 8)
    else:
        assert isinstance(with_ctx.p_y_given(torch.zeros(1, *cfg.latent_shape)), SubpixelMixture)


def test_training_the_context_lowers_the_bound_of_smooth_images():
    """Smooth images whose neighbouring pixels predict each other: fifty steps of the context nets alone take
    the negative ELBO down (the decoder and the latents stay as they were)."""
    _, model = tiny_model("", "standard", channels=3)
    model = SelfVAE(dataclasses.replace(model.cfg, context_width=16, context_layers=2)).train()
    x = _smooth(16)
    for p in model.parameters():
        p.requires_grad_(False)
    ctx = list(model.x_context.parameters())
    for p in ctx:
        p.requires_grad_(True)
    opt = torch.optim.Adam(ctx, lr=3e-3)

    def nelbo() -> float:
        torch.manual_seed(0)
        with torch.no_grad():
            return float(model.terms(x).nelbo.mean())

    before = nelbo()
    for _ in range(50):
        loss = model(x)
        opt.zero_grad()
        loss.backward()
        assert all(torch.isfinite(p.grad).all() for p in ctx)
        opt.step()
    assert nelbo() < before - 0.01 * before


@pytest.mark.parametrize("transforms", ["", "downscale"])
def test_a_context_model_round_trips_exactly_and_codes_at_its_bound(transforms):
    """Encoder and decoder code x group by group under the same parameters: exact round trips (images smaller
    than the tile too: their outside pixels are 0 to the context on both sides), and the model's x costs what
    its log-likelihood says."""
    assert_round_trips_at_its_bound(context_model(transforms))


def context_model(transforms: str, consistent: bool = False) -> SelfVAE:
    """A tiny RGB model (:func:`tiny_model`'s weights) with a context of 8 x 2 layers whose last layers are random."""
    _, model = tiny_model(transforms, "standard", channels=3)
    with_ctx = SelfVAE(dataclasses.replace(model.cfg, context_width=8, context_layers=2, consistent=consistent))
    with_ctx.eval().load_state_dict(model.state_dict(), strict=False)
    _shaken(with_ctx.x_context, scale=1.0)
    return with_ctx


def assert_round_trips_at_its_bound(model: SelfVAE) -> None:
    """Five images smaller than the tile in one file: decoded exactly, at the information the coder coded."""
    images = digits(5, channels=3)
    data, rep = compress(model, images, group=2, threads=2)
    dec = decompress(model, data, threads=1)
    for got, im in zip(dec.images, images, strict=True):
        assert np.array_equal(got, im.pixels)
    coded = 8 * sum(rep.parts_bytes.values())
    assert abs(coded - rep.ideal_bits) <= 1e-3 * rep.ideal_bits + 64


def test_a_context_needs_an_even_image_and_renormalises_only_under_downscale_2():
    cfg = get_preset("mnist-vae").model
    with pytest.raises(SelfVAEError, match="even height and width"):
        SelfVAE(dataclasses.replace(cfg, image_shape=(1, 15, 15), latent_shape=(2, 15, 15), context_width=4,
                                    prior="standard", prior_kwargs={}, q_u=TINY, p_y=TINY))
    _, model = tiny_model("", "standard", channels=3)
    with pytest.raises(SelfVAEError, match="last transform is 'downscale' \\(factor 2\\)"):
        SelfVAE(dataclasses.replace(model.cfg, context_width=4)).set_consistent(True)
    with pytest.raises(SelfVAEError, match="model.transforms is 'downscale:4'"):
        SelfVAE(dataclasses.replace(cfg, image_shape=(1, 16, 16), latent_shape=(2, 4, 4), transforms="downscale:4",
                                    consistent=True, context_width=4, q_u=TINY, p_y=TINY, q_z=TINY, p_z=TINY,
                                    p_x=TINY))


def test_a_context_added_to_a_trained_model_trains_alone(tmp_path):
    """``train.init`` a trained model without a context into one with it, ``train.trainable=x_context``: the run
    starts from exactly that model, only the context's weights move, and its validation bound goes down."""
    import selfvae
    from selfvae.training.state import trainable

    images = _smooth(48).numpy()
    cfg = get_preset("mnist-vae")
    m = cfg.model
    m.image_shape, m.latent_shape, m.n_mix, m.q_u, m.p_y = (3, 16, 16), (2, 4, 4), 3, TINY, TINY
    m.prior, m.prior_kwargs = "standard", {}
    kw = dict(train_data=images[:40], val_data=images[40:], test_data=images[40:], progress=False, batch_size=8,
              eval_every=10, eval_limit=None, final_iw_limit=0, sample_every=1000, init_batch=16)
    base = selfvae.train(cfg, out=tmp_path / "base", steps=10, **kw)
    with_ctx = selfvae.train(cfg, out=tmp_path / "ctx", steps=30, init=str(tmp_path / "base"), context_width=16,
                             context_layers=2, trainable="x_context", lr=3e-3, ema_decay=None, **kw)
    before, after = base.state_dict(), with_ctx.state_dict()
    assert all(torch.equal(before[k].float(), after[k].float()) for k in before)
    assert any(not torch.equal(v, torch.zeros_like(v)) for k, v in after.items() if k.startswith("x_context."))
    x = torch.from_numpy(images[40:])
    with torch.no_grad():
        torch.manual_seed(0)
        b0 = float(base.terms(x).nelbo.mean())
        torch.manual_seed(0)
        b1 = float(with_ctx.terms(x).nelbo.mean())
    assert b1 < b0
    with pytest.raises(SelfVAEError, match="no parameter of the model starts with"):
        trainable(with_ctx, "nothing_like_this")
