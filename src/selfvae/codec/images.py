"""Images in and out of the codec: reading files, folders and ``.npz`` arrays as they are stored, tiling
them into the model's image shape, and putting decoded tiles back together.

Lossless coding must not resize or recolour: an image no larger than the model's tile is placed in the
centre of a tile (as MNIST's 28x28 digits sit in the models' 32x32 frame), a larger one is cut into tiles (the
last row and column partly outside the image). The pixels of a tile outside its image (:class:`Cover`) are not
coded (files of version 10 on): they repeat the nearest pixel of the image's part of the tile, which the decoder
rebuilds from that part; older files padded with black and coded the padding. A grey image given to an RGB
model is coded as RGB and written back grey; a colour image cannot be coded by a grey model and is refused.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from selfvae.data.formats import list_images
from selfvae.data.images import read_pixels
from selfvae.errors import SelfVAEError


@dataclass
class InputImage:
    name: str  # output file stem; a relative path (``cat/0001``) for images read from a folder
    pixels: np.ndarray  # uint8 [H, W, C] with C = 1 (grey) or 3 (RGB)


def read_file(path: Path) -> InputImage:
    """An image file's pixels exactly as stored (:func:`selfvae.data.images.read_pixels` with ``exact``)."""
    return InputImage(path.stem, read_pixels(path, exact=True))


def read_npz(spec: str) -> list[InputImage]:
    """``file.npz`` (its ``x_test`` array, or its only image array) or ``file.npz:key``."""
    path, _, key = spec.partition(".npz:")
    path = Path(path if spec.endswith(".npz") else path + ".npz")
    if not path.is_file():
        raise SelfVAEError(f"{path}: no such file")
    with np.load(path) as z:
        arrays = {k: z[k] for k in z.files}
    if key:
        if key not in arrays:
            raise SelfVAEError(f"{path}: has no array {key!r}; it has {', '.join(arrays)}")
    else:
        images = [k for k, a in arrays.items() if a.dtype == np.uint8 and a.ndim in (3, 4)]
        key = "x_test" if "x_test" in images else (images[0] if len(images) == 1 else "")
        if not key:
            raise SelfVAEError(f"{path}: say which array to code as {path}:KEY (uint8 arrays: {', '.join(images)})")
    a = arrays[key]
    if a.dtype != np.uint8 or a.ndim not in (3, 4) or (a.ndim == 4 and a.shape[3] not in (1, 3)):
        raise SelfVAEError(f"{path}:{key} is {a.dtype} {a.shape}; expected uint8 [N, H, W] or [N, H, W, 1|3]")
    a = a[..., None] if a.ndim == 3 else a
    width = len(str(len(a) - 1))
    return [InputImage(f"{path.stem}_{key}_{i:0{width}d}", a[i]) for i in range(len(a))]


def read_inputs(inputs: list[str], limit: int | None = None) -> list[InputImage]:
    """Every image named by ``inputs`` (files, folders searched recursively in sorted order, ``.npz``)."""
    out: list[InputImage] = []
    for spec in inputs:
        p = Path(spec)
        if ".npz" in p.name and (p.suffix == ".npz" or ".npz:" in p.name):
            out += read_npz(spec)
        elif p.is_dir():
            files, _ = list_images(p)
            if not files:
                raise SelfVAEError(f"{p}: no image files in this folder")
            # named by their path below the folder, so test/cat/0001.jpg and test/dog/0001.jpg stay apart
            out += [InputImage(f.relative_to(p).with_suffix("").as_posix(), read_file(f).pixels) for f in files]
        elif p.is_file():
            out.append(read_file(p))
        else:
            raise SelfVAEError(f"{p}: no such file or folder")
        if limit is not None and len(out) >= limit:
            break
    if not out:
        raise SelfVAEError("no images to compress")
    return out[:limit] if limit is not None else out


# ----- tiling ---------------------------------------------------------------------------------------------
def tile_grid(h: int, w: int, th: int, tw: int) -> tuple[int, int, int, int]:
    """Rows and columns of tiles for an ``h x w`` image, and the offset of a single centred tile's content."""
    if h <= th and w <= tw:
        return 1, 1, (th - h) // 2, (tw - w) // 2
    return math.ceil(h / th), math.ceil(w / tw), 0, 0


