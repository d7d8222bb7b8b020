"""Single image files given on the command line (super-resolution inputs, interpolation end points)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from selfvae.errors import SelfVAEError


def read_image_files(
    paths: list[str | Path], shape: tuple[int, int, int], resize: bool = False
) -> torch.Tensor:
    """Read image files as uint8 ``[N, C, H, W]`` with the channel count and size of ``shape``.

    Colour is converted to the model's channels (RGB <-> grayscale). A file of another size raises
    :class:`SelfVAEError` naming it, unless ``resize`` (BICUBIC) is asked for.
    """
    c, h, w = shape
    out = []
    for p in paths:
        p = Path(p)
        if not p.is_file():
            raise SelfVAEError(f"{p}: no such image file")
        try:
            with Image.open(p) as im:
                im = im.convert("L" if c == 1 else "RGB")
                if im.size != (w, h):
                    if not resize:
                        raise SelfVAEError(
                            f"{p}: image is {im.size[0]}x{im.size[1]}, the model needs {w}x{h} "
                            f"(pass --resize to resize it)"
                        )
                    im = im.resize((w, h), Image.Resampling.BICUBIC)
                arr = np.asarray(im, dtype=np.uint8)
        except (UnidentifiedImageError, OSError) as e:
            raise SelfVAEError(f"{p}: not a readable image ({e})") from e
        arr = arr[:, :, None] if arr.ndim == 2 else arr
        out.append(torch.from_numpy(arr.copy()).permute(2, 0, 1))
    if not out:
        raise SelfVAEError("no image files given")
    return torch.stack(out)
