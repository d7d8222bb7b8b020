"""The classical codecs our files are compared with: PNG (optimised), WebP, JPEG-XL and AVIF through
``imagecodecs`` (``pip install imagecodecs``; Pillow for PNG and JPEG), lossless and lossy.

Every function takes and returns uint8 ``[H, W, C]`` images (C = 1 or 3) and counts every byte of the
encoded file. Lossless results are checked by decoding; a codec whose round trip is not exact raises.
"""

from __future__ import annotations

import io
import math
from collections.abc import Callable

import numpy as np
from PIL import Image

from selfvae.errors import SelfVAEError


def _imagecodecs():
    try:
        import imagecodecs
    except ImportError as e:
        raise SelfVAEError("the classical codecs need imagecodecs: pip install imagecodecs") from e
    return imagecodecs


def _pil(x: np.ndarray) -> Image.Image:
    return Image.fromarray(x[..., 0] if x.shape[2] == 1 else x)


def read_pil(data: bytes, channels: int) -> np.ndarray:
    """A PNG or JPEG file's bytes decoded by Pillow as uint8 ``[H, W, channels]``."""
    a = np.asarray(Image.open(io.BytesIO(data)).convert("L" if channels == 1 else "RGB"))
    return a[..., None] if a.ndim == 2 else a


def _rgb(x: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(np.repeat(x, 3, axis=2) if x.shape[2] == 1 else x)


def _grey(a: np.ndarray, channels: int) -> np.ndarray:
    a = a[..., None] if a.ndim == 2 else a
    return a[..., :1] if channels == 1 else a[..., :3]


def _squeeze(x: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(x[..., 0] if x.shape[2] == 1 else x)


# ----- lossless ---------------------------------------------------------------------------------------------
def png(x: np.ndarray) -> bytes:
    buf = io.BytesIO()
    _pil(x).save(buf, format="PNG", optimize=True)
    return buf.getvalue()


def webp_lossless(x: np.ndarray) -> bytes:
    return _imagecodecs().webp_encode(_rgb(x), level=100, lossless=True, method=6)


def jpegxl_lossless(x: np.ndarray) -> bytes:
    return _imagecodecs().jpegxl_encode(_squeeze(x), lossless=True, effort=9)


def avif_lossless(x: np.ndarray) -> bytes:
    return _imagecodecs().avif_encode(_squeeze(x), level=100)


def _decode(name: str, data: bytes, channels: int) -> np.ndarray:
    ic = _imagecodecs()
    if name == "png":
        return read_pil(data, channels)
    decoders = {"webp": ic.webp_decode, "jpegxl": ic.jpegxl_decode, "avif": ic.avif_decode, "jpeg": ic.jpeg8_decode}
    return _grey(np.asarray(decoders[name](data)), channels)


LOSSLESS: dict[str, Callable[[np.ndarray], bytes]] = {
    "png": png, "webp": webp_lossless, "jpegxl": jpegxl_lossless, "avif": avif_lossless,
}


def lossless_size(name: str, x: np.ndarray) -> int:
    """Bytes of ``x`` in codec ``name``, after checking that it decodes exactly."""
    data = LOSSLESS[name](x)
    if not np.array_equal(_decode(name, data, x.shape[2]), x):
        raise SelfVAEError(f"{name}: the 'lossless' round trip is not exact here")
    return len(data)


def mosaic(images: list[np.ndarray]) -> np.ndarray:
    """Equal-sized images tiled into one near-square picture (the last row padded with black)."""
    h, w, c = images[0].shape
    cols = math.ceil(math.sqrt(len(images)))
    rows = math.ceil(len(images) / cols)
    canvas = np.zeros((rows * h, cols * w, c), dtype=np.uint8)
    for i, im in enumerate(images):
        r, q = divmod(i, cols)
        canvas[r * h : (r + 1) * h, q * w : (q + 1) * w] = im
    return canvas


# ----- lossy -----------------------------------------------------------------------------------------------
def _jpeg(x: np.ndarray, q: int) -> bytes:
    buf = io.BytesIO()
    _pil(x).save(buf, format="JPEG", quality=q, optimize=True)
    return buf.getvalue()


def _lossy_encoders() -> dict[str, Callable[[np.ndarray, int], bytes]]:
    ic = _imagecodecs()
    return {
        "jpeg": _jpeg,
        "webp": lambda x, q: ic.webp_encode(_rgb(x), level=q, lossless=False, method=6),
        "jpegxl": lambda x, q: ic.jpegxl_encode(_squeeze(x), level=q, effort=7),
        # this libavif codes a grey image losslessly whatever the level: lossy AVIF gets RGB (grey repeated)
        "avif": lambda x, q: ic.avif_encode(_rgb(x), level=q),
    }


LOSSY = ("jpeg", "webp", "jpegxl", "avif")


def lossy_at_size(name: str, x: np.ndarray, target: int) -> tuple[int, np.ndarray]:
    """The largest file of codec ``name`` for ``x`` not above ``target`` bytes (quality searched over 1..99),
    or its smallest file if even that is larger; returns (bytes, decoded image)."""
    enc = _lossy_encoders()[name]
    lo, hi, best = 1, 99, None
    while lo <= hi:
        q = (lo + hi) // 2
        data = enc(x, q)
        if len(data) <= target:
            best, lo = data, q + 1
        else:
            hi = q - 1
    data = best if best is not None else enc(x, 1)
    dec = read_pil(data, x.shape[2]) if name == "jpeg" else _decode(name, data, x.shape[2])
    return len(data), dec


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else 10 * math.log10(255.0**2 / mse)
