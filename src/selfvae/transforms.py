"""Deterministic, discrete image transforms ``y = d(x)`` for self-supervised representations.

The selfVAE (thesis ch. 5.2, property A) models a compressed representation ``y`` of the image ``x`` that is
a *discrete and deterministic* function of it, so ``q(y|x)`` is a point mass and ``H[q(y|x)] = 0`` exactly.
To keep that true in code every transform here maps **uint8 to uint8** with integer (or rounded) arithmetic:
``y`` lives on the same 0..255 pixel grid as ``x`` and can be modelled with the same discretised likelihoods.

Transforms work on batches ``[B, C, H, W]`` (a single image ``[C, H, W]`` is also accepted and returned
without the batch dimension) on any device, without per-image Python loops except for ``pencil-sketch``,
which calls OpenCV on the CPU.

Built-in transforms (spec strings, see :func:`build_transform`):

``downscale[:f]``
    Box average of each ``f x f`` block (default ``f = 2``), computed in integer arithmetic with
    round-half-up: ``(a + b + c + d + 2) // 4`` for ``f = 2``. This is the documented choice of this library;
    the srVAE authors used PIL bicubic resizing image by image, but the box average is exact, batched,
    device-independent and easy to reason about. ``downscale:4`` is *not* bit-identical to
    ``downscale,downscale`` (rounding happens once instead of twice); chains use the latter.
``downscale-bicubic[:f]``
    Antialiased bicubic resize (``F.interpolate(mode="bicubic", antialias=True)``, which follows PIL's
    filter support) on float, then round and clamp to uint8. Deterministic on one device; results on
    different devices/backends can differ by one grey level where the float result is close to ``.5``.
``grayscale``
    ITU-R 601 luma ``(299 R + 587 G + 114 B + 500) // 1000`` in integer arithmetic, 3 -> 1 channel (the
    colourisation task). A 1-channel input is returned unchanged. (PIL's ``convert("L")`` uses a 16-bit
    fixed-point variant of the same weights and can differ by one level.)
``sketch[:sigma]``
    Pencil sketch by colour dodge (thesis ch. 7.3.1), dark strokes on white whatever the background: grey
    ``g``; if the image's background (the median of its border pixels) is dark (< 128), ``g`` is inverted
    first, so white-on-black digits become black-on-white ones. Then its inverse ``255 - g`` is blurred by a
    Gaussian of standard deviation ``sigma`` pixels (default 3.5, kernel radius ``int(3 sigma)``, i.e. the
    popular 21x21 OpenCV recipe) to ``b``, and the dodge is ``min(255, round(255 g / max(255 - b, 1)))``.
    Where the whole neighbourhood is black (``b = 255``, so ``g = 0``) that is 0, the formula's limit, not
    the 255 of the textbook dodge, which painted white wedges into the dark regions of an image. The blur
    uses integer kernel weights and reflect-101 borders (OpenCV's default), so the whole transform is
    integer-exact: identical on every run *and* every device. The sigma is fixed in pixels (not scaled with
    the image size): the same local neighbourhood gives the same stroke at every resolution. A flat
    (constant) image maps to pure white (255).
``pencil-sketch[:sigma_s[:sigma_r[:shade_factor]]]``
    OpenCV's ``cv2.pencilSketch`` (Gastal & Oliveira's domain-transform edge-preserving filter, which the
    thesis cites), grayscale output, defaults ``sigma_s=60, sigma_r=0.07, shade_factor=0.02`` (OpenCV's
    defaults). Runs per image on the CPU; the result is moved back to the input's device.

Add your own with :func:`register_transform`.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from selfvae.errors import SelfVAEError
from selfvae.renormalise import BlockConstraint, WindowTables, log_mass_block_average

Shape = tuple[int, int, int]

__all__ = [
    "TRANSFORMS",
    "Downscale",
    "DownscaleBicubic",
    "Grayscale",
    "PencilSketch",
    "Sketch",
    "Transform",
    "apply_chain",
    "build_transform",
    "chain_shapes",
    "chain_spec",
    "parse_chain",
    "register_transform",
]


class Transform:
    """Base class of a deterministic uint8 -> uint8 image transform.

    Subclasses set ``name`` and implement :meth:`out_shape` (which also validates the input shape) and
    :meth:`_apply` (which receives a validated uint8 batch ``[B, C, H, W]``). ``__call__`` does the checks
    shared by all transforms, so ``_apply`` can stay a few lines.
    """

    name: str = "transform"

    def out_shape(self, shape: Shape) -> Shape:
        """Output ``(C', H', W')`` for an input ``(C, H, W)``; raise SelfVAEError if not allowed."""
        raise NotImplementedError

    def _apply(self, x: Tensor) -> Tensor:
        """Transform a validated uint8 batch ``[B, C, H, W]``; must return uint8 on the same device."""
        raise NotImplementedError

    @property
    def spec(self) -> str:
        """The spec string that rebuilds this transform with :func:`build_transform`."""
        return self.name

    renormalisable: bool = False  # whether :meth:`log_mass_consistent` is implemented

    def log_mass_consistent(self, p: WindowTables, y: Tensor, dtype: torch.dtype = torch.float64) -> Tensor:
        """``log P(d(x) = y)`` per image ``[B]`` under a likelihood ``p`` whose pixels (of one channel) are
        independent, for ``y`` (uint8 ``[B, H', W']``) that channel of ``d(x)``; ``p`` gives 256-way tables through
        ``window_bin_probs`` (:class:`WindowTables`), computed in ``dtype``.

        A likelihood ``p(x | y, ...)`` that ignores the constraint ``d(x) = y`` divided by this mass is still a
        proper distribution over the images it can have come from, and its ELBO a valid, tighter bound
        (``ModelConfig.consistent``). Transforms that mix channels or pixels non-locally do not implement it.
        """
        raise SelfVAEError(f"transform {self.spec!r} cannot renormalise a likelihood onto d(x) = y "
                           "(only the box-average 'downscale' can)")

    def block_constraint(self, probs: np.ndarray, y: np.ndarray) -> BlockConstraint:
        """The per-pixel tables of a level's likelihood renormalised onto ``d(level) = y``, for coding and sampling
        it (:class:`selfvae.renormalise.BlockConstraint`): ``probs`` the level's first channel's 256-way tables
        ``[n, H, W, 256]``, ``y`` ``[n, H', W']`` the first channel of the level above. Renormalisable transforms
        only; sampling and coding ask this instead of reading a transform's geometry."""
        raise SelfVAEError(f"transform {self.spec!r} cannot renormalise a likelihood onto d(x) = y "
                           "(only the box-average 'downscale' can)")

    def __call__(self, x: Tensor) -> Tensor:
        """Apply to a uint8 batch ``[B, C, H, W]`` (or one image ``[C, H, W]``); same device, uint8 out."""
        if not isinstance(x, Tensor):
            raise SelfVAEError(f"transform {self.spec!r}: expected a torch.Tensor, got {type(x).__name__}")
        if x.dtype != torch.uint8:
            raise SelfVAEError(
                f"transform {self.spec!r}: input dtype is {x.dtype}, expected torch.uint8 pixels 0..255 "
                "(transforms must stay discrete)"
            )
        if x.dim() not in (3, 4):
            raise SelfVAEError(
                f"transform {self.spec!r}: input shape {tuple(x.shape)} is not [C, H, W] or [B, C, H, W]"
            )
        single = x.dim() == 3
        if single:
            x = x.unsqueeze(0)
        expected = self.out_shape(tuple(x.shape[1:]))
        y = self._apply(x)
        if y.dtype != torch.uint8 or tuple(y.shape) != (x.shape[0], *expected):
            raise RuntimeError(
                f"transform {self.spec!r} returned {y.dtype} {tuple(y.shape)}, "
                f"expected uint8 {(x.shape[0], *expected)}"
            )
        return y[0] if single else y

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.spec!r})"


