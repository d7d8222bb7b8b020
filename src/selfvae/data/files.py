"""Single image files given by a user (super-resolution inputs, interpolation end points, demo uploads)."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from selfvae.data.formats import GRAY_MODES, convert_channels, resize_image
from selfvae.errors import SelfVAEError

MAX_PIXELS = 50_000_000  # larger uploads are refused before decoding (PIL's own bomb limit is ~179M)


def read_image_file(
    path: str | Path, shape: tuple[int, int | None, int | None], resize: bool = False, policy: str = "crop"
) -> torch.Tensor:
    """One image file as uint8 ``[C, H, W]`` with the channel count and size of ``shape`` (``shape``'s ``H`` and
    ``W`` None: the file's own size).

    Colour follows the model (RGB -> grey by ITU-R 601 luma, grey -> RGB by repetition). A file of another
    size raises :class:`SelfVAEError` naming it, unless ``resize`` is asked for: then it is made square
    (``policy`` "crop" or "pad") and area-resized, as the data loaders do. Files that are not images, or
    have more than :data:`MAX_PIXELS` pixels, raise :class:`SelfVAEError` too.
    """
    c, h, w = shape
    p = Path(path)
    if not p.is_file():
        raise SelfVAEError(f"{p}: no such image file")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(p) as im:
                if im.size[0] * im.size[1] > MAX_PIXELS:
                    raise SelfVAEError(f"{p.name}: image is {im.size[0]}x{im.size[1]} pixels, more than the "
                                       f"{MAX_PIXELS // 1_000_000} million this reads; make it smaller first")
                im = im.convert("L" if im.mode in GRAY_MODES else "RGB")
                if h is not None and im.size != (w, h):
                    if not resize:
                        raise SelfVAEError(
                            f"{p}: image is {im.size[0]}x{im.size[1]}, the model needs {w}x{h} "
                            f"(pass --resize to resize it)"
                        )
                    im = resize_image(im, h, policy) if h == w else im.resize((w, h), Image.Resampling.BOX)
                arr = np.asarray(im, dtype=np.uint8)
    except UnidentifiedImageError:
        raise SelfVAEError(f"{p.name}: not an image file (PNG, JPEG, PGM, BMP, WebP, TIFF, ... expected)") from None
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise SelfVAEError(f"{p.name}: not a readable image ({type(e).__name__}: {e})") from e
    arr = convert_channels((arr[:, :, None] if arr.ndim == 2 else arr)[None], c)[0]
    return torch.from_numpy(arr.copy()).permute(2, 0, 1)


def read_image_files(
    paths: list[str | Path], shape: tuple[int, int, int], resize: bool = False, policy: str = "crop"
) -> torch.Tensor:
    """:func:`read_image_file` for each path, stacked to uint8 ``[N, C, H, W]``."""
    if not paths:
        raise SelfVAEError("no image files given")
    return torch.stack([read_image_file(p, shape, resize, policy) for p in paths])
