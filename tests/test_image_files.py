"""One image reader, one rule (selfvae.data.images): the same file gives the same pixels through every entry
point — training folders, superres/interpolate/reconstruct inputs, the demo's uploads and compress (which
refuses, naming the file, what it could not give back exactly)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from selfvae.codec.images import read_inputs
from selfvae.data import load_dataset
from selfvae.data.images import convert_channels, read_image_file, read_pixels
from selfvae.errors import SelfVAEError

H, W = 6, 10


def _gradient() -> np.ndarray:
    yy, xx = np.mgrid[:H, :W]
    return np.stack([xx * 25, yy * 40, (xx + yy) * 15], -1).astype(np.uint8)  # [H, W, 3]


def _write(kind: str, path: Path) -> np.ndarray:
    """Write a file of ``kind``; returns the pixels a reader must give (uint8 [H, W, 1|3], as displayed)."""
    rgb = _gradient()
    grey = rgb[..., :1]
    if kind == "grey":
        Image.fromarray(grey[..., 0]).save(path)
        return grey
    if kind == "grey-palette":
        Image.fromarray(grey[..., 0]).convert("P").save(path)
        return grey
    if kind == "colour-palette":
        im = Image.fromarray(rgb).quantize(8)
        im.save(path)
        return np.asarray(im.convert("RGB"))
    if kind == "rgba":
        Image.fromarray(np.concatenate([rgb, np.full((H, W, 1), 100, np.uint8)], -1)).save(path)
        return rgb  # alpha dropped
    if kind == "16-bit":
        v = (grey[..., 0].astype(np.int32) * 257 + 100).astype(np.uint16)
        Image.fromarray(v).save(path)
        return np.rint(v / 257).astype(np.uint8)[..., None]
    if kind == "cmyk-jpeg":
        Image.fromarray(rgb).convert("CMYK").save(path, quality=95)
        return np.asarray(Image.open(path).convert("RGB"))
    if kind == "exif-rotated-jpeg":
        im = Image.fromarray(rgb)
        exif = im.getexif()
        exif[0x0112] = 6  # shown turned 90 degrees clockwise
        im.save(path, quality=95, exif=exif)
        return np.rot90(np.asarray(Image.open(path).convert("RGB")), k=-1)
    raise AssertionError(kind)


KINDS = {"grey": ".png", "grey-palette": ".png", "colour-palette": ".png", "rgba": ".png", "16-bit": ".png",
         "cmyk-jpeg": ".jpg", "exif-rotated-jpeg": ".jpg"}
EXACT_REFUSES = {"rgba": "transparent", "16-bit": "more than 8 bits"}


@pytest.mark.parametrize("kind", list(KINDS))
def test_every_entry_point_reads_a_file_the_same_way(kind, tmp_path):
    folder = tmp_path / "photos"
    folder.mkdir()
    path = folder / f"a{KINDS[kind]}"
    expected = _write(kind, path)
    got = read_pixels(path)
    assert got.dtype == np.uint8 and got.shape == expected.shape
    assert np.array_equal(got, expected)
    # commands that hand a user's image to a model: the file's own size, the model's channels
    for c in (1, 3):
        t = read_image_file(path, (c, None, None))
        assert np.array_equal(t.permute(1, 2, 0).numpy(), convert_channels(expected[None], c)[0])
    # a training folder of such files
    ds = load_dataset("folder", folder, "train", val_fraction=0.0)
    assert np.array_equal(ds.images[0].permute(1, 2, 0).numpy(), expected)
    # compress: the same pixels, or a refusal naming the file where it could not give them back exactly
    if kind in EXACT_REFUSES:
        with pytest.raises(SelfVAEError, match=EXACT_REFUSES[kind]) as e:
            read_inputs([str(path)])
        assert str(path) in str(e.value)
    else:
        assert np.array_equal(read_inputs([str(path)])[0].pixels, expected)


def test_oversized_and_unreadable_files_are_refused_by_name(tmp_path):
    """Issue 37: a 20000x20000 PNG gave compress a DecompressionBombError traceback. Its header alone is read."""
    import struct
    import zlib

    Image.new("L", (1, 1)).save(tmp_path / "small.png")
    data = bytearray((tmp_path / "small.png").read_bytes())
    ihdr = bytes(data[12:16]) + struct.pack(">II", 20000, 20000) + bytes(data[24:29])  # type, size, bit depth...
    data[16:24] = struct.pack(">II", 20000, 20000)
    data[29:33] = struct.pack(">I", zlib.crc32(ihdr))
    (tmp_path / "huge.png").write_bytes(bytes(data))
    for read in (read_pixels, lambda p: read_inputs([str(p)])):
        with pytest.raises(SelfVAEError, match=r"huge.png: image is .*pixels.* make it smaller"):
            read(tmp_path / "huge.png")
    bad = tmp_path / "notes.png"
    bad.write_text("not an image")
    with pytest.raises(SelfVAEError, match="notes.png: not an image file"):
        read_pixels(bad)
    with pytest.raises(SelfVAEError, match="no such image file"):
        read_pixels(tmp_path / "missing.png")


def test_images_given_to_a_model_follow_its_loaders_rule(tmp_path, capsys):
    """Issue 36: interpolate refused the 28x28 MNIST PNGs compress accepts, and its --resize stretched where
    training pads or crops. Every command now places an image as the model's data loader did."""
    from selfvae.cli import main
    from selfvae.data.images import read_model_inputs, resize_image

    rng = np.random.default_rng(0)
    digit = rng.integers(0, 256, (28, 28), dtype=np.uint8)
    Image.fromarray(digit).save(tmp_path / "digit.png")
    x = read_model_inputs([tmp_path / "digit.png"], (1, 32, 32), (1, 28, 28))
    assert torch_equal(x[0, 0], np.pad(digit, 2))  # as the MNIST loader pads its digits
    framed = np.asarray(x[0, 0])
    Image.fromarray(framed).save(tmp_path / "framed.png")
    assert torch_equal(read_model_inputs([tmp_path / "framed.png"], (1, 32, 32), (1, 28, 28))[0, 0], framed)
    wide = rng.integers(0, 256, (20, 30), dtype=np.uint8)
    Image.fromarray(wide).save(tmp_path / "wide.png")
    with pytest.raises(SelfVAEError, match=r"wide.png: image is 30x20; this model takes 28x28 .*--resize"):
        read_model_inputs([tmp_path / "wide.png"], (1, 32, 32), (1, 28, 28))
    for policy in ("crop", "pad"):  # square first, as the loaders do (never stretched), then the digit's size
        got = read_model_inputs([tmp_path / "wide.png"], (1, 32, 32), (1, 28, 28), policy)[0, 0]
        assert torch_equal(got, np.pad(np.asarray(resize_image(Image.fromarray(wide), 28, policy)), 2))
    out = tmp_path / "path.png"
    main(["interpolate", "mnist-vae", str(tmp_path / "digit.png"), str(tmp_path / "framed.png"), "--steps", "2",
          "-o", str(out)])
    assert out.is_file()


def torch_equal(t, a) -> bool:
    return np.array_equal(np.asarray(t), np.asarray(a))
