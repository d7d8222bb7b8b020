"""Tests for selfvae.transforms: deterministic uint8 -> uint8 transforms and chains."""

import numpy as np
import pytest
import torch

from selfvae.errors import SelfVAEError
from selfvae.transforms import (
    TRANSFORMS,
    Downscale,
    Transform,
    apply_chain,
    build_transform,
    chain_shapes,
    chain_spec,
    parse_chain,
    register_transform,
)

ALL_SPECS = ["downscale", "downscale:4", "downscale-bicubic", "grayscale", "sketch", "sketch:2"]
ALL_SPECS += ["pencil-sketch"]
EXPECTED_SHAPES = {
    "downscale": (3, 16, 32),
    "downscale:4": (3, 8, 16),
    "downscale-bicubic": (3, 16, 32),
    "grayscale": (1, 32, 64),
    "sketch": (1, 32, 64),
    "sketch:2": (1, 32, 64),
    "pencil-sketch": (1, 32, 64),
}


def _random_batch(b: int = 3, c: int = 3, h: int = 32, w: int = 64, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (b, c, h, w), generator=g, dtype=torch.uint8)


def test_registry_has_required_transforms():
    assert {"downscale", "downscale-bicubic", "grayscale", "sketch", "pencil-sketch"} <= set(TRANSFORMS)


@pytest.mark.parametrize("spec", ALL_SPECS)
def test_uint8_shape_and_determinism(spec):
    t = build_transform(spec)
    x = _random_batch()
    x_copy = x.clone()
    y1, y2 = t(x), t(x.clone())
    assert y1.dtype == torch.uint8
    assert tuple(y1.shape) == (3, *EXPECTED_SHAPES[spec])
    assert t.out_shape((3, 32, 64)) == EXPECTED_SHAPES[spec]
    assert torch.equal(y1, y2)
    assert torch.equal(x, x_copy)  # input not modified in place
    # a single [C, H, W] image gives the same result as its batch row
    assert torch.equal(t(x[1]), y1[1])
    # batched result equals image-by-image result
    assert torch.equal(torch.cat([t(x[i : i + 1]) for i in range(3)]), y1)
    # the spec round-trips
    assert build_transform(t.spec).spec == t.spec


def test_downscale_box_average_hand_made_round_half_up():
    # block sums: top row 10 -> 2.5 -> 3 (half up), 1 -> 0.25 -> 0, 1019 -> 254.75 -> 255;
    # bottom row 2 -> 0.5 -> 1 (half up), 3 -> 0.75 -> 1, 2 -> 0.5 -> 1
    x = torch.tensor(
        [
            [1, 2, 0, 0, 255, 255],
            [3, 4, 0, 1, 255, 254],
            [0, 1, 1, 1, 0, 2],
            [0, 1, 1, 0, 0, 0],
        ],
        dtype=torch.uint8,
    )[None, None]
    y = build_transform("downscale")(x)
    assert y.tolist() == [[[[3, 0, 255], [1, 1, 1]]]]