def to_tiles(pixels: np.ndarray, shape: tuple[int, int, int], where: str) -> np.ndarray:
    """``[H, W, C]`` image -> uint8 tiles ``[t, C, th, tw]`` of the model's ``shape`` (see the module docstring)."""
    c, th, tw = shape
    h, w, ci = pixels.shape
    if ci != c:
        if ci == 1 and c == 3:
            pixels = np.repeat(pixels, 3, axis=2)
        else:
            raise SelfVAEError(f"{where}: is a colour image and this model codes grey images (1 channel); code its "
                               "grey version (`selfvae compress --channels 1`) or use an RGB model "
                               "(`selfvae pretrained` lists them)")
    rows, cols, oy, ox = tile_grid(h, w, th, tw)
    canvas = np.zeros((rows * th, cols * tw, c), dtype=np.uint8)
    canvas[oy : oy + h, ox : ox + w] = pixels
    tiles = canvas.reshape(rows, th, cols, tw, c).transpose(0, 2, 4, 1, 3)
    return np.ascontiguousarray(tiles.reshape(rows * cols, c, th, tw))


def tile_boxes(h: int, w: int, shape: tuple[int, int, int]) -> np.ndarray:
    """``[t, 4]`` (top, left, height, width) of the part of each of an ``h x w`` image's tiles (in
    :func:`to_tiles`' order) that holds its pixels."""
    _, th, tw = shape
    rows, cols, oy, ox = tile_grid(h, w, th, tw)
    if rows == cols == 1 and (oy or ox or h < th or w < tw):
        return np.array([[oy, ox, h, w]], dtype=np.int64)
    r, c = np.meshgrid(np.arange(rows), np.arange(cols), indexing="ij")
    heights, widths = np.minimum(th, h - r * th).reshape(-1), np.minimum(tw, w - c * tw).reshape(-1)
    return np.stack([np.zeros_like(heights), np.zeros_like(heights), heights, widths], axis=1).astype(np.int64)


@dataclass(frozen=True)
class Cover:
    """Which pixels of each of ``n`` tiles ``size`` (height, width) belong to their image: ``boxes`` ``[n, 4]``
    (:func:`tile_boxes`). The others are not coded: they repeat the nearest pixel of the box (:meth:`fill`), a
    function of the box's pixels that the decoder computes once it has them."""

    boxes: np.ndarray
    size: tuple[int, int]

    @classmethod
    def of(cls, shapes: list[tuple[int, ...]], shape: tuple[int, int, int]) -> Cover:
        """The cover of every tile of images of ``shapes`` (``[H, W, C]`` each) cut into tiles of ``shape``."""
        boxes = [tile_boxes(s[0], s[1], shape) for s in shapes]
        return cls(np.concatenate(boxes) if boxes else np.zeros((0, 4), np.int64), (shape[1], shape[2]))

    @classmethod
    def whole(cls, n: int, size: tuple[int, int]) -> Cover:
        """``n`` tiles of ``size`` coded whole, nothing outside (files before version 10; renormalised models)."""
        return cls(np.tile(np.array([[0, 0, size[0], size[1]]], dtype=np.int64), (n, 1)), size)

    def __getitem__(self, which: slice | np.ndarray) -> Cover:
        return Cover(self.boxes[which], self.size)

    @property
    def partial(self) -> np.ndarray:
        """``[n]`` bool: the tiles that have pixels outside their image."""
        return (self.boxes[:, 2] < self.size[0]) | (self.boxes[:, 3] < self.size[1])

    def outside(self) -> np.ndarray:
        """``[n, H, W]`` bool: True where a pixel lies outside its tile's image."""
        ys, xs = np.arange(self.size[0]), np.arange(self.size[1])
        t, left, h, w = (self.boxes[:, i, None] for i in range(4))
        rows = (ys < t) | (ys >= t + h)
        cols = (xs < left) | (xs >= left + w)
        return rows[:, :, None] | cols[:, None, :]

    def blank(self, tiles: np.ndarray) -> np.ndarray:
        """``tiles`` with every pixel outside its box 0 (a copy where any changes): what a PNG of them needs to
        hold (black costs PNG almost nothing; :meth:`fill` brings the pixels back)."""
        if not self.partial.any():
            return tiles
        return np.where(self.outside()[:, None], np.uint8(0), tiles)

    def fill(self, tiles: np.ndarray) -> np.ndarray:
        """``tiles`` ``[n, C, H, W]`` (a copy where any changes) with every pixel outside its box set to the box's
        nearest pixel (edge replication)."""
        if not self.partial.any():
            return tiles
        out = np.array(tiles, copy=True)
        th, tw = self.size
        for i in np.flatnonzero(self.partial):
            t, left, h, w = (int(v) for v in self.boxes[i])
            out[i] = np.pad(out[i, :, t : t + h, left : left + w], ((0, 0), (t, th - t - h), (left, tw - left - w)),
                            mode="edge")
        return out


