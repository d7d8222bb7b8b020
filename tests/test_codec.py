"""The bits-back codec: exact round trips for every prior and every K, coded length against the information
content, a trained model's rate against its negative ELBO, damaged and foreign files refused, and a file
written in one process decoded in another with another thread count."""

from __future__ import annotations

import functools
import json
import math
import subprocess
import sys

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import selfvae.codec.fallback as fallback
import selfvae.codec.files as codec
from selfvae.codec import CodecError, CodingParams, QuantisedZ, decompress, nelbo_bits
from selfvae.codec.ans import Stack
from selfvae.codec.bitsback import BitsBackCoder
from selfvae.codec.compute import ChunkRunner, coding_mode
from selfvae.codec.images import Cover, InputImage, from_tiles, to_tiles
from selfvae.errors import SelfVAEError
from selfvae.evaluation.bounds import iw_bound, log_weights
from selfvae.models.build import build_model
from selfvae.nn.nets import NetSpec
from selfvae.presets import get_preset

TINY = NetSpec(width=8, growth=8, steps=1)


# These tests measure the model's coding with tiny untrained models, whose files PNG beats: the PNG-instead file
# is tested on its own (test_a_file_is_never_larger_than_png_of_its_images)
compress = functools.partial(codec.compress, png_instead=False)


@pytest.fixture(autouse=True)
def model_coded_tiles(monkeypatch):
    """These tests' untrained models would send every tile raw (their negative ELBO is above 8 bits a value):
    the tests of the model's coding take the model for every tile; the raw fallback's own tests restore it."""
    monkeypatch.setattr(fallback, "RAW_AT", math.inf)


def tiny_model(transforms: str, prior: str, seed: int = 0, channels: int = 1):
    cfg = get_preset("mnist-vae")
    m = cfg.model
    m.image_shape, m.transforms, m.latent_shape, m.n_mix = (channels, 16, 16), transforms, (2, 4, 4), 3
    m.q_u = m.p_y = m.q_z = m.p_z = m.p_x = TINY
    m.prior = prior
    m.prior_kwargs = {"mid_channels": 8, "num_blocks": 1, "num_scales": 2} if prior == "realnvp" else {}
    torch.manual_seed(seed)
    model = build_model(cfg).eval()
    if prior == "realnvp":  # a flow that is not the identity, so the Jacobian matters
        with torch.no_grad():
            for p in model.p_u.parameters():
                p.add_(0.05 * torch.randn_like(p))
    return cfg, model