def _check_channels(t: Transform, shape: Shape, allowed: tuple[int, ...] | None) -> None:
    """Raise SelfVAEError unless ``shape`` is a valid ``(C, H, W)`` with ``C`` in ``allowed`` (None: any)."""
    if len(shape) != 3 or any(int(s) < 1 for s in shape):
        raise SelfVAEError(f"transform {t.spec!r}: input shape {tuple(shape)} is not a valid (C, H, W)")
    if allowed is not None and shape[0] not in allowed:
        raise SelfVAEError(
            f"transform {t.spec!r}: input shape {tuple(shape)} has {shape[0]} channels, "
            f"expected {' or '.join(map(str, allowed))}"
        )


def _check_factor(t: Transform, shape: Shape, factor: int) -> None:
    _check_channels(t, shape, None)
    _, h, w = shape
    if h % factor or w % factor:
        raise SelfVAEError(
            f"transform {t.spec!r}: input shape {tuple(shape)} has height/width not divisible by {factor}"
        )


def _parse_factor(name: str, factor: int) -> int:
    if isinstance(factor, bool) or not isinstance(factor, int) or factor < 2:
        raise SelfVAEError(f"transform {name!r}: factor must be an integer >= 2, got {factor!r}")
    return factor


def _luma(x: Tensor) -> Tensor:
    """ITU-R 601 luma of an RGB uint8 batch in integer arithmetic -> int32 ``[B, 1, H, W]``."""
    xi = x.to(torch.int32)
    return (299 * xi[:, 0:1] + 587 * xi[:, 1:2] + 114 * xi[:, 2:3] + 500) // 1000


