"""The K-level model: its terms, the K = 0 reduction, the bounds, gradients and the operations."""

from __future__ import annotations

import math

import pytest
import torch
from conftest import tiny_config

from selfvae.errors import SelfVAEError
from selfvae.models.ops import (
    canonical_mode,
    generate,
    interpolate,
    memory_cost,
    mode_label,
    modes,
    reconstruct,
    super_resolve,
)
from selfvae.models.selfvae import SelfVAE, to_input, to_target
from selfvae.nn.layers import data_dependent_init


def make_model(transforms: str = "", prior: str = "realnvp", seed: int = 0) -> SelfVAE:
    torch.manual_seed(seed)
    model = SelfVAE(tiny_config(None, transforms, prior).model)
    x = torch.randint(0, 256, (16, 1, 16, 16), dtype=torch.uint8)
    data_dependent_init(model, lambda: model.terms(x))
    return model.double()


@pytest.mark.parametrize("transforms", ["downscale", "downscale,downscale", "sketch"])
def test_log_weight_is_the_joint_over_the_posterior_by_hand(transforms, rand_images):
    """-nelbo (Monte Carlo KL) is log p(y_1|u) p(u) / q(u|y_1) + sum_k log p(z_k|y_k, z_{k-1}) p(y_{k+1}|y_k, z_k)
    / q(z_k|y_{k+1}), assembled here from the model's parts with the same noise; the loss is its mean over
    images in bits per dimension of x (16 x 16 = 256 dimensions)."""
    model = make_model(transforms)
    x = rand_images(6)
    torch.manual_seed(1)
    t = model.terms(x, analytic_kl=False)
    assert t.re.shape == (6, model.K + 1) and t.kl_z.shape == (6, model.K) and t.kl_u.shape == (6,)
    torch.manual_seed(1)  # the same draws, in the model's order: u, then z_1, z_2, ...
    levels = model.levels(x)
    q_u = model.q_u_given(levels[0])
    q_z = [model.q_z_given(k, levels[k + 1]) for k in range(model.K)]
    u = q_u.rsample()
    logw = model.p_y_given(u).log_prob(model.target(levels[0])) + model.p_u.log_prob(u) - q_u.log_prob(u)
    z_prev = u
    for k in range(model.K):
        z = q_z[k].rsample()
        y_in = model.inp(levels[k])
        logw = logw + model.p_z[k](model.p_z[k].encode_y(y_in), z_prev).log_prob(z) - q_z[k].log_prob(z)
        logw = logw + model.p_x[k](y_in, z).log_prob(model.target(levels[k + 1]))
        z_prev = z
    torch.testing.assert_close(-t.nelbo, logw)
    torch.manual_seed(1)
    loss = model(x)  # analytic KL for z: a different estimate of the same bound
    torch.manual_seed(1)
    t_analytic = model.terms(x)
    torch.testing.assert_close(loss, (t_analytic.nelbo / (256 * math.log(2))).mean())
    assert torch.isfinite(loss)


def test_k0_is_the_plain_vae(rand_images):
    """With no transform the bound is log p(x|u) + log p(u) - log q(u|x), nothing else."""
    model = make_model("")
    assert model.K == 0 and len(model.q_z) == len(model.p_z) == len(model.p_x) == 0
    x = rand_images(5)
    torch.manual_seed(3)
    logw = -model.terms(x, analytic_kl=False).nelbo
    torch.manual_seed(3)
    q = model.q_u_given(x)
    u = q.rsample()
    by_hand = model.p_y_given(u).log_prob(model.target(x)) + model.p_u.log_prob(u) - q.log_prob(u)
    assert torch.allclose(logw, by_hand)
    assert model.joint_dims == model.x_dims


def test_levels_order_and_shapes(rand_images):
    model = make_model("downscale,downscale")
    levels = model.levels(rand_images(3))
    assert [tuple(lv.shape[1:]) for lv in levels] == [(1, 4, 4), (1, 8, 8), (1, 16, 16)]
    assert model.joint_dims == 16 + 64 + 256


@pytest.mark.slow
def test_analytic_and_monte_carlo_kl_agree_on_average(rand_images):
    model = make_model("downscale")
    x = rand_images(2)
    torch.manual_seed(0)
    a = model.terms(x, n_samples=2000).kl_z.mean()
    b = model.terms(x, n_samples=2000, analytic_kl=False).kl_z.mean()
    assert abs(a - b) < 0.05 * abs(a) + 0.5


@pytest.mark.parametrize("prior", ["standard", "mog", "realnvp"])
def test_gradients_are_finite(prior, rand_images):
    model = make_model("downscale", prior=prior).float()
    model(rand_images(4)).backward()
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)


def test_bad_images_are_rejected(rand_images):
    model = make_model("")
    with pytest.raises(SelfVAEError, match="dtype"):
        model.terms(rand_images(2).float())
    with pytest.raises(SelfVAEError, match="shape"):
        model.terms(rand_images(2, shape=(3, 16, 16)))


# ----- operations -------------------------------------------------------------------------------------
def _check(img: torch.Tensor, shape) -> None:
    assert img.dtype == torch.uint8 and tuple(img.shape[1:]) == tuple(shape)


