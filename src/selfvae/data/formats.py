"""Readers of on-disk data set formats into plain numpy arrays.

Every reader returns ``(images, labels)`` where ``images`` is a uint8 array shaped ``[N, H, W, C]``
(C in {1, 3}) and ``labels`` is an int64 array ``[N]`` or ``None``. Readers know nothing about the
train/val split rule or augmentation (see :mod:`selfvae.data.datasets`); they only turn the official
files into arrays and raise :class:`~selfvae.errors.SelfVAEError` naming the path when something is
missing or malformed.

Resizing (folders, CelebA, imagenette, and ``image_size`` for array data sets) never squashes an image:
:func:`resize_image` first makes it square, by a centre crop of the longer side (``resize="crop"``, the
default) or by black padding of the shorter one (``resize="pad"``), then resizes it with PIL's BOX filter
(the area average of the covered source pixels) when it shrinks and BICUBIC when it grows.
"""

from __future__ import annotations

import gzip
import io
import os
import pickle
import re
import shutil
import tarfile
import tempfile
import warnings
import zipfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from selfvae.data.images import convert_channels, image_size, read_pixels, resize_image
from selfvae.errors import NoSplitError, SelfVAEError

Arrays = tuple[np.ndarray, "np.ndarray | None"]

IMAGE_EXTENSIONS = frozenset(
    {".png", ".jpg", ".jpeg", ".bmp", ".webp", ".gif", ".tif", ".tiff", ".ppm", ".pgm", ".pbm"}
)


@dataclass(frozen=True)
class ReadOptions:
    """Options every reader receives; readers of fixed-size arrays ignore ``image_size``.

    ``image_size``: side of the square output for readers that decode image files (None = the reader's
    default, e.g. 64 for CelebA, or the files' own size for generic folders).
    ``resize``: how a non-square image becomes square before resizing, ``"crop"`` or ``"pad"``
    (see :func:`resize_image`).
    ``on_bad_file``: ``"error"`` raises on an unreadable image, ``"skip"`` warns and drops it.
    """

    image_size: int | None = None
    resize: str = "crop"
    on_bad_file: str = "error"


# --------------------------------------------------------------------------------------------------
# small helpers


def require_dir(root: Path, what: str) -> Path:
    """Return ``root`` if it is an existing directory, else raise naming it and what was expected."""
    if not root.exists():
        raise SelfVAEError(f"{root}: does not exist; expected a directory with {what}")
    if not root.is_dir():
        raise SelfVAEError(f"{root}: is not a directory; expected a directory with {what}")
    return root


def find_first(dirs: Iterable[Path], names: Sequence[str]) -> Path | None:
    """First existing file ``d / n`` over ``dirs`` (outer) and ``names`` (inner), or None."""
    for d in dirs:
        for n in names:
            p = d / n
            if p.is_file():
                return p
    return None


_SHAPES_EXPECTED = "expected [N,H,W], [N,H,W,C] or [N,C,H,W] with C in 1 or 3"


def nhwc_from_array(arr: np.ndarray, what: str) -> np.ndarray:
    """Validate a uint8 image array and return it as ``[N, H, W, C]``.

    Accepts ``[N, H, W]`` (grey), ``[N, H, W, C]`` and ``[N, C, H, W]`` with C in {1, 3}; the channel axis
    is taken to be the last one when its size is 1 or 3, else axis 1.
    """
    if arr.dtype != np.uint8:
        raise SelfVAEError(f"{what} has dtype {arr.dtype}, expected uint8 (pixel values 0..255)")
    if arr.ndim == 3:
        arr = arr[..., None]
    elif arr.ndim == 4:
        if arr.shape[-1] in (1, 3):
            pass
        elif arr.shape[1] in (1, 3):
            arr = arr.transpose(0, 2, 3, 1)
        else:
            raise SelfVAEError(
                f"{what} has shape {tuple(arr.shape)}, {_SHAPES_EXPECTED}"
            )
    else:
        raise SelfVAEError(
            f"{what} has shape {tuple(arr.shape)}, {_SHAPES_EXPECTED}"
        )
    if arr.shape[0] == 0 or arr.shape[1] == 0 or arr.shape[2] == 0:
        raise SelfVAEError(f"{what} is empty (shape {tuple(arr.shape)})")
    return np.ascontiguousarray(arr)