def test_downscale_matches_integer_formula_on_random_data():
    x = _random_batch(2, 3, 8, 8, seed=3)
    a, b, c, d = (x[..., i::2, j::2].to(torch.int32) for i in (0, 1) for j in (0, 1))
    expected = ((a + b + c + d + 2) // 4).to(torch.uint8)
    assert torch.equal(build_transform("downscale")(x), expected)


@pytest.mark.parametrize("spec", ["downscale", "downscale:4", "downscale-bicubic"])
@pytest.mark.parametrize("value", [0, 1, 128, 254, 255])
def test_downscale_of_constant_is_constant(spec, value):
    x = torch.full((2, 3, 16, 16), value, dtype=torch.uint8)
    y = build_transform(spec)(x)
    assert (y == value).all()


def test_chain_of_two_downscales_and_order():
    chain = parse_chain("downscale, downscale")
    assert [t.name for t in chain] == ["downscale", "downscale"]
    x = _random_batch(2, 3, 32, 32, seed=1)
    ys = apply_chain(chain, x)
    assert [tuple(y.shape) for y in ys] == [(2, 3, 8, 8), (2, 3, 16, 16)]  # y_1 (coarse) first
    d = Downscale()
    assert torch.equal(ys[1], d(x))
    assert torch.equal(ys[0], d(d(x)))
    assert chain_shapes(chain, (3, 32, 32)) == [(3, 8, 8), (3, 16, 16)]
    assert chain_spec(chain) == "downscale,downscale"


def test_mixed_chain_order_and_shapes():
    chain = parse_chain("downscale,grayscale")
    x = _random_batch(2, 3, 32, 32, seed=2)
    y1, y2 = apply_chain(chain, x)
    assert y2.shape == (2, 3, 16, 16) and y1.shape == (2, 1, 16, 16)
    assert torch.equal(y1, build_transform("grayscale")(y2))
    assert chain_shapes(chain, (3, 32, 32)) == [(1, 16, 16), (3, 16, 16)]


def test_empty_chain():
    assert parse_chain("") == [] and parse_chain("none") == []
    x = _random_batch()
    assert apply_chain([], x) == []
    assert chain_shapes([], (3, 32, 32)) == []
    assert chain_spec([]) == "none"


@pytest.mark.parametrize("spec", ["downscale", "downscale-bicubic"])
def test_non_divisible_size_raises(spec):
    t = build_transform(spec)
    with pytest.raises(SelfVAEError, match=r"\(3, 31, 32\).*not divisible by 2"):
        t(torch.zeros(1, 3, 31, 32, dtype=torch.uint8))
    with pytest.raises(SelfVAEError, match=spec):
        t.out_shape((3, 32, 33))


def test_chain_shapes_raises_when_chain_too_deep():
    with pytest.raises(SelfVAEError, match=r"\(3, 3, 3\)"):
        chain_shapes(parse_chain("downscale,downscale,downscale"), (3, 12, 12))  # 12 -> 6 -> 3 -> ?


@pytest.mark.parametrize("spec", ALL_SPECS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.int64])
def test_non_uint8_input_raises(spec, dtype):
    x = torch.zeros(1, 3, 16, 16, dtype=dtype)
    with pytest.raises(SelfVAEError, match=r"dtype.*uint8"):
        build_transform(spec)(x)


def test_wrong_rank_and_type_raise():
    t = build_transform("downscale")
    with pytest.raises(SelfVAEError, match="shape"):
        t(torch.zeros(16, 16, dtype=torch.uint8))
    with pytest.raises(SelfVAEError, match="Tensor"):
        t([[1, 2], [3, 4]])


@pytest.mark.parametrize("spec", ["grayscale", "sketch", "pencil-sketch"])
def test_wrong_channel_count_raises(spec):
    with pytest.raises(SelfVAEError, match=r"\(4, 8, 8\).*4 channels"):
        build_transform(spec)(torch.zeros(1, 4, 8, 8, dtype=torch.uint8))


def test_grayscale_values():
    gray = torch.arange(0, 256, dtype=torch.uint8).reshape(1, 1, 16, 16)
    rgb = gray.expand(2, 3, 16, 16).contiguous()
    t = build_transform("grayscale")
    assert torch.equal(t(rgb), gray.expand(2, 1, 16, 16))  # gray RGB -> that gray
    assert torch.equal(t(gray), gray)  # 1-channel passes through
    pure = torch.tensor([[255, 0, 0], [0, 255, 0], [0, 0, 255], [10, 20, 30]], dtype=torch.uint8)
    pure = pure.T.reshape(1, 3, 1, 4)
    # (299 R + 587 G + 114 B + 500) // 1000: 76.745 -> 76 ; 149.685 -> 150 ; 29.07 -> 29 ; 18.15 -> 18
    assert t(pure).flatten().tolist() == [76, 150, 29, 18]


@pytest.mark.parametrize("value", [0, 1, 77, 128, 255])
def test_sketch_of_constant_image_is_white(value):
    x = torch.full((2, 3, 24, 20), value, dtype=torch.uint8)
    assert (build_transform("sketch")(x) == 255).all()


