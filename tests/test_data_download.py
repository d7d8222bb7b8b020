"""Tests of selfvae.data.download with file:// URLs (no network)."""

from __future__ import annotations

import gzip
import hashlib
import re
from pathlib import Path

import numpy as np
import pytest

from selfvae.data import download, fetch_url, load_dataset
from selfvae.data.download import DOWNLOADS
from selfvae.errors import SelfVAEError


def test_fetch_url_checksums_and_atomic_write(tmp_path: Path) -> None:
    src = tmp_path / "src.bin"
    payload = bytes(range(256)) * 1000
    src.write_bytes(payload)
    md5, sha = hashlib.md5(payload).hexdigest(), hashlib.sha256(payload).hexdigest()
    dest = tmp_path / "out" / "file.bin"
    assert fetch_url(src.as_uri(), dest, md5, sha256=sha) == dest
    assert dest.read_bytes() == payload

    src.unlink()  # already present with the right checksum: not fetched again
    assert fetch_url(src.as_uri(), dest, md5.upper()) == dest

    src.write_bytes(payload + b"tampered")
    bad = tmp_path / "out" / "bad.bin"
    with pytest.raises(SelfVAEError, match=f"md5 checksum mismatch: got [0-9a-f]{{32}}, expected {md5}"):
        fetch_url(src.as_uri(), bad, md5)
    assert not bad.exists()
    with pytest.raises(SelfVAEError, match="sha256 checksum mismatch"):
        fetch_url(src.as_uri(), bad, sha256=sha)
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["file.bin"]  # no .part files left

    with pytest.raises(SelfVAEError, match="missing.bin: download failed"):
        fetch_url((tmp_path / "missing.bin").as_uri(), tmp_path / "out" / "m.bin")
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["file.bin"]


def test_download_uses_mirrors_and_result_loads(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    files = []
    rng = np.random.default_rng(0)
    for prefix, n in (("train", 20), ("t10k", 4)):
        for kind, arr in (("images-idx3", rng.integers(0, 256, (n, 28, 28), np.uint8)),
                          ("labels-idx1", np.arange(n, dtype=np.uint8))):
            name = f"{prefix}-{kind}-ubyte.gz"
            header = bytes([0, 0, 8, arr.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in arr.shape)
            data = gzip.compress(header + arr.tobytes())
            (mirror / name).write_bytes(data)
            files.append((name, hashlib.md5(data).hexdigest()))
    dead = (tmp_path / "dead").as_uri() + "/"
    monkeypatch.setitem(DOWNLOADS, "mnist", ((dead, mirror.as_uri() + "/"), tuple(files)))
    root = download("mnist", tmp_path / "data")
    assert len(load_dataset("mnist", root, "test")) == 4
    assert len(load_dataset("mnist", root, "train")) == 17

    monkeypatch.setitem(DOWNLOADS, "mnist", ((dead,), tuple(files)))
    with pytest.raises(SelfVAEError, match="could not download train-images-idx3-ubyte.gz"):
        download("mnist", tmp_path / "other")
    with pytest.raises(SelfVAEError, match="celeba64: no automatic download"):
        download("celeba64", tmp_path)


def test_download_table() -> None:
    assert set(DOWNLOADS) == {"mnist", "fashion-mnist", "cifar10"}
    assert DOWNLOADS["cifar10"][1] == (("cifar-10-python.tar.gz", "c58f30108f718f92721af3b95e74349a"),)
    for mirrors, files in DOWNLOADS.values():
        assert mirrors and all(m.startswith(("http://", "https://")) and m.endswith("/") for m in mirrors)
        assert all(re.fullmatch(r"[0-9a-f]{32}", md5) for _, md5 in files)