def labels_from_array(arr: np.ndarray | None, n: int, what: str) -> np.ndarray | None:
    """Validate labels (integers, shape [N]) and return them as int64, or None."""
    if arr is None:
        return None
    arr = np.asarray(arr)
    if arr.ndim != 1 or arr.shape[0] != n:
        raise SelfVAEError(f"{what} has shape {tuple(arr.shape)}, expected [{n}] (one label per image)")
    if not np.issubdtype(arr.dtype, np.integer):
        raise SelfVAEError(f"{what} has dtype {arr.dtype}, expected an integer type")
    return arr.astype(np.int64)


def pad_images(x: np.ndarray, pad: int) -> np.ndarray:
    """Zero-pad ``[N, H, W, C]`` images by ``pad`` pixels on each side of H and W."""
    return np.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)))


# --------------------------------------------------------------------------------------------------
# IDX (MNIST, Fashion-MNIST)

_IDX_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def read_idx(path: Path) -> np.ndarray:
    """Read an IDX file (gzipped or raw, detected from the content) into a numpy array."""
    try:
        raw = path.read_bytes()
        if raw[:2] == b"\x1f\x8b":
            raw = gzip.decompress(raw)
    except (OSError, EOFError, gzip.BadGzipFile) as e:
        raise SelfVAEError(f"{path}: cannot read IDX file ({e})") from e
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_DTYPES:
        raise SelfVAEError(f"{path}: not an IDX file (bad magic number {raw[:4].hex()})")
    ndim = raw[3]
    header = 4 + 4 * ndim
    if ndim == 0 or len(raw) < header:
        raise SelfVAEError(f"{path}: truncated IDX header")
    dims = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    dtype = np.dtype(_IDX_DTYPES[raw[2]])
    expected = int(np.prod(dims)) * dtype.itemsize
    if len(raw) - header != expected:
        raise SelfVAEError(
            f"{path}: IDX header says shape {dims} ({expected} bytes of data) but the file holds "
            f"{len(raw) - header} bytes"
        )
    return np.frombuffer(raw, dtype=dtype, offset=header).reshape(dims).astype(dtype.newbyteorder("="))


_IDX_PREFIX = {"train": "train", "test": "t10k"}


def read_mnist_like(root: Path, part: str, opts: ReadOptions, *, npz_name: str | None) -> Arrays:
    """MNIST-format reader: official IDX files (gz or raw) in ``root``, or ``root/<npz_name>``.

    ``root`` may also be the ``.npz`` file itself (keys x_train, y_train, x_test, y_test). Images come back
    28x28 (no padding; :mod:`selfvae.data.datasets` pads to 32).
    """
    if npz_name is not None:
        npz = root if root.suffix == ".npz" else root / npz_name
        if npz.is_file():
            return read_npz(npz, part, opts, keys=(f"x_{part}",), label_keys=(f"y_{part}",))
    prefix = _IDX_PREFIX[part]
    img_names = [f"{prefix}-images-idx3-ubyte", f"{prefix}-images.idx3-ubyte"]
    lbl_names = [f"{prefix}-labels-idx1-ubyte", f"{prefix}-labels.idx1-ubyte"]
    img_names += [n + ".gz" for n in img_names]
    lbl_names += [n + ".gz" for n in lbl_names]
    expected = f"{img_names[0]}[.gz] and {lbl_names[0]}[.gz]"
    if npz_name is not None:
        expected += f" (or {npz_name})"
    require_dir(root, expected)
    dirs = [root, root / "raw"]
    img_path, lbl_path = find_first(dirs, img_names), find_first(dirs, lbl_names)
    if img_path is None or lbl_path is None:
        raise SelfVAEError(f"{root}: missing {expected}")
    x, y = read_idx(img_path), read_idx(lbl_path)
    if x.ndim != 3 or x.dtype != np.uint8:
        raise SelfVAEError(f"{img_path}: holds {x.dtype} array of shape {x.shape}, expected uint8 [N,H,W]")
    return nhwc_from_array(x, str(img_path)), labels_from_array(y, x.shape[0], str(lbl_path))


# --------------------------------------------------------------------------------------------------
# CIFAR-10 (python version)

CIFAR_DIR = "cifar-10-batches-py"
CIFAR_TAR = "cifar-10-python.tar.gz"
CIFAR_BATCHES = {"train": [f"data_batch_{i}" for i in range(1, 6)], "test": ["test_batch"]}


class _ArrayUnpickler(pickle.Unpickler):
    """Unpickles dicts, lists, bytes and numpy arrays only: a tampered batch file cannot run code."""

    _ALLOWED = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
                ("numpy", "ndarray"), ("numpy", "dtype"),
                ("_codecs", "encode")}  # how protocol-2 pickles from Python 3 spell bytes

    def find_class(self, module: str, name: str):  # noqa: ANN201 - pickle's protocol
        if (module, name) in self._ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refused global {module}.{name} (only numpy arrays are allowed)")