# --------------------------------------------------------------------------------------------- registry

TRANSFORMS: dict[str, Callable[..., Transform]] = {}
"""Registry ``name -> factory``; a factory takes the spec's arguments (parsed to int/float/str)."""


def register_transform(
    name: str, *, overwrite: bool = False
) -> Callable[[Callable[..., Transform]], Callable[..., Transform]]:
    """Decorator that adds a transform class (or factory function) to :data:`TRANSFORMS` under ``name``.

    Example::

        @register_transform("invert")
        class Invert(Transform):
            name = "invert"
            def out_shape(self, shape): return shape
            def _apply(self, x): return 255 - x
    """
    if not name or any(c in name for c in ",: \t\n"):
        raise SelfVAEError(f"transform name {name!r}: must be non-empty without ',', ':' or spaces")

    def decorator(factory: Callable[..., Transform]) -> Callable[..., Transform]:
        if name in TRANSFORMS and not overwrite and TRANSFORMS[name] is not factory:
            raise SelfVAEError(f"transform name {name!r}: already registered (pass overwrite=True)")
        if isinstance(factory, type) and issubclass(factory, Transform) and "name" not in vars(factory):
            factory.name = name  # a class that does not set its own name gets the registered one
        TRANSFORMS[name] = factory
        return factory

    return decorator


def _parse_arg(text: str) -> int | float | str:
    for convert in (int, float):
        try:
            return convert(text)
        except ValueError:
            pass
    return text


def build_transform(spec: str) -> Transform:
    """Build one transform from ``"name"`` or ``"name:arg[:arg...]"`` (args parsed as int, float or str).

    Examples: ``"downscale"``, ``"downscale:4"``, ``"sketch:2.5"``, ``"pencil-sketch:60:0.07:0.05"``.
    """
    if not isinstance(spec, str) or not spec.strip():
        raise SelfVAEError(f"transform spec {spec!r}: empty")
    name, *raw = (part.strip() for part in spec.strip().split(":"))
    if name not in TRANSFORMS:
        raise SelfVAEError(
            f"transform spec {spec!r}: unknown transform {name!r} (known: {', '.join(sorted(TRANSFORMS))})"
        )
    if any(not r for r in raw):
        raise SelfVAEError(f"transform spec {spec!r}: empty argument")
    try:
        transform = TRANSFORMS[name](*(_parse_arg(r) for r in raw))
    except TypeError as exc:
        raise SelfVAEError(f"transform spec {spec!r}: wrong arguments for {name!r} ({exc})") from None
    if not isinstance(transform, Transform):
        raise SelfVAEError(
            f"transform spec {spec!r}: factory returned {type(transform).__name__}, not Transform"
        )
    return transform


def parse_chain(spec: str) -> list[Transform]:
    """Parse a comma-separated chain, e.g. ``"downscale,downscale"``; ``""`` or ``"none"`` give ``[]``.

    The transforms are applied in the written order: ``x -> y_K -> ... -> y_1`` (so the first one produces
    the finest representation ``y_K`` and the last one the coarsest ``y_1``).
    """
    if not isinstance(spec, str):
        raise SelfVAEError(f"transform chain {spec!r}: expected a string")
    if spec.strip().lower() in ("", "none"):
        return []
    parts = [p.strip() for p in spec.split(",")]
    if any(not p for p in parts):
        raise SelfVAEError(f"transform chain {spec!r}: empty entry")
    return [build_transform(p) for p in parts]


def chain_spec(chain: list[Transform]) -> str:
    """Inverse of :func:`parse_chain`: the spec string of a chain (``"none"`` for an empty one)."""
    return ",".join(t.spec for t in chain) or "none"


def apply_chain(chain: list[Transform], x: Tensor) -> list[Tensor]:
    """Apply ``chain`` in order to ``x`` and return ``[y_1, ..., y_K]``, coarse to fine (``x`` excluded).

    ``y_K = chain[0](x)``, ``y_{k-1} = chain[K-k+1](y_k)``; ``y_1`` is the output of the last transform.
    """
    ys: list[Tensor] = []
    y = x
    for t in chain:
        y = t(y)
        ys.append(y)
    return ys[::-1]


