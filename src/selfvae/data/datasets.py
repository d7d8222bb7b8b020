"""Data sets with the paper protocols: registry, train/val/test splits, augmentation.

Split protocol (all data sets except ``celeba64``):

* ``"test"``: the official test set (ImageNet32/64: the official validation set; imagenette: ``val/``;
  generic ``folder``: its ``test/`` sub-folder; ``npz``: ``x_test``). Where none exists, asking for
  ``"test"`` raises :class:`SelfVAEError` rather than silently using validation data.
* ``"val"``: ``val_fraction`` (15%) of the official training set, chosen by
  ``np.random.default_rng(seed).permutation``; ``"train"``: the remaining 85%. Both keep file order, but for
  data sets stored class by class (``class_ordered``: image folders, the CIFAR-10 JPEG copy, imagenette), whose
  splits are put in one fixed shuffled order (:data:`ORDER_SEED`) so that the first N images of a split (an
  evaluation ``--limit``, a FID reference, training's ``eval_limit``) are a sample of every class, as they are
  in the official CIFAR-10 and MNIST files; which images each split holds does not change.
* ``celeba64`` uses the official partition file instead (0 = train, 1 = val, 2 = test); ``val_fraction``
  and ``seed`` are ignored for it.

MNIST and Fashion-MNIST are zero-padded from 28x28 to 32x32 (2 px per side) so that the image side is a
power of two (``image_size=28`` keeps the original size). Any other ``image_size`` resizes with
:func:`selfvae.data.images.resize_image` (made square by a centre crop or black padding, then an area
resize); ``channels`` converts grey <-> RGB. :func:`load_split` reads all of it from a run's config.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from selfvae.data import formats, photos
from selfvae.data.formats import ReadOptions
from selfvae.data.images import RESIZE_POLICIES, convert_channels, resize_array
from selfvae.errors import NoSplitError, SelfVAEError

Reader = Callable[[Path, str, ReadOptions], "tuple[np.ndarray, np.ndarray | None]"]
SPLITS = ("train", "val", "test")
ON_BAD_FILE = ("error", "skip")  # data.on_bad_file: stop at an unreadable image file, or warn and drop it
ORDER_SEED = 20261126  # the fixed order of a class-ordered data set's splits (DatasetSpec.class_ordered)


@dataclass(frozen=True)
class DatasetSpec:
    """How to read one registered data set.

    ``reader(root, part, opts)`` returns ``(images [N,H,W,C] uint8, labels [N] int64 | None)`` for
    ``part`` "train" or "test" (and "val" when ``official_val``). ``shape`` is the default (C, H, W) it
    yields, or None when it depends on the files (``folder``, ``npz``). ``pad`` is zero padding per side
    applied after reading (MNIST 28 -> 32).
    """

    name: str
    reader: Reader
    shape: tuple[int, int, int] | None
    default_root: str | None
    augment: bool
    description: str
    official_val: bool = False
    pad: int = 0
    class_ordered: bool = False  # files come class by class: each split is read in ORDER_SEED's shuffled order
    augmentation: str = "affine"  # the kind of training augmentation (AUGMENTATIONS) when ``augment``


def _spec(name: str, reader: Reader, shape, root, augment, description, **kw) -> tuple[str, DatasetSpec]:
    return name, DatasetSpec(name, reader, shape, root, augment, description, **kw)


DATASETS: dict[str, DatasetSpec] = dict(
    [
        _spec("mnist", partial(formats.read_mnist_like, npz_name="mnist.npz"), (1, 32, 32), None, False,
              "MNIST digits, idx files or mnist.npz; padded 28->32", pad=2),
        _spec("fashion-mnist", partial(formats.read_mnist_like, npz_name=None), (1, 32, 32),
              "/usr/share/datasets/fashion-mnist", False,
              "Fashion-MNIST idx files (Debian package dataset-fashion-mnist); padded 28->32", pad=2),
        _spec("cifar10", formats.read_cifar10, (3, 32, 32), None, True,
              "CIFAR-10 python version (cifar-10-batches-py/ or cifar-10-python.tar.gz)", augmentation="shift"),
        _spec("cifar10-official-part", formats.read_cifar10_official_part, (3, 32, 32), None, True,
              "official CIFAR-10 pixels, a part (cifar10-official-part.npz: 4745 training images, the first "
              "932-1017 of each batch, and the first 717 test images; a subset, not the whole benchmark)",
              augmentation="shift"),
        _spec("cifar10-jpeg", formats.read_cifar10_jpeg, (3, 32, 32), None, True,
              "CIFAR-10 as JPEG files (cifar10-jpeg.tar.gz or its folder; a re-encode, not the official pixels)",
              class_ordered=True),
        _spec("imagenet32", partial(formats.read_imagenet_npz, size=32), (3, 32, 32), None, False,
              "Chrabaszcz et al. (2017) box-resized ImageNet 32x32 npz batches (classification); val = test"),
        _spec("imagenet64", partial(formats.read_imagenet_npz, size=64), (3, 64, 64), None, False,
              "Chrabaszcz et al. (2017) box-resized ImageNet 64x64 npz batches (classification); val = test"),
        _spec("imagenet32-oord", partial(formats.read_imagenet_oord, size=32), (3, 32, 32), None, False,
              "van den Oord et al. (2016) ImageNet 32x32, the density-estimation benchmark (train_32x32/, "
              "valid_32x32/ = test; PNG folders, their .tar, or VDVAE's .npy)"),
        _spec("imagenet64-oord", partial(formats.read_imagenet_oord, size=64), (3, 64, 64), None, False,
              "van den Oord et al. (2016) ImageNet 64x64, the density-estimation benchmark (train_64x64/, "
              "valid_64x64/ = test; PNG folders, their .tar, or VDVAE's .npy)"),
        _spec("imagenette64", formats.read_imagenette, (3, 64, 64), None, True,
              "imagenette folders train/ and val/ (= test split), resized to 64x64", class_ordered=True),
        _spec("celeba64", formats.read_celeba, (3, 64, 64), None, False,
              "CelebA aligned, 148x148 crop at (15,40) resized to 64x64; official partition",
              official_val=True),
        _spec("folder", formats.read_folder, None, None, False,
              "any image folder; optional class sub-folders and train/ test/ split folders", class_ordered=True),
        _spec("photos", photos.read_photos, (3, 32, 32), "/usr/share", True,
              "photographs among Debian's wallpapers (apt-get install -y " + " ".join(photos.PACKAGES) + "): "
              "downscaled to 384 px on the shorter side; random crops train, whole held-out photographs' tiles "
              "validate and test", official_val=True, augmentation="shift"),
        _spec("photos-multiscale", partial(photos.read_photos, multiscale=True), (3, 32, 32), "/usr/share", True,
              "the photographs data set with its training crops drawn from the training photographs at 384, 544 "
              "and 768 px on the shorter side (as installed; the held-out photographs as in photos)",
              official_val=True, augmentation="shift"),
        _spec("npz", formats.read_npz, None, None, False,
              "one .npz file (root = the file) with x/images or x_train/x_test uint8 arrays"),
    ]
)


def get_spec(name: str) -> DatasetSpec:
    """The registered spec for ``name`` or a SelfVAEError listing the known names."""
    try:
        return DATASETS[name]
    except KeyError:
        raise SelfVAEError(f"{name}: unknown dataset; known: {', '.join(sorted(DATASETS))}") from None


def _check_image_size(image_size: int | None) -> None:
    if image_size is not None and (not isinstance(image_size, int) or image_size < 1):
        raise SelfVAEError(f"image_size={image_size!r}: expected a positive integer or None")


def dataset_shape(
    name: str, image_size: int | None = None, *, root: str | Path | None = None
) -> tuple[int, int, int]:
    """(C, H, W) of the images ``load_dataset(name, ..., image_size=image_size)`` yields, without loading.

    For ``folder`` and ``npz`` the shape depends on the files, so ``root`` must be given; only file
    headers are read.
    """
    spec = get_spec(name)
    _check_image_size(image_size)
    if spec.shape is not None:
        c, h, w = spec.shape
    elif root is None:
        raise SelfVAEError(f"{name}: the image shape depends on the data; pass root (the data path)")
    elif name == "npz":
        c, h, w = formats.npz_image_shape(Path(root))
    else:
        folder, exclude = formats.folder_split_dir(Path(root), "train")
        files, _ = formats.list_images(folder, exclude_top=exclude)
        if not files:
            raise SelfVAEError(f"{folder}: no image files found")
        c, (h, w) = formats.image_folder_modes(files)
    if image_size is None:
        return c, h, w
    return c, image_size, image_size


def own_shape(name: str, image_shape: tuple[int, int, int], image_size: int | None = None) -> tuple[int, int, int]:
    """The data's own image shape inside ``image_shape``: the shape less the zero padding the loader adds.

    MNIST's 28x28 digits are padded to 32x32 for the networks; the padding is deterministic, so a bound on
    the padded image is a bound on the digit, and bits/dim count the digit's 784 dimensions. At another
    ``image_size`` the padding scales with the image (an image_size equal to the raw side pads nothing).
    """
    spec = DATASETS.get(name)
    if spec is None or not spec.pad or spec.shape is None:
        return tuple(image_shape)
    raw = spec.shape[1] - 2 * spec.pad
    if image_size == raw:
        return tuple(image_shape)
    c, h, w = image_shape
    return c, h * raw // spec.shape[1], w * raw // spec.shape[2]


def infer_dataset(name: str, root: str | Path) -> str:
    """The data set to read at ``root``: ``name`` when its files are there, else ``"cifar10-jpeg"`` for CIFAR-10
    where only its JPEG tarball is, ``"npz"`` for an ``.npz`` file (``"cifar10-official-part"`` for the file of
    that name; an ``.npz`` file is always read as one, never tried by another data set's reader) or
    ``"folder"`` for a directory with image files; otherwise ``name``'s own error is raised.

    Lets ``selfvae train --preset mnist-vae --data-dir MY_PHOTOS`` train on the user's folder.
    """
    if name in ("folder", "npz"):
        return name
    path = Path(root).expanduser()
    npz_readers = ("npz", "cifar10-official-part")
    if path.is_file() and path.suffix.lower() == ".npz" and name not in npz_readers:  # read by its own format
        return "cifar10-official-part" if path.name == formats.CIFAR_OFFICIAL_PART else "npz"
    try:
        load_dataset(name, root, "test")
        return name
    except SelfVAEError as e:
        if name == "cifar10" and (path.name == formats.CIFAR_JPEG_TAR or (path / formats.CIFAR_JPEG_TAR).is_file()):
            return "cifar10-jpeg"  # the same images, re-encoded (this project's shared copy)
        if path.is_file() and path.suffix.lower() == ".npz":
            return "npz"
        if path.is_dir() and formats.list_images(path)[0]:
            return "folder"
        if not path.exists():
            raise SelfVAEError(f"{root}: no such folder or file") from None
        raise SelfVAEError(f"{root}: holds no image files (PNG, JPEG, ...), no .npz and no {name} files ({e}); "
                           f"give --data-dir a folder of your images or the data set's folder") from None


def split_indices(n: int, val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(train, val) index arrays: ``round(val_fraction * n)`` indices held out by a seeded permutation.

    Both are sorted, disjoint and cover ``range(n)``; the result depends only on (n, val_fraction, seed).
    """
    if not 0.0 <= val_fraction < 1.0:
        raise SelfVAEError(f"val_fraction={val_fraction}: expected a number in [0, 1)")
    perm = np.random.default_rng(seed).permutation(n)
    n_val = int(round(val_fraction * n))
    return np.sort(perm[n_val:]), np.sort(perm[:n_val])


# --------------------------------------------------------------------------------------------------
# augmentation


def augment_image(x: torch.Tensor, max_rotate: float = 10.0, max_translate: float | None = None,
                  scale: tuple[float, float] = (0.9, 1.1)) -> torch.Tensor:
    """Random horizontal flip (p=0.5) and small random affine of one uint8 image ``[C, H, W]``.

    Rotation is uniform in +-``max_rotate`` degrees, translation uniform in +-``max_translate`` pixels
    (default: side/16, i.e. 2 px at 32 and 4 px at 64), zoom uniform in ``scale``. Bilinear sampling
    with border replication; the result is rounded back to uint8 ``[C, H, W]``. Uses torch's global RNG
    so ``torch.manual_seed`` (and DataLoader worker seeding) make it reproducible.
    """
    c, h, w = x.shape
    if max_translate is None:
        max_translate = max(h, w) / 16
    r = torch.rand(5)
    if r[0] < 0.5:
        x = x.flip(-1)
    angle = math.radians((2 * r[1].item() - 1) * max_rotate)
    tx, ty = ((2 * r[2:4] - 1) * max_translate).tolist()
    s = scale[0] + (scale[1] - scale[0]) * r[4].item()
    # theta maps output to input coordinates, in normalised [-1, 1] units; work in pixels (D) so the
    # rotation stays a rotation on non-square images: theta = D^-1 (R/s) D, shift in pixels / (side/2).
    cos, sin = math.cos(angle) / s, math.sin(angle) / s
    theta = torch.tensor(
        [[cos, -sin * h / w, -2 * tx / w], [sin * w / h, cos, -2 * ty / h]], dtype=torch.float32
    )[None]
    grid = F.affine_grid(theta, [1, c, h, w], align_corners=False)
    out = F.grid_sample(x[None].float(), grid, mode="bilinear", padding_mode="border", align_corners=False)
    return out[0].round_().clamp_(0, 255).to(torch.uint8)


def augment_shift(x: torch.Tensor, max_shift: int | None = None) -> torch.Tensor:
    """The srVAE authors' CIFAR-10 augmentation of one uint8 image ``[C, H, W]``: a random horizontal flip
    (p=0.5) and a random whole-pixel translation, uniform in +-``max_shift`` pixels per axis (default
    ceil(side/20): 2 px at 32), the uncovered border filled by replicating the edge.

    No pixel is resampled, so the images keep the noise and sharpness of real pixels (:func:`augment_image`'s
    bilinear rotation and zoom smooth them, which a density model then learns). Uses torch's global RNG.
    """
    _, h, w = x.shape
    if max_shift is None:
        max_shift = math.ceil(max(h, w) * 0.05)
    r = torch.rand(3)
    if r[0] < 0.5:
        x = x.flip(-1)
    dx, dy = (torch.floor(r[1:] * (2 * max_shift + 1)).long() - max_shift).tolist()
    rows = (torch.arange(h) - dy).clamp_(0, h - 1)
    cols = (torch.arange(w) - dx).clamp_(0, w - 1)
    return x[:, rows][:, :, cols].contiguous()


AUGMENTATIONS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {"affine": augment_image, "shift": augment_shift}


# --------------------------------------------------------------------------------------------------
# dataset


class ImageDataset(Dataset):
    """Images held in memory as one uint8 tensor; ``ds[i]`` is a uint8 ``[C, H, W]`` tensor (no label).

    Attributes: ``images`` (uint8 ``[N, C, H, W]``), ``labels`` (int64 ``[N]`` or None), ``shape``
    (C, H, W), ``name``, ``augment`` (on every access when True, the ``augmentation`` of :data:`AUGMENTATIONS`:
    "affine", a random flip + affine, or "shift", a random flip + whole-pixel shift).
    """

    def __init__(self, images: torch.Tensor, labels: torch.Tensor | None = None, *, name: str = "",
                 augment: bool = False, augmentation: str = "affine") -> None:
        if augmentation not in AUGMENTATIONS:
            raise SelfVAEError(f"augmentation={augmentation!r}: expected one of {', '.join(AUGMENTATIONS)}")
        if images.dtype != torch.uint8 or images.ndim != 4 or images.shape[1] not in (1, 3):
            raise SelfVAEError(
                f"{name or 'images'}: tensor has dtype {images.dtype} shape {tuple(images.shape)}, "
                "expected uint8 [N, C, H, W] with C in 1 or 3"
            )
        if images.shape[0] == 0:
            raise SelfVAEError(f"{name or 'images'}: empty dataset (0 images)")
        if labels is not None and (labels.ndim != 1 or labels.shape[0] != images.shape[0]):
            raise SelfVAEError(
                f"{name}: labels have shape {tuple(labels.shape)}, expected [{images.shape[0]}]"
            )
        self.images = images
        self.labels = None if labels is None else labels.to(torch.int64)
        self.name = name
        self.augment = augment
        self.augmentation = augmentation

    @property
    def shape(self) -> tuple[int, int, int]:
        c, h, w = self.images.shape[1:]
        return int(c), int(h), int(w)

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def __getitem__(self, index: int) -> torch.Tensor:
        x = self.images[index]
        return AUGMENTATIONS[self.augmentation](x) if self.augment else x

    def __repr__(self) -> str:
        how = f"{self.augment} ({self.augmentation})" if self.augment else "False"
        return f"ImageDataset(name={self.name!r}, n={len(self)}, shape={self.shape}, augment={how})"


def load_dataset(
    name: str,
    root: str | Path | None,
    split: str,
    *,
    augment: bool | None = None,
    val_fraction: float = 0.15,
    seed: int = 0,
    image_size: int | None = None,
    resize: str = "crop",
    channels: int | None = None,
    on_bad_file: str = "error",
) -> ImageDataset:
    """Load ``split`` ("train", "val" or "test") of the registered data set ``name`` from ``root``.

    ``root`` None uses the spec's default location (an error if it has none). ``augment`` None uses the
    data set's default; augmentation only ever applies to the "train" split. ``image_size`` resizes to a
    square side, making each image square first as ``resize`` ("crop" or "pad") says (see the module
    docstring); ``channels`` (1 or 3, None: as stored) converts grey <-> RGB. ``on_bad_file`` is "error"
    or "skip" (warn and drop) for unreadable image files.
    """
    spec = get_spec(name)
    if split not in SPLITS:
        raise SelfVAEError(f"split={split!r}: expected one of {', '.join(SPLITS)}")
    if on_bad_file not in ON_BAD_FILE:
        raise SelfVAEError(f"on_bad_file={on_bad_file!r}: expected 'error' or 'skip'")
    _check_image_size(image_size)
    if resize not in RESIZE_POLICIES:
        raise SelfVAEError(f"resize={resize!r}: expected one of {', '.join(RESIZE_POLICIES)}")
    if channels not in (None, 1, 3):
        raise SelfVAEError(f"channels={channels!r}: expected 1 (grey), 3 (RGB) or None (as stored)")
    if root is None:
        root = spec.default_root
    if root is None:
        hint = (f", or fetch the official files with selfvae.data.download({name!r}, DIR)"
                if name in ("mnist", "fashion-mnist", "cifar10") else "")
        raise SelfVAEError(f"{name}: no data directory given; pass --data-dir DIR{hint}")
    root = Path(root).expanduser()

    opts = ReadOptions(image_size=image_size, resize=resize, on_bad_file=on_bad_file)
    own_val = spec.official_val or (name == "npz" and formats.npz_has_val(root))
    part = "test" if split == "test" else ("val" if split == "val" and own_val else "train")
    x, y = spec.reader(root, part, opts)
    if spec.pad and image_size != x.shape[1]:
        x = formats.pad_images(x, spec.pad)
    if image_size is not None:
        x = resize_array(x, image_size, resize)
    if channels is not None:
        x = convert_channels(x, channels)
    if part == "train" and split in ("train", "val") and not own_val:  # own validation images: all of train trains
        train_idx, val_idx = split_indices(len(x), val_fraction, seed)
        idx = train_idx if split == "train" else val_idx
        x = x[idx]
        y = None if y is None else y[idx]
    if spec.class_ordered:
        order = np.random.default_rng(ORDER_SEED).permutation(len(x))
        x, y = x[order], None if y is None else y[order]
    if len(x) == 0:
        raise SelfVAEError(f"{name} ({root}): split '{split}' is empty")
    images = torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))
    labels = None if y is None else torch.from_numpy(np.ascontiguousarray(y, dtype=np.int64))
    do_augment = (spec.augment if augment is None else augment) and split == "train"
    return ImageDataset(images, labels, name=f"{name}/{split}", augment=do_augment, augmentation=spec.augmentation)


