"""The residual encoder (``model.q_u_residual``): a second encoder of x whose output adds to q_u's, starting at zero,
so that a trained model's encoder can be widened without changing the model it starts from."""

from __future__ import annotations

import copy
import dataclasses

import pytest
import torch
from test_codec import TINY
from test_context import _smooth

from selfvae.config import apply_overrides
from selfvae.errors import SelfVAEError
from selfvae.models.build import build_model, resolved
from selfvae.nn.layers import data_dependent_init, weight_norm_layers
from selfvae.nn.nets import NetSpec
from selfvae.presets import get_preset
from selfvae.runs import layout
from selfvae.runs.loading import load_run
from selfvae.runs.weights import write_weights
from selfvae.training.state import init_from

RESIDUAL = NetSpec(width=8, growth=8, steps=2, transition=True)


def _cfg():
    cfg = get_preset("mnist-vae")
    m = cfg.model
    m.image_shape, m.latent_shape, m.n_mix, m.q_u, m.p_y = (3, 16, 16), (2, 4, 4), 3, TINY, TINY
    m.prior, m.prior_kwargs = "standard", {}
    return cfg


def _kw(images):
    return dict(train_data=images[:40], val_data=images[40:], test_data=images[40:], progress=False, batch_size=8,
                eval_every=10, eval_limit=None, final_iw_limit=0, sample_every=1000, init_batch=16)


def _nelbo(model, x: torch.Tensor) -> torch.Tensor:
    torch.manual_seed(0)
    with torch.no_grad():
        return model.terms(x).nelbo


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    import selfvae

    images = _smooth(48).numpy()
    out = tmp_path_factory.mktemp("residual") / "base"
    selfvae.train(_cfg(), out=out, steps=10, **_kw(images))
    return out, images


def test_a_residual_encoder_added_to_a_trained_model_starts_as_that_model(base):
    """``train.init`` into a model with a residual encoder: every bound is the source's to the last bit, though the
    residual's layers are initialised from data (it outputs zeros until trained)."""
    folder, images = base
    cfg, source = load_run(folder)
    wider = copy.deepcopy(cfg)
    wider.model = dataclasses.replace(wider.model, q_u_residual=RESIDUAL)
    model = build_model(wider, "cpu").to(memory_format=torch.channels_last)
    init_from(model, wider, str(folder), "cpu")
    x = torch.from_numpy(images[40:])
    data_dependent_init(model, lambda: model.terms(x))
    model.eval()
    assert all(bool(m.initialized) for m in weight_norm_layers(model.q_u_residual))
    assert model.q_u_residual(model.inp(x)).abs().max() == 0
    assert torch.equal(_nelbo(model, x), _nelbo(source, x))


def test_a_residual_encoder_trains_alone_and_lowers_the_bound(base, tmp_path):
    """``train.trainable=q_u_residual``: only the residual's weights move, they move away from zero, the model
    saves and loads with it (its config names it), and its bound on held-out images goes down."""
    import selfvae

    folder, images = base
    sizes = {f"model__q_u_residual__{k}": v for k, v in dataclasses.asdict(RESIDUAL).items()}
    on = selfvae.train(_cfg(), out=tmp_path / "r", steps=30, init=str(folder), trainable="q_u_residual", lr=3e-3,
                       ema_decay=None, **sizes, **_kw(images))
    _, source = load_run(folder)
    cfg, loaded = load_run(tmp_path / "r")
    assert cfg.model.q_u_residual == RESIDUAL
    before, after = source.state_dict(), loaded.state_dict()
    assert all(torch.equal(before[k].float(), after[k].float()) for k in before)
    last = f"q_u_residual.net.{len(loaded.q_u_residual.net) - 1}.weight"  # the layer that starts at zero
    assert after[last].abs().sum() > 0
    x = torch.from_numpy(images[40:])
    assert float(_nelbo(loaded, x).mean()) < float(_nelbo(source, x).mean())
    assert on.q_u_residual is not None


def test_a_residual_encoder_of_other_sizes_than_the_sources_is_refused_by_name(base, tmp_path):
    folder, _ = base
    cfg, _ = load_run(folder)
    with_one = copy.deepcopy(cfg)
    with_one.model = dataclasses.replace(with_one.model, q_u_residual=RESIDUAL)
    model = build_model(with_one, "cpu")
    init_from(model, with_one, str(folder), "cpu")
    src = tmp_path / "with-residual"
    src.mkdir()
    write_weights(model, src, "float32", with_one.name)
    resolved(with_one).save(src / layout.CONFIG)
    other = copy.deepcopy(with_one)
    other.model = dataclasses.replace(other.model, q_u_residual=dataclasses.replace(RESIDUAL, width=16))
    with pytest.raises(SelfVAEError, match=r"model.q_u_residual \(.*width': 8.*width': 16"):
        init_from(build_model(other, "cpu"), other, str(src), "cpu")


def test_a_residual_encoder_is_set_from_the_command_line_from_none():
    cfg = _cfg()
    assert cfg.model.q_u_residual is None
    apply_overrides(cfg, ["model.q_u_residual.width=24", "model.q_u_residual.transition=true"])
    assert cfg.model.q_u_residual == NetSpec(width=24, transition=True)