def test_sketch_draws_edges_only_near_edges():
    x = torch.full((1, 3, 60, 40), 200, dtype=torch.uint8)
    x[..., 30:45, :] = 50  # a dark band (rows 30..44) on a light background
    y = build_transform("sketch")(x)[0, 0]  # default sigma 3.5, radius 10
    assert (y[:19] == 255).all()  # further than the kernel radius from the edge: flat -> white
    assert y[29:33].min() < 200  # dark stroke next to the edge
    # dodge formula on the dark side right at the edge: 255 * 50 / (255 - b) with b < 205 -> darker than white
    assert y[30].max() < 255


def test_sketch_is_dark_strokes_on_white_on_any_background():
    """A white stroke on black (MNIST-like) gives a dark stroke on white: the corners are the background, with
    no white wedges in dark regions and no black halo; the same stroke on white gives the same sketch."""
    x = torch.zeros((1, 1, 32, 32), dtype=torch.uint8)
    x[..., 14:18, 4:28] = 255  # one horizontal white stroke
    t = build_transform("sketch")
    y = t(x)[0, 0]
    assert (y[14:18, 4:28] == 0).all()  # the stroke is black
    assert (y[:6] == 255).all() and (y[-6:] == 255).all()  # all four corners and far rows are white paper
    assert (y[:, :2] == 255).all() and (y[:, -2:] == 255).all()
    assert torch.equal(t(255 - x)[0, 0], y)  # polarity does not matter
    # a dark region inside a light image stays dark where the textbook dodge turned it white (0/0 := 255)
    box = torch.full((1, 1, 64, 64), 230, dtype=torch.uint8)
    box[..., 16:48, 16:48] = 0
    yb = t(box)[0, 0]
    assert (yb[16:48, 16:48] == 0).all() and (yb[:4] == 255).all()