def _parse_cifar_batch(data: bytes, what: str) -> Arrays:
    try:  # the official format is a pickle; read with an unpickler that builds arrays and nothing else
        d = _ArrayUnpickler(io.BytesIO(data), encoding="bytes").load()
        x, y = np.asarray(d[b"data"]), np.asarray(d[b"labels"])
    except Exception as e:  # noqa: BLE001 - any unpickling failure is a bad file
        raise SelfVAEError(f"{what}: not a CIFAR-10 python batch ({type(e).__name__}: {e})") from e
    if x.dtype != np.uint8 or x.ndim != 2 or x.shape[1] != 3072:
        raise SelfVAEError(
            f"{what}: array b'data' has dtype {x.dtype} shape {x.shape}, expected uint8 [N, 3072]"
        )
    x = x.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
    return x, labels_from_array(y, x.shape[0], f"{what}: b'labels'")


def _extract_tar_once(tar_path: Path, dest_root: Path, member_dir: str) -> Path | None:
    """Extract ``tar_path`` into ``dest_root`` atomically (temp dir + rename); None if not writable."""
    target = dest_root / member_dir
    if target.is_dir():
        return target
    try:
        tmp = Path(tempfile.mkdtemp(prefix=".extract-", dir=dest_root))
    except OSError:
        return None
    try:
        with tarfile.open(tar_path) as tf:
            if hasattr(tarfile, "data_filter"):
                tf.extractall(tmp, filter="data")
            else:  # pragma: no cover - old Pythons without extraction filters
                for m in tf.getmembers():
                    if m.name.startswith(("/", "..")) or ".." in Path(m.name).parts:
                        raise SelfVAEError(f"{tar_path}: unsafe member path {m.name!r}")
                tf.extractall(tmp)
        if not (tmp / member_dir).is_dir():
            raise SelfVAEError(f"{tar_path}: archive has no folder {member_dir}/")
        try:
            os.replace(tmp / member_dir, target)
        except OSError:
            if not target.is_dir():  # lost a race with another process: fine if it won
                raise
    except (tarfile.TarError, OSError, EOFError) as e:
        raise SelfVAEError(f"{tar_path}: cannot extract ({e})") from e
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def read_cifar10(root: Path, part: str, opts: ReadOptions) -> Arrays:
    """CIFAR-10 python batches in ``root`` or ``root/cifar-10-batches-py``, or ``cifar-10-python.tar.gz``.

    The tar.gz is extracted once next to itself; if that directory is read-only the batches are read
    straight from the archive instead.
    """
    names = CIFAR_BATCHES[part]
    expected = f"{CIFAR_DIR}/{{{','.join(names)}}} or {CIFAR_TAR}"
    require_dir(root, expected)
    batch_dir = next((d for d in (root, root / CIFAR_DIR) if all((d / n).is_file() for n in names)), None)
    tar_path = root / CIFAR_TAR
    if batch_dir is None and tar_path.is_file():
        batch_dir = _extract_tar_once(tar_path, root, CIFAR_DIR)
        if batch_dir is None:
            parts = []
            try:
                with tarfile.open(tar_path) as tf:
                    for n in names:
                        f = tf.extractfile(f"{CIFAR_DIR}/{n}")
                        if f is None:
                            raise SelfVAEError(f"{tar_path}: missing member {CIFAR_DIR}/{n}")
                        parts.append(_parse_cifar_batch(f.read(), f"{tar_path}:{n}"))
            except (tarfile.TarError, KeyError, OSError, EOFError) as e:
                raise SelfVAEError(f"{tar_path}: not a readable CIFAR-10 archive ({e})") from e
            return _concat(parts)
    if batch_dir is None:
        missing = [n for n in names if not (root / CIFAR_DIR / n).is_file()]
        raise SelfVAEError(f"{root}: missing CIFAR-10 files {missing}; expected {expected}")
    return _concat([_parse_cifar_batch((batch_dir / n).read_bytes(), str(batch_dir / n)) for n in names])


CIFAR_JPEG_TAR = "cifar10-jpeg.tar.gz"
CIFAR_JPEG_DIR = "cifar10-jpeg"


