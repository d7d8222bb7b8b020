"""A selfVAE's coarsest level y_1 with its own sub-pixel context (``model.y_context_width``): p(y_1 | u) over y_1's
2x2 groups, each on the groups before it. The model starts as the one it was, the codec round-trips it exactly at
its bound (beside x's context, renormalised or not), ``train.init`` adds it to a trained model and it trains alone,
and sampling draws y_1 group by group."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from test_codec import TINY, tiny_model
from test_context import _shaken, _smooth, assert_round_trips_at_its_bound, assert_starts_as

from selfvae.distributions import DiscretizedLogisticMixture, SubpixelMixture
from selfvae.errors import SelfVAEError
from selfvae.models.ops import generate
from selfvae.models.selfvae import SelfVAE
from selfvae.presets import get_preset
from selfvae.transforms import Downscale


def y_context_model(x_context: int = 0, consistent: bool = False, seed: int = 0) -> SelfVAE:
    """A tiny RGB srVAE (16 -> 8) whose y_1 has a context of 8 x 2 layers with random last layers (and x one of
    ``x_context`` channels where above 0)."""
    _, model = tiny_model("downscale", "standard", channels=3)
    cfg = dataclasses.replace(model.cfg, y_context_width=8, context_width=x_context, context_layers=2,
                              consistent=consistent)
    with_ctx = SelfVAE(cfg).eval()
    with_ctx.load_state_dict(model.state_dict(), strict=False)
    _shaken(with_ctx.y_context, scale=1.0, seed=seed)
    if x_context:
        _shaken(with_ctx.x_context, scale=1.0, seed=seed + 1)
    return with_ctx


def test_a_model_given_a_y_context_starts_as_it_was_and_scores_y_by_groups():
    _, model = tiny_model("downscale", "standard", channels=3)
    with_ctx = assert_starts_as(model, dataclasses.replace(model.cfg, y_context_width=8, context_layers=2),
                                "y_context.")
    assert with_ctx.x_context is None and with_ctx.y_context.cond_channels == 0
    x = _smooth(4)
    u = torch.randn(4, *with_ctx.cfg.latent_shape)
    p = with_ctx.p_y_given(u)
    assert isinstance(p, SubpixelMixture) and isinstance(model.p_y_given(u), DiscretizedLogisticMixture)
    assert with_ctx.has_context(0) and not with_ctx.has_context(1)
    # with its nets no longer zero, y_1's score changes (the context is used) and stays a sum over y_1's pixels
    _shaken(with_ctx.y_context, scale=1.0)
    y = with_ctx.target(with_ctx.levels(x)[0])
    assert not torch.allclose(with_ctx.p_y_given(u).log_prob(y), model.p_y_given(u).log_prob(y))


def test_a_plain_vae_and_an_odd_y_refuse_a_y_context():
    _, vae = tiny_model("", "standard", channels=3)
    with pytest.raises(SelfVAEError, match="y_1 is x, whose context is model.context_width"):
        SelfVAE(dataclasses.replace(vae.cfg, y_context_width=8))
    cfg = get_preset("mnist-srvae").model
    with pytest.raises(SelfVAEError, match=r"level y_1 \(1, 7, 7\).*even height and width"):
        SelfVAE(dataclasses.replace(cfg, image_shape=(1, 14, 14), latent_shape=(2, 7, 7), y_context_width=4,
                                    prior="standard", prior_kwargs={}, q_u=TINY, p_y=TINY, q_z=TINY, p_z=TINY,
                                    p_x=TINY))


@pytest.mark.parametrize("x_context,consistent", [(0, False), (8, False), (8, True)])
def test_a_y_context_model_round_trips_exactly_and_codes_at_its_bound(x_context, consistent):
    """y_1 coded group by group (the last group first) under the parameters the decoder rebuilds from the groups
    it has popped: exact round trips, the file at the information coded; beside x's own context too."""
    assert_round_trips_at_its_bound(y_context_model(x_context, consistent))


@torch.no_grad()
def test_samples_draw_y_by_groups_and_x_stays_consistent_with_it():
    model = y_context_model(x_context=8, consistent=True)
    torch.manual_seed(2)
    y, x = generate(model, 6)
    assert y.shape == (6, 3, 8, 8) and y.dtype == torch.uint8 and torch.equal(Downscale()(x), y)


def test_a_y_context_added_to_a_trained_context_model_trains_alone(tmp_path):
    """``train.init`` a consistent context srVAE into one with a y context too, ``train.trainable=y_context``: it
    starts from exactly that model, only the y context moves, its bound goes down; a y context whose layers
    differ from the x context's the source has is refused by name."""
    import selfvae

    images = _smooth(48).numpy()
    cfg = get_preset("mnist-vae")
    m = cfg.model
    m.image_shape, m.transforms, m.latent_shape, m.n_mix = (3, 16, 16), "downscale", (2, 4, 4), 3
    m.q_u = m.p_y = m.q_z = m.p_z = m.p_x = TINY
    m.prior, m.prior_kwargs, m.context_width, m.context_layers, m.consistent = "standard", {}, 8, 1, True
    kw = dict(train_data=images[:40], val_data=images[40:], test_data=images[40:], progress=False, batch_size=8,
              eval_every=10, eval_limit=None, final_iw_limit=0, sample_every=1000, init_batch=16)
    base = selfvae.train(cfg, out=tmp_path / "base", steps=10, **kw)
    on = selfvae.train(cfg, out=tmp_path / "y", steps=30, init=str(tmp_path / "base"), y_context_width=16,
                       trainable="y_context", lr=3e-3, ema_decay=None, **kw)
    before, after = base.state_dict(), on.state_dict()
    assert all(torch.equal(before[k].float(), after[k].float()) for k in before)
    assert any(k.startswith("y_context.") and v.abs().sum() > 0 for k, v in after.items())
    x = torch.from_numpy(images[40:])
    bounds = []
    for model in (base, on):
        torch.manual_seed(0)
        with torch.no_grad():
            bounds.append(float(model.terms(x).nelbo.mean()))
    assert bounds[1] < bounds[0]
    with pytest.raises(SelfVAEError, match=r"model.context_layers \(1 there, 2 here\)"):
        selfvae.train(cfg, out=tmp_path / "bad", steps=1, init=str(tmp_path / "base"), y_context_width=16,
                      context_layers=2, **kw)
