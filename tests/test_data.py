"""Tests of selfvae.data readers, splits and augmentation on fixture files in the official formats."""

from __future__ import annotations

import gzip
import pickle
import tarfile
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from selfvae.data import DATASETS, ImageDataset, augment_image, dataset_shape, load_dataset, split_indices
from selfvae.errors import SelfVAEError

REAL_MNIST = Path(__file__).resolve().parents[2] / "shared" / "data" / "mnist.npz"  # ../shared beside the repo


# --------------------------------------------------------------------------------------------------
# fixture writers (exact on-disk formats)


def write_idx(path: Path, arr: np.ndarray, *, gz: bool) -> None:
    """IDX: magic 0x0000 0x08 (uint8) ndim, then big-endian int32 dims, then the data."""
    assert arr.dtype == np.uint8
    header = bytes([0, 0, 0x08, arr.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in arr.shape)
    data = header + arr.tobytes()
    path.write_bytes(gzip.compress(data) if gz else data)


def make_mnist_dir(root: Path, *, gz: bool, n_train: int = 100, n_test: int = 10, seed: int = 0):
    rng = np.random.default_rng(seed)
    xtr = rng.integers(1, 256, size=(n_train, 28, 28), dtype=np.uint8)
    xte = rng.integers(1, 256, size=(n_test, 28, 28), dtype=np.uint8)
    ytr = (np.arange(n_train) % 256).astype(np.uint8)  # label = index: lets tests identify images
    yte = rng.integers(0, 10, size=n_test, dtype=np.uint8)
    suffix = ".gz" if gz else ""
    root.mkdir(parents=True, exist_ok=True)
    write_idx(root / f"train-images-idx3-ubyte{suffix}", xtr, gz=gz)
    write_idx(root / f"train-labels-idx1-ubyte{suffix}", ytr, gz=gz)
    write_idx(root / f"t10k-images-idx3-ubyte{suffix}", xte, gz=gz)
    write_idx(root / f"t10k-labels-idx1-ubyte{suffix}", yte, gz=gz)
    return xtr, ytr, xte, yte


def cifar_batch(n: int, seed: int) -> tuple[dict, np.ndarray]:
    rng = np.random.default_rng(seed)
    imgs = rng.integers(0, 256, size=(n, 32, 32, 3), dtype=np.uint8)  # HWC
    data = imgs.transpose(0, 3, 1, 2).reshape(n, 3072)  # row-major R, G, B planes
    labels = [int(v) for v in rng.integers(0, 10, size=n)]
    return {b"batch_label": b"x", b"labels": labels, b"data": data, b"filenames": [b"f"] * n}, imgs


def make_cifar_dir(d: Path) -> tuple[np.ndarray, np.ndarray]:
    d.mkdir(parents=True)
    train = []
    for i in range(1, 6):
        batch, imgs = cifar_batch(4, i)
        (d / f"data_batch_{i}").write_bytes(pickle.dumps(batch, protocol=2))
        train.append(imgs)
    batch, test_imgs = cifar_batch(3, 99)
    (d / "test_batch").write_bytes(pickle.dumps(batch, protocol=2))
    return np.concatenate(train), test_imgs


def save_image(path: Path, arr: np.ndarray, fmt: str | None = None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path, format=fmt)


# --------------------------------------------------------------------------------------------------
# MNIST / Fashion-MNIST


@pytest.mark.parametrize("gz", [False, True])
def test_mnist_idx_padding_and_labels(tmp_path: Path, gz: bool) -> None:
    xtr, ytr, xte, yte = make_mnist_dir(tmp_path, gz=gz)
    ds = load_dataset("mnist", tmp_path, "test")
    assert isinstance(ds, ImageDataset) and len(ds) == 10 and ds.shape == (1, 32, 32)
    assert ds.images.dtype == torch.uint8 and ds.images.shape == (10, 1, 32, 32)
    # 2 px of zeros on each side, the original image in the middle
    assert torch.equal(ds.images[:, 0, 2:30, 2:30], torch.from_numpy(xte))
    border = ds.images.clone()
    border[:, :, 2:30, 2:30] = 0
    assert int(border.sum()) == 0
    assert torch.equal(ds.labels, torch.from_numpy(yte.astype(np.int64)))
    item = ds[3]
    assert item.dtype == torch.uint8 and item.shape == (1, 32, 32)
    assert torch.equal(item, ds.images[3])
    # image_size=28 keeps the original, unpadded size
    ds28 = load_dataset("mnist", tmp_path, "test", image_size=28)
    assert ds28.shape == (1, 28, 28) == dataset_shape("mnist", 28)
    assert torch.equal(ds28.images[:, 0], torch.from_numpy(xte))


def test_fashion_mnist_reads_gz_idx(tmp_path: Path) -> None:
    _, ytr, _, _ = make_mnist_dir(tmp_path, gz=True, seed=3)
    ds = load_dataset("fashion-mnist", tmp_path, "train")
    assert len(ds) == 85 and ds.shape == (1, 32, 32)
    assert DATASETS["fashion-mnist"].default_root == "/usr/share/datasets/fashion-mnist"


def test_idx_bad_magic_and_missing_files(tmp_path: Path) -> None:
    make_mnist_dir(tmp_path, gz=False)
    (tmp_path / "t10k-images-idx3-ubyte").write_bytes(b"\x08\x03\x00\x00" + b"\x00" * 20)
    with pytest.raises(SelfVAEError, match="t10k-images-idx3-ubyte: not an IDX file"):
        load_dataset("mnist", tmp_path, "test")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(SelfVAEError, match=r"empty: missing train-images-idx3-ubyte\[\.gz\]"):
        load_dataset("fashion-mnist", empty, "train")
    with pytest.raises(SelfVAEError, match="does not exist"):
        load_dataset("mnist", tmp_path / "nope", "train")
    with pytest.raises(SelfVAEError, match=r"--data-dir.*download\('mnist'"):
        load_dataset("mnist", None, "train")


def test_mnist_npz_fixture_and_real_file(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    x_train = rng.integers(0, 256, size=(20, 28, 28, 1), dtype=np.uint8)
    x_test = rng.integers(0, 256, size=(5, 28, 28, 1), dtype=np.uint8)
    y_test = np.arange(5, dtype=np.uint8)
    np.savez(tmp_path / "mnist.npz", x_train=x_train, y_train=np.zeros(20, np.uint8), x_test=x_test,
             y_test=y_test)
    for root in (tmp_path, tmp_path / "mnist.npz"):
        ds = load_dataset("mnist", root, "test")
        assert ds.shape == (1, 32, 32) and len(ds) == 5
        assert torch.equal(ds.images[:, :, 2:30, 2:30], torch.from_numpy(x_test.transpose(0, 3, 1, 2)))
        assert ds.labels.tolist() == [0, 1, 2, 3, 4]


def test_real_mnist_from_shared_data() -> None:
    if not REAL_MNIST.exists():
        pytest.skip(f"{REAL_MNIST} not found (../shared/data beside the repo; CI has it)")
    tr = load_dataset("mnist", REAL_MNIST.parent, "train")
    va = load_dataset("mnist", REAL_MNIST.parent, "val")
    te = load_dataset("mnist", REAL_MNIST.parent, "test")
    assert (len(tr), len(va), len(te)) == (51000, 9000, 10000)
    assert tr.shape == (1, 32, 32) and tr.images.dtype == torch.uint8
    assert int(te.images[:, :, :2].max()) == 0 and int(te.images.max()) == 255
    assert sorted(set(te.labels.tolist())) == list(range(10))


# --------------------------------------------------------------------------------------------------
# splits


def test_split_sizes_disjoint_deterministic(tmp_path: Path) -> None:
    make_mnist_dir(tmp_path, gz=False, n_train=200)  # labels 0..199 = index in the official train set
    tr = load_dataset("mnist", tmp_path, "train")
    va = load_dataset("mnist", tmp_path, "val")
    assert (len(tr), len(va)) == (170, 30)
    a, b = set(tr.labels.tolist()), set(va.labels.tolist())
    assert not a & b and a | b == set(range(200))
    assert torch.equal(va.images, load_dataset("mnist", tmp_path, "val").images)
    perm = np.random.default_rng(0).permutation(200)
    assert b == set(perm[:30].tolist())
    other = load_dataset("mnist", tmp_path, "val", seed=1)
    assert set(other.labels.tolist()) != b
    assert len(load_dataset("mnist", tmp_path, "val", val_fraction=0.5)) == 100
    tr_idx, va_idx = split_indices(7, 0.15, 0)
    assert len(va_idx) == 1 and sorted([*tr_idx, *va_idx]) == list(range(7))
    with pytest.raises(SelfVAEError, match="split='dev'"):
        load_dataset("mnist", tmp_path, "dev")
    with pytest.raises(SelfVAEError, match="val_fraction"):
        load_dataset("mnist", tmp_path, "val", val_fraction=1.5)


# --------------------------------------------------------------------------------------------------
# CIFAR-10


def test_cifar10_dir_and_targz(tmp_path: Path) -> None:
    src = tmp_path / "src"
    train, test = make_cifar_dir(src / "cifar-10-batches-py")
    ds = load_dataset("cifar10", src, "test")
    assert ds.shape == (3, 32, 32)
    assert torch.equal(ds.images, torch.from_numpy(test.transpose(0, 3, 1, 2)))  # planes are R, G, B
    assert len(load_dataset("cifar10", src / "cifar-10-batches-py", "train")) == 17  # 20 - round(3.0)

    tgz_root = tmp_path / "tgz"
    tgz_root.mkdir()
    with tarfile.open(tgz_root / "cifar-10-python.tar.gz", "w:gz") as tf:
        tf.add(src / "cifar-10-batches-py", arcname="cifar-10-batches-py")
    tr = load_dataset("cifar10", tgz_root, "train", augment=False)
    va = load_dataset("cifar10", tgz_root, "val")
    assert (tgz_root / "cifar-10-batches-py" / "data_batch_5").is_file()  # extracted once
    assert [p.name for p in tgz_root.iterdir() if p.name.startswith(".")] == []  # no temp dir left
    both = torch.cat([tr.images, va.images])
    assert both.shape == (20, 3, 32, 32)
    ref = torch.from_numpy(train.transpose(0, 3, 1, 2))
    assert sorted(map(bytes, both.numpy())) == sorted(map(bytes, ref.numpy()))
    assert DATASETS["cifar10"].augment and load_dataset("cifar10", tgz_root, "train").augment
    assert not va.augment and not load_dataset("cifar10", tgz_root, "test").augment


def test_cifar10_missing_files(tmp_path: Path) -> None:
    with pytest.raises(SelfVAEError, match="cifar-10-python.tar.gz"):
        load_dataset("cifar10", tmp_path, "train")


# --------------------------------------------------------------------------------------------------
# downsampled ImageNet


def test_imagenet32_npz_batches(tmp_path: Path) -> None:
    rng = np.random.default_rng(5)
    d = tmp_path / "Imagenet32_train_npz"
    d.mkdir()
    imgs = []
    for i in (1, 2, 10):  # numeric, not lexical, order of batches
        x = rng.integers(0, 256, size=(4, 32, 32, 3), dtype=np.uint8)
        np.savez(d / f"train_data_batch_{i}.npz", data=x.transpose(0, 3, 1, 2).reshape(4, -1),
                 labels=[i] * 4, mean=np.zeros(3072))
        imgs.append(x)
    xv = rng.integers(0, 256, size=(3, 32, 32, 3), dtype=np.uint8)
    np.savez(tmp_path / "val_data.npz", data=xv.transpose(0, 3, 1, 2).reshape(3, -1), labels=[1, 2, 1000])
    te = load_dataset("imagenet32", tmp_path, "test")
    assert torch.equal(te.images, torch.from_numpy(xv.transpose(0, 3, 1, 2)))
    assert te.labels.tolist() == [0, 1, 999]  # 1-based -> 0-based
    tr = load_dataset("imagenet32", tmp_path, "train", val_fraction=0.0)
    assert torch.equal(tr.images, torch.from_numpy(np.concatenate(imgs).transpose(0, 3, 1, 2)))
    assert tr.labels.tolist() == [0] * 4 + [1] * 4 + [9] * 4
    with pytest.raises(SelfVAEError, match="val_data.npz"):
        load_dataset("imagenet64", tmp_path / "Imagenet32_train_npz", "test")
    msg = r"array 'data' has dtype uint8 shape \(4, 3072\), expected uint8 \[N, 12288\]"
    with pytest.raises(SelfVAEError, match=msg):
        load_dataset("imagenet64", d, "train")


def _oord_pngs(folder: Path, images: np.ndarray, names: list[str]) -> None:
    folder.mkdir(parents=True)
    for im, name in zip(images, names, strict=True):
        Image.fromarray(im).save(folder / name)


@pytest.mark.parametrize("size", [32, 64])
def test_imagenet_oord_png_folders_tars_and_npy(tmp_path: Path, size: int) -> None:
    """van den Oord's set: train_NxN/ and valid_NxN/ PNG folders (file-name order), the .tar of such a folder
    as distributed (read in place), and VDVAE's .npy arrays all give the same images."""
    import tarfile

    rng = np.random.default_rng(size)
    tr = rng.integers(0, 256, size=(5, size, size, 3), dtype=np.uint8)
    va = rng.integers(0, 256, size=(3, size, size, 3), dtype=np.uint8)
    names_tr = ["10.png", "2.png", "a.png", "b.png", "c.png"]  # name order, not numeric: 10 < 2
    folders, tars, npys = tmp_path / "folders", tmp_path / "tars", tmp_path / "npys"
    _oord_pngs(folders / f"train_{size}x{size}", tr, names_tr)
    _oord_pngs(folders / f"valid_{size}x{size}", va, ["0.png", "1.png", "2.png"])
    tars.mkdir()
    for tag in (f"train_{size}x{size}", f"valid_{size}x{size}"):
        with tarfile.open(tars / f"{tag}.tar", "w") as tar:
            tar.add(folders / tag, arcname=tag)
    npys.mkdir()
    np.save(npys / f"imagenet{size}-train.npy", tr)
    np.save(npys / f"imagenet{size}-valid.npy", va)
    name = f"imagenet{size}-oord"
    for root in (folders, tars, npys):
        te = load_dataset(name, root, "test")
        assert torch.equal(te.images, torch.from_numpy(va.transpose(0, 3, 1, 2))) and te.labels is None
        train = load_dataset(name, root, "train", val_fraction=0.0)
        assert torch.equal(train.images, torch.from_numpy(tr.transpose(0, 3, 1, 2)))
    assert dataset_shape(name) == (3, size, size)
    with pytest.raises(SelfVAEError, match=f"valid_{size}x{size}.tar"):
        load_dataset(name, tmp_path, "test")
    other = 96 - size  # the 64 set's files are not the 32 set's
    with pytest.raises(SelfVAEError, match=f"expected \\({other}, {other}, 3\\)"):
        np.save(npys / f"imagenet{other}-valid.npy", va)
        load_dataset(f"imagenet{other}-oord", npys, "test")


# --------------------------------------------------------------------------------------------------
# CelebA, imagenette, generic folders


def test_celeba_crop_and_official_partition(tmp_path: Path) -> None:
    img_dir = tmp_path / "img_align_celeba"
    lines = []
    part = [0] * 7 + [1] + [2, 2]  # 7 training images: the 15% rule would have taken one of them
    for i in range(10):
        a = np.full((218, 178, 3), 255, np.uint8)  # outside the crop box: white
        a[40:188, 15:89] = (200, 0, 0)  # left half of the 148x148 box at (15, 40): red
        a[40:188, 89:163] = (0, 0, 200)  # right half: blue
        save_image(img_dir / f"{i + 1:06d}.jpg", a, "JPEG")
        lines.append(f"{i + 1:06d}.jpg {part[i]}")
    (tmp_path / "list_eval_partition.txt").write_text("\n".join(lines) + "\n")
    tr = load_dataset("celeba64", tmp_path, "train")
    va = load_dataset("celeba64", tmp_path, "val")
    te = load_dataset("celeba64", tmp_path, "test")
    assert (len(tr), len(va), len(te)) == (7, 1, 2)  # official partition, not the 15% rule
    assert tr.shape == (3, 64, 64) and tr.labels is None
    x = tr.images.int()
    assert int(x[:, 1].max()) < 60  # no white from outside the box anywhere (white has green 255)
    assert (x[:, 0, :, 2:28] > 140).all() and (x[:, 2, :, 2:28] < 60).all()  # left half: red (JPEG)
    assert (x[:, 2, :, 37:62] > 130).all() and (x[:, 0, :, 37:62] < 60).all()  # right half: blue
    assert load_dataset("celeba64", tmp_path, "test", image_size=32).shape == (3, 32, 32)
    (img_dir / "000009.jpg").unlink()
    with pytest.raises(SelfVAEError, match="000009.jpg"):
        load_dataset("celeba64", tmp_path, "test")
    with pytest.warns(UserWarning, match="000009.jpg"):
        assert len(load_dataset("celeba64", tmp_path, "test", on_bad_file="skip")) == 1


def test_imagenette_folders(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    for split, n in (("train", 7), ("val", 3)):
        for cls in ("n01440764", "n02102040"):
            for i in range(n):
                h, w = (80, 120) if i % 2 else (100, 70)  # non-square, different sizes
                img = rng.integers(0, 256, (h, w, 3), np.uint8)
                save_image(tmp_path / split / cls / f"{i}.JPEG", img, "JPEG")
    tr = load_dataset("imagenette64", tmp_path, "train")
    te = load_dataset("imagenette64", tmp_path, "test")
    assert tr.shape == (3, 64, 64) == dataset_shape("imagenette64")
    assert len(tr) == 12 and len(load_dataset("imagenette64", tmp_path, "val")) == 2 and len(te) == 6
    assert sorted(te.labels.tolist()) == [0, 0, 0, 1, 1, 1] and tr.augment and not te.augment


def test_folder_corrupt_file_error_and_skip(tmp_path: Path) -> None:
    for i in range(4):
        save_image(tmp_path / "cats" / f"{i}.png", np.full((16, 16), 10 * i, np.uint8))
    save_image(tmp_path / "dogs" / "a.png", np.full((16, 16), 99, np.uint8))
    (tmp_path / "dogs" / "broken.jpg").write_bytes(b"this is not a jpeg")
    (tmp_path / "notes.txt").write_text("ignored: not an image extension")
    with pytest.raises(SelfVAEError, match="broken.jpg"):
        load_dataset("folder", tmp_path, "train")
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        ds = load_dataset("folder", tmp_path, "train", on_bad_file="skip", val_fraction=0.0)
    assert any("broken.jpg" in str(w.message) for w in rec)
    assert ds.shape == (1, 16, 16) and len(ds) == 5  # all grey -> 1 channel
    pairs = sorted(zip(ds.images[:, 0, 0, 0].tolist(), ds.labels.tolist(), strict=True))  # in a shuffled order
    assert pairs == [(0, 0), (10, 0), (20, 0), (30, 0), (99, 1)]
    with pytest.raises(SelfVAEError, match="no test/ sub-folder"):
        load_dataset("folder", tmp_path, "test")


def test_folder_sizes_channels_and_splits(tmp_path: Path) -> None:
    save_image(tmp_path / "train" / "a.png", np.full((16, 16), 50, np.uint8))
    save_image(tmp_path / "train" / "b.png", np.zeros((16, 16, 3), np.uint8))
    save_image(tmp_path / "train" / "c.bmp", np.full((20, 16, 3), 7, np.uint8))
    save_image(tmp_path / "test" / "d.png", np.full((16, 16), 1, np.uint8))
    with pytest.raises(SelfVAEError, match=r"c\.bmp: image is 16x20 .*a\.png is 16x16.*image_size"):
        load_dataset("folder", tmp_path, "train")
    ds = load_dataset("folder", tmp_path, "train", image_size=8, val_fraction=0.0)
    assert ds.shape == (3, 8, 8) and ds.labels is None  # one RGB image -> all RGB
    assert [50] in [im.unique().tolist() for im in ds.images]  # grey converted to RGB keeps its value
    assert dataset_shape("folder", 8, root=tmp_path) == (3, 8, 8)
    te = load_dataset("folder", tmp_path, "test")
    assert te.shape == (1, 16, 16) and len(te) == 1
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(SelfVAEError, match="no image files"):
        load_dataset("folder", empty, "train")


# --------------------------------------------------------------------------------------------------
# npz


def test_npz_layouts_and_errors(tmp_path: Path) -> None:
    x = np.random.default_rng(0).integers(0, 256, size=(20, 3, 8, 8), dtype=np.uint8)
    np.savez(tmp_path / "nchw.npz", images=x)
    ds = load_dataset("npz", tmp_path / "nchw.npz", "train", val_fraction=0.0)
    assert ds.shape == (3, 8, 8) and torch.equal(ds.images, torch.from_numpy(x))
    assert dataset_shape("npz", root=tmp_path / "nchw.npz") == (3, 8, 8)
    np.savez(tmp_path / "nhw.npz", x_train=x[:, 0], x_test=x[:2, 0], y_test=[3, 4])
    te = load_dataset("npz", tmp_path / "nhw.npz", "test")
    assert te.shape == (1, 8, 8) and te.labels.tolist() == [3, 4]
    with pytest.raises(SelfVAEError, match="nchw.npz: no array 'x_test'"):
        load_dataset("npz", tmp_path / "nchw.npz", "test")
    np.savez(tmp_path / "data.npz", x=x.astype(np.float32))
    with pytest.raises(SelfVAEError, match="data.npz: array 'x' has dtype float32, expected uint8"):
        load_dataset("npz", tmp_path / "data.npz", "train")
    np.savez(tmp_path / "shape.npz", x=np.zeros((4, 8, 8, 5), np.uint8))
    with pytest.raises(SelfVAEError, match=r"shape.npz: array 'x' has shape \(4, 8, 8, 5\), expected"):
        load_dataset("npz", tmp_path / "shape.npz", "train")
    np.savez(tmp_path / "lab.npz", x=x, y=np.zeros(3, np.int64))
    with pytest.raises(SelfVAEError, match=r"array 'y' has shape \(3,\), expected \[20\]"):
        load_dataset("npz", tmp_path / "lab.npz", "train")
    with pytest.raises(SelfVAEError, match="missing.npz: no such file"):
        load_dataset("npz", tmp_path / "missing.npz", "train")


# --------------------------------------------------------------------------------------------------
# registry, shapes, augmentation


def test_registry_and_shapes() -> None:
    assert set(DATASETS) >= {"mnist", "fashion-mnist", "cifar10", "imagenet32", "imagenet64", "imagenette64",
                             "celeba64", "folder", "npz"}
    assert dataset_shape("mnist") == (1, 32, 32) and dataset_shape("cifar10") == (3, 32, 32)
    assert dataset_shape("imagenet64") == (3, 64, 64) and dataset_shape("celeba64", 32) == (3, 32, 32)
    with pytest.raises(SelfVAEError, match="unknown dataset; known: .*cifar10.*mnist"):
        load_dataset("svhn", "/tmp", "train")
    with pytest.raises(SelfVAEError, match="depends on the data"):
        dataset_shape("folder")
    for spec in DATASETS.values():
        assert spec.description and spec.augment == (
            spec.name in ("cifar10", "cifar10-official-part", "cifar10-jpeg", "imagenette64", "photos",
                          "photos-multiscale"))


def test_augmentation_keeps_dtype_shape_and_changes_images(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    x = torch.from_numpy(rng.integers(0, 256, size=(3, 32, 32), dtype=np.uint8))
    torch.manual_seed(0)
    outs = [augment_image(x) for _ in range(8)]
    assert all(o.dtype == torch.uint8 and o.shape == (3, 32, 32) for o in outs)
    assert sum(not torch.equal(o, x) for o in outs) == 8
    torch.manual_seed(0)
    assert all(torch.equal(o, augment_image(x)) for o in outs)  # torch RNG -> reproducible
    # non-square, one channel; an identity-like draw keeps the mean roughly
    y = torch.full((1, 16, 24), 100, dtype=torch.uint8)
    assert augment_image(y).shape == (1, 16, 24) and (augment_image(y) == 100).all()

    make_mnist_dir(tmp_path, gz=False)
    tr = load_dataset("mnist", tmp_path, "train", augment=True)
    assert tr.augment and not load_dataset("mnist", tmp_path, "train").augment
    assert not load_dataset("mnist", tmp_path, "val", augment=True).augment
    item = tr[0]
    assert item.dtype == torch.uint8 and item.shape == (1, 32, 32) and not torch.equal(item, tr.images[0])
    batch = next(iter(torch.utils.data.DataLoader(tr, batch_size=4)))
    assert batch.dtype == torch.uint8 and batch.shape == (4, 1, 32, 32)


class _RunsCode:
    """Unpickling this calls ``Path.touch``: what a tampered data file would do."""

    def __init__(self, target: Path) -> None:
        self.target = target

    def __reduce__(self):  # noqa: ANN204 - pickle's protocol
        return (Path.touch, (self.target,))


def test_cifar10_batch_that_would_run_code_is_refused(tmp_path: Path) -> None:
    d = tmp_path / "cifar-10-batches-py"
    make_cifar_dir(d)
    marker = tmp_path / "ran"
    batch, _ = cifar_batch(3, 99)
    batch[b"batch_label"] = _RunsCode(marker)
    (d / "test_batch").write_bytes(pickle.dumps(batch, protocol=2))
    with pytest.raises(SelfVAEError, match="test_batch: not a CIFAR-10 python batch.*refused global"):
        load_dataset("cifar10", tmp_path, "test")
    assert not marker.exists()


def test_cifar10_jpeg_reads_the_tarball_as_the_unpacked_folder_reads(tmp_path):
    """The shipped CIFAR-10 models were trained on the unpacked folder (data.name=folder) and are evaluated from the
    tarball: same images, same order, same labels, so the same bounds (and the same first-N subsets)."""

    from conftest import cifar_like_tarball

    from selfvae.data import load_dataset
    from selfvae.data.datasets import infer_dataset

    cifar_like_tarball(tmp_path / "cifar10-jpeg.tar.gz")
    with tarfile.open(tmp_path / "cifar10-jpeg.tar.gz") as tar:
        tar.extractall(tmp_path / "unpacked", filter="data")
    for split in ("train", "val", "test"):
        packed = load_dataset("cifar10-jpeg", tmp_path, split)
        folder = load_dataset("folder", tmp_path / "unpacked" / "cifar10-jpeg", split)
        assert packed.images.shape[1:] == (3, 32, 32)
        assert torch.equal(packed.images, folder.images) and torch.equal(packed.labels, folder.labels)
    test = load_dataset("cifar10-jpeg", tmp_path / "cifar10-jpeg.tar.gz", "test")  # the file itself, too
    assert sorted(test.labels.tolist()) == [0] * 4 + [1] * 4  # airplane is 0, though the tar lists cat first
    assert torch.equal(load_dataset("cifar10-jpeg", tmp_path / "unpacked", "test").images, test.images)
    assert infer_dataset("cifar10", tmp_path) == "cifar10-jpeg"
    with pytest.raises(SelfVAEError, match="no cifar10-jpeg.tar.gz"):
        load_dataset("cifar10-jpeg", tmp_path / "unpacked" / "cifar10-jpeg" / "test", "test")


def test_a_class_ordered_folder_is_read_in_a_fixed_shuffled_order(tmp_path: Path) -> None:
    """Image folders come class by class, so the first N images of a split (an evaluation --limit, a FID reference,
    training's eval_limit) were one class: each split is read in one fixed shuffled order instead, holding the same
    images as in file order (the train/val split, by file order, is unchanged)."""
    classes, per_class = 4, 25
    for c in range(classes):
        for i in range(per_class):
            save_image(tmp_path / "train" / f"class{c}" / f"{i:02d}.png", np.full((8, 8), 10 * c + i, np.uint8))
    first = {}
    for split in ("train", "val"):
        ds = load_dataset("folder", tmp_path, split)
        again = load_dataset("folder", tmp_path, split)
        assert torch.equal(ds.images, again.images) and torch.equal(ds.labels, again.labels)  # fixed
        first[split] = ds.labels[:10].tolist()
        # the images of each split are the ones split_indices picks in file order
        idx = split_indices(classes * per_class, 0.15, 0)[split == "val"]
        assert sorted(ds.images[:, 0, 0, 0].tolist()) == sorted((10 * (idx // per_class) + idx % per_class).tolist())
        assert sorted(ds.labels.tolist()) == sorted((idx // per_class).tolist())
    assert len(set(first["train"])) >= 3  # in file order: ten of class 0


def _official_part_npz(path: Path, n_train: int = 20, n_test: int = 6) -> tuple[np.ndarray, np.ndarray]:
    """A file in the exact layout of ../shared/data/cifar10-official-part.npz (x/y/row of train and test)."""
    rng = np.random.default_rng(3)
    x_train = rng.integers(0, 256, (n_train, 32, 32, 3), dtype=np.uint8)
    x_test = rng.integers(0, 256, (n_test, 32, 32, 3), dtype=np.uint8)
    np.savez(path, x_train=x_train, y_train=rng.integers(0, 10, n_train), row_train=np.arange(n_train),
             x_test=x_test, y_test=rng.integers(0, 10, n_test), row_test=np.arange(n_test))
    return x_train, x_test


def test_cifar10_official_part_reads_its_file_splits_it_and_augments_by_whole_pixel_shifts(tmp_path: Path) -> None:
    from selfvae.data.datasets import infer_dataset

    x_train, x_test = _official_part_npz(tmp_path / "cifar10-official-part.npz")
    for root in (tmp_path, tmp_path / "cifar10-official-part.npz"):  # the folder holding it, or the file
        test = load_dataset("cifar10-official-part", root, "test")
        assert torch.equal(test.images, torch.from_numpy(x_test).permute(0, 3, 1, 2)) and not test.augment
        tr, va = (load_dataset("cifar10-official-part", root, s, val_fraction=0.25) for s in ("train", "val"))
        assert len(tr) + len(va) == 20 and len(va) == 5 and tr.augment and tr.augmentation == "shift"
        seen = {bytes(im.numpy()) for im in torch.cat([tr.images, va.images])}
        assert seen == {bytes(im.numpy()) for im in torch.from_numpy(x_train).permute(0, 3, 1, 2)}
    assert dataset_shape("cifar10-official-part") == (3, 32, 32)
    # an .npz file is read by its own format whatever data set a model was trained on
    assert infer_dataset("cifar10-jpeg", tmp_path / "cifar10-official-part.npz") == "cifar10-official-part"
    np.savez(tmp_path / "other.npz", x_test=x_test)
    assert infer_dataset("cifar10-jpeg", tmp_path / "other.npz") == "npz"
    np.savez(tmp_path / "s.npz", x_train=x_train[:, :16], x_test=x_test[:, :16])
    with pytest.raises(SelfVAEError, match=r"s.npz: train images have shape \(16, 32, 3\), expected CIFAR-10's"):
        load_dataset("cifar10-official-part", tmp_path / "s.npz", "train")
    with pytest.raises(SelfVAEError, match="no cifar10-official-part.npz"):
        load_dataset("cifar10-official-part", tmp_path / "nowhere", "test")


def test_shift_augmentation_is_a_flip_and_a_whole_pixel_shift_with_replicated_edges() -> None:
    """The srVAE authors' CIFAR-10 protocol: no pixel resampled, so every output is exactly the image (or its
    mirror) moved by at most 2 whole pixels with its edge rows and columns repeated."""
    from selfvae.data import augment_shift

    rng = np.random.default_rng(1)
    x = torch.from_numpy(rng.integers(0, 256, size=(3, 32, 32), dtype=np.uint8))

    def moved(img: torch.Tensor, dx: int, dy: int) -> torch.Tensor:
        rows, cols = (torch.arange(32) - dy).clamp(0, 31), (torch.arange(32) - dx).clamp(0, 31)
        return img[:, rows][:, :, cols]

    candidates = [(f, dx, dy) for f in (False, True) for dx in range(-2, 3) for dy in range(-2, 3)]
    torch.manual_seed(0)
    found = set()
    for _ in range(200):
        out = augment_shift(x)
        assert out.dtype == torch.uint8 and out.shape == x.shape
        match = [c for c in candidates if torch.equal(out, moved(x.flip(-1) if c[0] else x, c[1], c[2]))]
        assert len(match) == 1
        found.add(match[0])
    assert len(found) > 40  # every flip and shift is drawn (50 in all)
    torch.manual_seed(5)
    first = augment_shift(x)
    torch.manual_seed(5)
    assert torch.equal(first, augment_shift(x))  # torch RNG -> reproducible


def test_photos_hold_whole_photographs_out_and_train_on_random_crops(tmp_path: Path, monkeypatch) -> None:
    """The wallpaper photographs at their installed paths (JPEGs written here, smaller than the real ones): the
    splits are whole photographs, validation and test every whole tile of theirs, training crops of the training
    photographs only; a photograph larger than SHORT_SIDE is area-downscaled; a missing one names the packages."""
    from selfvae.data import photos

    monkeypatch.setenv("SELFVAE_CACHE", str(tmp_path / "cache"))
    rng = np.random.default_rng(0)
    colours = {}
    for part, rels in photos.PHOTOS.items():
        for i, rel in enumerate(rels):
            colours[rel] = (40 + 60 * ("train", "val", "test").index(part), 7 * i, 200)
            base = np.zeros((48, 72, 3), np.uint8) + np.array(colours[rel], np.uint8)
            save_image(tmp_path / rel, np.clip(base + rng.integers(0, 3, base.shape), 0, 255).astype(np.uint8),
                       "JPEG")
    test = load_dataset("photos", tmp_path, "test", image_size=16)
    assert len(test) == 4 * 3 * 4 and not test.augment  # 48x72 -> 3 x 4 whole tiles of 16, four photographs
    val = load_dataset("photos", tmp_path, "val", image_size=16)
    train = load_dataset("photos", tmp_path, "train", image_size=16)
    assert len(val) == 3 * 12 and len(train) == photos.TRAIN_CROPS and train.augmentation == "shift"
    red = {part: set(torch.unique(ds.images[:, 0]).tolist()) for part, ds in
           (("train", train), ("val", val), ("test", test))}
    assert max(red["train"]) < 60 and 60 < min(red["val"]) and max(red["val"]) < 120 < min(red["test"])
    assert torch.equal(load_dataset("photos", tmp_path, "test", image_size=16).images, test.images)  # the cache
    big = np.zeros((800, 1200, 3), np.uint8)
    big[:, 600:] = 255
    save_image(tmp_path / "big.png", big, "PNG")
    small = photos.downscaled(tmp_path / "big.png")
    assert small.shape == (photos.SHORT_SIDE, 576, 3) and small[0, 287].tolist() == [0, 0, 0]
    assert small[0, 288].tolist() == [255, 255, 255]
    (tmp_path / photos.PHOTOS["test"][0]).unlink()
    with pytest.raises(SelfVAEError, match="photographs are missing.*apt-get install -y plasma-workspace-wallpapers"):
        load_dataset("photos", tmp_path, "test")


def test_multiscale_photographs_train_on_every_scale_and_test_as_photos(tmp_path: Path, monkeypatch) -> None:
    """photos-multiscale draws its training crops in equal numbers from the training photographs downscaled to each
    of MULTISCALE_SIDES (a crop of a coarser scale has the finer one's pattern at a shorter period), holds out the
    same tiles as photos, and refuses photographs too small for a scale (a packed root, already downscaled)."""
    from selfvae.data import photos

    monkeypatch.setenv("SELFVAE_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(photos, "SHORT_SIDE", 16)
    monkeypatch.setattr(photos, "MULTISCALE_SIDES", (16, 32))
    monkeypatch.setattr(photos, "TRAIN_CROPS", 101)
    stripes = np.zeros((64, 96, 3), np.uint8)
    stripes[:, (np.arange(96) % 8) < 4] = 255  # 4 bright columns, 4 dark: every other one at 4x down, 2 and 2 at 2x
    for rel in (r for rels in photos.PHOTOS.values() for r in rels):
        save_image(tmp_path / rel, stripes, "PNG")
    train = load_dataset("photos-multiscale", tmp_path, "train", image_size=8)
    assert len(train) == 101 and train.augmentation == "shift"
    x = train.images.float()
    period2 = (x[..., 1:] - x[..., :-1]).abs().amin(dim=(1, 2, 3)) > 100  # every column unlike its neighbour
    assert int(period2.sum()) == 51  # the 16-px scale's share (the first takes the odd one), none of the 32's
    for part in ("val", "test"):
        assert torch.equal(load_dataset("photos-multiscale", tmp_path, part, image_size=8).images,
                           load_dataset("photos", tmp_path, part, image_size=8).images)
    photos.pack(tmp_path, tmp_path / "packed")
    with pytest.raises(SelfVAEError, match="smaller than the short side 32 .*not packed"):
        load_dataset("photos-multiscale", tmp_path / "packed", "train", image_size=8)


def test_packed_photographs_serve_the_same_pixels(tmp_path: Path, monkeypatch) -> None:
    """photos.pack writes the downscaled photographs losslessly where no wallpaper package is installed (a device
    machine): the packed folder as the root gives every split pixel for pixel, a photograph larger than
    SHORT_SIDE already downscaled."""
    from selfvae.data import photos

    monkeypatch.setenv("SELFVAE_CACHE", str(tmp_path / "cache"))
    rng = np.random.default_rng(1)
    for rel in (r for rels in photos.PHOTOS.values() for r in rels):
        side = photos.SHORT_SIDE + 16 if rel == photos.PHOTOS["train"][0] else 40
        save_image(tmp_path / "usr" / rel, rng.integers(0, 256, (side, side + 8, 3), dtype=np.uint8), "JPEG")
    written = photos.pack(tmp_path / "usr", tmp_path / "packed")
    files = sorted((tmp_path / "packed").rglob("*" + photos.PACKED_SUFFIX))
    assert len(files) == sum(map(len, photos.PHOTOS.values())) and written == sum(f.stat().st_size for f in files)
    for part in photos.PHOTOS:
        installed = photos.whole_photographs(tmp_path / "usr", part)
        packed = photos.whole_photographs(tmp_path / "packed", part)
        assert [n for n, _ in packed] == [n for n, _ in installed]
        assert all(np.array_equal(a, b) for (_, a), (_, b) in zip(installed, packed, strict=True))
    assert photos.whole_photographs(tmp_path / "packed", "train")[0][1].shape[0] == photos.SHORT_SIDE