def digits(n: int, size: int = 12, channels: int = 1, seed: int = 0) -> list[InputImage]:
    """Smooth blobs of varied size (smaller than the 16x16 tile, so padding is exercised too)."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        h, w = size - i % 3, size
        yy, xx = np.mgrid[:h, :w]
        img = 255 * np.exp(-((yy - rng.uniform(0, h)) ** 2 + (xx - rng.uniform(0, w)) ** 2) / rng.uniform(4, 30))
        img = np.clip(img + rng.integers(0, 20, (h, w)), 0, 255).astype(np.uint8)
        out.append(InputImage(f"img{i}", np.repeat(img[..., None], channels, 2)))
    return out


CASES = [("", "standard"), ("", "mog"), ("", "realnvp"), ("downscale", "standard"), ("downscale", "mog"),
         ("downscale", "realnvp"), ("downscale,downscale", "realnvp"), ("downscale,downscale", "mog"),
         ("sketch", "standard")]


@pytest.mark.parametrize("transforms,prior", CASES)
def test_round_trip_exact_and_length_is_information(transforms, prior):
    _, model = tiny_model(transforms, prior)
    images = digits(7)
    data, rep = compress(model, images, group=4, threads=2)
    dec = decompress(model, data, threads=1)
    assert dec.names == [im.name for im in images]
    for got, im in zip(dec.images, images, strict=True):
        assert got.shape == im.pixels.shape and np.array_equal(got, im.pixels)
    # the payload's parts are what was coded: within 0.1% (plus a word a push) of -log2 of the probabilities
    coded = 8 * sum(rep.parts_bytes.values())
    assert abs(coded - rep.ideal_bits) <= 1e-3 * rep.ideal_bits + 64
    # every part of the model is in the report, and the file adds up
    names = {"u", "x"} | {f"y{k}" for k in range(1, model.K + 1)} | {f"z{k}" for k in range(1, model.K + 1)}
    assert set(rep.parts_bytes) == names
    assert rep.file_bytes == len(data)
    assert rep.file_bytes * 8 >= coded + 8 * rep.header_bytes


@pytest.mark.parametrize("transforms,prior", [("", "standard"), ("", "mog"), ("", "realnvp"),
                                              ("downscale,downscale", "realnvp")])
def test_first_images_use_chosen_latents_and_need_no_initial_bits(transforms, prior):
    """A lossless file's first images are coded with chosen latents and no pops: no initial words, a one-image
    file smaller than one seeded with initial bits, the grids in the header, and exact round trips."""
    from selfvae.codec.chosen import PRECISIONS
    from selfvae.codec.container import Container

    _, model = tiny_model(transforms, prior)
    images = digits(6)
    one, rep1 = compress(model, images[:1])
    seeded, rep0 = compress(model, images[:1], CodingParams(chosen_first=False))
    assert rep1.chosen_images == 1 and rep0.chosen_images == 0 and rep0.initial_bytes > 0
    assert len(one) < len(seeded)
    data, rep = compress(model, images, group=4)
    header, _ = Container.parse_header(data, "f")
    assert header["n_seed"] == 0 and header["chosen"][-1] in PRECISIONS
    assert all(c == -1 or c in PRECISIONS for c in header["chosen"]) and rep.chosen_images >= 1
    assert rep.chosen_bytes <= sum(rep.parts_bytes.values())
    for file, ims in ((one, images[:1]), (seeded, images[:1]), (data, images)):
        assert all(np.array_equal(a, b.pixels) for a, b in zip(decompress(model, file).images, ims, strict=True))
    c = Container.from_bytes(data, "f")
    c.header["chosen"] = [99] * len(c.header["groups"])  # a grid no encoder writes
    with pytest.raises(CodecError, match="chosen-latent grids"):
        decompress(model, c.to_bytes(), name="f.svae")


def test_a_sliver_coded_first_funds_bits_back_for_the_next_tile(monkeypatch):
    """A photograph's first tile coded is its last, often a sliver (here 6 of 32 columns): its chosen latents leave
    fewer bits on the stack than the estimate of a tile's pops, yet enough for them. The encoder tries bits back
    there and codes one tile chosen, not two (each chosen full tile costs thousands of bits above its negative
    ELBO); a try that runs short falls back to chosen latents, and every file decodes exactly."""
    from conftest import SHARED_DATA

    from selfvae.runs.loading import load_run

    _, model = load_run("cifar10-vae-small")
    official = np.load(SHARED_DATA / "cifar10-official-part.npz")["x_test"][:6]
    rows = [np.concatenate(list(official[r * 3 : (r + 1) * 3]), axis=1)[:, :70] for r in range(2)]
    photo = [InputImage("mosaic", np.ascontiguousarray(np.concatenate(rows, 0)))]  # 64 x 70: slivers last
    data, rep = compress(model, photo)
    monkeypatch.setattr(codec, "TRY_BITS_BACK_AT", 1.0)  # the gate at the whole estimate: the old encoder
    whole_gate, whole_rep = compress(model, photo)
    assert rep.chosen_images == 1 and whole_rep.chosen_images == 2 and len(data) < len(whole_gate)
    monkeypatch.setattr(codec, "TRY_BITS_BACK_AT", 0.0)  # always tried: the tries that run short change nothing
    always, _ = compress(model, photo)
    assert always == data
    for file in (data, whole_gate):
        assert np.array_equal(decompress(model, file).images[0], photo[0].pixels)


@pytest.mark.parametrize("name", ["cifar10-srvae-small", "cifar10-srvae-ctx"])
def test_a_shipped_srvae_decodes_its_file_of_one_official_image(name):
    """A one-image file's latents are chosen (no bits back), and the encoder's come from a channels-last network's
    output while the decoder's are popped contiguous: the runner hands every network one memory layout, since a
    convolution's rounding follows its input's strides (these two models' x decoders differed by 3e-6 and their
    files failed their checksum). The srVAE with a context renormalised onto y too (model.consistent)."""
    from conftest import SHARED_DATA

    from selfvae.runs.loading import load_run

    _, model = load_run(name)
    image = [InputImage("one", np.load(SHARED_DATA / "cifar10-official-part.npz")["x_test"][0])]
    for consistent in (False, True) if model.x_context is not None else (False,):
        model.set_consistent(consistent)
        data, _ = compress(model, image, search_steps=0)
        assert np.array_equal(decompress(model, data).images[0], image[0].pixels)


@pytest.mark.parametrize("transforms,prior", [("", "standard"), ("", "mog"), ("", "realnvp"),
                                              ("downscale,downscale", "realnvp")])
def test_searched_latents_cost_what_the_search_measures_and_round_trip(transforms, prior):
    """chosen_nats is the chosen code's length up to a constant (-log2 of the grid step a latent dimension): it
    matches the coded bits for the rounded posterior means and for the latents the search finds, which it
    lowers; a file coded with searched latents is no larger than one without and decodes exactly."""
    from selfvae.codec.chosen import ChosenCoder, chosen_nats, posterior_means, search

    _, model = tiny_model(transforms, prior)
    images = digits(3)
    x = torch.from_numpy(np.concatenate([to_tiles(im.pixels, model.shapes[-1], im.name) for im in images]))
    p = 3  # fine enough that a latent's bin mass is its density times the step
    dims = (model.K + 1) * int(np.prod(model.cfg.latent_shape))
    runner = ChunkRunner(4, 1)
    with coding_mode(model):
        chosen = ChosenCoder(BitsBackCoder(model, CodingParams(), runner), p)
        levels = model.levels(x)
        start = posterior_means(chosen.c, levels)
        keys = {"rounded": chosen.rounded(start),
                "searched": search(model, levels, start, p, steps=20)}
        predicted = {}
        for name, k in keys.items():
            stack = Stack()
            chosen.encode(stack, x, k)
            with torch.no_grad():
                nats = chosen_nats(model, levels, [torch.from_numpy(chosen.grid.value(t)).float() for t in k],
                                   2.0**-p)
            predicted[name] = float(nats.sum()) / math.log(2) + len(x) * dims * p
            assert abs(stack.ideal_bits - predicted[name]) <= 1e-3 * predicted[name] + 1
    runner.close()
    assert predicted["searched"] < predicted["rounded"]
    searched, _ = compress(model, images, search_steps=20)
    plain, _ = compress(model, images, search_steps=0)
    assert len(searched) <= len(plain)
    assert all(np.array_equal(a, b.pixels) for a, b in zip(decompress(model, searched).images, images, strict=True))
    with pytest.raises(SelfVAEError, match="search_steps"):
        compress(model, images, search_steps=-1)


def test_rgb_model_and_grey_input_round_trip():
    _, model = tiny_model("downscale", "mog", channels=3)
    rng = np.random.default_rng(1)
    colour = InputImage("c", rng.integers(0, 256, (16, 16, 3), dtype=np.uint8))
    grey = digits(1)[0]
    data, _ = compress(model, [colour, grey], threads=1)
    dec = decompress(model, data)
    assert np.array_equal(dec.images[0], colour.pixels) and np.array_equal(dec.images[1], grey.pixels)


def test_tiles_cover_large_and_small_images():
    rng = np.random.default_rng(0)
    for h, w in [(5, 7), (16, 16), (40, 23), (16, 33)]:
        img = rng.integers(0, 256, (h, w, 1), dtype=np.uint8)
        tiles = to_tiles(img, (1, 16, 16), "t")
        assert tiles.shape[1:] == (1, 16, 16) and tiles.shape[0] == max(1, math.ceil(h / 16) * math.ceil(w / 16))
        assert np.array_equal(from_tiles(tiles, h, w, 1), img)


def test_damaged_truncated_and_foreign_files_are_refused():
    _, model = tiny_model("downscale", "standard")
    data, _ = compress(model, digits(3))
    with pytest.raises(CodecError, match="truncated"):
        decompress(model, data[:-9], name="f.svae")
    flipped = bytearray(data)
    flipped[len(data) // 2 + 20] ^= 0x10
    with pytest.raises(CodecError, match="damaged"):
        decompress(model, bytes(flipped), name="f.svae")
    head = bytearray(data)
    head[12] ^= 0x01
    with pytest.raises(CodecError, match="header is damaged|not a selfvae"):
        decompress(model, bytes(head), name="f.svae")
    with pytest.raises(CodecError, match="not a selfvae compressed file"):
        decompress(model, b"\x89PNG" + data[4:], name="f.svae")
    _, other = tiny_model("downscale", "standard", seed=1)
    with pytest.raises(CodecError, match="another model"):
        decompress(other, data, name="f.svae")


def test_a_model_off_the_cpu_is_refused_with_what_to_do():
    """GPU kernels differ between runs and cards, so a file coded there might decode nowhere: the codec refuses
    (tests/test_device.py checks a CUDA model; the meta device stands in for it here)."""
    _, model = tiny_model("downscale", "standard")
    data, _ = compress(model, digits(1))
    model.to("meta")
    for call in (lambda: compress(model, digits(1)), lambda: decompress(model, data)):
        with pytest.raises(CodecError, match=r"on meta: the codec computes on the CPU.*model\.cpu\(\)"):
            call()


def test_a_tile_cover_repeats_the_image_edge_outside_it():
    """Cover: the boxes of an image's tiles (the last row and column partial; a small image centred in one), the
    margin filled as numpy's edge padding of the whole image, blanked to black, and the mask of its pixels."""
    rng = np.random.default_rng(0)
    a = rng.integers(0, 256, (20, 37, 3), dtype=np.uint8)
    cover = Cover.of([a.shape], (3, 16, 16))
    assert cover.boxes.tolist() == [[0, 0, 16, 16], [0, 0, 16, 16], [0, 0, 16, 5], [0, 0, 4, 16], [0, 0, 4, 16],
                                    [0, 0, 4, 5]]
    assert cover.partial.tolist() == [False, False, True, True, True, True]
    tiles = to_tiles(a, (3, 16, 16), "a")
    edge = np.pad(a, ((0, 12), (0, 11), (0, 0)), mode="edge")
    assert np.array_equal(from_tiles(cover.fill(tiles), 32, 48, 3), edge)
    assert cover.outside().sum() == 32 * 48 - 20 * 37 and cover.blank(cover.fill(tiles)).sum() == tiles.sum()
    small = Cover.of([(5, 9, 1)], (1, 16, 16))
    assert small.boxes.tolist() == [[5, 3, 5, 9]] and (~small.outside()).sum() == 45
    tile = small.fill(to_tiles(rng.integers(0, 256, (5, 9, 1), dtype=np.uint8), (1, 16, 16), "s"))
    assert (tile[0, 0, :5] == tile[0, 0, 5]).all() and (tile[0, 0, :, 12:] == tile[0, 0, :, 11:12]).all()