def read_cifar10_jpeg(root: Path, part: str, opts: ReadOptions) -> Arrays:
    """CIFAR-10 as JPEG files (``cifar10-jpeg/{train,test}/<class>/NNNN.jpg``: the re-encode in this project's
    shared data, whose pixels differ slightly from the official set), read from ``cifar10-jpeg.tar.gz`` (``root``
    itself or in ``root``) without unpacking it, or from the unpacked folder (``root`` or ``root/cifar10-jpeg``).
    Images come in sorted path order, labels are the sorted class folders: as :func:`read_folder` reads the
    unpacked folder, so a model trained on that folder gives the same bounds on this data set."""
    for folder in (root / CIFAR_JPEG_DIR, root):
        if (folder / part).is_dir() and not root.is_file():
            return read_folder(folder, part, opts)
    tar_path = root if root.is_file() else root / CIFAR_JPEG_TAR
    if not tar_path.is_file():
        raise SelfVAEError(f"{root}: no {CIFAR_JPEG_TAR} and no {CIFAR_JPEG_DIR}/{part}/ folder (CIFAR-10 as JPEG "
                           "files; this project's copy is ../shared/data/cifar10-jpeg.tar.gz)")
    prefix = f"{CIFAR_JPEG_DIR}/{part}/"
    found: list[tuple[str, bytes]] = []
    try:
        with tarfile.open(tar_path) as tar:
            for m in tar:
                if m.isfile() and m.name.startswith(prefix) and Path(m.name).suffix.lower() in IMAGE_EXTENSIONS:
                    found.append((m.name[len(prefix):], tar.extractfile(m).read()))
    except (tarfile.TarError, OSError, EOFError) as e:
        raise SelfVAEError(f"{tar_path}: not a readable tar archive of CIFAR-10 JPEG files ({e})") from e
    if not found:
        raise SelfVAEError(f"{tar_path}: holds no {prefix}<class>/*.jpg files")
    found.sort()
    classes = sorted({name.split("/")[0] for name, _ in found})
    index = {c: i for i, c in enumerate(classes)}
    x = np.stack([convert_channels(read_pixels(data, where=f"{tar_path}:{prefix}{name}")[None], 3)[0]
                  for name, data in found])
    return x, np.array([index[name.split("/")[0]] for name, _ in found], dtype=np.int64)


CIFAR_OFFICIAL_PART = "cifar10-official-part.npz"


def read_cifar10_official_part(root: Path, part: str, opts: ReadOptions) -> Arrays:
    """A part of the official CIFAR-10 pixels as one npz file (``root`` itself or ``root/cifar10-official-part.npz``):
    ``x_train`` [N, 32, 32, 3] uint8 with ``y_train`` (this project's copy: 4745 images, the first 932-1017 of each
    training batch) and ``x_test`` with ``y_test`` (717 images, the first of the official test batch)."""
    path = root if root.is_file() else root / CIFAR_OFFICIAL_PART
    if not path.is_file():
        raise SelfVAEError(f"{root}: no {CIFAR_OFFICIAL_PART} (official CIFAR-10 pixels, a part; this project's copy "
                           f"is ../shared/data/{CIFAR_OFFICIAL_PART})")
    x, y = read_npz(path, part, opts)
    if x.shape[1:] != (32, 32, 3):
        raise SelfVAEError(f"{path.name}: {part} images have shape {x.shape[1:]}, expected CIFAR-10's (32, 32, 3)")
    return x, y


def _concat(parts: list[Arrays]) -> Arrays:
    x = np.concatenate([p[0] for p in parts])
    labels = [p[1] for p in parts]
    y = None if any(lab is None for lab in labels) else np.concatenate(labels)  # type: ignore[arg-type]
    return x, y


# --------------------------------------------------------------------------------------------------
# Downsampled ImageNet (Chrabaszcz et al. 2017) npz batches


