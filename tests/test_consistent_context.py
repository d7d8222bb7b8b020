"""A consistent srVAE's sub-pixel context (model.consistent with model.context_width): each 2x2 group truncated to
the values its block's average allows (selfvae.distributions.WindowedMixture, selfvae.renormalise.group_window).
The maths: exact window masses in both tails, each factor normalised on its windows, the whole likelihood
normalised over exactly the images whose downscaling is y, samples from it; then the model (a tighter bound,
training, generation) and the codec (exact round trips at the bound)."""

from __future__ import annotations

import functools
import itertools
import math

import mpmath
import pytest
import torch
from test_codec import TINY
from test_context import _shaken, _smooth, assert_round_trips_at_its_bound, context_model

from selfvae import codec
from selfvae.distributions import DiscretizedLogisticMixture, SubpixelMixture, WindowedMixture, log_window_mass
from selfvae.errors import SelfVAEError
from selfvae.models.ops import generate
from selfvae.nn.context import SubpixelContext
from selfvae.presets import get_preset
from selfvae.renormalise import group_window
from selfvae.transforms import Downscale

compress = functools.partial(codec.compress, png_instead=False)


def _reference_log_mass(loc: float, inv_s: float, lo: int, hi: int) -> float:
    """``log P(lo <= v <= hi)`` at 60 digits (mpmath)."""
    mpmath.mp.dps = 60
    cdf = lambda v: 1 / (1 + mpmath.exp(-(mpmath.mpf(v) * 2 / 255 - 1 - loc) * inv_s))  # noqa: E731 (edge below v)
    below = 0 if lo <= 0 else cdf(mpmath.mpf(lo) - mpmath.mpf(1) / 2)
    above = 1 if hi >= 255 else cdf(mpmath.mpf(hi) + mpmath.mpf(1) / 2)
    return float(mpmath.log(above - below))


@pytest.mark.parametrize(("loc", "log_scale", "lo", "hi"), [
    (0.0, -3.0, 120, 135), (0.0, -3.0, 0, 255), (0.0, -3.0, 0, 3), (0.5, -4.0, 252, 255), (0.5, -4.0, 191, 191),
    (-0.9, -6.5, 250, 253),  # 2300 scales above the centre: the tables' sigmoid differences round to 0
    (0.9, -6.5, 0, 0), (0.2, 2.0, 7, 9),  # far below; a logistic wider than the whole range
])
def test_window_masses_are_exact_in_both_tails(loc, log_scale, lo, hi):
    got = float(log_window_mass(torch.tensor(loc, dtype=torch.float64), torch.tensor(math.exp(-log_scale),
                                dtype=torch.float64), torch.tensor(lo), torch.tensor(hi)))
    want = _reference_log_mass(loc, math.exp(-log_scale), lo, hi)
    assert math.isfinite(got)
    assert abs(got - want) <= 1e-9 * max(1.0, abs(want))


def _windowed(seed: int, widths: tuple[int, int, int] = (4, 3, 4), b: int = 2, h: int = 3, w: int = 2,
              n_mix: int = 4) -> WindowedMixture:
    """Random RGB mixtures with narrow windows anywhere in 0..255 (edges included), in float64."""
    g = torch.Generator().manual_seed(seed)
    params = torch.randn(b, DiscretizedLogisticMixture.n_params(3, n_mix), h, w, generator=g, dtype=torch.float64)
    lo = torch.randint(0, 256, (b, 3, h, w), generator=g)
    lo[0, :, 0, 0], lo[0, :, 0, 1] = 0, 255  # windows at both ends of the range
    width = torch.tensor(widths).view(1, 3, 1, 1)
    lo = torch.minimum(lo, 256 - width)
    return WindowedMixture(params, 3, n_mix, lo, lo + width - 1)