def test_pixels_outside_an_image_are_not_coded():
    """A tile partly outside its image codes its image's pixels only (format 10): the rest repeats the image's edge,
    which the decoder rebuilds, at no bits, so the file is smaller than the one that padded with black and coded
    every pixel (format 9), and the bound the codec reports counts those pixels only."""
    _, model = tiny_model("", "realnvp")
    images = digits(3)  # 12x12 and 11x12 in 16x16 tiles: 44% of each tile outside
    new, rep = compress(model, images, png_instead=False, nelbo=True)
    old, old_rep = compress(model, images, CodingParams(edge_cover=False), png_instead=False, nelbo=True)
    for data in (new, old):
        assert all(np.array_equal(a, b.pixels) for a, b in zip(decompress(model, data).images, images, strict=True))
    assert len(new) < 0.9 * len(old) and rep.parts_bytes["x"] < 0.9 * old_rep.parts_bytes["x"]
    assert rep.nelbo_bits == pytest.approx(nelbo_bits(model, images), rel=1e-6)
    assert rep.nelbo_bits < old_rep.nelbo_bits
    with torch.no_grad():  # the bound of the pixels inside: every pixel's, less those outside
        x = torch.from_numpy(Cover.of([im.pixels.shape for im in images], (1, 16, 16)).fill(
            np.concatenate([to_tiles(im.pixels, (1, 16, 16), "") for im in images])))
        inside = torch.from_numpy(~Cover.of([im.pixels.shape for im in images], (1, 16, 16)).outside())
        torch.manual_seed(0)
        whole = model.terms(x)
        torch.manual_seed(0)
        part = model.terms(x, inside=inside)
        torch.manual_seed(0)
        none = model.terms(x, inside=torch.zeros_like(inside))
    assert torch.allclose(part.kl_u, whole.kl_u) and (none.re == 0).all() and (part.re < whole.re).all()


def test_coding_gives_the_model_back_as_it_was():
    """compress and decompress put the model in eval mode and channels-last while they code, and give back its
    mode and its kernels' layout: the noise a bound draws is laid out like the kernels' outputs, so a bound
    measured after coding is the one measured before."""
    _, model = tiny_model("downscale", "realnvp")
    model.train()
    images = digits(2)
    before = nelbo_bits(model.eval(), images)
    model.train()
    decompress(model, compress(model, images)[0])
    assert model.training and all(p.is_contiguous() for p in model.parameters())
    assert nelbo_bits(model.eval(), images) == before


def test_progressive_prefix_decodes_y_first():
    _, model = tiny_model("downscale,downscale", "standard")
    image = digits(1)
    data, _ = compress(model, image)
    dec = decompress(model, data)
    assert [s[0] for s in dec.stages] == ["y1", "y2", "x"]
    sizes = [s[1] for s in dec.stages]
    assert sizes[0] < sizes[1] < sizes[2] <= len(data)
    tile = Cover.of([image[0].pixels.shape], (1, 16, 16)).fill(to_tiles(image[0].pixels, (1, 16, 16), ""))
    levels = model.levels(torch.from_numpy(tile))  # of the tile as coded: its margin repeats the digit's edge
    for (name, _, tiles), truth in zip(dec.stages, levels, strict=True):
        assert np.array_equal(tiles, truth.numpy()), name
    # the bytes each stage says it needed are enough: a file cut there decodes that level exactly
    for k, (name, n_bytes, _) in enumerate(dec.stages[:2]):
        part = decompress(model, data[:n_bytes], prefix=True)
        assert np.array_equal(part.stages[k][2], levels[k].numpy()), name


@pytest.mark.slow
def test_trained_tiny_model_codes_at_its_nelbo(blob_npz, tmp_path):
    """After training, the posterior carries information, and bits back return it: the coded size of many
    images is within a few percent of the model's negative ELBO on them."""
    from conftest import blob_images, tiny_config

    from selfvae.runs.loading import load_run
    from selfvae.training.loop import train

    cfg = tiny_config(blob_npz, "downscale", prior="standard", steps=150)
    cfg.train.eval_every = cfg.train.checkpoint_every = 1000
    train(cfg, tmp_path, progress=False)
    _, model = load_run(tmp_path)
    x = blob_images(150, seed=5)
    images = [InputImage(f"b_{i:03d}", x[i]) for i in range(len(x))]
    data, rep = compress(model, images, group=32, threads=2)
    nelbo = nelbo_bits(model, images)
    payload_bits = 8 * (rep.file_bytes - rep.header_bytes - rep.initial_bytes)
    assert payload_bits / nelbo == pytest.approx(1.0, abs=0.04)
    assert all(np.array_equal(a, b.pixels) for a, b in zip(decompress(model, data).images, images, strict=True))
    # with 8 importance samples (BB-IS) the file costs the IW bound with S = 8, below the ELBO's
    torch.manual_seed(0)
    logw, _ = log_weights(model, torch.from_numpy(x).permute(0, 3, 1, 2).contiguous(), 8)
    iw8 = float(-iw_bound(logw).sum()) / math.log(2)
    data8, rep8 = compress(model, images, CodingParams(samples=8), group=32, threads=2)
    payload8 = 8 * (rep8.file_bytes - rep8.header_bytes - rep8.initial_bytes)
    assert iw8 < nelbo and payload8 < payload_bits
    assert payload8 / iw8 == pytest.approx(1.0, abs=0.01)
    assert all(np.array_equal(a, b.pixels) for a, b in zip(decompress(model, data8).images, images, strict=True))


@pytest.mark.parametrize(("transforms", "prior", "consistent"), [
    ("", "realnvp", False), ("", "mog", False), ("downscale", "standard", True), ("downscale,downscale", "mog", False),
])
def test_importance_samples_round_trip_and_length_is_information(transforms, prior, consistent):
    """BB-IS files: exact across thread counts, the coded length is the information content, the index ``j``
    has its part, the first group coded (the decoder's last) has one sample and later ones more, and a prefix
    still decodes the first group's ``y_1``."""
    from selfvae.codec.container import Container

    _, model = tiny_model(transforms, prior)
    model.set_consistent(consistent)
    images = digits(24)
    data, rep = compress(model, images, CodingParams(samples=4), group=8, threads=1)
    dec = decompress(model, data, threads=2)
    assert all(np.array_equal(a, b.pixels) for a, b in zip(dec.images, images, strict=True))
    coded = 8 * sum(rep.parts_bytes.values())
    assert abs(coded - rep.ideal_bits) <= 1e-3 * rep.ideal_bits + 64
    assert "j" in rep.parts_bytes
    header, _ = Container.parse_header(data, "f")
    assert header["samples"][-1] == 1 and header["samples"][0] == 4 and header["params"]["samples"] == 4
    if model.K:  # a prefix of the bytes the first stage needed decodes it
        name, n_bytes, y1 = dec.stages[0]
        part = decompress(model, data[:n_bytes], prefix=True)
        assert part.stages[0][0] == name == "y1" and np.array_equal(part.stages[0][2], y1)


def test_importance_samples_are_refused_for_lossy_files_and_out_of_range_in_a_header():
    from selfvae.codec.container import Container

    _, model = tiny_model("downscale", "standard")
    with pytest.raises(SelfVAEError, match="lossless files only"):
        compress(model, digits(2), CodingParams(samples=4), lossy=QuantisedZ(4))
    c = Container.from_bytes(compress(model, digits(3))[0], "f")
    c.header["samples"] = [300] * len(c.header["groups"])  # a well-formed file that asks for absurd work
    with pytest.raises(CodecError, match="importance samples"):
        decompress(model, c.to_bytes(), name="f.svae")


@pytest.mark.slow
def test_file_decodes_in_a_fresh_process_with_other_threads(tmp_path):
    cfg, model = tiny_model("downscale", "realnvp")
    cfg.save(tmp_path / "config.json")
    from selfvae.runs.checkpoint import REQUIRED, save_checkpoint

    state = {k: None for k in REQUIRED if k not in ("format", "version")}
    save_checkpoint(state | {"model": model.state_dict(), "ema": None}, tmp_path / "best.pt")
    from selfvae.runs.loading import load_run

    _, loaded = load_run(tmp_path)
    images = digits(20)
    np.savez(tmp_path / "in.npz", x_test=np.stack([np.pad(im.pixels, ((0, 12 - im.pixels.shape[0]), (0, 0),
                                                                      (0, 0))) for im in images]))
    run = [sys.executable, "-m", "selfvae.cli"]
    res = subprocess.run([*run, "compress", str(tmp_path), str(tmp_path / "in.npz"), "-o", str(tmp_path / "f.svae"),
                          "--threads", "1", "--json", "--model-only", "--nelbo"], capture_output=True, text=True,
                         check=True)
    report = json.loads(res.stdout)
    assert report["bits_per_dim"] > 0 and report["nelbo_bits_per_dim"] > 0 and report["n_images"] == 20
    subprocess.run([*run, "decompress", str(tmp_path / "f.svae"), "-o", str(tmp_path / "out"), "--threads", "2",
                    "--levels"], capture_output=True, text=True, check=True)
    from PIL import Image

    x = np.load(tmp_path / "in.npz")["x_test"]
    for i in range(20):
        got = np.asarray(Image.open(tmp_path / "out" / f"in_x_test_{i:02d}.png"))
        assert np.array_equal(got, x[i, ..., 0])
    assert (tmp_path / "out" / "stage_y1.png").is_file()
    # another model: one line naming the file, exit status 2, nothing written
    other_cfg, other = tiny_model("downscale", "realnvp", seed=5)
    (tmp_path / "other").mkdir()
    other_cfg.save(tmp_path / "other" / "config.json")
    save_checkpoint(state | {"model": other.state_dict(), "ema": None}, tmp_path / "other" / "best.pt")
    res = subprocess.run([*run, "decompress", str(tmp_path / "f.svae"), "-o", str(tmp_path / "out2"), "--model",
                          str(tmp_path / "other")], capture_output=True, text=True)
    assert res.returncode == 2 and "f.svae: was written with another model" in res.stderr
    assert "Traceback" not in res.stderr and not list((tmp_path / "out2").glob("*.png"))
    del loaded