def read_imagenet_npz(root: Path, part: str, opts: ReadOptions, *, size: int) -> Arrays:
    """Downsampled ImageNet of Chrabaszcz et al. (2017), image-net.org's box-resized npz batches for
    classification: ``train_data_batch_1..10.npz`` and ``val_data.npz`` (the test split). The density-estimation
    literature uses van den Oord's set instead (:func:`read_imagenet_oord`).

    Files may sit in ``root`` or in the official sub-folders ``Imagenet{size}_train_npz`` /
    ``Imagenet{size}_val_npz`` (also without ``_npz``). Labels are shifted from 1-based to 0-based.
    """
    sub = "train" if part == "train" else "val"
    expected = "train_data_batch_1..10.npz" if part == "train" else "val_data.npz"
    require_dir(root, expected)
    dirs = [root, root / f"Imagenet{size}_{sub}_npz", root / f"Imagenet{size}_{sub}"]
    if part == "train":
        pat = re.compile(r"train_data_batch_(\d+)(\.npz)?$")
        files: list[Path] = []
        for d in dirs:
            if d.is_dir():
                found = [p for p in d.iterdir() if pat.match(p.name)]
                if found:
                    files = sorted(found, key=lambda p: int(pat.match(p.name).group(1)))  # type: ignore[union-attr]
                    break
    else:
        f = find_first(dirs, ["val_data.npz", "val_data"])
        files = [f] if f is not None else []
    if not files:
        raise SelfVAEError(f"{root}: missing downsampled-ImageNet files; expected {expected} (searched "
                           f"{', '.join(str(d) for d in dirs)})")
    parts = []
    for f in files:
        with _open_npz(f) as z:
            for key in ("data", "labels"):
                if key not in z.files:
                    raise SelfVAEError(f"{f}: has no array '{key}' (found {sorted(z.files)})")
            x, y = z["data"], z["labels"]
        if x.dtype != np.uint8 or x.ndim != 2 or x.shape[1] != 3 * size * size:
            raise SelfVAEError(
                f"{f}: array 'data' has dtype {x.dtype} shape {x.shape}, "
                f"expected uint8 [N, {3 * size * size}]"
            )
        x = x.reshape(-1, 3, size, size).transpose(0, 2, 3, 1)
        y = labels_from_array(np.asarray(y).reshape(-1), x.shape[0], f"{f}: array 'labels'")
        parts.append((x, None if y is None else y - 1))
    return _concat(parts)


# --------------------------------------------------------------------------------------------------
# Downsampled ImageNet of van den Oord et al. (2016): the density-estimation benchmark


def read_imagenet_oord(root: Path, part: str, opts: ReadOptions, *, size: int) -> Arrays:
    """The density-estimation literature's ImageNet32/64 (van den Oord et al. 2016, "Pixel Recurrent Neural
    Networks"; used by Glow, Flow++, VDVAE, NVAE): ``train_{size}x{size}`` and ``valid_{size}x{size}`` (the
    test split), each a folder of RGB PNGs, the ``.tar`` of that folder as distributed (read without
    extracting), or VDVAE's ``imagenet{size}-train.npy`` / ``imagenet{size}-valid.npy`` (uint8
    ``[N, size, size, 3]``). PNGs are taken in file-name order. No labels.

    Not the same images as :func:`read_imagenet_npz` (Chrabaszcz et al. 2017, box-resized for
    classification): bits/dim on one do not compare with the other.
    """
    tag = f"{'train' if part == 'train' else 'valid'}_{size}x{size}"
    npy_name = f"imagenet{size}-{'train' if part == 'train' else 'valid'}.npy"
    expected = f"{tag}/*.png, {tag}.tar or {npy_name}"
    require_dir(root, expected)
    what = f"{root}/{tag}"
    if (root / npy_name).is_file():
        what = str(root / npy_name)
        try:
            x = nhwc_from_array(np.load(root / npy_name, allow_pickle=False, mmap_mode="r"), what)
        except ValueError as e:
            raise SelfVAEError(f"{what}: not a plain uint8 .npy array ({e})") from e
    elif (root / tag).is_dir():
        files = sorted(p for p in (root / tag).iterdir() if p.suffix.lower() == ".png")
        if not files:
            raise SelfVAEError(f"{root / tag}: no .png files")
        x, _ = decode_images(files, opts)
    elif (root / f"{tag}.tar").is_file():
        what = str(root / f"{tag}.tar")
        x = _pngs_in_tar(root / f"{tag}.tar", opts)
    else:
        raise SelfVAEError(f"{root}: missing the downsampled-ImageNet (van den Oord) files; expected {expected}")
    if x.shape[1:] != (size, size, 3):
        raise SelfVAEError(f"{what}: images are {x.shape[1:]} (HxWxC), expected ({size}, {size}, 3)")
    return np.ascontiguousarray(x), None


def _pngs_in_tar(path: Path, opts: ReadOptions) -> np.ndarray:
    """Every ``.png`` member of a tar file, in member-name order, as one uint8 ``[N, H, W, C]`` array."""
    try:
        with tarfile.open(path) as tar:
            members = sorted((m for m in tar if m.isfile() and m.name.lower().endswith(".png")),
                             key=lambda m: m.name)
            if not members:
                raise SelfVAEError(f"{path}: no .png members")
            arrays = []
            for m in members:
                where = f"{path}:{m.name}"
                try:
                    arrays.append(convert_channels(read_pixels(tar.extractfile(m).read(), where=where)[None], 3)[0])
                except SelfVAEError as e:
                    _bad_file(Path(where), str(e), opts)
    except (tarfile.TarError, EOFError, OSError) as e:
        raise SelfVAEError(f"{path}: corrupt or truncated tar file ({e})") from e
    if not arrays:
        raise SelfVAEError(f"{path}: no readable images")
    if len({a.shape for a in arrays}) > 1:
        raise SelfVAEError(f"{path}: images differ in size")
    return np.stack(arrays)