def test_a_windowed_mixture_is_normalised_on_its_windows_and_zero_outside():
    """Every pixel's probabilities over all the colours in its windows' box sum to 1 (48 colours, RGB coupling
    included); a colour outside a window has probability 0; the coding tables agree (each channel's table given
    the earlier channels sums to 1 and is 0 outside the window; a component's run and place tables multiply to
    its 256-way table)."""
    d = _windowed(0)
    b, _, h, w = d.lo.shape
    offsets = torch.tensor(list(itertools.product(range(4), range(3), range(4))))  # [48, 3]
    total = torch.zeros(b, h, w, dtype=torch.float64)
    for off in offsets:
        x = (d.lo + off.view(1, 3, 1, 1)).double() / 255
        total += d.log_prob_per_dim(x).exp()
        for c in range(3):
            table = d.bin_probs(c, x)
            assert torch.allclose(table.sum(-1), torch.ones_like(total), atol=1e-12)
            values = torch.arange(256).view(1, 1, 1, 256)
            inside = (values >= d.lo[:, c].unsqueeze(-1)) & (values <= d.hi[:, c].unsqueeze(-1))
            assert float(table[~inside].abs().max()) == 0.0
        k = torch.randint(0, 4, (b, h, w))
        for c in range(3):
            whole = d.component_bin_probs(c, k, x)
            runs = d.component_run_probs(c, k, x)
            run = torch.div(d.lo[:, c], 16, rounding_mode="floor")
            places = d.component_run_probs(c, k, x, run)
            value = d.lo[:, c]  # the window's first value: its run's and its place's probabilities multiply
            got = runs.gather(-1, run.unsqueeze(-1)) * places.gather(-1, (value % 16).unsqueeze(-1))
            assert torch.allclose(got.squeeze(-1), whole.gather(-1, value.unsqueeze(-1)).squeeze(-1), atol=1e-12)
    assert torch.allclose(total, torch.ones_like(total), atol=1e-10)
    outside = (d.lo + torch.tensor([4, 0, 0]).view(1, 3, 1, 1)).clamp(max=255).double() / 255
    lp = d.log_prob_per_dim(outside)
    assert torch.isneginf(lp[(d.lo[:, 0] + 4) <= 255]).all()
    assert torch.allclose(d.component_posterior(x).sum(-1), torch.ones_like(total))


def test_windows_outside_the_values_are_refused_and_empty_ones_hold_nothing():
    params = torch.zeros(1, DiscretizedLogisticMixture.n_params(1, 2), 1, 2)
    with pytest.raises(SelfVAEError, match="must lie in 0..255"):
        WindowedMixture(params, 1, 2, torch.full((1, 1, 1, 2), -1), torch.full((1, 1, 1, 2), 4))
    d = WindowedMixture(params, 1, 2, torch.tensor([[[[5, 5]]]]), torch.tensor([[[[4, 9]]]]))
    lp = d.log_prob_per_dim(torch.full((1, 1, 1, 2), 5 / 255))
    assert float(lp[0, 0, 0]) == -math.inf and math.isfinite(float(lp[0, 0, 1]))


def _consistent(y: torch.Tensor, seed: int = 3, scale: float = 3.0) -> SubpixelMixture:
    """A grey 2x(2W) image's context likelihood, renormalised onto the block averages ``y`` ``[1, 1, 1, W]``."""
    torch.manual_seed(seed)
    n_params = DiscretizedLogisticMixture.n_params(1, 3)
    params = torch.randn(1, n_params, 2, 2 * y.shape[-1], dtype=torch.float64)
    params[:, 3:6] = params[:, 3:6] * 0.1 + (y.double().repeat_interleave(2, -1).repeat(1, 1, 2, 1) / 127.5 - 1)
    context = _shaken(SubpixelContext(1, n_params, width=4, layers=1), scale).double()
    return SubpixelMixture(DiscretizedLogisticMixture(params, 1, 3), context, average=y)