def load_split(cfg, split: str, *, augment: bool | None = False) -> ImageDataset:  # noqa: ANN001 - Config
    """``split`` of the data set a run's config (:class:`selfvae.config.Config`) describes, shaped for its model.

    Every ``cfg.data`` field applies (root, split fraction and seed, ``image_size``, ``resize``,
    ``channels``, ``on_bad_file``); ``channels`` None takes the model's. ``augment`` False (the default)
    for evaluation, None for the data set's training default. Images whose shape differs from the model's
    raise :class:`SelfVAEError` saying which setting fixes it.
    """
    d, want = cfg.data, tuple(cfg.model.image_shape)
    try:
        ds = load_dataset(
            d.name, d.root, split, augment=d.augment if augment is None else augment, val_fraction=d.val_fraction,
            seed=d.split_seed, image_size=d.image_size, resize=d.resize,
            channels=d.channels if d.channels is not None else want[0], on_bad_file=d.on_bad_file,
        )
    except NoSplitError:
        raise
    except SelfVAEError as e:  # the config's path is another machine's or folder's: say how to point elsewhere
        raise SelfVAEError(f"{e} (this model reads data set {d.name!r}; give where it is with --data-dir DIR)") from e
    if ds.shape != want:
        raise SelfVAEError(
            f"data set {d.name!r} ({d.root or 'default location'}) yields images of shape {ds.shape}, but the "
            f"model expects {want}; set data.image_size={want[1]} (--image-size {want[1]}) to resize them, "
            "with data.resize=crop|pad for images that are not square"
        )
    return ds


def batches_of(ds: ImageDataset, batch_size: int, limit: int | None = None) -> Iterator[torch.Tensor]:
    """Sequential uint8 batches of a split (first ``limit`` images), no augmentation."""
    n = len(ds) if limit is None else min(limit, len(ds))
    for i in range(0, n, batch_size):
        yield ds.images[i : min(i + batch_size, n)]


def load_test_split(cfg) -> tuple[ImageDataset, str]:  # noqa: ANN001 - Config
    """The split a model is evaluated on and its name: ``test``, else, for a data set without one (an image folder
    without ``test/``), ``val``, as training's final evaluation does; the fallback is said on stderr."""
    try:
        return load_split(cfg, "test"), "test"
    except NoSplitError as e:
        print(f"{e}: evaluating on the validation split instead", file=sys.stderr)
        return load_split(cfg, "val"), "val"
