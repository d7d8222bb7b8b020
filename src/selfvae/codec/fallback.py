"""Tiles sent without the model: which ones (:func:`raw_tiles`), and how a file carries them.

A tile the model codes badly (out of distribution: a photograph through a digit model) goes as one PNG of the mosaic
of all such tiles of a file, or as raw values where that PNG is not smaller (:func:`push_fallback`,
:func:`pop_fallback`); where PNGs of the whole images beat the model's file, the file holds one PNG per image
instead (:func:`push_image_pngs`, :func:`pop_image_pngs`). Either way the header's ``fallback`` entry says so
(``docs/CODEC.md``), and no file is more than its header and a few words above 8 bits a value.
"""

from __future__ import annotations

import math

import numpy as np

from selfvae.codec.ans import Stack
from selfvae.codec.classical import png as classical_png
from selfvae.codec.classical import read_pil
from selfvae.codec.container import CodecError
from selfvae.codec.images import InputImage, cut_images, from_mosaic, tile_grid, to_mosaic

# A tile is sent without the model (PNG or raw, never above 8 bits a value) when the model's negative ELBO of it is
# at least this fraction of 8 bits a value: bits-back coding spends about the negative ELBO and a few per cent more
# (docs/CODEC.md), so near the line both cost alike
RAW_AT = 0.97


def raw_tiles(tile_bits: np.ndarray, shape: tuple[int, int, int]) -> np.ndarray:
    """Which tiles to send without the model (:func:`push_fallback`: one PNG of them, or their raw values): those
    whose negative ELBO ``tile_bits`` (:func:`~selfvae.codec.files.tile_nelbo_bits`) is at least :data:`RAW_AT` of
    8 bits a value of a tile of ``shape`` (out of distribution: a photograph through a digit model), so that no file
    is more than its header and a few words above 8 bits a value."""
    return tile_bits >= RAW_AT * 8 * np.prod(shape)


def mosaic_cols(images: list[InputImage], raw: np.ndarray, shape: tuple[int, int, int]) -> int:
    """Tiles a row of the fallback mosaic: the tile columns of the image that sends the most tiles that way, so
    that its tiles keep their neighbours (a PNG row filter sees the row above)."""
    best, at, cols = -1, 0, 1
    for im in images:
        rows_i, cols_i, _, _ = tile_grid(im.pixels.shape[0], im.pixels.shape[1], shape[1], shape[2])
        k = int(raw[at : at + rows_i * cols_i].sum())
        if k > best:
            best, cols = k, cols_i
        at += rows_i * cols_i
    return max(1, min(cols, int(raw.sum())))


def fallback_png(images: list[InputImage], tiles: np.ndarray, raw: np.ndarray, shape: tuple[int, int, int]) -> bytes:
    """One PNG of the ``tiles`` sent without the model (those of the flags ``raw``) as a file carries them: their
    mosaic, laid out as the image with most of them is (:func:`mosaic_cols`)."""
    return classical_png(to_mosaic(tiles, mosaic_cols(images, raw, shape)))


def push_fallback(stack: Stack, tiles: np.ndarray, png: bytes, cols: int) -> dict | None:
    """Push the tiles sent without the model: as ``png``, one PNG of their mosaic (:func:`fallback_png`; its bytes
    as 8-bit symbols) where that is smaller than their raw values, else raw. Returns the header's ``fallback``
    entry (None: raw)."""
    if len(png) >= tiles.size:
        stack.push_uniform(tiles, 256)
        return None
    stack.push_uniform(np.frombuffer(png, dtype=np.uint8), 256)
    return {"codec": "png", "bytes": len(png), "cols": cols}


def push_image_pngs(stack: Stack, pngs: list[bytes]) -> dict:
    """Push one PNG of each image (every tile of the file goes without the model; their bytes as 8-bit symbols);
    returns the header's ``fallback`` entry."""
    stack.push_uniform(np.frombuffer(b"".join(pngs), dtype=np.uint8), 256)
    return {"codec": "png", "images": [len(p) for p in pngs]}


def fallback_bytes(fallback: dict) -> int:
    """The bytes of PNG a header's ``fallback`` entry says the payload holds (one mosaic, or one PNG per image)."""
    return int(sum(fallback["images"])) if "images" in fallback else int(fallback["bytes"])


def pop_image_pngs(stack: Stack, fallback: dict, shapes: list[tuple[int, int, int]], tile: tuple[int, int, int],
                   edge_cover: bool, name: str) -> np.ndarray:
    """Every tile of the images :func:`push_image_pngs` pushed, cut as compress cut them
    (:func:`~selfvae.codec.images.cut_images`)."""
    data = stack.pop_uniform(256, (fallback_bytes(fallback),)).astype(np.uint8).tobytes()
    images, at = [], 0
    for shape, k in zip(shapes, fallback["images"], strict=True):
        try:
            pixels = read_pil(data[at : at + k], shape[2])
        except (OSError, ValueError) as e:
            raise CodecError(f"{name}: its images' PNGs are not readable: the file is damaged") from e
        if pixels.shape != tuple(shape):
            raise CodecError(f"{name}: a PNG it holds is {pixels.shape}, not the image {tuple(shape)} its header names")
        images.append(InputImage(name, pixels))
        at += k
    return cut_images(images, tile, edge_cover)[0]


def pop_fallback(stack: Stack, fallback: dict | None, n: int, tile: tuple[int, int, int], name: str) -> np.ndarray:
    """The ``n`` tiles :func:`push_fallback` pushed."""
    if fallback is None:
        return stack.pop_uniform(256, (n, *tile)).astype(np.uint8)
    data = stack.pop_uniform(256, (int(fallback["bytes"]),)).astype(np.uint8).tobytes()
    c, th, tw = tile
    try:
        mosaic = read_pil(data, c)
    except (OSError, ValueError) as e:
        raise CodecError(f"{name}: its fallback tiles are not a readable PNG: the file is damaged") from e
    cols = int(fallback["cols"])
    if mosaic.shape != (math.ceil(n / cols) * th, cols * tw, c):
        raise CodecError(f"{name}: its fallback mosaic is {mosaic.shape}, not the {n} tiles its header names")
    return from_mosaic(mosaic, n, tile)