def test_lossy_files_code_y_exactly_and_cost_more_with_finer_z():
    from selfvae.codec import QuantisedZ

    _, model = tiny_model("downscale,downscale", "mog")
    images = digits(5)
    sizes = []
    for p in (None, 0, 4):
        data, rep = compress(model, images, lossy=QuantisedZ(p))
        assert "x" not in rep.parts_bytes  # x itself is never coded
        dec = decompress(model, data)  # the decoder's reconstruction passes the encoder's checksum
        assert [im.shape for im in dec.images] == [im.pixels.shape for im in images]
        # the levels y_1, y_2 = d(x) come out exactly
        tiles = np.concatenate([to_tiles(im.pixels, (1, 16, 16), "") for im in images])
        truth = model.levels(torch.from_numpy(Cover.of([im.pixels.shape for im in images], (1, 16, 16)).fill(tiles)))
        for (name, _, got), want in zip(dec.stages[:2], truth[:2], strict=True):
            assert np.array_equal(got, want[: len(got)].numpy()), name
        sizes.append(len(data))
    assert sizes[0] < sizes[1] < sizes[2]
    with pytest.raises(Exception, match="selfVAE"):
        compress(tiny_model("", "standard")[1], images, lossy=QuantisedZ(2))


def test_lossy_files_need_no_initial_bits_and_are_never_larger_than_the_lossless_one():
    """Issue 36: a one-digit lossy file wrote 1089 bytes (728 of them initial bits) against 414 lossless, and its
    y was known only at the end of the file. Lossy files now code their first images with chosen latents, and a
    lossy file that would be larger than the lossless one is written lossless."""
    from selfvae.codec import QuantisedZ

    _, model = tiny_model("downscale", "mog")
    images = digits(3)
    lossless, _ = compress(model, images)
    for precision in (None, 0, 8):
        data, rep = compress(model, images, lossy=QuantisedZ(precision))
        assert len(data) <= len(lossless)
        if rep.lossless_instead:
            assert data == lossless
            continue
        assert rep.initial_bytes < 4 and rep.chosen_images >= 1  # no seeded words under the first image
        dec = decompress(model, data)
        assert dec.stages[0][0] == "y1" and dec.stages[0][1] < len(data)  # y first: before the file's end
    data, rep = compress(model, images, lossy=QuantisedZ(None))
    assert not rep.lossless_instead and len(data) < len(lossless)  # y alone is smaller than the exact images


def test_classical_codecs_lossless_exact_and_lossy_within_size():
    from selfvae.codec import classical

    images = [im.pixels for im in digits(3)]
    rgb = np.random.default_rng(0).integers(0, 256, (12, 10, 3), dtype=np.uint8)
    for name in classical.LOSSLESS:
        for x in [*images, rgb]:
            assert classical.lossless_size(name, x) > 0  # raises unless the round trip is exact
    for name in classical.LOSSY:
        big = classical.lossy_at_size(name, images[0], 10_000)
        small = classical.lossy_at_size(name, images[0], 1)  # impossible: the smallest file comes back
        assert big[0] <= 10_000 and small[0] <= big[0] and big[1].shape == images[0].shape
        assert classical.psnr(big[1], images[0]) >= classical.psnr(small[1], images[0])
    tiles = classical.mosaic(images[:1] * 5)
    h, w, _ = images[0].shape
    assert tiles.shape == (3 * h, 2 * w, 1) or tiles.shape == (2 * h, 3 * w, 1)
    assert np.array_equal(tiles[:h, :w], images[0]) and not tiles[-h:, -w:].any()  # the last cell padded black


def random_dlm(channels: int, shape: tuple[int, int, int], seed: int, n_mix: int = 4):
    """A logistic mixture with random parameters (``shape`` = batch, H, W) and a sample ``x`` from it."""
    from selfvae.distributions import DiscretizedLogisticMixture

    b, h, w = shape
    g = torch.Generator().manual_seed(seed)
    params = torch.randn(b, DiscretizedLogisticMixture.n_params(channels, n_mix), h, w, generator=g)
    dlm = DiscretizedLogisticMixture(params, channels, n_mix)
    torch.manual_seed(0)
    return dlm, dlm.sample()


@pytest.mark.parametrize("channels", [1, 3])
def test_bin_probs_are_the_likelihood_in_decoding_order(channels):
    """The coding tables are distributions, and the product over channels of the coded values' probabilities
    is the likelihood (up to log_prob's density approximation for very unlikely bins)."""
    dlm, x = random_dlm(channels, (3, 5, 6), seed=0)
    per_pixel = torch.zeros(3, 5, 6)
    smallest = torch.ones(3, 5, 6)
    for c in range(channels):
        probs = dlm.bin_probs(c, x)
        assert probs.shape == (3, 5, 6, 256) and (probs >= 0).all()
        assert torch.allclose(probs.sum(-1), torch.ones(3, 5, 6), atol=1e-5)
        chosen = probs.gather(-1, (x[:, c] * 255).round().long().unsqueeze(-1))[..., 0]
        per_pixel += torch.log(chosen)
        smallest = torch.minimum(smallest, chosen)
    exact = smallest > 1e-4  # where log_prob's density approximation for unlikely bins does not apply
    assert exact.float().mean() > 0.5
    assert torch.allclose(per_pixel[exact], dlm.log_prob_per_dim(x)[exact], atol=1e-3)


@pytest.mark.parametrize("channels", [1, 3])
def test_component_tables_and_posterior_make_up_the_mixture(channels):
    """Bits back on a pixel's mixture component codes exactly ``-log p(x)``: the component tables weighted by the
    components' weights given the earlier channels are the mixture's tables, and the posterior ``q(k | x)`` is
    ``pi_k P_k(x) / p(x)``."""
    dlm, x = random_dlm(channels, (2, 3, 5), seed=1)
    n_mix = dlm.n_mix
    values = (x * 255).round().long()
    weights = dlm.component_weights().double()  # [B, H, W, M]
    assert torch.allclose(weights.sum(-1), torch.ones(2, 3, 5, dtype=torch.float64))
    joint = weights.clone()  # pi_k prod_{c' < c} P_k(x_c'), then over all channels
    p_x = torch.ones(2, 3, 5, dtype=torch.float64)
    for c in range(channels):
        tables = torch.stack([dlm.component_bin_probs(c, torch.full((2, 3, 5), k), x) for k in range(n_mix)], -2)
        assert torch.allclose(tables.sum(-1), torch.ones(2, 3, 5, n_mix), atol=1e-5)
        mixed = (joint / joint.sum(-1, keepdim=True)).unsqueeze(-1) * tables.double()
        assert torch.allclose(mixed.sum(-2), dlm.bin_probs(c, x).double(), atol=1e-5)
        chosen = tables.gather(-1, values[:, c, :, :, None, None].expand(-1, -1, -1, n_mix, 1))[..., 0]
        joint = joint * chosen.double()
        p_x = p_x * dlm.bin_probs(c, x).gather(-1, values[:, c].unsqueeze(-1))[..., 0].double()
    posterior = dlm.component_posterior(x).double()
    assert torch.allclose(posterior.sum(-1), torch.ones(2, 3, 5, dtype=torch.float64), atol=1e-6)
    assert torch.allclose(posterior * p_x.unsqueeze(-1), joint, rtol=1e-3, atol=1e-7)


