"""``--set`` reaches every config field, nested and frozen ones and prior options included, and refuses unknown
keys and wrongly typed values with the valid keys listed."""

from __future__ import annotations

import pytest

from selfvae.config import apply_overrides
from selfvae.errors import SelfVAEError
from selfvae.models.selfvae import SelfVAE
from selfvae.nn.layers import WNConv2d
from selfvae.nn.nets import NetSpec
from selfvae.presets import get_preset


def test_nested_and_frozen_fields_and_prior_options():
    cfg = get_preset("mnist-srvae")
    apply_overrides(cfg, ["model.q_u.width=64", "model.p_x.top_dense=false", "model.prior_kwargs.num_blocks=4",
                          "train.lr=1e-3", "train.ema_decay=0.999", "train.max_minutes=none",
                          "model.latent_shape=4,8,8", "data.image_size=32", "data.resize=pad"])
    m = cfg.model
    assert m.q_u.width == 64 and m.q_u.growth == 16 and m.p_y.width == 32  # only q_u changed
    assert m.p_x.top_dense is False and m.prior_kwargs == {"mid_channels": 32, "num_blocks": 4, "num_scales": 2}
    assert cfg.train.lr == 1e-3 and cfg.train.ema_decay == 0.999 and cfg.train.max_minutes is None
    assert m.latent_shape == (4, 8, 8) and cfg.data.image_size == 32 and cfg.data.resize == "pad"
    model = SelfVAE(m)  # the overridden sizes build the network they describe
    first_conv = next(mod for mod in model.q_u.modules() if isinstance(mod, WNConv2d))
    assert first_conv.v.shape[0] == 64
    assert len(model.p_u.flow.in_couplings[0].net.blocks) == 4
    assert get_preset("mnist-srvae").model.q_u.width == 32  # the preset itself is untouched


def test_an_unset_inner_net_is_set_from_its_parents_size():
    """``p_x_z`` (the z-decoder inside p(x|y,z)) is None, meaning "as p_x": setting one of its fields starts from
    p_x's size (it was refused: "model.p_x_z is a value, not a section")."""
    cfg = get_preset("cifar10-2lvl-small")
    assert cfg.model.p_x_z is None and cfg.model.inner("p_x_z") is cfg.model.p_x  # the net is built from p_x's sizes
    apply_overrides(cfg, ["model.p_x_z.width=64", "model.p_z_y.steps=5"])
    assert cfg.model.inner("p_x_z") is cfg.model.p_x_z
    m = cfg.model
    assert m.p_x_z == NetSpec(64, m.p_x.growth, m.p_x.steps, m.p_x.blocks) and m.p_x.width == 32
    assert m.p_z_y == NetSpec(m.p_z.width, m.p_z.growth, 5) and m.p_z.steps == 3
    model = SelfVAE(m)
    first_conv = next(mod for mod in model.p_x[0].z_net.modules() if isinstance(mod, WNConv2d))
    assert first_conv.v.shape[0] == 64


def test_changing_the_prior_starts_from_its_own_options():
    cfg = get_preset("mnist-vae")
    apply_overrides(cfg, ["model.prior_kwargs.n_components=5", "model.prior=mog"])
    assert cfg.model.prior_kwargs == {"n_components": 5}
    SelfVAE(cfg.model)


@pytest.mark.parametrize("item, words", [
    ("model.q_u.widht=3", ["model.q_u.width", "model.q_u.growth"]),
    ("model.prior_kwargs.n_layers=4", ["model.prior_kwargs.num_blocks", "model.prior_kwargs.num_scales"]),
    ("foo.bar=1", ["data", "model", "train"]),
    ("train.lr=abc", ["train.lr", "a number"]),
    ("train.steps=1.5", ["train.steps", "an integer"]),
    ("train.compile=maybe", ["true or false"]),
    ("model.q_u=3", ["section", "model.q_u.width"]),
    ("train.lr.x=1", ["train.lr is a value"]),
    ("train.lr", ["section.field=value"]),
    ("model.prior_kwargs.num_blocks=many", ["model.prior_kwargs.num_blocks", "an integer"]),
])
def test_bad_overrides_say_what_is_valid(item, words):
    with pytest.raises(SelfVAEError) as e:
        apply_overrides(get_preset("mnist-vae"), [item])
    for w in words:
        assert w in str(e.value)


@pytest.mark.parametrize("key, value", [("train.amp", "fp8"), ("train.clock", "gpu"), ("train.lr_schedule", "step")])
def test_a_setting_that_names_a_choice_must_name_one_of_them(key, value):
    """Choices are refused before any work, naming the key and the choices (``train.amp`` was refused only
    inside the first training step, after the data and the model were built)."""
    from selfvae.config import CHOICES, check_config

    cfg = get_preset("mnist-vae")
    section, name = key.split(".")
    setattr(getattr(cfg, section), name, value)
    with pytest.raises(SelfVAEError, match=rf"{key}='{value}': must be one of {', '.join(CHOICES[key])}"):
        check_config(cfg)
    for option in CHOICES[key]:
        setattr(getattr(cfg, section), name, option)
        cfg.train.max_minutes = 5.0  # what cosine-time anneals over
        check_config(cfg)