def _blocks_averaging_to(v: int) -> list[tuple[int, ...]]:
    """Every 2x2 block (in group order) whose round-half-up average is ``v``."""
    values = range(max(0, 4 * v - 2 - 3 * 255), min(255, 4 * v + 1) + 1)
    return [b for b in itertools.product(values, repeat=4) if (sum(b) + 2) // 4 == v]


def _image(blocks: tuple[tuple[int, ...], ...]) -> torch.Tensor:
    """Grey ``[1, 1, 2, 2n]`` from ``n`` blocks given in group order (0,0), (1,1), (0,1), (1,0)."""
    x = torch.zeros(1, 1, 2, 2 * len(blocks), dtype=torch.float64)
    for i, (a, b, c, d) in enumerate(blocks):
        x[0, 0, 0, 2 * i], x[0, 0, 1, 2 * i + 1], x[0, 0, 0, 2 * i + 1], x[0, 0, 1, 2 * i] = a, b, c, d
    return x / 255


@torch.no_grad()
@pytest.mark.parametrize("averages", [(0, 255), (1,), (254, 0)])
def test_a_consistent_context_is_normalised_over_exactly_the_images_that_average_to_y(averages):
    """Summed over every image whose 2x2 averages are ``y`` (75, 121, 975 of them), the likelihood is 1; an
    image one step off the average gets nothing. The context couples the blocks, so the sum runs over them all."""
    y = torch.tensor(averages, dtype=torch.uint8).view(1, 1, 1, -1)
    p = _consistent(y)
    images = [_image(blocks) for blocks in itertools.product(*(_blocks_averaging_to(v) for v in averages))]
    x = torch.cat(images)
    batch = SubpixelMixture(DiscretizedLogisticMixture(p.base.params.expand(len(x), -1, -1, -1), 1, 3), p.context,
                            average=y.expand(len(x), -1, -1, -1))
    assert math.isclose(float(batch.log_prob(x).exp().sum()), 1.0, abs_tol=1e-9)
    off = x[:1].clone()
    off[0, 0, 0, 0] += 4 / 255 if off[0, 0, 0, 0] < 0.5 else -4 / 255
    assert float(p.log_prob(off)) == -math.inf


@torch.no_grad()
def test_consistent_samples_average_to_y_and_follow_the_likelihood():
    """40000 draws of a grey 2x2 image whose average must be 1 (121 images): every draw averages to 1, and their
    frequencies match the likelihood's probabilities (total variation 0.02 where chance gives about 0.015)."""
    y = torch.ones(1, 1, 1, 1, dtype=torch.uint8)
    p = _consistent(y, seed=4, scale=1.0)
    n = 40000
    torch.manual_seed(0)
    big = SubpixelMixture(DiscretizedLogisticMixture(p.base.params.expand(n, -1, -1, -1), 1, 3), p.context,
                          average=y.expand(n, -1, -1, -1))
    draws = (big.sample() * 255).round().to(torch.uint8)
    assert torch.equal(Downscale()(draws), y.expand(n, -1, -1, -1))
    blocks = _blocks_averaging_to(1)
    probs = torch.cat([p.log_prob(_image((b,))).exp() for b in blocks])
    index = {b: i for i, b in enumerate(blocks)}
    seen = torch.bincount(torch.tensor([index[(int(d[0, 0, 0]), int(d[0, 1, 1]), int(d[0, 0, 1]), int(d[0, 1, 0]))]
                                        for d in draws]), minlength=len(blocks)).double() / n
    assert 0.5 * float((seen - probs).abs().sum()) < 0.03


def test_a_consistent_srvae_bound_is_tighter_trains_and_generates_consistent_images():
    """Renormalised, every image's x term is lower than the plain context's for the same latents (the windows'
    mass is at most 1), by at least the last group's share; training it lowers the bound with finite gradients;
    generated x averages to the generated y exactly."""
    model = context_model("downscale", consistent=True)
    x = _smooth(8)
    torch.manual_seed(0)
    with torch.no_grad():
        windowed = model.terms(x).re[:, -1]
        model.set_consistent(False)
        torch.manual_seed(0)
        plain = model.terms(x).re[:, -1]
        model.set_consistent(True)
    assert (windowed < plain - 8 * 8 * 3 * math.log(2)).all()  # the last group's values alone: at most 2 bits each
    params = list(model.x_context.parameters())
    opt = torch.optim.Adam(params, lr=3e-3)
    model.train()
    torch.manual_seed(1)
    with torch.no_grad():
        before = float(model(x))
    for _ in range(20):
        loss = model(x)
        opt.zero_grad()
        loss.backward()
        assert all(torch.isfinite(p.grad).all() for p in params)
        opt.step()
    torch.manual_seed(1)
    with torch.no_grad():
        assert float(model(x)) < before
    torch.manual_seed(2)
    y, gen = generate(model.eval(), 6)
    assert torch.equal(Downscale()(gen), y)


def test_a_consistent_context_model_round_trips_exactly_at_its_bound():
    """Encoder and decoder build each group's windows from y and the groups before it: exact round trips
    (images smaller than the tile: a renormalised x is coded whole, its black margins too), the file at the
    renormalised bound."""
    assert_round_trips_at_its_bound(context_model("downscale", consistent=True))


def test_group_windows_hold_every_value_a_block_may_take():
    """The window of a group's pixel is exactly the values some completion of its block allows (checked against
    every completion for a few averages and earlier values)."""
    for v, earlier in [(0, []), (0, [1]), (1, [0, 5]), (128, [0, 255, 0]), (255, []), (255, [253, 255]),
                       (64, [255, 0])]:
        g = len(earlier)
        lo, hi = group_window(torch.tensor([v]).view(1, 1, 1, 1), [torch.tensor([e]).view(1, 1, 1, 1)
                                                                    for e in earlier], g)
        rest = 3 - g
        allowed = [a for a in range(256)
                   if any((sum(earlier) + a + s + 2) // 4 == v for s in range(0, 255 * rest + 1))]
        assert (int(lo), int(hi)) == (min(allowed), max(allowed))


def test_a_context_model_goes_on_renormalised_from_its_plain_weights(tmp_path):
    """``train.init`` a context srVAE trained without renormalisation into a consistent run (the same weights):
    it starts from exactly them, with a lower bound than the plain model's, and training its context lowers it."""
    import selfvae

    images = _smooth(48).numpy()
    cfg = get_preset("mnist-vae")
    m = cfg.model
    m.image_shape, m.transforms, m.latent_shape, m.n_mix = (3, 16, 16), "downscale", (2, 4, 4), 3
    m.q_u = m.p_y = m.q_z = m.p_z = m.p_x = TINY
    m.prior, m.prior_kwargs, m.context_width, m.context_layers = "standard", {}, 8, 1
    kw = dict(train_data=images[:40], val_data=images[40:], test_data=images[40:], progress=False, batch_size=8,
              eval_every=10, eval_limit=None, final_iw_limit=0, sample_every=1000, init_batch=16)
    plain = selfvae.train(cfg, out=tmp_path / "plain", steps=10, **kw)
    on = selfvae.train(cfg, out=tmp_path / "on", steps=30, init=str(tmp_path / "plain"), consistent=True,
                       trainable="x_context", lr=3e-3, ema_decay=None, **kw)
    assert on.cfg.consistent and not plain.cfg.consistent
    before, after = plain.state_dict(), on.state_dict()
    assert all(torch.equal(before[k].float(), after[k].float()) for k in before if not k.startswith("x_context."))
    x = torch.from_numpy(images[40:])
    bounds = []
    for model, consistent in ((plain, False), (plain, True), (on, True)):
        model.set_consistent(consistent)
        torch.manual_seed(0)
        with torch.no_grad():
            bounds.append(float(model.terms(x).nelbo.mean()))
    assert bounds[2] < bounds[1] < bounds[0]