@pytest.mark.parametrize("channels", [1, 3])
def test_a_value_in_two_steps_has_its_one_table_probability(channels):
    """A sub-pixel coded as its run of 16 values, then its place in the run (files of version 11), gets the
    probability of its component's 256-way table: the run table times the place table of each run is that table,
    both are distributions, and far from the component's centre, where the 256-way table's float32 differences of
    the CDF round to 0, the two steps keep the logistic's tail mass."""
    from selfvae.distributions import VALUES_PER_RUN, DiscretizedLogisticMixture

    dlm, x = random_dlm(channels, (2, 3, 5), seed=2)
    k = torch.randint(0, dlm.n_mix, (2, 3, 5), generator=torch.Generator().manual_seed(3))
    for c in range(channels):
        runs = dlm.component_run_probs(c, k, x)
        assert runs.dtype == torch.float64 and runs.shape == (2, 3, 5, VALUES_PER_RUN)
        assert torch.allclose(runs.sum(-1), torch.ones(2, 3, 5, dtype=torch.float64))
        places = [dlm.component_run_probs(c, k, x, torch.full((2, 3, 5), r)) for r in range(256 // VALUES_PER_RUN)]
        assert all(torch.allclose(p.sum(-1), torch.ones(2, 3, 5, dtype=torch.float64)) for p in places)
        product = torch.cat([runs[..., r : r + 1] * p for r, p in enumerate(places)], -1)
        assert torch.allclose(product, dlm.component_bin_probs(c, k, x).double(), atol=1e-5)
    # one component centred at value 10 with a scale of 1.5 values: value 250 lies 160 scales above it
    m = 1
    params = torch.zeros(1, DiscretizedLogisticMixture.n_params(1, m), 1, 1)
    params[0, 1] = 10 * 2 / 255 - 1  # the location in [-1, 1] units
    params[0, 2] = math.log(1.5 * 2 / 255)  # the log scale
    far = DiscretizedLogisticMixture(params, 1, m)
    k = torch.zeros(1, 1, 1, dtype=torch.long)
    assert far.component_bin_probs(0, k)[0, 0, 0, 250] == 0  # the one table has lost it
    run, place = divmod(250, VALUES_PER_RUN)
    two_step = far.component_run_probs(0, k)[0, 0, 0, run] * far.component_run_probs(
        0, k, run=torch.full((1, 1, 1), run))[0, 0, 0, place]
    exact = math.exp(-(250 - 0.5 - 10) / 1.5) - math.exp(-(250 + 0.5 - 10) / 1.5)  # the logistic's tail, to 1e-70
    assert two_step > 0 and abs(float(two_step) / exact - 1) < 1e-6


def test_mixture_bits_back_costs_what_the_whole_mixture_costs():
    """Pushing an image level with bits back on its pixels' components adds the same information as coding
    under the whole mixture's tables (within 0.5%), and pops back to the same stack."""
    _, model = tiny_model("", "standard")
    x = torch.from_numpy(np.concatenate([to_tiles(im.pixels, model.shapes[-1], im.name) for im in digits(6)]))
    params = CodingParams()
    runner = ChunkRunner(params.chunk, 1)
    with coding_mode(model):
        coder = BitsBackCoder(model, params, runner)
        u = coder.latent_values(coder.grid.index(np.random.default_rng(0).normal(size=(6, *coder.latent_shape))))
        cost = {}
        for whole in (True, False):
            stack = Stack(np.random.default_rng(0).integers(0, 2**32, 8000, dtype=np.uint32))
            words = stack.words().copy()
            coder.push_level(stack, 0, x, u, None, whole_mixture=whole)
            cost[whole] = stack.ideal_bits
            assert torch.equal(coder.pop_level(stack, 0, u, None, whole_mixture=whole), x)
            assert np.array_equal(stack.words(), words)
    runner.close()
    assert abs(cost[False] - cost[True]) < 0.005 * cost[True], cost


def _as_version(data: bytes, version: int) -> bytes:
    """A file of the current format rewritten as the given older version (its fixed header cut to that
    version's, its variable part compressed without the preset dictionary of version 6)."""
    import struct
    import zlib

    from selfvae.codec import container

    (n,) = struct.unpack_from("<I", data, 5)
    head = data[9 : 9 + n]
    var = head[container._FIXED.size :]
    if var[0] & container._ZLIB:
        var = bytes([container._ZLIB]) + zlib.compress(container._inflate(var[1:], var[0]), 9)
    old = head[: container._FIXED_BY_VERSION[version].size] + var
    return b"".join([container.MAGIC, bytes([version]), struct.pack("<I", len(old)), old,
                     struct.pack("<I", zlib.crc32(old)), data[9 + n + 4 :]])


_BEFORE_10 = {"small_chunks": False, "edge_cover": False, "split_values": False}  # flags of later versions, off


@pytest.mark.parametrize(("version", "prior", "params"), [  # none before version 10 left a tile's margin out
    (2, "standard", CodingParams(mixture_bits_back=False, **_BEFORE_10)),  # no flags, no component bits back
    (3, "realnvp", CodingParams(flow_chunk=4, **_BEFORE_10)),  # no flow chunk (the chunk served), F.elu's ELU
    (4, "realnvp", CodingParams(chosen_first=False, **_BEFORE_10)),  # no importance samples
    (5, "mog", CodingParams(chosen_first=False, **_BEFORE_10)),  # no chosen latents
    (6, "realnvp", CodingParams(**_BEFORE_10)),  # small groups padded to whole chunks
    (9, "realnvp", CodingParams(edge_cover=False, split_values=False)),  # tiles padded with black, every pixel coded
    (10, "standard", CodingParams(split_values=False)),  # each sub-pixel one 256-way table
])
def test_older_file_versions_still_decode(version, prior, params):
    """Files of format versions 2 and 3 decode (their networks ran F.elu, their couplings at ``chunk``),
    version 4 (one sample an image throughout), version 5 (initial bits under the first image), version 6
    (every group at whole chunks), version 9 (the 12x12 blobs' 16x16 tiles padded with black and coded whole) and
    version 10 (a sub-pixel under its component coded as one 256-way table, not as its run of 16 values and its
    place in it)."""
    from contextlib import nullcontext

    from selfvae.nn.layers import exact_elu

    _, model = tiny_model("", prior)
    images = digits(3)
    with exact_elu() if version < 4 else nullcontext():  # what a version 2 or 3 writer computed
        data, _ = compress(model, images, params, group=2)
    old = _as_version(data, version)
    for got, im in zip(decompress(model, old).images, images, strict=True):
        assert np.array_equal(got, im.pixels)
    if version == 3:  # the same file read as format 4 runs the faster ELU: the probe tells them apart
        with pytest.raises(CodecError, match="probe"):
            decompress(model, data)


def test_folder_images_with_equal_names_in_subfolders_stay_apart(tmp_path):
    from PIL import Image

    from selfvae.codec.images import read_inputs, save_png

    rng = np.random.default_rng(0)
    for cls in ("cat", "dog"):
        (tmp_path / "in" / cls).mkdir(parents=True)
        Image.fromarray(rng.integers(0, 256, (9, 7), dtype=np.uint8)).save(tmp_path / "in" / cls / "0001.png")
    (tmp_path / "in" / ".hidden.png").write_bytes(b"not an image")  # skipped, as the data loaders skip it
    images = read_inputs([str(tmp_path / "in")])
    assert [im.name for im in images] == ["cat/0001", "dog/0001"]
    _, model = tiny_model("", "standard")
    dec = decompress(model, compress(model, images)[0])
    for name, pixels in zip(dec.names, dec.images, strict=True):
        save_png(pixels, tmp_path / "out" / f"{name}.png")
    for im in images:
        assert np.array_equal(np.asarray(Image.open(tmp_path / "out" / f"{im.name}.png"))[..., None], im.pixels)
    evil = compress(model, [InputImage("../evil", images[0].pixels)])[0]
    with pytest.raises(CodecError, match="not a path below a folder"):
        decompress(model, evil, name="evil.svae")


def test_a_large_pop_of_tail_values_is_no_underflow():
    """The coder's 24-bit probabilities make a pop take a few hundredths of a bit per value fewer than the
    ideal count when values sit in a Gaussian's tails (here 504 bits over 32768 values): no false alarm."""
    from selfvae.codec.ans import Grid, Stack

    rng = np.random.default_rng(0)
    grid, n = Grid(12), 32768
    mean, std = rng.normal(0, 1, n), np.full(n, grid.delta)
    k = grid.index(mean + rng.normal(0, 8 * grid.delta, n))  # 8 standard deviations wide: many tail values
    stack = Stack(rng.integers(0, 2**32, 2000, dtype=np.uint64).astype(np.uint32))
    before = stack.num_bits()
    stack.push_gaussian(k, mean, std, grid)
    taken = stack.num_bits() - before
    assert grid.info(k, *grid.scaled(mean, std)).sum() - taken > 64  # more than the old flat tolerance
    assert np.array_equal(stack.pop_gaussian(mean, std, grid), k)
    assert stack.num_bits() == before


def test_flow_prior_codes_u_at_its_density_and_gives_the_bits_back():
    """Local bits-back through a flow far from conformal (per-entry scales spread around 1 +- 0.3) costs
    ``-log2 p(u)`` on the latent grid: the old base-space coding with one scale per image cost ``D/2 (a/g - 1)``
    nats more. Popping ``u`` back leaves the stack as it was."""
    _, model = tiny_model("", "realnvp")
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for name, p in model.p_u.named_parameters():
            noise = torch.randn(p.shape, generator=g)
            p.copy_(1.0 + 0.3 * noise if name.endswith("scale") else 0.1 * noise)
    params = CodingParams()
    runner = ChunkRunner(params.chunk, 1)
    with coding_mode(model):
        coder = BitsBackCoder(model, params, runner)
        torch.manual_seed(0)
        with torch.inference_mode():
            u = coder.latent_values(coder.grid.index(model.p_u.sample(64).double().numpy()))
        stack = Stack(np.random.default_rng(0).integers(0, 2**32, 4000, dtype=np.uint32))
        words, ideal = stack.words().copy(), stack.ideal_bits
        coder.push_prior(stack, u)
        cost = stack.ideal_bits - ideal
        with torch.inference_mode():
            density = -float(model.p_u.log_prob(u).sum()) / math.log(2) - u.numel() * math.log2(coder.grid.delta)
        assert abs(cost - density) < 0.01 * u.numel(), (cost, density)
        assert abs(8 * 4 * stack.num_words() - 8 * 4 * len(words) - cost) < 0.01 * cost + 64
        assert torch.equal(coder.pop_prior(stack, len(u)), u)
        assert np.array_equal(stack.words(), words)
    runner.close()


def test_pool_threads_flush_subnormals_whenever_they_were_started():
    """Flushing subnormals is a per-thread CPU flag that a thread inherits when it starts: a pool thread started
    before the codec set it would compute other bits than the main thread."""
    tiny = torch.tensor([1e-39], dtype=torch.float32)
    torch.set_flush_denormal(False)
    runner = ChunkRunner(chunk=1, threads=2)
    try:
        runner.map(lambda t: t * 1.0, tiny.repeat(4, 1))  # starts the pool threads with subnormals kept
        out = runner.map(lambda t: t * 1.0, tiny.repeat(4, 1))
        assert (out == 0).all()
    finally:
        runner.close()
        torch.set_flush_denormal(False)  # the process default


def test_block_constraint_tables_chain_to_the_renormalised_likelihood():
    """Coding a block's pixels one by one from BlockConstraint's conditionals costs exactly -log p(level) +
    log P(d(level) = y), the renormalised likelihood of model.consistent; and every table is a distribution."""
    from selfvae.distributions import DiscretizedLogisticMixture
    from selfvae.renormalise import BlockConstraint
    from selfvae.transforms import build_transform

    g = torch.Generator().manual_seed(0)
    params = torch.cat([torch.randn(2, 3, 4, 4, generator=g, dtype=torch.float64),
                        0.8 * (2 * torch.rand(2, 3, 4, 4, generator=g, dtype=torch.float64) - 1),
                        -1.5 + 0.3 * torch.randn(2, 3, 4, 4, generator=g, dtype=torch.float64)], 1)
    dlm = DiscretizedLogisticMixture(params, 1, 3)
    probs = dlm.bin_probs(0).numpy()  # [2, 4, 4, 256]
    level = torch.randint(0, 256, (2, 1, 4, 4), generator=g, dtype=torch.uint8)
    d = build_transform("downscale")
    y = d(level)[:, 0]
    bc = BlockConstraint(probs, y.numpy(), 2)
    vals = level[:, 0].numpy().astype(np.int64).reshape(2, 2, 2, 2, 2).swapaxes(2, 3).reshape(2, 2, 2, 4)
    prefix = np.concatenate([np.zeros((2, 2, 2, 1), np.int64), np.cumsum(vals, -1)], -1)
    coded = np.zeros(2)
    for j in range(4):
        t = bc.table(j, prefix[..., j])
        assert np.allclose(t.sum(-1), 1.0) and (t >= 0).all()
        coded += np.log(np.take_along_axis(t, vals[..., j : j + 1], -1)[..., 0]).sum((1, 2))
    want = np.log(np.take_along_axis(probs, level[:, 0, ..., None].numpy().astype(np.int64), -1)[..., 0]).sum((1, 2))
    want = want - d.log_mass_consistent(dlm, y).numpy()
    assert np.allclose(coded, want, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("transforms", ["downscale", "downscale,downscale"])
def test_consistent_model_round_trips_and_codes_x_under_the_renormalised_likelihood(transforms):
    cfg, model = tiny_model(transforms, "realnvp")
    _, twin = tiny_model(transforms, "realnvp")  # the same seed: the same weights
    twin.set_consistent(True)
    images = digits(7)
    data, rep = compress(twin, images, group=4, threads=2)
    dec = decompress(twin, data, threads=1)
    assert all(np.array_equal(a, b.pixels) for a, b in zip(dec.images, images, strict=True))
    coded = 8 * sum(rep.parts_bytes.values())
    assert abs(coded - rep.ideal_bits) <= 1e-3 * rep.ideal_bits + 64
    # the renormalised x costs less than the plain one, each coded whole (a renormalised level always is: its
    # blocks' constraint ties the pixels outside the digits' 28x28 to those inside)
    _, plain = compress(model, images, CodingParams(edge_cover=False), group=4, threads=2)
    assert rep.parts_bytes["x"] < plain.parts_bytes["x"]
    with pytest.raises(CodecError):
        decompress(model, data)  # another model: the consistent flag is part of the model's identity


def test_model_id_follows_the_weights():
    """The id is remembered per model, but an in-place change of any weight (or loading others) changes it."""
    from selfvae.codec import model_id

    _, model = tiny_model("", "standard")
    first = model_id(model)
    assert model_id(model) == first
    with torch.no_grad():
        next(model.parameters()).add_(1e-3)
    changed = model_id(model)
    assert changed != first
    _, twin = tiny_model("", "standard")
    model.load_state_dict(twin.state_dict())
    assert model_id(model) == model_id(twin) == first


def test_flow_chunk_follows_the_group_size_and_round_trips_across_threads():
    """The couplings' chunk is a function of the group size alone (at most flow_chunk, two calls a group where
    it can, never below chunk), so a file written with one thread decodes exactly with two."""
    from selfvae.codec.container import Container

    _, model = tiny_model("", "realnvp")
    coder = BitsBackCoder(model, CodingParams(chunk=2, flow_chunk=8), ChunkRunner(2, 1))
    assert [coder.flow_chunk(n) for n in (1, 2, 4, 8, 15, 16, 27, 64)] == [2, 2, 2, 4, 4, 8, 8, 8]
    images = digits(40)
    params = CodingParams(chunk=2, flow_chunk=8)
    data, _ = compress(model, images, params, group=16, threads=1)
    header, _ = Container.parse_header(data, "f")
    assert max(header["groups"]) >= 8  # some group's couplings ran at a chunk other than 2
    for got, im in zip(decompress(model, data, threads=2).images, images, strict=True):
        assert np.array_equal(got, im.pixels)
    with pytest.raises(SelfVAEError, match="flow_chunk 0"):
        BitsBackCoder(model, CodingParams(flow_chunk=0), ChunkRunner(4, 1))


def test_small_groups_run_at_small_chunks_and_round_trip_across_threads():
    """With ``small_chunks`` a batch of n < 2 chunks runs at chunks of n // 2 (at least 1), a function of n
    alone: no zero-padded chunk for a group of one image, two calls for a group of two. The flag is in the
    header (from version 7 on), and a file written with one thread decodes exactly with two."""
    from selfvae.codec.container import Container

    seen: list[int] = []
    runner = ChunkRunner(4, 2, small=True)
    try:
        for n in (1, 2, 3, 4, 8, 9):
            seen.clear()
            runner.map(lambda t: seen.append(len(t)) or t * 2.0, torch.ones(n, 3))
            assert sorted(seen) == {1: [1], 2: [1, 1], 3: [1, 1, 1], 4: [2, 2], 8: [4, 4], 9: [4, 4, 4]}[n], n
    finally:
        runner.close()
    _, model = tiny_model("", "realnvp")
    images = digits(12)
    data, _ = compress(model, images, CodingParams(), group=8, threads=1)
    header, _ = Container.parse_header(data, "f")
    assert header["version"] >= 7 and header["params"]["small_chunks"] and min(header["groups"]) == 1
    for got, im in zip(decompress(model, data, threads=2).images, images, strict=True):
        assert np.array_equal(got, im.pixels)


def test_tiles_the_model_codes_worse_than_raw_are_sent_raw_so_a_file_never_expands(monkeypatch):
    monkeypatch.setattr(fallback, "RAW_AT", 0.97)
    _, model = tiny_model("downscale", "realnvp")
    rng = np.random.default_rng(5)
    noise = [InputImage(f"n{i}", rng.integers(0, 256, (16, 16, 1), dtype=np.uint8)) for i in range(3)]
    tiles = torch.from_numpy(np.stack([im.pixels.transpose(2, 0, 1) for im in noise]))
    assert fallback.raw_tiles(codec.tile_nelbo_bits(model, tiles), tiles.shape[1:]).all()
    data, rep = compress(model, noise)
    raw_bytes = 3 * 16 * 16
    assert rep.parts_bytes == {"raw": raw_bytes} and len(data) <= raw_bytes + rep.header_bytes + 8
    assert nelbo_bits(model, noise) / 8 > raw_bytes  # what the model alone would have cost
    back = decompress(model, data)
    assert all(np.array_equal(a.pixels, b) for a, b in zip(noise, back.images, strict=True))


@pytest.mark.parametrize("samples, channels", [(1, 1), (4, 3)])
def test_raw_and_model_coded_tiles_mix_in_one_file(monkeypatch, samples, channels):
    """Tiles sent without the model travel as one PNG of their mosaic where it is smaller than their raw values
    (these smooth blobs: yes), under the model-coded ones, in any pattern."""
    from selfvae.codec.container import Container

    _, model = tiny_model("downscale", "mog", channels=channels)
    images = digits(7, channels=channels)
    pattern = np.array([1, 0, 0, 1, 0, 1, 1], dtype=bool)  # raw first and last, runs of both
    monkeypatch.setattr(codec, "raw_tiles", lambda bits, shape: pattern[: len(bits)])
    data, rep = compress(model, images, CodingParams(samples=samples))
    header, _ = Container.parse_header(data, "f")
    assert header["fallback"]["codec"] == "png" and rep.parts_bytes["raw"] == header["fallback"]["bytes"]
    assert rep.parts_bytes["raw"] < 4 * channels * 16 * 16 and {"u", "x", "y1", "z1"} <= set(rep.parts_bytes)
    back = decompress(model, data)
    assert all(np.array_equal(a.pixels, b) for a, b in zip(images, back.images, strict=True))
    monkeypatch.setattr(codec, "raw_tiles", lambda bits, shape: np.zeros(len(bits), dtype=bool))
    all_model, _ = compress(model, images, CodingParams(samples=samples))
    assert decompress(model, all_model).images[3].shape == back.images[3].shape


def test_images_named_alike_all_come_back_and_outputs_are_checked_first(tmp_path, capsys):
    from PIL import Image

    from selfvae.cli import main

    rng = np.random.default_rng(3)
    pics = {}
    for folder, ext in (("a", "png"), ("b", "png"), ("b", "bmp")):
        (tmp_path / folder).mkdir(exist_ok=True)
        pics[f"{folder}/x.{ext}"] = rng.integers(0, 256, (28, 28), dtype=np.uint8)
        Image.fromarray(pics[f"{folder}/x.{ext}"]).save(tmp_path / folder / f"x.{ext}")
    files = [str(tmp_path / k) for k in pics]
    main(["compress", "mnist-vae", *files, "-o", str(tmp_path / "f.svae")])
    (tmp_path / "taken").write_text("a user's file")
    with pytest.raises(SystemExit):
        main(["decompress", str(tmp_path / "f.svae"), "-o", str(tmp_path / "taken")])
    assert "is a file" in capsys.readouterr().err and (tmp_path / "taken").read_text() == "a user's file"
    main(["decompress", str(tmp_path / "f.svae"), "-o", str(tmp_path / "out")])
    assert "3 images (2 renamed" in capsys.readouterr().out
    back = [np.asarray(Image.open(tmp_path / "out" / f"{n}.png")) for n in ("x", "x_2", "x_3")]
    assert all(np.array_equal(b, p) for b, p in zip(back, pics.values(), strict=True))


def test_a_colour_image_for_a_grey_model_is_refused_with_the_conversion_offered(tmp_path, capsys):
    from PIL import Image

    from selfvae.cli import main
    from selfvae.data.images import convert_channels

    rgb = np.random.default_rng(4).integers(0, 256, (20, 24, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(tmp_path / "c.png")
    with pytest.raises(SystemExit):
        main(["compress", "mnist-vae", str(tmp_path / "c.png"), "-o", str(tmp_path / "c.svae")])
    err = capsys.readouterr().err
    assert "c: is a colour image and this model codes grey images" in err and "--channels 1" in err
    assert not (tmp_path / "c.svae").exists()
    main(["compress", "mnist-vae", str(tmp_path / "c.png"), "--channels", "1", "-o", str(tmp_path / "c.svae")])
    main(["decompress", str(tmp_path / "c.svae"), "-o", str(tmp_path / "out")])
    back = np.asarray(Image.open(tmp_path / "out" / "c.png"))
    assert np.array_equal(back, convert_channels(rgb[None], 1)[0, ..., 0])  # the grey version, exactly


_CRAFTED = st.one_of(st.integers(-3, 3), st.integers(-(2**40), 2**40), st.just(10**8), st.none(), st.text(max_size=3),
                     st.lists(st.integers(-2, 300), max_size=4), st.just(1.5), st.just(float("nan")))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_crafted_headers_with_valid_checksums_are_refused_or_decoded(data):
    """Issue 37: a file whose header fields were rewritten (and its checksums made valid again) decodes, or is
    refused with a SelfVAEError naming the file: never a traceback, never gigabytes allocated first."""
    import copy
    import struct
    import zlib

    from selfvae.codec.container import Container

    model, raw = _crafting_base()
    c = Container.from_bytes(raw, "base")
    header = copy.deepcopy(c.header)
    field = data.draw(st.sampled_from(["groups", "samples", "chosen", "raw", "images", "tile", "fallback", "names",
                                       "payload_words", "crc", "group"]))
    if field in ("groups", "samples", "chosen", "raw"):
        header[field] = data.draw(st.lists(_CRAFTED, max_size=5))
    elif field == "images":
        header[field] = [data.draw(st.lists(_CRAFTED, min_size=3, max_size=3))]
    elif field == "names":
        header[field] = data.draw(st.one_of(st.just({"list": ["../x"]}), st.just({"stem": "", "width": -1}),
                                            st.just({"list": []})))
    elif field == "fallback":
        header[field] = data.draw(st.one_of(st.none(), st.just({"codec": "png", "bytes": 10**9, "cols": 10**8}),
                                            st.just({"codec": "raw"})))
    else:
        header[field] = data.draw(_CRAFTED)
    try:
        crafted = Container(header, c.words).to_bytes()
    except (struct.error, TypeError, ValueError, OverflowError, KeyError, AttributeError):
        return  # the writer cannot even pack it: no such file can exist
    if field == "payload_words":  # keep the payload checksum valid whatever the header claims
        crafted = crafted[:-4] + struct.pack("<I", zlib.crc32(crafted[len(crafted) - 4 - 4 * len(c.words):-4]))
    try:
        out = decompress(model, crafted, name="crafted.svae")
    except SelfVAEError as e:
        assert "crafted.svae" in str(e)
        return
    assert sum(im.size for im in out.images) < 10**7


@functools.lru_cache(maxsize=1)
def _crafting_base():
    _, model = tiny_model("downscale", "mog")
    data, _ = compress(model, digits(3), CodingParams(), group=2)
    return model, data


def test_a_file_is_never_larger_than_png_of_its_images():
    """Where a PNG of each image is smaller than the model's file (smooth gradients through an untrained model),
    the file holds those PNGs, flagged as tiles sent without the model, and is no more than a header and a few
    words larger than the PNGs alone, and decodes exactly; where the model wins (MNIST digits through mnist-vae),
    the model's file stays."""
    from selfvae.codec.container import Container

    _, model = tiny_model("downscale", "realnvp")
    ramp = np.add.outer(np.arange(32), np.arange(48)).astype(np.uint8)[:, :, None] * 2
    images = [InputImage("ramp", ramp), InputImage("flat", np.full((16, 16, 1), 77, np.uint8))]
    data, rep = codec.compress(model, images)
    model_file, model_rep = compress(model, images)  # png_instead=False
    assert rep.png_instead and not model_rep.png_instead and len(data) < len(model_file)
    header, _ = Container.parse_header(data, "f")
    pngs = [len(codec.classical_png(im.pixels)) for im in images]
    assert all(header["raw"]) and header["fallback"] == {"codec": "png", "images": pngs}
    assert set(rep.parts_bytes) == {"raw"} and len(data) <= sum(pngs) + rep.header_bytes + 16
    back = decompress(model, data)
    assert all(np.array_equal(a.pixels, b) for a, b in zip(images, back.images, strict=True))
    from conftest import SHARED_DATA

    from selfvae.runs.loading import load_run

    _, trained = load_run("mnist-vae")
    real = [InputImage(f"d{i}", d) for i, d in enumerate(np.load(SHARED_DATA / "mnist.npz")["x_test"][:40])]
    kept, kept_rep = codec.compress(trained, real)
    png_alone = sum(len(codec.classical_png(d.pixels)) for d in real)
    assert not kept_rep.png_instead and len(kept) < png_alone  # the trained model's file beats PNG: it stays


def test_the_prior_codings_are_found_by_the_priors_class():
    """A prior is coded by the coding registered for its class (or a base class); one without is refused naming
    where a coding goes."""
    from selfvae.codec.prior_coding import PRIOR_CODINGS, FlowCoding, coding_class
    from selfvae.priors import PRIORS, Prior, RealNVP

    assert set(PRIOR_CODINGS) == set(PRIORS.values())  # every registered prior can be coded

    class Wider(RealNVP):
        pass

    class Unknown(Prior):
        pass

    assert coding_class(Wider((2, 4, 4), mid_channels=8, num_blocks=1, num_scales=1)) is FlowCoding
    with pytest.raises(SelfVAEError, match="cannot code the prior Unknown .no coding registered for it in"):
        coding_class(Unknown((2, 4, 4)))


@pytest.mark.parametrize("transforms,prior", [("", "realnvp"), ("downscale", "standard")])
def test_larger_tiles_round_trip_and_the_file_names_their_size(transforms, prior):
    """``tile``: the model codes tiles larger than its frame (selfvae.models.sizes.at_size); the decoder reads the
    size from the header and rebuilds the same model."""
    _, model = tiny_model(transforms, prior, channels=3)
    rng = np.random.default_rng(3)
    images = [InputImage("a", rng.integers(0, 256, (40, 23, 3), dtype=np.uint8)), digits(1, channels=3)[0]]
    data, rep = compress(model, images, tile=32, group=8)
    assert codec.Container.from_bytes(data, "f").header["tile"] == [3, 32, 32]
    dec = decompress(model, data)
    assert all(np.array_equal(a, b.pixels) for a, b in zip(dec.images, images, strict=True))
    plain = compress(model, images, group=8)[0]
    assert decompress(model, plain).images[0].shape == (40, 23, 3) and plain != data


def test_tiles_the_model_cannot_take_are_refused():
    _, model = tiny_model("", "realnvp")
    with pytest.raises(SelfVAEError, match="tile 24: must be a multiple of the model's frame 16x16"):
        compress(model, digits(1), tile=24)
    _, mog = tiny_model("", "mog")
    with pytest.raises(SelfVAEError, match="tile 32: a model with the 'mog' prior runs at its own frame only"):
        compress(mog, digits(1), tile=32)


def test_a_tracked_stack_splits_each_push_and_pop_among_the_images():
    stack = Stack()
    stack.push_uniform(np.arange(10), 1024)  # before tracking: not counted
    probs = np.array([[[0.5, 0.5], [0.9, 0.1]], [[0.25, 0.75], [0.5, 0.5]], [[0.125, 0.875], [0.5, 0.5]]])
    stack.track(3)
    stack.push_categorical(np.array([[0, 1], [0, 0], [0, 1]]), probs)
    popped = stack.pop_uniform(4, (3, 1))
    rows = stack.untrack()
    expect = -np.log2([0.5 * 0.1, 0.25 * 0.5, 0.125 * 0.5]) - 2.0
    assert np.allclose(rows, expect) and stack.rows is None and popped.shape == (3, 1)
    stack.track(2)
    with pytest.raises(SelfVAEError, match="3 values do not split among the 2 images"):
        stack.push_uniform(np.arange(3), 8)


def test_which_tiles_go_raw_is_decided_on_what_the_coder_spent(monkeypatch):
    """Past the last MEASURED_FIRST tiles, a tile's cost for the raw decision is what the coder spent on it, net
    of its bits back: about its negative ELBO, without a pass of the model of its own."""
    _, model = tiny_model("downscale", "realnvp")
    images = digits(20)
    tiles = torch.from_numpy(np.concatenate([to_tiles(im.pixels, (1, 16, 16), "t") for im in images]))
    real = codec.tile_nelbo_bits
    nelbo = real(model, tiles)
    seen, passes = [], []
    monkeypatch.setattr(codec, "raw_tiles", lambda bits, shape: (seen.append(bits.copy()),
                                                                 np.zeros(len(bits), dtype=bool))[1])
    monkeypatch.setattr(codec, "tile_nelbo_bits", lambda m, t, **kw: (passes.append(len(t)), real(m, t, **kw))[1])
    data, rep = compress(model, images)
    assert passes == [codec.MEASURED_FIRST] and [len(b) for b in seen] == [codec.MEASURED_FIRST, 20]
    costs = seen[1]
    assert np.allclose(costs, nelbo, rtol=0.1)  # the same quantity, another posterior sample
    assert costs[-1] == seen[0][-1]  # the encoder's first tile, coded with chosen latents: its nELBO
    assert rep.nelbo_bits is None and compress(model, images, nelbo=True)[1].nelbo_bits > 0
    assert np.array_equal(decompress(model, data).images[3], images[3].pixels)