# --------------------------------------------------------------------------------------------------
# generic npz


def _open_npz(path: Path):  # noqa: ANN202 - NpzFile
    try:
        return np.load(path, allow_pickle=False)
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as e:
        raise SelfVAEError(f"{path}: cannot read npz file ({e})") from e


NPZ_IMAGE_KEYS = {"train": ("x_train", "x", "images"), "val": ("x_val",), "test": ("x_test",)}
NPZ_LABEL_KEYS = {"train": ("y_train", "y", "labels"), "val": ("y_val",), "test": ("y_test",)}


def npz_has_val(path: Path) -> bool:
    """Whether an npz file holds its own validation images (``x_val``), read from its member names only."""
    if not path.is_file():
        return False
    with _open_npz(path) as z:
        return "x_val" in z.files


def read_npz(
    path: Path,
    part: str,
    opts: ReadOptions,
    *,
    keys: Sequence[str] | None = None,
    label_keys: Sequence[str] | None = None,
) -> Arrays:
    """One ``.npz`` file: images under ``x_train``/``x``/``images`` (train), ``x_val`` (val, when the file holds
    its own: then the whole train array trains) or ``x_test`` (test).

    Labels (optional) under ``y_train``/``y``/``labels``, ``y_val`` or ``y_test``. A file without ``x_test`` has no
    test split: asking for it raises :class:`SelfVAEError`.
    """
    keys = tuple(keys or NPZ_IMAGE_KEYS[part])
    label_keys = tuple(label_keys or NPZ_LABEL_KEYS[part])
    if not path.is_file():
        raise SelfVAEError(f"{path}: no such file; expected an .npz file with array {' or '.join(keys)}")
    with _open_npz(path) as z:
        key = next((k for k in keys if k in z.files), None)
        if key is None:
            raise (NoSplitError if part == "test" else SelfVAEError)(
                f"{path.name}: no array {' or '.join(repr(k) for k in keys)} for the {part} split "
                f"(found {sorted(z.files)})"
            )
        x = nhwc_from_array(_npz_array(z, key, path), f"{path.name}: array '{key}'")
        lkey = next((k for k in label_keys if k in z.files), None)
        y = labels_from_array(_npz_array(z, lkey, path), x.shape[0], f"{path.name}: array '{lkey}'") if lkey else None
    return x, y


def _npz_array(z, key: str, path: Path) -> np.ndarray:  # noqa: ANN001 - NpzFile
    """``z[key]``; an object (pickled) or corrupt member raises :class:`SelfVAEError`."""
    try:
        return z[key]
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as e:
        raise SelfVAEError(f"{path.name}: cannot read array '{key}' ({e})") from e


def npz_image_shape(path: Path) -> tuple[int, int, int]:
    """(C, H, W) of the train images of an npz file, read from the array header only."""
    if not path.is_file():
        raise SelfVAEError(f"{path}: no such file")
    try:
        with zipfile.ZipFile(path) as zf:
            names = {n[:-4]: n for n in zf.namelist() if n.endswith(".npy")}
            key = next((k for k in NPZ_IMAGE_KEYS["train"] if k in names), None)
            if key is None:
                raise SelfVAEError(f"{path.name}: no array x_train, x or images (found {sorted(names)})")
            with zf.open(names[key]) as f:
                version = np.lib.format.read_magic(f)
                if version == (1, 0):
                    shape, _, dtype = np.lib.format.read_array_header_1_0(f)
                else:
                    shape, _, dtype = np.lib.format.read_array_header_2_0(f)
    except (OSError, ValueError, zipfile.BadZipFile) as e:
        raise SelfVAEError(f"{path}: cannot read npz file ({e})") from e
    dummy = np.lib.stride_tricks.as_strided(
        np.zeros(1, dtype=dtype), shape=(1, *shape[1:]), strides=(0,) * len(shape)
    )
    n, h, w, c = nhwc_from_array(dummy, f"{path.name}: array '{key}'").shape
    return c, h, w


# --------------------------------------------------------------------------------------------------
# image files (folders, imagenette, CelebA)


