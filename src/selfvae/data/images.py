"""Image files: one reader and one rule for every command and data set (training folders, ``superres``,
``interpolate``, ``reconstruct``, ``compress``, the demo).

:func:`read_pixels` gives a file's pixels as uint8 ``[H, W, C]``, ``C`` 1 (grey) or 3 (RGB):

* EXIF orientation is applied, so a phone photo reads the way it is shown;
* grey: modes ``1``, ``L``, ``LA``, 16- and 32-bit integer and float modes, and palettes whose colours are
  all grey read as one channel; every other mode (``RGB``, ``RGBA``, colour palettes, ``CMYK``, ``YCbCr``,
  ...) as RGB through Pillow's conversion;
* samples of more than 8 bits (``I;16``, ``I``) are scaled to 8 bits, ``round(v / 257)``; float samples
  (``F``) are clipped to 0..255;
* alpha is dropped: the colour channels as stored;
* files of more than :data:`MAX_PIXELS` pixels are refused before decoding.

With ``exact=True`` (the lossless codec) what the rule would change is refused instead: samples of more than
8 bits and transparent pixels; the pixels returned are then exactly the file's.
"""

from __future__ import annotations

import io
import warnings
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from selfvae.errors import SelfVAEError

MAX_PIXELS = 50_000_000  # larger files are refused before decoding (PIL's own bomb limit is ~179M)
GRAY_MODES = frozenset({"1", "L", "LA", "La", "I", "I;16", "I;16B", "I;16L", "I;16N", "F"})
RESIZE_POLICIES = ("crop", "pad")
WIDE_MODES = frozenset({"I", "I;16", "I;16B", "I;16L", "I;16N"})  # more than 8 bits a sample


def read_pixels(source: str | Path | bytes, exact: bool = False, where: str | None = None) -> np.ndarray:
    """The pixels of an image file (a path, or its bytes) by the module's rule; ``where`` names it in errors."""
    where = where or (str(source) if not isinstance(source, bytes) else "image")
    if not isinstance(source, bytes) and not Path(source).is_file():
        raise SelfVAEError(f"{where}: no such image file")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(source) if isinstance(source, bytes) else source) as im:
                if im.size[0] * im.size[1] > MAX_PIXELS:
                    raise SelfVAEError(f"{where}: image is {im.size[0]}x{im.size[1]} pixels, more than the "
                                       f"{MAX_PIXELS:,} this reads; make it smaller first")
                return pixels_of(ImageOps.exif_transpose(im), exact, where)
    except UnidentifiedImageError:
        raise SelfVAEError(f"{where}: not an image file (PNG, JPEG, PGM, BMP, WebP, TIFF, ... expected)") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise SelfVAEError(f"{where}: image is more pixels than the {MAX_PIXELS:,} this reads; make it smaller "
                           f"first") from None
    except (OSError, ValueError, SyntaxError) as e:
        raise SelfVAEError(f"{where}: not a readable image ({type(e).__name__}: {e})") from e


def pixels_of(im: Image.Image, exact: bool = False, where: str = "image") -> np.ndarray:
    """A decoded Pillow image's pixels by the module's rule (EXIF orientation is the caller's)."""
    if im.mode in WIDE_MODES or im.mode == "F":
        if exact:
            raise SelfVAEError(f"{where}: {im.mode} image with more than 8 bits per sample; the codec codes "
                               f"8-bit images exactly")
        a = np.asarray(im, dtype=np.float64)
        a = a / 257.0 if im.mode in WIDE_MODES else a
        return np.clip(np.rint(a), 0, 255).astype(np.uint8)[..., None]
    if exact and _has_alpha(im):
        rgba = np.asarray(im.convert("RGBA"))
        if (rgba[..., 3] != 255).any():
            raise SelfVAEError(f"{where}: has transparent pixels; the codec codes grey or RGB images exactly")
    grey = im.mode in GRAY_MODES or (im.mode == "P" and _palette_is_grey(im))
    a = np.asarray(im.convert("L" if grey else "RGB"), dtype=np.uint8)
    return a[..., None] if a.ndim == 2 else a


def image_size(path: Path) -> tuple[int, tuple[int, int]]:
    """``(channels, (H, W))`` of an image file as :func:`read_pixels` would read it, from its header where it
    can (a palette is opened to tell grey from colour)."""
    with Image.open(path) as im:
        w, h = im.size
        if im.getexif().get(0x0112, 1) in (5, 6, 7, 8):  # EXIF orientations that turn the image by 90 degrees
            w, h = h, w
        grey = im.mode in GRAY_MODES or (im.mode == "P" and _palette_is_grey(im))
        return (1 if grey else 3), (h, w)


def _has_alpha(im: Image.Image) -> bool:
    return im.mode in ("RGBA", "LA", "La", "PA", "RGBa") or (im.mode == "P" and "transparency" in im.info)


def _palette_is_grey(im: Image.Image) -> bool:
    rgb = np.asarray(im.convert("RGB"))
    return bool((rgb[..., 0] == rgb[..., 1]).all() and (rgb[..., 1] == rgb[..., 2]).all())


def resize_image(im: Image.Image, size: int, policy: str = "crop") -> Image.Image:
    """``size x size`` version of ``im``: made square (``policy`` "crop": centre crop of the longer side;
    "pad": black bars on the shorter side, centred), then resized by area average (BOX) when shrinking or
    BICUBIC when growing."""
    if policy not in RESIZE_POLICIES:
        raise SelfVAEError(f"resize={policy!r}: expected one of {', '.join(RESIZE_POLICIES)}")
    w, h = im.size
    if (w, h) == (size, size):
        return im
    side = min(w, h) if policy == "crop" else max(w, h)
    if (w, h) != (side, side):
        left, top = (w - side) // 2, (h - side) // 2
        if policy == "crop":
            im = im.crop((left, top, left + side, top + side))
        else:
            square = Image.new(im.mode, (side, side))
            square.paste(im, (-left, -top))
            im = square
    if side == size:
        return im
    return im.resize((size, size), Image.Resampling.BOX if side > size else Image.Resampling.BICUBIC)


