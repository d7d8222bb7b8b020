"""Property tests: loaders given random bytes or random arrays either load a valid uint8 data set or raise
SelfVAEError; the command line given random arguments exits 0 or 2 and never shows a traceback."""

from __future__ import annotations

import io
import tempfile
import warnings
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from selfvae.cli import main
from selfvae.data import load_dataset
from selfvae.errors import SelfVAEError

FAST = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def _check_loads_or_user_error(name: str, root: Path, split: str, **kw) -> None:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ds = load_dataset(name, root, split, **kw)
    except SelfVAEError as e:
        assert str(e)  # a message naming the problem
        return
    assert ds.images.dtype.is_floating_point is False and str(ds.images.dtype) == "torch.uint8"
    assert ds.images.ndim == 4 and ds.images.shape[1] in (1, 3) and len(ds) > 0
    assert ds[0].shape == ds.images.shape[1:]


DTYPES = st.sampled_from(["uint8", "int8", "int16", "int64", "float32", "float64", "bool", "uint16", "complex64",
                          "U3", "O"])


@st.composite
def arrays(draw):
    dtype = draw(DTYPES)
    shape = draw(hnp.array_shapes(min_dims=0, max_dims=5, min_side=0, max_side=6))
    if dtype == "O":
        return np.empty(shape, dtype=object)
    if dtype == "U3":
        return np.full(shape, "abc")
    return draw(hnp.arrays(np.dtype(dtype), shape))


@FAST
@given(data=st.dictionaries(st.sampled_from(["x", "images", "x_train", "x_test", "y_train", "labels", "junk"]),
                            arrays(), min_size=0, max_size=3),
       split=st.sampled_from(["train", "val", "test"]))
def test_random_npz_arrays_load_or_raise_selfvae_error(data, split):
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "data.npz"
        np.savez(path, **data)
        _check_loads_or_user_error("npz", path, split)


@FAST
@given(blob=st.binary(max_size=600), name=st.sampled_from(["data.npz", "data.png", "data"]))
def test_random_bytes_as_npz_load_or_raise_selfvae_error(blob, name):
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / name
        path.write_bytes(blob)
        _check_loads_or_user_error("npz", path, "train")


def _png(arr: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


@FAST
@given(files=st.lists(st.one_of(st.binary(max_size=200),
                                hnp.arrays(np.uint8, st.sampled_from([(4, 4), (8, 8), (4, 4, 3), (5, 7)]))
                                .map(_png)), min_size=0, max_size=5),
       cut=st.integers(0, 80), policy=st.sampled_from(["skip", "error"]),
       dataset=st.sampled_from(["folder", "mnist", "cifar10"]))
def test_random_files_in_a_folder_load_or_raise_selfvae_error(files, cut, policy, dataset):
    names = {"folder": "img{}.png", "mnist": "train-images-idx3-ubyte{}", "cifar10": "data_batch_{}"}[dataset]
    with tempfile.TemporaryDirectory() as d:
        root = Path(d)
        if dataset == "cifar10":
            (root / "cifar-10-batches-py").mkdir()
            root = root / "cifar-10-batches-py"
        for i, blob in enumerate(files):
            blob = blob[: len(blob) - cut] if i == 0 and cut < len(blob) else blob  # a truncated file
            (root / names.format(i + 1 if dataset == "cifar10" else ("" if i == 0 else i))).write_bytes(blob)
        _check_loads_or_user_error(dataset, Path(d), "train", on_bad_file=policy)


# ----- the command line -------------------------------------------------------------------------------
TOKENS = ["presets", "eval", "sample", "superres", "reconstruct", "interpolate", "tradeoff", "train", "--help",
          "-h", "--device", "cpu", "cuda", "--seed", "-1", "0", "7", "x", "", "-n", "--mode", "all", "rs9",
          "--iw-samples", "--limit", "--batch-size", "--split", "val", "test", "--set", "train.lr=abc",
          "model.nope=1", "train.steps", "--steps", "--epochs", "--preset", "nope", "mnist-vae", "--resume",
          "--json", "--levels", "--temperature", "nan", "-o", "--scale", "--decode", "mode", "--on-bad-file",
          "skip", "--amp", "bf16", "fp8", "--workers", "--threads", "--accum-steps", "--config", "--data-dir",
          "--out", "--resize", "--slerp", "--no-progress", "1e9", "--", "--deterministic"]


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory):
    """A folder that holds no run and no data: nothing a fuzzed command can find will train or write."""
    return tmp_path_factory.mktemp("fuzz")


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(argv=st.lists(st.sampled_from(TOKENS), max_size=8))
def test_random_cli_arguments_exit_0_or_2_without_traceback(argv, sandbox, capsys, monkeypatch):
    monkeypatch.chdir(sandbox)
    if "train" in argv:  # never train: point every data set and run directory at nothing
        argv = [*argv, "--data-dir", str(sandbox / "no-data"), "--out", str(sandbox / "no-run")]
    try:
        main(argv)
        code = 0
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else (0 if e.code is None else 2)
    out = capsys.readouterr()
    assert code in (0, 2, 130), (argv, code, out.err)
    assert "Traceback" not in out.err and "Traceback" not in out.out, argv
    if code == 2:
        assert out.err.strip(), argv
        assert out.err.strip().splitlines()[-1].startswith(("selfvae: error:", "usage:", "selfvae ")) or \
            "error:" in out.err, (argv, out.err)
    assert not (sandbox / "no-run").exists(), argv  # nothing trained