def cut_images(images: list[InputImage], shape: tuple[int, int, int], edge_cover: bool) -> tuple[np.ndarray, Cover]:
    """The tiles of ``images`` as :func:`~selfvae.codec.files.compress` codes them, and which of their pixels it
    codes: with ``edge_cover`` (files of version 10 on) the images' own, the margins filled from the images' edges;
    else every pixel, the margins black."""
    tiles = np.concatenate([to_tiles(im.pixels, shape, im.name) for im in images])
    if not edge_cover:
        return tiles, Cover.whole(len(tiles), shape[1:])
    cover = Cover.of([im.pixels.shape for im in images], shape)
    return cover.fill(tiles), cover


def from_tiles(tiles: np.ndarray, h: int, w: int, channels: int) -> np.ndarray:
    """Inverse of :func:`to_tiles`: ``[t, C, th, tw]`` -> ``[H, W, channels]``."""
    _, c, th, tw = tiles.shape
    rows, cols, oy, ox = tile_grid(h, w, th, tw)
    canvas = tiles.reshape(rows, cols, c, th, tw).transpose(0, 3, 1, 4, 2).reshape(rows * th, cols * tw, c)
    return np.ascontiguousarray(canvas[oy : oy + h, ox : ox + w, :channels])


def save_png(pixels: np.ndarray, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels[..., 0] if pixels.shape[2] == 1 else pixels).save(path, optimize=False)


def split_images(cfg, split: str, limit: int | None = None) -> list[InputImage]:  # noqa: ANN001 - Config
    """The first ``limit`` images of a run's data split as the data set stores them: the model's padding
    (MNIST 28 -> 32) removed, so sizes and bits/dim are per dimension of the data's own images."""
    from selfvae.data import load_split
    from selfvae.data.datasets import get_spec

    ds = load_split(cfg, split)
    pad = get_spec(cfg.data.name).pad if cfg.data.image_size in (None, cfg.model.image_shape[1]) else 0
    n = len(ds) if limit is None else min(limit, len(ds))
    x = ds.images[:n].numpy().transpose(0, 2, 3, 1)
    if pad:
        x = x[:, pad:-pad, pad:-pad]
    width = len(str(max(n - 1, 0)))
    return [InputImage(f"{cfg.data.name}_{split}_{i:0{width}d}", np.ascontiguousarray(x[i])) for i in range(n)]


def to_mosaic(tiles: np.ndarray, cols: int) -> np.ndarray:
    """Tiles ``[n, C, th, tw]`` laid ``cols`` to a row as one ``[rows th, cols tw, C]`` picture (cells after the
    last tile black): how tiles sent with a classical codec travel, as one image with its neighbours beside it."""
    n, c, th, tw = tiles.shape
    rows = math.ceil(n / cols)
    cells = np.zeros((rows * cols, c, th, tw), dtype=np.uint8)
    cells[:n] = tiles
    return np.ascontiguousarray(cells.reshape(rows, cols, c, th, tw).transpose(0, 3, 1, 4, 2)
                                .reshape(rows * th, cols * tw, c))


def from_mosaic(mosaic: np.ndarray, n: int, shape: tuple[int, int, int]) -> np.ndarray:
    """Inverse of :func:`to_mosaic`: the first ``n`` tiles of ``shape`` ``(C, th, tw)``."""
    c, th, tw = shape
    rows, cols = mosaic.shape[0] // th, mosaic.shape[1] // tw
    cells = mosaic.reshape(rows, th, cols, tw, c).transpose(0, 2, 4, 1, 3).reshape(rows * cols, c, th, tw)
    return np.ascontiguousarray(cells[:n])