@pytest.mark.parametrize("transforms", ["", "downscale", "downscale,downscale"])
def test_operations_return_images_of_the_right_shape(transforms, rand_images):
    model = make_model(transforms).float()
    x = rand_images(3)
    levels = generate(model, 3)
    assert len(levels) == model.K + 1
    for lv, shape in zip(levels, model.shapes, strict=True):
        _check(lv, shape)
    for m in modes(model):
        out = reconstruct(model, x, m)
        assert len(out) == model.K + 1
        _check(out[-1], model.shapes[-1])
        assert 0 < memory_cost(model, m)["fraction"] <= 2
    for decode in ("mean", "mode"):
        _check(reconstruct(model, x, "rs1", decode=decode)[-1], model.shapes[-1])
    path = interpolate(model, x[:2], x[1:3], steps=5)
    assert path.shape == (2, 5, *model.shapes[-1]) and path.dtype == torch.uint8
    if model.K:
        given = model.levels(x)[-2]
        out = super_resolve(model, given)
        _check(out[-1], model.shapes[-1])
        assert torch.equal(out[-2], given)  # the given level is kept as is
    else:
        with pytest.raises(SelfVAEError):
            super_resolve(model, x)


def test_modes_match_the_papers_list():
    assert modes(make_model("")) == ["rs1"]
    assert modes(make_model("downscale")) == ["rs1", "rs2", "cr", "cg"]
    assert modes(make_model("downscale,downscale")) == ["rs1", "rs2", "rs3", "cr", "cg"]
    m = make_model("downscale")
    assert memory_cost(m, "rs1")["values"] == 64 and memory_cost(m, "rs2")["values"] == 128
    assert memory_cost(m, "cg")["values"] == 64  # y is 8x8
    assert memory_cost(m, "cr")["values"] == 128  # y and z
    # the thesis's long names and this library's old names are aliases
    for alias, name in (("superres", "cg"), ("super-resolution", "cg"), ("conditional-generation", "cg"),
                        ("cond", "cr"), ("conditional-reconstruction", "cr"), ("reconstruction", "rs1")):
        assert canonical_mode(m, alias) == name
        assert memory_cost(m, alias) == memory_cost(m, name)
    assert [mode_label(m, n) for n in modes(m)] == ["RS1: u", "RS2: u, z1", "CR: y1, z1", "CG: y1 (super-res.)"]
    with pytest.raises(SelfVAEError, match="supports rs1"):
        canonical_mode(make_model(""), "cg")
    with pytest.raises(SelfVAEError):
        reconstruct(m, torch.zeros(1, 1, 16, 16, dtype=torch.uint8), "rs3")


def test_inputs_are_scaled_symmetrically():
    x = torch.tensor([0, 255], dtype=torch.uint8)
    assert to_input(x).tolist() == [-1.0, 1.0] and to_target(x).tolist() == [0.0, 1.0]


def test_latents_with_fewer_channels_than_pixels_and_level_names(rand_images):
    """Latents of shape (2, 4, 4) (channels != side, unlike the presets) flow through every network; evaluate()
    names the terms y1 (coarsest), y2, x and kl_z1, kl_z2."""
    from selfvae.evaluation.bounds import evaluate

    cfg = tiny_config(None, "downscale,downscale").model
    cfg.latent_shape = (2, 4, 4)
    torch.manual_seed(0)
    model = SelfVAE(cfg)
    x = rand_images(4)
    data_dependent_init(model, lambda: model.terms(x))
    m = evaluate(model, [x], 2, progress=False)
    assert [k for k in m if k.startswith(("re_", "kl_"))] == ["kl_u", "re_y1", "re_y2", "re_x", "kl_z1", "kl_z2"]
    assert m["re_y1"] < m["re_y2"] < m["re_x"]  # 4x4, 8x8 and 16x16 pixels to score


@pytest.mark.parametrize(("image", "latent", "what"), [((1, 16, 16), (4, 3, 3), "image"),
                                                         ((1, 12, 12), (4, 4, 4), "image")])
def test_latent_grid_must_divide_the_image_by_a_power_of_two(image, latent, what):
    cfg = tiny_config(None, "").model
    cfg.image_shape, cfg.latent_shape = image, latent
    with pytest.raises(SelfVAEError) as e:
        SelfVAE(cfg)
    assert f"{what} has shape {image}: the latent grid {latent[1:]} must divide it by a power of two" in str(e.value)


def test_uint8_conversions_round_trip_the_grid():
    """to_uint8 rounds [0, 1] to the nearest of the 256 levels and clamps; to_target / to_input invert it."""
    from selfvae.models.selfvae import to_uint8

    levels = torch.arange(256, dtype=torch.uint8)
    assert torch.equal(to_uint8(to_target(levels)), levels)
    assert torch.equal(to_uint8(torch.tensor([-0.3, 0.0, 0.4 / 255, 0.6 / 255, 1.0, 1.7])),
                       torch.tensor([0, 0, 0, 1, 255, 255], dtype=torch.uint8))
    torch.testing.assert_close(to_input(levels)[[0, 255]], torch.tensor([-1.0, 1.0]))
    torch.testing.assert_close(to_target(levels)[[0, 51, 255]], torch.tensor([0.0, 0.2, 1.0]))
