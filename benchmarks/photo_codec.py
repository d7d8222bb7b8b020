"""Real photographs through the lossless codec: bits/dim of our file beside PNG, WebP, JPEG-XL and AVIF lossless,
the share of tiles the model codes and the share sent raw, and megapixels/s encode and decode.

Not a test: ``python benchmarks/photo_codec.py MODEL [MODEL ...] [--photos FILE ...] [--split test] [--size N]
[--threads 2] [--tile N]``. By default the photographs are the ones installed with our dependencies: matplotlib's
``grace_hopper.jpg`` and, with the ``[test]`` extra, gradio's ``cheetah.jpg`` and ``tower.jpg``; ``--split test``
takes the held-out photographs of the ``photos`` data set instead (whole, downscaled as it serves them; Debian's
wallpaper packages, ``docs/DATA.md``); a grey model gets them converted to grey.
``--size N`` centre-crops each to N x N first (the whole photograph by default). ``--megapixels 24`` codes one
photograph of that size instead (a grid of the data set's photographs): speed and peak memory.

Last, per model, the ceiling that the model's arithmetic sets: the FLOPs of one forward pass over a tile (the
negative ELBO: encoder, prior and decoder, by ``torch.utils.flop_counter``), the CPU time it takes at this
thread count, and the megapixels/s that one such pass per tile would allow on as many cores (coding needs at
least one; the encoder runs two: one to choose model or fallback per tile, one to code).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from selfvae.codec.classical import LOSSLESS, lossless_size
from selfvae.codec.fallback import raw_tiles
from selfvae.codec.files import at_tile, compress, decompress, tile_nelbo_bits
from selfvae.codec.images import InputImage, to_tiles
from selfvae.runs.loading import load_run


def default_photos() -> list[Path]:
    import matplotlib

    found = [Path(matplotlib.__file__).parent / "mpl-data" / "sample_data" / "grace_hopper.jpg"]
    try:
        import gradio

        found += [Path(gradio.__file__).parent / "media_assets" / "images" / n for n in ("cheetah.jpg", "tower.jpg")]
    except ImportError:
        pass
    return [p for p in found if p.is_file()]


def load_photo(path: Path, channels: int, size: int | None) -> np.ndarray:
    im = Image.open(path).convert("L" if channels == 1 else "RGB")
    if size:
        w, h = im.size
        s = min(size, w, h)
        im = im.crop(((w - s) // 2, (h - s) // 2, (w - s) // 2 + s, (h - s) // 2 + s))
    a = np.asarray(im)
    return a[..., None] if a.ndim == 2 else a


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("models", nargs="+")
    ap.add_argument("--photos", nargs="+", type=Path)
    ap.add_argument("--size", type=int)
    ap.add_argument("--split", choices=("train", "val", "test"),
                    help="the photos data set's photographs of this split (whole), beside or instead of --photos")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--tile", type=int, help="tiles of N x N (a multiple of the model's frame; default the frame)")
    ap.add_argument("--megapixels", type=float,
                    help="instead: one photograph of this many megapixels (a grid of the photos data set's "
                         "photographs), coded and decoded once: megapixels/s and the process's peak memory")
    a = ap.parse_args()
    if a.megapixels:
        large(a.models[0], a.megapixels, a.threads, a.tile)
        return
    photos = a.photos or ([] if a.split else default_photos())
    held_out = {}
    if a.split:  # the photos data set's held-out photographs, as arrays
        from selfvae.data.photos import whole_photographs

        held_out = {Path(name): x for name, x in whole_photographs(Path("/usr/share"), a.split)}
        photos = [*photos, *held_out]
    print(f"{'model':<20} {'photo':<18} {'pixels':>11} {'ours':>6} {'model':>6} {'raw tiles':>9} {'enc MP/s':>8} "
          f"{'dec MP/s':>8} " + " ".join(f"{k:>7}" for k in LOSSLESS))
    fallbacks = 0
    for name in a.models:
        _, model = load_run(name)
        c = model.shapes[-1][0]
        for path in photos:
            x = held_out[path] if path in held_out else load_photo(path, c, a.size)
            if path in held_out and c == 1:
                x = np.asarray(Image.fromarray(x).convert("L"))[..., None]
            im = InputImage(path.name, x)
            tiled = at_tile(model, a.tile)
            tiles = to_tiles(x, tiled.shapes[-1], path.name)
            share = float(raw_tiles(tile_nelbo_bits(tiled, torch.from_numpy(tiles)), tiled.shapes[-1]).mean())
            tic = time.perf_counter()
            data, rep = compress(model, [im], threads=a.threads, tile=a.tile)
            enc = time.perf_counter() - tic
            fallbacks += rep.png_instead  # the file is PNG: not the model's win
            own = (compress(model, [im], threads=a.threads, png_instead=False, tile=a.tile)[0] if rep.png_instead
                   else data)
            tic = time.perf_counter()
            back = decompress(model, data, threads=a.threads)
            dec = time.perf_counter() - tic
            assert np.array_equal(back.images[0], x), f"{path}: the round trip is not exact"
            mp, dims = x.shape[0] * x.shape[1] / 1e6, x.size
            classical = " ".join(f"{8 * lossless_size(k, x) / dims:>7.3f}" for k in LOSSLESS)
            ours = f"{8 * len(data) / dims:.3f}" + ("P" if rep.png_instead else " ")
            print(f"{name:<20} {path.name:<18} {f'{x.shape[1]}x{x.shape[0]}x{c}':>11} {ours:>6} "
                  f"{8 * len(own) / dims:>6.3f} {share:>9.1%} {mp / enc:>8.3f} {mp / dec:>8.3f} {classical}",
                  flush=True)
        print(f"{name}: {fallbacks} of {len(photos)} file(s) hold PNG instead of the model's coding (marked P; "
              "'model' is the model's own file, --model-only)")
        fallbacks = 0
        gflop, cpu = forward_cost(model, a.threads)
        pixels = model.shapes[-1][1] * model.shapes[-1][2]
        print(f"{name}: one forward pass {gflop:.3f} GFLOP a tile, {1e3 * cpu:.1f} ms of CPU a tile on {a.threads} "
              f"thread(s) ({gflop / cpu:.1f} GFLOP/s a core): at most {a.threads * pixels / cpu / 1e6:.3f} MP/s at a "
              f"pass a tile")


def large(name: str, megapixels: float, threads: int, tile: int | None) -> None:
    """Code one ``megapixels`` photograph (a camera's 24 MP, say), a stand-in made of the ``photos`` data set's
    photographs (all splits, landscape ones), 384x576 crops of them laid in a grid, each row another run through
    them: a photograph's statistics everywhere and no repetition within deflate's reach, so PNG gains nothing a
    camera photograph would not give it. Prints MP/s each way and the peak resident memory of the process
    (``ru_maxrss``) after loading, after encoding and after decoding."""
    import resource

    from selfvae.data.photos import whole_photographs

    def peak_mb() -> float:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    _, model = load_run(name)
    ch, cw = 384, 576
    cells = [x[:ch, :cw] for part in ("train", "val", "test") for _, x in whole_photographs(Path("/usr/share"), part)
             if x.shape[0] >= ch and x.shape[1] >= cw]
    cols = max(1, round((megapixels * 1e6 * 4 / 3) ** 0.5 / cw))
    rows = max(1, round(megapixels * 1e6 / (cols * ch * cw)))
    x = np.ascontiguousarray(np.concatenate([np.concatenate([cells[(r * cols + c) % len(cells)] for c in range(cols)],
                                                            axis=1) for r in range(rows)], axis=0))
    h, w = x.shape[:2]
    loaded = peak_mb()
    tic = time.perf_counter()
    data, rep = compress(model, [InputImage("large", x)], threads=threads, progress=True, tile=tile)
    enc, after_enc = time.perf_counter() - tic, peak_mb()
    tic = time.perf_counter()
    back = decompress(model, data, threads=threads, progress=True)
    dec = time.perf_counter() - tic
    assert np.array_equal(back.images[0], x), "the round trip is not exact"
    mp = h * w / 1e6
    print(f"{name}: {w}x{h} ({mp:.1f} MP, {len(cells)} photographs) on {threads} thread(s): "
          f"{8 * len(data) / x.size:.3f} bits/dim{' (PNG instead)' if rep.png_instead else ''} (PNG "
          f"{8 * lossless_size('png', x) / x.size:.3f}), encode {mp / enc:.3f} MP/s, decode {mp / dec:.3f} MP/s; peak "
          f"memory {loaded:.0f} MB loaded, {after_enc:.0f} MB after encoding, {peak_mb():.0f} MB after decoding "
          f"(the image itself {x.nbytes / 2**20:.0f} MB)")


def forward_cost(model: torch.nn.Module, threads: int, n: int = 16, repeats: int = 3) -> tuple[float, float]:
    """GFLOP of one forward pass (the negative ELBO) per tile, and the CPU seconds it takes per tile on ``threads``
    threads (CPU time, all threads: what it costs even where other work shares the cores; wall time at best
    divides it by ``threads``)."""
    from torch.utils.flop_counter import FlopCounterMode

    x = torch.randint(0, 256, (n, *model.shapes[-1]), dtype=torch.uint8)
    torch.set_num_threads(threads)
    with torch.no_grad():
        counter = FlopCounterMode(display=False)
        with counter:
            model.terms(x)
        model.terms(x)  # warm-up
        tic = time.process_time()
        for _ in range(repeats):
            model.terms(x)
    return counter.get_total_flops() / n / 1e9, (time.process_time() - tic) / (n * repeats)


if __name__ == "__main__":
    main()