def resize_array(x: np.ndarray, size: int, policy: str = "crop") -> np.ndarray:
    """Apply :func:`resize_image` to every image of a uint8 ``[N, H, W, C]`` array."""
    n, h, w, c = x.shape
    if (h, w) == (size, size):
        return x
    out = np.empty((n, size, size, c), dtype=np.uint8)
    for i in range(n):
        im = Image.fromarray(x[i, :, :, 0] if c == 1 else x[i])
        r = np.asarray(resize_image(im, size, policy))
        out[i] = r[..., None] if c == 1 else r
    return out


def convert_channels(x: np.ndarray, channels: int) -> np.ndarray:
    """``[N, H, W, C]`` uint8 images with ``channels`` channels: RGB -> grey by ITU-R 601 luma (integer,
    as the ``grayscale`` transform), grey -> RGB by repeating the channel."""
    c = x.shape[-1]
    if channels not in (1, 3):
        raise SelfVAEError(f"channels={channels!r}: expected 1 (grey) or 3 (RGB)")
    if c == channels:
        return x
    if channels == 3:
        return np.repeat(x, 3, axis=-1)
    w = np.array([299, 587, 114], dtype=np.int64)
    return ((x.astype(np.int64) @ w + 500) // 1000).astype(np.uint8)[..., None]


def read_image_file(
    path: str | Path, shape: tuple[int, int | None, int | None], resize: bool = False, policy: str = "crop"
) -> torch.Tensor:
    """One image file as uint8 ``[C, H, W]`` with the channel count and size of ``shape`` (``shape``'s ``H`` and
    ``W`` None: the file's own size), for the commands that give a model a user's image.

    Colour follows the model (RGB -> grey by ITU-R 601 luma, grey -> RGB by repetition). A file of another
    size raises :class:`SelfVAEError` naming it, unless ``resize`` is asked for: then it is made square
    (``policy`` "crop" or "pad") and area-resized, as the data loaders do.
    """
    c, h, w = shape
    arr = read_pixels(path)
    if h is not None and arr.shape[:2] != (h, w):
        if not resize:
            raise SelfVAEError(f"{path}: image is {arr.shape[1]}x{arr.shape[0]}, the model needs {w}x{h} "
                               f"(pass --resize to resize it)")
        arr = _resized(arr, h, w, policy)
    arr = convert_channels(arr[None], c)[0]
    return torch.from_numpy(arr.copy()).permute(2, 0, 1)


def _resized(arr: np.ndarray, h: int, w: int, policy: str) -> np.ndarray:
    """``[H, W, C]`` pixels at ``h x w``: made square by ``policy`` and area-resized (:func:`resize_image`) for a
    square target, else box-resized."""
    im = Image.fromarray(arr[..., 0] if arr.shape[2] == 1 else arr)
    im = resize_image(im, h, policy) if h == w else im.resize((w, h), Image.Resampling.BOX)
    out = np.asarray(im, dtype=np.uint8)
    return out[..., None] if out.ndim == 2 else out


def read_model_inputs(
    paths: list[str | Path], frame: tuple[int, int, int], own: tuple[int, int, int], resize: str | None = None
) -> torch.Tensor:
    """Image files as a model's ``x`` (uint8 ``[N, C, H, W]`` of the model's ``frame``), by the rule its data
    loader followed: an image of the frame's size as it is; an image of the data's ``own`` size (MNIST's 28x28
    digits) centred in the frame with black borders, as the loader padded them; any other size only with
    ``resize`` (``"crop"`` or ``"pad"``, the run's ``data.resize``): made square so and area-resized to the
    own size, then centred. Colour follows the model (luma or repeated grey)."""
    if not paths:
        raise SelfVAEError("no image files given")
    return torch.stack([_model_input(p, frame, own, resize) for p in paths])


def _model_input(path: str | Path, frame: tuple[int, int, int], own: tuple[int, int, int],
                 resize: str | None) -> torch.Tensor:
    c, fh, fw = frame
    _, oh, ow = own
    arr = read_pixels(path)
    if arr.shape[:2] not in ((fh, fw), (oh, ow)):
        if resize is None:
            sizes = f"{ow}x{oh}" + (f" (placed in its {fw}x{fh} frame) or {fw}x{fh}" if (oh, ow) != (fh, fw) else "")
            raise SelfVAEError(f"{path}: image is {arr.shape[1]}x{arr.shape[0]}; this model takes {sizes}; pass "
                               f"--resize to crop or pad it square and resize it as its training data were")
        arr = _resized(arr, oh, ow, resize)
    if arr.shape[:2] == (oh, ow) and (oh, ow) != (fh, fw):
        top, left = (fh - oh) // 2, (fw - ow) // 2
        arr = np.pad(arr, ((top, fh - oh - top), (left, fw - ow - left), (0, 0)))
    arr = convert_channels(arr[None], c)[0]
    return torch.from_numpy(arr.copy()).permute(2, 0, 1)


def read_image_files(
    paths: list[str | Path], shape: tuple[int, int, int], resize: bool = False, policy: str = "crop"
) -> torch.Tensor:
    """:func:`read_image_file` for each path, stacked to uint8 ``[N, C, H, W]``."""
    if not paths:
        raise SelfVAEError("no image files given")
    return torch.stack([read_image_file(p, shape, resize, policy) for p in paths])