def chain_shapes(chain: list[Transform], shape: Shape) -> list[Shape]:
    """Shapes ``(C, H, W)`` of ``[y_1, ..., y_K]`` for an input of ``shape``, in :func:`apply_chain` order.

    Raises SelfVAEError (naming the transform and the shape) if some step cannot take its input.
    """
    shapes: list[Shape] = []
    s = tuple(int(v) for v in shape)
    for t in chain:
        s = tuple(int(v) for v in t.out_shape(s))
        shapes.append(s)
    return shapes[::-1]


# ----------------------------------------------------------------------------------------- transforms


class _Downscaler(Transform):
    """Shared part of the downscaling transforms: the factor, its spec and the output shape."""

    def __init__(self, factor: int = 2) -> None:
        self.factor = _parse_factor(self.name, factor)

    @property
    def spec(self) -> str:
        return self.name if self.factor == 2 else f"{self.name}:{self.factor}"

    def out_shape(self, shape: Shape) -> Shape:
        _check_factor(self, shape, self.factor)
        c, h, w = shape
        return (c, h // self.factor, w // self.factor)


@register_transform("downscale")
class Downscale(_Downscaler):
    """Integer box average of ``factor x factor`` blocks with round-half-up (default factor 2)."""

    name = "downscale"

    def _apply(self, x: Tensor) -> Tensor:
        b, c, h, w = x.shape
        f = self.factor
        blocks = x.to(torch.int32).reshape(b, c, h // f, f, w // f, f).sum(dim=(3, 5))
        return ((blocks + (f * f) // 2) // (f * f)).to(torch.uint8)

    renormalisable = True

    def log_mass_consistent(self, p: WindowTables, y: Tensor, dtype: torch.dtype = torch.float64) -> Tensor:
        """``log P(d(x) = y)`` for independent pixels: :func:`selfvae.renormalise.log_mass_block_average`."""
        return log_mass_block_average(p, y, self.factor, dtype)

    def block_constraint(self, probs: np.ndarray, y: np.ndarray) -> BlockConstraint:
        """The chain-rule tables of a level renormalised onto this average (coding and sampling:
        :class:`~selfvae.renormalise.BlockConstraint`)."""
        return BlockConstraint(probs, y, self.factor)


@register_transform("downscale-bicubic")
class DownscaleBicubic(_Downscaler):
    """Antialiased bicubic downscaling (PIL-like) on float, rounded and clamped to uint8."""

    name = "downscale-bicubic"

    def _apply(self, x: Tensor) -> Tensor:
        _, _, h, w = x.shape
        size = (h // self.factor, w // self.factor)
        y = F.interpolate(x.float(), size=size, mode="bicubic", align_corners=False, antialias=True)
        return y.round_().clamp_(0, 255).to(torch.uint8)


@register_transform("grayscale")
class Grayscale(Transform):
    """RGB -> 1-channel ITU-R 601 luma in integer arithmetic; 1-channel input passes through."""

    name = "grayscale"

    def out_shape(self, shape: Shape) -> Shape:
        _check_channels(self, shape, (1, 3))
        return (1, shape[1], shape[2])

    def _apply(self, x: Tensor) -> Tensor:
        if x.shape[1] == 1:
            return x
        return _luma(x).to(torch.uint8)


def _reflect101_index(n: int, pad: int, device: torch.device) -> Tensor:
    """Indices of a length-``n`` axis padded by ``pad`` with OpenCV's BORDER_REFLECT_101, any ``pad``."""
    i = torch.arange(-pad, n + pad, device=device)
    if n == 1:
        return torch.zeros_like(i)
    period = 2 * (n - 1)
    i = i.remainder(period)
    return torch.where(i >= n, period - i, i)


def _integer_gaussian(sigma: float) -> list[int]:
    """Symmetric Gaussian taps (radius ``int(3 sigma)``) quantised to integers summing to exactly 4096."""
    radius = max(1, int(3 * sigma))
    g = [math.exp(-0.5 * (k / sigma) ** 2) for k in range(-radius, radius + 1)]
    total = sum(g)
    taps = [round(4096 * v / total) for v in g]
    taps[radius] += 4096 - sum(taps)  # exact normalisation: constant images blur to themselves
    return taps


def _integer_blur(x: Tensor, taps: list[int]) -> Tensor:
    """Separable integer Gaussian blur of an int64 ``[B, 1, H, W]`` tensor; rounded (half up) to int64."""
    r = len(taps) // 2
    _, _, h, w = x.shape
    scale = sum(taps) ** 2
    xp = x.index_select(3, _reflect101_index(w, r, x.device))
    acc = sum(t * xp[..., k : k + w] for k, t in enumerate(taps))
    acc = acc.index_select(2, _reflect101_index(h, r, x.device))
    acc = sum(t * acc[:, :, k : k + h, :] for k, t in enumerate(taps))
    return (acc + scale // 2) // scale


def _border_median(x: Tensor) -> Tensor:
    """Per image of ``[B, 1, H, W]``, the (lower) median of its border pixels, shaped ``[B, 1, 1, 1]``."""
    border = torch.cat([x[:, 0, 0, :], x[:, 0, -1, :], x[:, 0, :, 0], x[:, 0, :, -1]], dim=1)
    return border.median(dim=1).values.view(-1, 1, 1, 1)


@register_transform("sketch")
class Sketch(Transform):
    """Pencil sketch: colour dodge of the grey image with its Gaussian-blurred inverse, integer-exact."""

    name = "sketch"

    def __init__(self, sigma: float = 3.5) -> None:
        if isinstance(sigma, bool) or not isinstance(sigma, (int, float)) or not 0.3 <= sigma <= 50:
            raise SelfVAEError(f"transform {self.name!r}: sigma must be a number in [0.3, 50], got {sigma!r}")
        self.sigma = float(sigma)
        self._taps = _integer_gaussian(self.sigma)

    @property
    def spec(self) -> str:
        return self.name if self.sigma == 3.5 else f"{self.name}:{self.sigma:g}"

    def out_shape(self, shape: Shape) -> Shape:
        _check_channels(self, shape, (1, 3))
        return (1, shape[1], shape[2])

    def _apply(self, x: Tensor) -> Tensor:
        gray = (x.to(torch.int64) if x.shape[1] == 1 else _luma(x)).to(torch.int64)
        gray = torch.where(_border_median(gray) < 128, 255 - gray, gray)  # strokes dark on a light background
        den = (255 - _integer_blur(255 - gray, self._taps)).clamp_min(1)  # 255 - b, b in 0..255
        out = ((255 * gray + den // 2) // den).clamp_max(255)  # round-half-up of 255 g / (255 - b)
        return out.to(torch.uint8)


@register_transform("pencil-sketch")
class PencilSketch(Transform):
    """OpenCV ``pencilSketch`` (domain-transform filter), grayscale output; per image on the CPU."""

    name = "pencil-sketch"
    defaults = (60.0, 0.07, 0.02)

    def __init__(self, sigma_s: float = 60.0, sigma_r: float = 0.07, shade_factor: float = 0.02) -> None:
        for label, value, lo, hi in (
            ("sigma_s", sigma_s, 0.0, 200.0),
            ("sigma_r", sigma_r, 0.0, 1.0),
            ("shade_factor", shade_factor, 0.0, 0.1),
        ):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not lo < value <= hi:
                raise SelfVAEError(f"transform {self.name!r}: {label} must be in ({lo}, {hi}], got {value!r}")
        self.sigma_s, self.sigma_r, self.shade_factor = float(sigma_s), float(sigma_r), float(shade_factor)

    @property
    def spec(self) -> str:
        params = (self.sigma_s, self.sigma_r, self.shade_factor)
        if params == self.defaults:
            return self.name
        return self.name + "".join(f":{p:g}" for p in params)

    def out_shape(self, shape: Shape) -> Shape:
        _check_channels(self, shape, (1, 3))
        return (1, shape[1], shape[2])

    def _apply(self, x: Tensor) -> Tensor:
        try:
            import cv2
        except ImportError:
            raise SelfVAEError(
                f"transform {self.name!r}: OpenCV is not installed; run `pip install opencv-python-headless`"
            ) from None
        rgb = x.detach().cpu()
        if rgb.shape[1] == 1:
            rgb = rgb.expand(-1, 3, -1, -1)
        # [B, C, H, W] RGB -> [B, H, W, C] BGR, contiguous for OpenCV
        bgr = np.ascontiguousarray(rgb.flip(1).permute(0, 2, 3, 1).numpy())
        out = np.empty((bgr.shape[0], 1, bgr.shape[1], bgr.shape[2]), dtype=np.uint8)
        for i, image in enumerate(bgr):
            gray, _ = cv2.pencilSketch(
                image, sigma_s=self.sigma_s, sigma_r=self.sigma_r, shade_factor=self.shade_factor
            )
            out[i, 0] = gray
        return torch.from_numpy(out).to(x.device)