def _bad_file(path: Path, why: str, opts: ReadOptions) -> None:
    msg = f"{path}: cannot read image ({why})"
    if opts.on_bad_file == "skip":
        warnings.warn(f"skipping {msg}", stacklevel=4)
    else:
        raise SelfVAEError(msg)


def decode_images(
    files: Sequence[Path],
    opts: ReadOptions,
    *,
    crop: tuple[int, int, int, int] | None = None,
    size: int | None = None,
) -> tuple[np.ndarray, list[int]]:
    """Decode image files into one uint8 ``[N, H, W, C]`` array.

    ``crop`` (left, top, right, bottom) is applied first, then :func:`resize_image` to ``size`` if given.
    Without ``size`` all images must have the same size. The result has 1 channel only if every image is
    grey-scale; otherwise every image is converted to RGB. Returns the array and the indices (into
    ``files``) of the images kept (unreadable ones are dropped when ``opts.on_bad_file == "skip"``).
    """
    arrays: list[np.ndarray] = []
    kept: list[int] = []
    first: tuple[Path, tuple[int, int]] | None = None
    for i, path in enumerate(files):
        try:
            a = read_pixels(path)
        except SelfVAEError as e:
            _bad_file(path, str(e).removeprefix(f"{path}: "), opts)
            continue
        if crop is not None or size is not None:
            im = Image.fromarray(a[..., 0] if a.shape[2] == 1 else a)
            if crop is not None:
                im = im.crop(crop)
            if size is not None:
                im = resize_image(im, size, opts.resize)
            a = np.asarray(im, dtype=np.uint8)
        a = a[..., 0] if a.ndim == 3 and a.shape[2] == 1 else a
        hw = a.shape[:2]
        if first is None:
            first = (path, hw)
        elif hw != first[1]:
            raise SelfVAEError(
                f"{path}: image is {hw[1]}x{hw[0]} (WxH) but {first[0]} is {first[1][1]}x{first[1][0]}; "
                "images differ in size: set data.image_size (e.g. --image-size 32) to resize them all"
            )
        arrays.append(a)
        kept.append(i)
    if not arrays:
        raise SelfVAEError(f"{files[0].parent if files else '?'}: no readable images")
    all_gray = all(a.ndim == 2 for a in arrays)
    n = len(arrays)
    h, w = arrays[0].shape[:2]
    out = np.empty((n, h, w, 1 if all_gray else 3), dtype=np.uint8)
    for j, a in enumerate(arrays):
        out[j] = a[..., None] if a.ndim == 2 else a  # a grey image broadcasts to RGB
    return out, kept


def list_images(root: Path, *, exclude_top: Sequence[str] = ()) -> tuple[list[Path], np.ndarray | None]:
    """Image files under ``root`` (recursive, sorted, hidden files skipped) and their class labels.

    Labels are the index of the first-level sub-folder among the sorted class folders, or None when
    any image sits directly in ``root`` (no class structure). Top-level folders in ``exclude_top`` are
    ignored (used for ``train/`` and ``test/`` split folders).
    """
    files = sorted(
        p
        for p in root.rglob("*")
        if p.suffix.lower() in IMAGE_EXTENSIONS
        and not any(part.startswith(".") for part in p.relative_to(root).parts)
        and p.relative_to(root).parts[0] not in exclude_top
        and p.is_file()
    )
    rel = [p.relative_to(root).parts for p in files]
    if not files or any(len(r) == 1 for r in rel):
        return files, None
    classes = sorted({r[0] for r in rel})
    index = {c: i for i, c in enumerate(classes)}
    return files, np.array([index[r[0]] for r in rel], dtype=np.int64)


def image_folder_modes(files: Sequence[Path]) -> tuple[int, tuple[int, int]]:
    """(channels, (H, W)) of a list of image files from their headers (for ``dataset_shape``): grey if every
    file reads grey (:func:`selfvae.data.images.image_size`), the first readable file's size."""
    gray, hw = True, None
    for f in files:
        try:
            c, size = image_size(f)
        except (OSError, ValueError, SyntaxError):
            continue
        gray, hw = gray and c == 1, hw or size
    if hw is None:
        raise SelfVAEError(f"{files[0].parent if files else '?'}: no readable images")
    return (1 if gray else 3), hw


