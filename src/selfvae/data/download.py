"""Download the official files of the small data sets, only when the user asks for it.

:func:`download` fetches MNIST, Fashion-MNIST or CIFAR-10 into a directory that
:func:`selfvae.data.load_dataset` then reads. Every file is checked against its published MD5 (the
same list torchvision uses) and written atomically (temporary file in the target directory, then
``os.replace``), so an interrupted download never leaves a half-written file under the final name.
The larger sets (downsampled ImageNet, CelebA, imagenette) need a manual download: ImageNet requires a
login at image-net.org and CelebA is distributed through Google Drive.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import urllib.error
import urllib.request
from pathlib import Path

from selfvae.errors import SelfVAEError

# name -> (mirrors, [(file name, md5)])
DOWNLOADS: dict[str, tuple[tuple[str, ...], tuple[tuple[str, str], ...]]] = {
    "mnist": (
        ("https://ossci-datasets.s3.amazonaws.com/mnist/", "http://yann.lecun.com/exdb/mnist/"),
        (
            ("train-images-idx3-ubyte.gz", "f68b3c2dcbeaaa9fbdd348bbdeb94873"),
            ("train-labels-idx1-ubyte.gz", "d53e105ee54ea40749a09fcbcd1e9432"),
            ("t10k-images-idx3-ubyte.gz", "9fb629c4189551a2d022fa330f9573f3"),
            ("t10k-labels-idx1-ubyte.gz", "ec29112dd5afa0611ce80d1b7f02629c"),
        ),
    ),
    "fashion-mnist": (
        (
            "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
            "https://raw.githubusercontent.com/zalandoresearch/fashion-mnist/master/data/fashion/",
        ),
        (
            ("train-images-idx3-ubyte.gz", "8d4fb7e6c68d591d4c3dfef9ec88bf0d"),
            ("train-labels-idx1-ubyte.gz", "25c81989df183df01b3e8a0aad5dffbe"),
            ("t10k-images-idx3-ubyte.gz", "bef4ecab320f06d8554ea6380940ec79"),
            ("t10k-labels-idx1-ubyte.gz", "bb300cfdad3c16e7a12a480ee83cd310"),
        ),
    ),
    "cifar10": (
        ("https://www.cs.toronto.edu/~kriz/",),
        (("cifar-10-python.tar.gz", "c58f30108f718f92721af3b95e74349a"),),
    ),
}

_CHUNK = 1 << 20


def file_digest(path: str | Path, algorithm: str = "md5") -> str:
    """Hex digest of a file, read in 1 MiB chunks."""
    h = hashlib.new(algorithm)
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(_CHUNK), b""):
            h.update(block)
    return h.hexdigest()


def fetch_url(url: str, dest: str | Path, md5: str | None = None, *, sha256: str | None = None,
              timeout: float = 60.0) -> Path:
    """Download ``url`` to ``dest``, verifying ``md5``/``sha256`` when given; return ``dest``.

    An existing ``dest`` with the right checksum is kept as is. Data is streamed into a temporary file
    next to ``dest`` and renamed only after the checksum matched; on any failure the temporary file is
    removed and SelfVAEError names the URL and what went wrong.
    """
    dest = Path(dest)
    checks = [(alg, want.lower()) for alg, want in (("md5", md5), ("sha256", sha256)) if want]
    if dest.is_file() and checks and all(file_digest(dest, alg) == want for alg, want in checks):
        return dest
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".part", dir=dest.parent)
    except OSError as e:
        raise SelfVAEError(f"{dest}: cannot write ({e})") from e
    tmp = Path(tmp_name)
    try:
        hashes = {alg: hashlib.new(alg) for alg, _ in checks}
        with os.fdopen(fd, "wb") as out:
            try:
                with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310 - user asked
                    for block in iter(lambda: response.read(_CHUNK), b""):
                        out.write(block)
                        for h in hashes.values():
                            h.update(block)
            except (urllib.error.URLError, OSError, ValueError) as e:
                raise SelfVAEError(f"{url}: download failed ({e})") from e
        for alg, want in checks:
            got = hashes[alg].hexdigest()
            if got != want:
                raise SelfVAEError(f"{url}: {alg} checksum mismatch: got {got}, expected {want}")
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)
    return dest


def download(name: str, root: str | Path) -> Path:
    """Fetch the official files of ``name`` (mnist, fashion-mnist, cifar10) into ``root``; return ``root``.

    Mirrors are tried in order per file; files already present with the right MD5 are not fetched again.
    ``load_dataset(name, root, ...)`` reads the result (CIFAR-10's tar.gz is extracted on first load).
    """
    if name not in DOWNLOADS:
        raise SelfVAEError(
            f"{name}: no automatic download (available: {', '.join(sorted(DOWNLOADS))}); "
            "download the official files by hand and pass their directory as --data-dir"
        )
    mirrors, files = DOWNLOADS[name]
    root = Path(root).expanduser()
    for fname, md5 in files:
        errors = []
        for mirror in mirrors:
            try:
                fetch_url(mirror + fname, root / fname, md5)
                break
            except SelfVAEError as e:
                errors.append(str(e))
        else:
            raise SelfVAEError(f"{name}: could not download {fname}: " + "; ".join(errors))
    return root