@pytest.mark.parametrize("which", ["mnist", "fashion-mnist", "cifar10"])
def test_sketch_of_real_images_has_a_white_background(which, tmp_path):
    """On real samples (fixtures in each data set's on-disk format, or the real files when present) the
    sketch's border is mostly white and its strokes dark: the mean of the border is far above the mean of
    the darkest tenth of the pixels."""
    from conftest import real_samples

    x = real_samples(which, tmp_path)
    y = build_transform("sketch")(x).float()
    border = torch.cat([y[:, 0, 0], y[:, 0, -1], y[:, 0, :, 0], y[:, 0, :, -1]], 1)
    assert border.mean() > 200
    dark = y.flatten(1).sort(1).values[:, : y[0].numel() // 10]
    assert (dark.mean(1) < 150).float().mean() >= 0.75  # most images have strokes


def test_sketch_on_tiny_image_and_grayscale_input():
    t = build_transform("sketch")
    x = _random_batch(2, 1, 3, 5, seed=4)  # kernel much larger than the image: reflect-101 must cope
    y = t(x)
    assert y.shape == (2, 1, 3, 5)
    assert torch.equal(t(x.expand(2, 3, 3, 5)), y)  # gray RGB == 1-channel input


def test_sketch_matches_float_reference():
    rows, cols = torch.meshgrid(torch.arange(20.0), torch.arange(24.0), indexing="ij")
    x = (135 + 120 * torch.sin(rows / 3) * torch.cos(cols / 4)).round().to(torch.uint8)[None, None]
    g = x[0, 0].double()
    sigma, r = 3.5, 10
    k = torch.exp(-0.5 * (torch.arange(-r, r + 1, dtype=torch.float64) / sigma) ** 2)
    k = k / k.sum()
    inv = 255 - g
    # reflect-101 padding is torch's "reflect"; the image (20x24) is larger than the radius
    p = torch.nn.functional.pad(inv[None, None], (r, r, r, r), mode="reflect")[0, 0]
    b = torch.nn.functional.conv2d(p[None, None], (k[:, None] * k[None, :])[None, None])[0, 0]
    assert torch.cat([g[0], g[-1], g[:, 0], g[:, -1]]).median() >= 128  # a light background: no inversion
    ref = (255 * g / (255 - b).clamp_min(1)).clamp(max=255)
    y = build_transform("sketch")(x)[0, 0].double()
    assert (y - ref).abs().max() <= 2.0  # only rounding of the integer blur differs


def test_pencil_sketch_shape_and_values():
    import cv2  # a declared dependency: imported for real, never skipped

    x = torch.full((2, 3, 32, 32), 200, dtype=torch.uint8)
    x[..., 10:20, 10:20] = 30
    x[1, 0] = 90  # make the two images differ (red channel)
    t = build_transform("pencil-sketch")
    y = t(x)
    assert y.shape == (2, 1, 32, 32) and y.dtype == torch.uint8
    assert y[0].float().std() > 0  # draws something
    for i in range(2):  # equals OpenCV on the BGR image with the default parameters
        bgr = x[i].flip(0).permute(1, 2, 0).contiguous().numpy()
        gray, _ = cv2.pencilSketch(bgr, sigma_s=60, sigma_r=0.07, shade_factor=0.02)
        assert torch.equal(y[i, 0], torch.from_numpy(gray))
    assert torch.equal(t(x[:, :1]), t(x[:, :1].expand(2, 3, 32, 32)))  # 1-channel == gray RGB
    assert build_transform("pencil-sketch:30:0.1:0.05").spec == "pencil-sketch:30:0.1:0.05"


def test_register_custom_transform():
    name = "test-invert-tmp"

    @register_transform(name)
    class Invert(Transform):
        def __init__(self, offset: int = 0) -> None:
            self.offset = offset

        @property
        def spec(self) -> str:
            return name if self.offset == 0 else f"{name}:{self.offset}"

        def out_shape(self, shape):
            return tuple(shape)

        def _apply(self, x):
            return (255 - x).add_(self.offset)

    try:
        x = _random_batch(2, 3, 16, 16, seed=6)
        t = build_transform(name)
        assert isinstance(t, Invert) and t.name == name
        assert torch.equal(t(x), 255 - x)
        assert build_transform(f"{name}:3").offset == 3
        chain = parse_chain(f"downscale,{name}")
        y1, y2 = apply_chain(chain, x)
        assert torch.equal(y1, 255 - y2)
        assert chain_spec(chain) == f"downscale,{name}"
        with pytest.raises(SelfVAEError, match="already registered"):
            register_transform(name)(Downscale)
    finally:
        TRANSFORMS.pop(name, None)
    assert name not in TRANSFORMS


def test_transform_returning_wrong_dtype_is_caught():
    class Bad(Transform):
        name = "bad"

        def out_shape(self, shape):
            return tuple(shape)

        def _apply(self, x):
            return x.float()

    with pytest.raises(RuntimeError, match="bad"):
        Bad()(torch.zeros(1, 1, 2, 2, dtype=torch.uint8))


@pytest.mark.parametrize(
    "spec, pattern",
    [
        ("nope", "unknown transform 'nope'"),
        ("", "empty"),
        ("downscale,,downscale", "empty entry"),
        ("downscale:1", "factor must be an integer >= 2"),
        ("downscale:2.5", "factor must be an integer >= 2"),
        ("downscale:2:3", "wrong arguments"),
        ("downscale:", "empty argument"),
        ("sketch:0", "sigma"),
        ("pencil-sketch:60:2", "sigma_r"),
    ],
)
def test_bad_specs_raise(spec, pattern):
    with pytest.raises(SelfVAEError, match=pattern):
        parse_chain(spec) if "," in spec else build_transform(spec)


def test_luma_is_the_rounded_itu_601_weighting_everywhere():
    """Against a float64 reference over every level of each channel alone and 200k random colours: a weight
    or the rounding off by one shows up somewhere."""
    g = torch.Generator().manual_seed(0)
    ramp = torch.arange(256, dtype=torch.uint8)
    zeros = torch.zeros(256, dtype=torch.uint8)
    cols = [torch.stack([ramp, zeros, zeros]), torch.stack([zeros, ramp, zeros]), torch.stack([zeros, zeros, ramp]),
            torch.randint(0, 256, (3, 200_000), dtype=torch.uint8, generator=g)]
    rgb = torch.cat(cols, 1).T.reshape(-1, 3, 1, 1).contiguous()
    want = torch.floor((rgb.double() * torch.tensor([0.299, 0.587, 0.114], dtype=torch.float64)[:, None, None])
                       .sum(1, keepdim=True) + 0.5 + 1e-9)
    got = build_transform("grayscale")(rgb)
    assert got.dtype == torch.uint8 and torch.equal(got.double(), want)
    colours, grey = rgb[768:768 + 64, :, 0, 0].T.reshape(1, 3, 8, 8), got[768:768 + 64, 0, 0, 0].reshape(1, 1, 8, 8)
    assert torch.equal(build_transform("sketch")(colours), build_transform("sketch")(grey))  # the same luma


@pytest.mark.parametrize("bad", ["", "a b", "a,b", "a:b", "tab\there", "new\nline"])
def test_transform_names_must_be_plain(bad):
    with pytest.raises(SelfVAEError, match=r"transform name .*must be non-empty without"):
        register_transform(bad)
    assert bad not in TRANSFORMS


def test_registered_class_without_a_name_takes_the_registered_one_and_factories_are_kept():
    try:
        @register_transform("tmp-named")
        class Named(Transform):
            name = "its-own"

            def out_shape(self, shape):
                return tuple(shape)

            def _apply(self, x):
                return x

        assert Named.name == "its-own" and TRANSFORMS["tmp-named"] is Named

        def factory():  # a plain function is registered as it is
            return Named()

        assert register_transform("tmp-factory")(factory) is factory and not hasattr(factory, "name")
        assert TRANSFORMS["tmp-factory"] is factory
        register_transform("tmp-factory", overwrite=True)(Downscale)  # overwrite replaces
        assert TRANSFORMS["tmp-factory"] is Downscale and Downscale.name == "downscale"
    finally:
        TRANSFORMS.pop("tmp-named", None)
        TRANSFORMS.pop("tmp-factory", None)


def test_pencil_sketch_passes_its_parameters_to_opencv():
    import cv2

    rows, cols = torch.meshgrid(torch.arange(64.0), torch.arange(64.0), indexing="ij")
    pattern = 128 + 100 * torch.sin(rows / 5) * torch.cos(cols / 7) + 20 * (((rows - 32) ** 2 + (cols - 20) ** 2) < 150)
    x = torch.stack([pattern, pattern.flip(0), 255 - pattern]).clamp(0, 255).round().to(torch.uint8)[None]
    bgr = np.ascontiguousarray(x[0].flip(0).permute(1, 2, 0).numpy())
    for spec, params in (("pencil-sketch", (60, 0.07, 0.02)), ("pencil-sketch:20:0.3:0.08", (20, 0.3, 0.08))):
        gray, _ = cv2.pencilSketch(bgr, sigma_s=params[0], sigma_r=params[1], shade_factor=params[2])
        assert torch.equal(build_transform(spec)(x)[0, 0], torch.from_numpy(gray)), spec
    default = build_transform("pencil-sketch")  # OpenCV's own defaults, and the spec says so
    assert (default.sigma_s, default.sigma_r, default.shade_factor) == (60.0, 0.07, 0.02)
    assert default.spec == "pencil-sketch"


@pytest.mark.parametrize(("kwargs", "ok"), [
    ({"sigma_s": 0.5}, True), ({"sigma_s": 200.0}, True), ({"sigma_r": 1.0}, True), ({"shade_factor": 0.1}, True),
    ({"sigma_s": 0.0}, False), ({"sigma_s": 200.5}, False), ({"sigma_r": 0.0}, False), ({"sigma_r": 1.01}, False),
    ({"shade_factor": 0.0}, False), ({"shade_factor": 0.11}, False), ({"shade_factor": 0.5}, False),
    ({"sigma_s": True}, False), ({"sigma_r": "0.1"}, False),
])
def test_pencil_sketch_parameter_ranges(kwargs, ok):
    from selfvae.transforms import PencilSketch

    if ok:
        t = PencilSketch(**kwargs)
        assert getattr(t, next(iter(kwargs))) == next(iter(kwargs.values()))
    else:
        with pytest.raises(SelfVAEError, match=next(iter(kwargs))):
            PencilSketch(**kwargs)


def test_pencil_sketch_without_opencv_says_how_to_install(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "cv2", None)  # import cv2 now raises ImportError
    with pytest.raises(SelfVAEError, match="pip install opencv-python-headless"):
        build_transform("pencil-sketch")(_random_batch(1, 3, 8, 8, seed=1))