def read_imagenette(root: Path, part: str, opts: ReadOptions) -> Arrays:
    """fastai imagenette layout: ``train/<class>/*.JPEG`` and ``val/<class>/*.JPEG`` (``val`` = test split).

    ``root`` may also be the parent of a single ``imagenette*`` folder. Each image is made square and resized to
    ``image_size`` (default 64) by :func:`resize_image` (centre crop or padding as ``opts.resize`` says, then BOX
    when shrinking). Labels are the sorted class folders.
    """
    require_dir(root, "train/<class>/*.JPEG and val/<class>/*.JPEG")
    if not (root / "train").is_dir():
        subs = sorted(d for d in root.glob("imagenette*") if (d / "train").is_dir())
        if subs:
            root = subs[0]
    folder = root / ("train" if part == "train" else "val")
    require_dir(folder, "<class>/*.JPEG image files (imagenette layout)")
    files, labels = list_images(folder)
    if not files:
        raise SelfVAEError(f"{folder}: no image files found")
    x, kept = decode_images(files, opts, size=opts.image_size or 64)
    return x, None if labels is None else labels[kept]


CELEBA_CROP = (15, 40, 15 + 148, 40 + 148)  # (left, top, right, bottom) as in the thesis
CELEBA_PARTITION = {"train": 0, "val": 1, "test": 2}


def read_celeba(root: Path, part: str, opts: ReadOptions) -> Arrays:
    """CelebA aligned: ``img_align_celeba/*.jpg`` + ``list_eval_partition.txt`` (official partition).

    Each image is cropped to the 148x148 box with top-left corner (15, 40), then resized to
    ``image_size`` (default 64, BICUBIC). No labels.
    """
    expected = "img_align_celeba/*.jpg and list_eval_partition.txt"
    require_dir(root, expected)
    bases = [root, root / "celeba", root / "CelebA"]
    part_file = find_first([*bases, *(b / "Eval" for b in bases)], ["list_eval_partition.txt"])
    img_dir = next((b / "img_align_celeba" for b in bases if (b / "img_align_celeba").is_dir()), None)
    if img_dir is not None and (img_dir / "img_align_celeba").is_dir():  # zip extracted into itself
        img_dir = img_dir / "img_align_celeba"
    if part_file is None or img_dir is None:
        found = (("list_eval_partition.txt", part_file), ("img_align_celeba/", img_dir))
        missing = [n for n, v in found if v is None]
        raise SelfVAEError(f"{root}: missing {', '.join(missing)}; expected {expected}")
    want = CELEBA_PARTITION[part]
    files = []
    for lineno, line in enumerate(part_file.read_text().splitlines(), 1):
        fields = line.split()
        if not fields:
            continue
        if len(fields) != 2 or fields[1] not in ("0", "1", "2"):
            raise SelfVAEError(f"{part_file}:{lineno}: expected '<file> <0|1|2>', got {line.strip()!r}")
        if int(fields[1]) == want:
            files.append(img_dir / fields[0])
    if not files:
        raise SelfVAEError(f"{part_file}: no images in partition {want} ({part})")
    x, _ = decode_images(files, opts, crop=CELEBA_CROP, size=opts.image_size or 64)
    return x, None


def folder_split_dir(root: Path, part: str) -> tuple[Path, tuple[str, ...]]:
    """Directory holding ``part`` of a generic image folder and the top-level names to exclude.

    With a ``train/`` sub-folder, ``train/`` and ``test/`` are the splits; otherwise the whole folder is
    the training set. A folder without ``test/`` has no test split: asking for it raises SelfVAEError.
    """
    require_dir(root, "image files (optionally in train/ and test/ sub-folders)")
    if (root / "train").is_dir():
        if part == "train":
            return root / "train", ()
        if (root / "test").is_dir():
            return root / "test", ()
    elif part == "train":
        return root, ("test",) if (root / "test").is_dir() else ()
    elif (root / "test").is_dir():
        return root / "test", ()
    raise NoSplitError(
        f"{root}: has no test/ sub-folder, so this image folder has no test split; add test/ (and train/) "
        "sub-folders or evaluate on split 'val' (15% of the training images)"
    )


def read_folder(root: Path, part: str, opts: ReadOptions) -> Arrays:
    """Any folder of images (class sub-folders optional); see :func:`folder_split_dir` for splits.

    Without ``image_size`` all images must have the same size; with it each is made ``image_size x image_size``
    by :func:`resize_image` (centre crop or padding as ``opts.resize`` says, then BOX shrinking or BICUBIC growing).
    """
    folder, exclude = folder_split_dir(root, part)
    files, labels = list_images(folder, exclude_top=exclude)
    if not files:
        exts = ", ".join(sorted(IMAGE_EXTENSIONS))
        raise SelfVAEError(f"{folder}: no image files found (extensions: {exts})")
    x, kept = decode_images(files, opts, size=opts.image_size)
    return x, None if labels is None else labels[kept]
