"""Compressed files: images in, one file out, and back (:func:`compress`, :func:`decompress`).

``compress(model, images)`` codes any number of images into one file; ``decompress(model, data)`` gives
them back bit-exactly, and ``on_level`` sees ``y_1, ..., x`` as each becomes known (a prefix of the file
decodes the coarse levels first). The coding itself is in :mod:`selfvae.codec.bitsback`, the format in
:mod:`selfvae.codec.container` (and ``docs/CODEC.md``), determinism in :mod:`selfvae.codec.compute`.
"""

from __future__ import annotations

import hashlib
import json
import math
import weakref
import zlib
from collections import defaultdict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field, replace

import numpy as np
import torch
from tqdm import tqdm

from selfvae.codec.ans import Stack, StackUnderflow
from selfvae.codec.bitsback import BitsBackCoder, CodingParams, growth_hook
from selfvae.codec.chosen import (
    SEARCH_BATCH,
    SEARCH_MAX_TILES,
    SEARCH_STEPS,
    ChosenCoder,
    encode_cheapest,
    search_keys,
)
from selfvae.codec.classical import png as classical_png
from selfvae.codec.compute import ChunkRunner, coding_mode, digest
from selfvae.codec.container import CodecError, Container
from selfvae.codec.fallback import (
    fallback_bytes,
    fallback_png,
    mosaic_cols,
    pop_fallback,
    pop_image_pngs,
    push_fallback,
    push_image_pngs,
    raw_tiles,
)
from selfvae.codec.images import Cover, InputImage, cut_images, from_tiles
from selfvae.codec.importance import ImportanceCoder
from selfvae.codec.lossy import QuantisedZ
from selfvae.errors import SelfVAEError
from selfvae.models.selfvae import SelfVAE
from selfvae.models.sizes import at_size
from selfvae.nn.context import GROUPS, group_of

__all__ = ["CodingParams", "CodecError", "CompressReport", "InputImage", "QuantisedZ", "compress", "decompress",
           "model_id", "nelbo_bits", "read_model_hint"]

_SEED = 0x5E1F  # initial bits are pseudo-random words from this seed (files are reproducible)
# The encoder's first tiles are coded with chosen latents (no bits back to measure their cost by): the negative
# ELBO of this many last tiles is measured before coding (:func:`_lossless`), and of every tile in a smaller file
MEASURED_FIRST = 8
# After a chosen tile, bits back is tried once the stack holds this share of the estimate of what one tile's pops
# take (BitsBackCoder.initial_words: the posterior's entropy and the flow's fine-grid places, 7600 bits a photo-vae
# tile, of which the pushes in between fund half: its pops dug 3750-4800). A photograph's first tile coded is its
# last, often a sliver (LadyBird's is 6 pixels wide): its 5900 bits fund the next tile, which with the whole
# estimate as the gate went chosen too, 12000 bits above its negative ELBO (0.017 bits/dim of the photograph). A try
# that runs short costs the encoder one tile's work and nothing in the file (underflow is caught; chosen instead)
TRY_BITS_BACK_AT = 0.5


_IDS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # model -> (its tensors' versions, id)
# ModelConfig fields added since files first named their model, left out of the id at their default value, so a
# model's files written before a field existed still name it
_LATER_FIELDS = {"z_nets": None}


def model_id(model: SelfVAE) -> str:
    """Hex SHA-256 (first 16 bytes) of the model's config and every weight: which model a file needs.

    Remembered per model while no tensor of it changes (PyTorch counts in-place changes in ``_version``):
    hashing the weights is most of a one-image file's time."""
    state = sorted(model.state_dict().items())
    cfg = {k: v for k, v in asdict(model.cfg).items() if k not in _LATER_FIELDS or v != _LATER_FIELDS[k]}
    key = (json.dumps(cfg, sort_keys=True, default=str),
           tuple((name, t.data_ptr(), t._version) for name, t in state))
    cached = _IDS.get(model)
    if cached is not None and cached[0] == key:
        return cached[1]
    h = hashlib.sha256(key[0].encode())
    for name, t in state:
        h.update(name.encode())
        h.update(t.detach().cpu().contiguous().numpy().tobytes())
    _IDS[model] = (key, h.hexdigest()[:32])
    return _IDS[model][1]


def on_the_cpu(model: SelfVAE) -> None:
    """Refuse a model that is not on the CPU: a file decodes only where the model computes exactly what the
    writer's did (:func:`probe`), and GPU kernels differ from run to run and card to card, so the codec computes on
    the CPU, for files written anywhere and read anywhere."""
    where = {p.device.type for p in model.parameters()}
    if where != {"cpu"}:
        raise CodecError(f"the model is on {', '.join(sorted(where))}: the codec computes on the CPU, where its "
                         "files decode on any machine; code with model.cpu() (a model trained on a GPU codes there)")


def probe(coder: BitsBackCoder) -> str:
    """Hash of what this machine computes for the model on a fixed input (posterior, likelihood tables, the
    pixels' component posterior, prior): two machines that agree on it decode each other's files."""
    shape = coder.m.shapes[-1]
    x = torch.from_numpy(np.random.default_rng(1234).integers(0, 256, (1, *shape), dtype=np.uint8))
    level = coder.m.levels(x)[0]
    mu, std = coder.q(0, level)
    u = coder.latent_values(coder.grid.index(mu))
    params = coder.likelihood_params(0, u, None)
    parts = [mu, std, coder.channel_probs(0, params, level, 0)]
    if coder.p.mixture_bits_back:  # the component posterior and one component's table
        k = coder.component_probs(0, params, level)
        top = k.argmax(-1)
        parts += [k, coder.channel_probs(0, params, level, 0, top)]
        if coder.p.split_values:  # its two 16-way tables (float64 tails)
            runs = coder.run_probs(0, params, level, 0, top)
            parts += [runs, coder.run_probs(0, params, level, 0, top, runs.argmax(-1))]
    parts += coder.prior_coding.probe(u)
    if coder.m.cfg.consistent and coder.m.K:  # a renormalised level's first conditional table (numpy FFT)
        levels = coder.m.levels(x)
        z = coder.latent_values(coder.grid.index(coder.q(1, levels[1])[0]))
        params = coder.likelihood_params(1, z, levels[0])
        constraint = coder.constraint_of(1, params, levels[0])
        if constraint is not None:
            parts.append(constraint.table(0, np.zeros(constraint.lo.shape, np.int64)))
        else:  # x with a sub-pixel context, each group on its windows: its last group's first table
            g = GROUPS - 1
            window = coder.group_window(g, levels[1], levels[0])
            parts.append(coder.channel_probs(1, coder.group_params(g, params, levels[1], levels[0], 1),
                                             group_of(levels[1], g), 0, None, window))
    return digest(parts).hex()


@dataclass
class CompressReport:
    """What a file spends, in bytes per part and in bits per dimension of the images given."""

    n_images: int
    dims: int  # sum over images of H * W * C as given (784 per MNIST digit)
    file_bytes: int
    header_bytes: int
    initial_bytes: int  # initial bits left on the stack (the first image's cost of having nothing to borrow)
    parts_bytes: dict[str, float] = field(default_factory=dict)
    chosen_images: int = 0  # the first tiles (images), coded with chosen latents and no bits back (codec.chosen)
    chosen_bytes: float = 0.0  # what they took (in parts_bytes too)
    ideal_bits: float = 0.0  # sum of -log2 of the coded probabilities (pushes minus pops)
    lossless_instead: bool = False  # a lossy file was asked for, and the lossless one was not larger
    png_instead: bool = False  # the model's file would have been larger than PNG: every tile went as one PNG
    nelbo_bits: float | None = None  # the model's negative ELBO of the tiles (:func:`tile_nelbo_bits`), summed, if
    # measured (compress(nelbo=True), lossy and importance-sampled files)

    @property
    def bits_per_dim(self) -> float:
        return 8 * self.file_bytes / self.dims

    def to_dict(self) -> dict:
        d = asdict(self)
        d["bits_per_dim"] = self.bits_per_dim
        return d


LOSSLESS_CHECK = 0.9  # a lossy file above this share of the images' negative ELBO is compared with the lossless one


def compress(
    model: SelfVAE,
    images: list[InputImage],
    params: CodingParams | None = None,
    group: int = 64,
    threads: int = 1,
    progress: bool = False,
    model_hint: str = "",
    lossy: QuantisedZ | None = None,
    search_steps: int | None = None,
    png_instead: bool = True,
    tile: int | None = None,
    nelbo: bool = False,
) -> tuple[bytes, CompressReport]:
    """Code ``images`` into one file's bytes; the report splits the size into parts (see :func:`_compress`).

    ``tile``: the side of the square tiles images are cut into, a multiple of the model's frame (its own side
    by default); the model runs on them through :func:`selfvae.models.sizes.at_size`, so a
    photograph is coded in tiles larger than the crops the model learnt from, seeing more of its neighbourhood
    (``experiments/whole_image.py``). ``group`` counts tiles of the model's own frame: a group of larger tiles
    holds as many pixels.

    A lossless file is never larger than one PNG of its tiles and its header: where that PNG is smaller than the
    model's file, the file holds it instead (``report.png_instead``; :func:`_no_larger_than_png`).
    ``png_instead`` False keeps the model's file whatever its size (to measure the model's coding).

    A lossy file is never larger than the lossless one: where it comes out above :data:`LOSSLESS_CHECK` of the
    images' negative ELBO (a file of few images, whose first ones carry chosen latents on a grid), the lossless
    file is coded too, and written instead when it is not larger (``report.lossless_instead``).

    Which tiles go without the model (:func:`raw_tiles`) is decided on what coding them cost
    (:func:`_lossless`), with no pass of the model of its own; ``nelbo`` measures the tiles' negative ELBO too
    (one more pass: ``report.nelbo_bits``), as lossy files and importance-sampled ones always do.
    """
    on_the_cpu(model)
    params = params or CodingParams()
    if search_steps is not None and search_steps < 0:
        raise SelfVAEError(f"search_steps {search_steps}: must be >= 0")
    if lossy is not None and params.samples > 1:
        raise SelfVAEError("importance samples (BB-IS) code lossless files only: give samples = 1 with lossy coding")
    if lossy is not None and model.K < 1:
        raise SelfVAEError("lossy coding sends y = d(x) exactly: it needs a selfVAE (K >= 1), not a plain VAE")
    ident = model_id(model)
    frame = math.prod(model.shapes[-1][1:])
    model = at_tile(model, tile)
    group = max(1, group * frame // math.prod(model.shapes[-1][1:]))  # as many pixels a group as at the frame
    if model.cfg.consistent:  # its renormalised x is coded whole, margins too: black ones cost it least
        params = replace(params, edge_cover=False)
    tiles, cover = cut_images(images, model.shapes[-1], params.edge_cover)
    tiles = torch.from_numpy(tiles)
    tile_bits = None
    if nelbo or lossy is not None or params.samples > 1:
        tile_bits = tile_nelbo_bits(model, tiles, batch=group, progress=progress, cover=cover)
    args = (model, images, tiles, params, group, threads, progress, model_hint, ident, cover)
    if lossy is None:
        if not png_instead:
            return _lossless(args, tile_bits, search_steps)
        with ThreadPoolExecutor(1) as beside:  # zlib lets go of the GIL: on a second thread the PNGs cost no time
            pngs = beside.submit(lambda: [classical_png(im.pixels) for im in images]) if threads > 1 else None
            data, report = _lossless(args, tile_bits, search_steps)
            return _no_larger_than_png(data, report, args, pngs.result() if pngs else None)
    assert tile_bits is not None
    data, report, _ = _compress(*args, np.zeros(len(tiles), dtype=bool), lossy, search_steps)
    report.nelbo_bits = float(tile_bits.sum())
    if len(data) <= LOSSLESS_CHECK * report.nelbo_bits / 8:
        return data, report
    exact, exact_report = _lossless(args, tile_bits, search_steps)
    if len(exact) > len(data):
        return data, report
    exact_report.lossless_instead = True
    return exact, exact_report


def _lossless(args: tuple, tile_bits: np.ndarray | None, search_steps: int | None) -> tuple[bytes, CompressReport]:
    """The lossless file of :func:`_compress`'s ``args``, its tiles sent without the model where :func:`raw_tiles`
    says so of what each costs: their negative ELBO ``tile_bits`` where measured (then in ``report.nelbo_bits``);
    else, for a file of more than :data:`MEASURED_FIRST` tiles whose last ones the model codes well, what coding
    them cost (:func:`_decided_by_coding`); else every tile's negative ELBO, measured here."""
    model, tiles, cover = args[0], args[2], args[9]
    shape, n = model.shapes[-1], len(tiles)
    if tile_bits is None:
        first = max(n - MEASURED_FIRST, 0)
        last = tile_nelbo_bits(model, tiles[first:], cover=cover[first:])
        if len(last) < n and not raw_tiles(last, shape).any():
            return _decided_by_coding(args, last, search_steps)
        tile_bits = last if len(last) == n else tile_nelbo_bits(model, tiles, cover=cover)
    data, report, _ = _compress(*args, raw_tiles(tile_bits, shape), None, search_steps)
    report.nelbo_bits = float(tile_bits.sum())
    return data, report


def _decided_by_coding(args: tuple, last: np.ndarray, search_steps: int | None) -> tuple[bytes, CompressReport]:
    """Code every tile with the model, and take what each cost the coder (net of its bits back) as its cost; the
    negative ELBO ``last`` of the last tiles for those the encoder coded first, with chosen latents (no bits back
    to measure them by). Where some tile cost too much, a second pass sends it raw. So a file of tiles the model
    codes well takes one pass of the coder, and no pass of the model of its own."""
    model, tiles, cover = args[0], args[2], args[9]
    n = len(tiles)
    data, report, costs = _compress(*args, np.zeros(n, dtype=bool), None, search_steps)
    tail = costs[n - len(last) :]  # a view: filled in place
    tail[np.isnan(tail)] = last[np.isnan(tail)]
    unmeasured = np.isnan(costs)
    if unmeasured.any():  # chosen beyond the last few (all but never): their negative ELBO
        costs[unmeasured] = tile_nelbo_bits(model, tiles[torch.from_numpy(unmeasured)],
                                            cover=cover[unmeasured])
    raw = raw_tiles(costs, model.shapes[-1])
    return _compress(*args, raw, None, search_steps)[:2] if raw.any() else (data, report)


def at_tile(model: SelfVAE, tile: int | None) -> SelfVAE:
    """The model that codes tiles of side ``tile``: ``model`` itself at its own frame (or ``tile`` None)."""
    _, fh, fw = model.shapes[-1]
    if tile is None or (tile, tile) == (fh, fw):
        return model
    if tile < 1 or tile % fh or tile % fw:
        raise SelfVAEError(f"tile {tile}: must be a multiple of the model's frame {fh}x{fw}")
    try:
        return at_size(model, tile, tile)
    except SelfVAEError as e:
        raise SelfVAEError(f"tile {tile}: {e}") from None


def _no_larger_than_png(data: bytes, report: CompressReport, args: tuple,
                        pngs: list[bytes] | None = None) -> tuple[bytes, CompressReport]:
    """The model's lossless file, or, where a PNG of each image would be smaller, the file that holds those PNGs
    instead: the same format (each tile flagged as sent without the model, the PNGs in the payload and their
    lengths in the header), so every reader decodes it; ``report.png_instead`` says so. A file is then never
    larger than the images' PNGs and its header. ``pngs``: those PNGs, where made already (beside the coding)."""
    images, all_tiles = args[1], args[2]
    every = np.ones(len(all_tiles), dtype=bool)
    pngs = pngs if pngs is not None else [classical_png(im.pixels) for im in images]
    if sum(map(len, pngs)) >= report.file_bytes - report.header_bytes:
        return data, report
    png_file, png_report, _ = _compress(*args, every, None, 0, image_pngs=pngs)
    if len(png_file) >= len(data):
        return data, report
    png_report.png_instead, png_report.nelbo_bits = True, report.nelbo_bits  # the images' nELBO, if measured
    return png_file, png_report


def _compress(model: SelfVAE, images: list[InputImage], all_tiles: torch.Tensor,
              params: CodingParams, group: int, threads: int, progress: bool, model_hint: str, ident: str,
              cover: Cover, raw: np.ndarray, lossy: QuantisedZ | None, search_steps: int | None,
              image_pngs: list[bytes] | None = None) -> tuple[bytes, CompressReport, np.ndarray]:
    """Code ``images`` (cut into ``all_tiles``; those flagged ``raw`` sent without the model) into one file's
    bytes, with ``model`` at the tiles' size (``ident``: the id of the model as trained); the report splits the
    size into parts, and the array gives what each tile cost the coder in bits, net of its bits back (NaN for
    tiles sent raw, coded with chosen latents or with importance samples). With ``lossy`` only
    ``y = d(x)`` and what ``lossy`` keeps of ``z_K`` are coded (:mod:`selfvae.codec.lossy`). ``search_steps``:
    how long the encoder searches the latents of the images coded without bits back (:func:`chosen.search`;
    0: the rounded posterior means only; None: :data:`~selfvae.codec.chosen.SEARCH_STEPS` for a file of at most
    :data:`~selfvae.codec.chosen.SEARCH_MAX_TILES` tiles, where those images are a noticeable part of it, else
    0); the decoder does not need it. ``image_pngs``: send every tile without the model, as these PNGs of the
    images (one each, made already by the caller; :func:`push_image_pngs`). ``cover``: which pixels of the tiles
    are coded (:func:`~selfvae.codec.images.cut_images`)."""
    shape = model.shapes[-1]
    coded = all_tiles[torch.from_numpy(~raw)]
    costs = np.full(len(coded), np.nan)
    if search_steps is None:
        search_steps = SEARCH_STEPS if len(coded) <= SEARCH_MAX_TILES else 0
    runner = ChunkRunner(params.chunk, threads, params.small_chunks)
    parts: dict[str, float] = defaultdict(float)
    try:
        with coding_mode(model):
            coder = BitsBackCoder(model, params, runner)
            bar = tqdm(total=len(all_tiles), desc="compress", unit="img", disable=not progress)
            base, fallback = Stack(), None
            if raw.any():  # under everything: the decoder takes them last, and bits-back pops can draw on them
                tiles = all_tiles[torch.from_numpy(raw)].numpy()
                if image_pngs is not None:
                    fallback = push_image_pngs(base, image_pngs)
                else:
                    png = fallback_png(images, cover[raw].blank(tiles), raw, shape)
                    fallback = push_fallback(base, tiles, png, mosaic_cols(images, raw, shape))
                raw_bytes = fallback_bytes(fallback) if fallback else int(raw.sum()) * int(np.prod(shape))
                parts["raw"] += 8.0 * raw_bytes
                bar.update(int(raw.sum()))
            recon: dict[int, torch.Tensor] = {}
            searching = tqdm(desc="search first latents", unit="step", leave=False,
                             disable=not (progress and search_steps))
            enc = _encode_all(coder, coded, group, parts, bar.update, lossy, recon, search_steps, base,
                              lambda: searching.update(1), costs if lossy is None else None,
                              cover=cover[~raw])
            searching.close()
            stack = enc.stack
            if lossy is not None:  # the decoder's output is what the checksum covers
                all_tiles = torch.cat([recon[k] for k in sorted(recon)])
            bar.close()
            header = {
                "model": ident, "hint": model_hint, "probe": probe(coder), "params": asdict(params),
                "group": group,
                "tile": list(shape), "payload_words": stack.num_words(), "n_seed": enc.n_seed, "groups": enc.sizes,
                "samples": enc.samples, "chosen": enc.chosen, "raw": raw.astype(int).tolist(), "fallback": fallback,
                "images": [[int(s) for s in im.pixels.shape] for im in images],
                "names": _pack_names([im.name for im in images]),
                "crc": zlib.crc32(np.ascontiguousarray(all_tiles.numpy()).tobytes()),
                "lossy": None if lossy is None else {"precision": lossy.precision, "decode": lossy.decode},
            }
    finally:
        runner.close()
    data = Container(header, stack.words()).to_bytes()
    payload_bytes = 4 * stack.num_words()
    initial = max(payload_bytes - sum(parts.values()) / 8, 0.0)
    report = CompressReport(
        n_images=len(images), dims=sum(int(np.prod(im.pixels.shape)) for im in images), file_bytes=len(data),
        header_bytes=len(data) - payload_bytes, initial_bytes=initial,
        parts_bytes={k: v / 8 for k, v in parts.items()}, ideal_bits=stack.ideal_bits,
        chosen_images=sum(size for size, p in zip(enc.sizes, enc.chosen, strict=True) if p >= 0),
        chosen_bytes=enc.chosen_bits / 8,
    )
    all_costs = np.full(len(all_tiles), np.nan)
    all_costs[~raw] = costs
    return data, report, all_costs


@dataclass
class _Encoded:
    stack: Stack
    n_seed: int  # initial words under the payload
    sizes: list[int]  # images per group, in decoding order
    samples: list[int]  # importance samples per group
    chosen: list[int]  # per group: the grid of its chosen latents (selfvae.codec.chosen), or -1 for bits back
    chosen_bits: float  # what the chosen groups took


class _ChosenTiles:
    """Tiles coded one at a time with chosen latents and no pops (:mod:`selfvae.codec.chosen`): the first ones a
    lossless file codes, which the stack cannot fund yet. Keeps what each cost (into ``parts``), their grids and
    the keys the search found."""

    def __init__(self, coder: BitsBackCoder, tiles: torch.Tensor, parts: dict[str, float], lossy: QuantisedZ | None,
                 search_steps: int, on_search_step: Callable[[], None] | None, cover: Cover) -> None:
        self.coder, self.tiles, self.parts, self.lossy, self.cover = coder, tiles, parts, lossy, cover
        self.search_steps, self.on_search_step = search_steps, on_search_step
        self.searched: dict[int, list[np.ndarray]] = {}
        self.grids: list[int] = []
        self.bits = 0.0

    def code(self, stack: Stack, i: int) -> Stack:
        """Code tile ``i`` with chosen latents; the search runs on the next ``SEARCH_BATCH`` tiles at once (the
        encoder goes last first), which all but always covers every tile coded so."""
        if self.search_steps and i not in self.searched:
            lo = max(0, i + 1 - SEARCH_BATCH)
            keys = search_keys(self.coder, self.tiles[lo : i + 1], self.search_steps, self.on_search_step)
            self.searched.update(enumerate(keys, lo))
        out, grid, bits = encode_cheapest(self.coder, stack, self.tiles[i : i + 1], self.searched.get(i), self.lossy,
                                          self.cover[i : i + 1])
        for k, v in bits.items():
            self.parts[k] += v
        self.grids.append(grid)
        self.bits += sum(bits.values())
        return out


def _encode_all(
    coder: BitsBackCoder, tiles: torch.Tensor, group: int, parts: dict[str, float], done: Callable[[int], None],
    lossy: QuantisedZ | None = None, recon: dict[int, torch.Tensor] | None = None, search_steps: int = 0,
    base: Stack | None = None, on_search_step: Callable[[], None] | None = None, costs: np.ndarray | None = None,
    *, cover: Cover,
) -> _Encoded:
    """Encode every tile, last first, in groups, on top of ``base`` (the raw tiles, when a lossless file has any).

    A group's first pop needs about its posteriors' discretised entropy in bits per image and sample, several
    times what an image adds to the stack, so the groups grow as the stack does. The first tile the encoder
    codes (the last) has nothing to borrow: a lossless file codes it, and every next one the stack cannot yet
    fund, with chosen latents and no pops (``CodingParams.chosen_first``, :mod:`selfvae.codec.chosen`); otherwise
    it pops from seeded initial words, the file's only overhead. Each next group takes as many samples (up to
    ``CodingParams.samples``), then as many images (up to ``group``), as the stack can fund, in powers of two.
    ``costs`` (one per tile) gets what each tile coded with bits back and one sample cost (:meth:`Stack.track`).
    ``cover``: which pixels of the tiles are coded (:func:`~selfvae.codec.images.cut_images`,
    :meth:`BitsBackCoder.push_level`).
    """
    n = len(tiles)
    if n == 0:  # every tile raw
        return _Encoded(base or Stack(), 0, [], [], [], 0.0)
    last = tiles[n - 1 : n]
    chosen_first = coder.p.chosen_first
    by_choice = _ChosenTiles(coder, tiles, parts, lossy, search_steps, on_search_step, cover)
    chosen = by_choice.grids  # per group, in encoding order: its chosen grid or -1
    if chosen_first:
        n_seed, stack = 0, by_choice.code(base or Stack(), n - 1)
        pop_bits = 32.0 * coder.initial_words(last)  # an estimate; the first group coded with bits back corrects it
    else:
        stack, n_seed, pop_bits = _seeded_first(coder, last, parts, lossy, None if costs is None else costs[n - 1 :],
                                                cover[n - 1 :])
        chosen.append(-1)
    _keep(recon, n - 1, coder, lossy)
    done(1)
    sizes, samples, end = [1], [1], n - 1
    while end > 0:
        fundable = stack.num_bits() / (1.25 * pop_bits)  # images x samples the stack can fund
        s = min(coder.p.samples, _power_of_two(fundable))
        size = min(group, end, _power_of_two(fundable / s))
        took = None
        if stack.num_bits() >= TRY_BITS_BACK_AT * pop_bits or not chosen_first:
            stack, took, size, s = _encode_fundable(coder, stack, tiles, end, size, s, parts, lossy, chosen_first,
                                                    costs, cover)
        if took is None:  # not even one image: code it with chosen latents
            size, s = 1, 1
            stack = by_choice.code(stack, end - 1)
        else:
            pop_bits = max(pop_bits, took / s)  # the next group is sized by how deep one image's sample digs
            chosen.append(-1)
        _keep(recon, end - size, coder, lossy)
        sizes.append(size)
        samples.append(s)
        end -= size
        done(size)
    return _Encoded(stack, n_seed, sizes[::-1], samples[::-1], chosen[::-1], by_choice.bits)


def _encode_fundable(coder: BitsBackCoder, stack: Stack, tiles: torch.Tensor, end: int, size: int, s: int,
                     parts: dict[str, float], lossy: QuantisedZ | None, chosen_first: bool,
                     costs: np.ndarray | None, cover: Cover) -> tuple[Stack, float | None, int, int]:
    """Code the ``size`` tiles before ``end`` with ``s`` samples each, halving the group (then the samples)
    while the stack runs out of bits: returns the stack, how deep its pops dug (bits an image), and the size and
    samples that worked; the depth is None, and the stack as it was, when not even one image with one sample
    could be funded (``chosen_first``; otherwise that is an error)."""
    while True:
        snapshot, saved = stack.clone(), dict(parts)
        try:
            took = _encode_group(coder, stack, tiles[end - size : end], parts, lossy, samples=s,
                                 into=None if costs is None else costs[end - size : end],
                                 cover=cover[end - size : end])
            return stack, took, size, s
        except StackUnderflow:
            stack = snapshot
            parts.clear()
            parts.update(saved)
            if size == 1 and s == 1:
                if chosen_first:
                    return stack, None, size, s
                raise CodecError("the stack ran out of bits for one image's posterior; "
                                 "compress with a coarser --precision") from None
            size, s = (size // 2, s) if size > 1 else (size, s // 2)


def _seeded_first(coder: BitsBackCoder, last: torch.Tensor, parts: dict[str, float], lossy: QuantisedZ | None,
                  into: np.ndarray | None = None, cover: Cover | None = None) -> tuple[Stack, int, float]:
    """Code the first tile on a stack of pseudo-random initial words, as few as its pops need: returns the
    stack, the initial words and how deep (bits) its pops dug."""
    rng = np.random.default_rng(_SEED)

    def first(words: int) -> tuple[Stack, float]:
        parts.clear()
        stack = Stack(rng.integers(0, 2**32, words, dtype=np.uint32))
        return stack, _encode_group(coder, stack, last, parts, lossy, whole_mixture=True, into=into, cover=cover)

    n_seed = coder.initial_words(last)
    while True:  # with enough initial bits
        try:
            stack, pop_bits = first(n_seed)
            break
        except StackUnderflow:
            n_seed = int(n_seed * 1.25) + 4
    enough = int(math.ceil(1.02 * pop_bits / 32)) + 2  # what it dug, and a margin for other samples
    if enough < n_seed:  # the estimate or the retries overshot: try again with what it needed
        try:
            stack, pop_bits = first(enough)
            n_seed = enough
        except StackUnderflow:
            stack, pop_bits = first(n_seed)
    return stack, n_seed, pop_bits


def _power_of_two(x: float) -> int:
    """The largest power of two at most ``x`` (1 below 2)."""
    return max(1, 2 ** int(math.log2(max(x, 1.0))))


def _keep(recon: dict[int, torch.Tensor] | None, start: int, coder: BitsBackCoder, lossy: QuantisedZ | None) -> None:
    """Record what the decoder will rebuild for the group just coded (lossy files checksum that)."""
    if lossy is not None and recon is not None:
        recon[start] = lossy.reconstruct(coder, lossy.y_k, lossy.last)


def _encode_group(coder: BitsBackCoder, stack: Stack, x: torch.Tensor, parts: dict[str, float],
                  lossy: QuantisedZ | None = None, whole_mixture: bool = False, samples: int = 1,
                  into: np.ndarray | None = None, cover: Cover | None = None) -> float:
    """Encode one group with ``samples`` latent sets an image, adding each part's bits to ``parts``; returns how
    deep (bits per image) its pops dug into the stack below where the group started. The file's first group
    (the decoder's last) is coded with ``whole_mixture``: its pops come out of the initial bits, so it pops no
    pixel's mixture component. ``into`` (one sample an image): what each image cost, net of its bits back."""
    start = stack.low_water = stack.num_bits()
    hook = growth_hook(stack, parts)
    if samples > 1:
        ImportanceCoder(coder, samples).encode(stack, x, hook, cover)
        return (start - stack.low_water) / len(x)
    if into is None:
        coder.encode(stack, x, hook, lossy, whole_mixture, cover)
    else:
        stack.track(len(x))
        try:
            coder.encode(stack, x, hook, lossy, whole_mixture, cover)
        finally:  # a group that ran out of bits gives no costs (its tiles are coded again, or with chosen latents)
            rows = stack.untrack()
        into[:] = rows
    return (start - stack.low_water) / len(x)


def read_model_hint(data: bytes, name: str) -> str:
    """Where the model that wrote a file was (its run directory as given to compress)."""
    header, _ = Container.parse_header(data, name)
    if not header.get("hint"):
        raise CodecError(f"{name}: does not say which model wrote it; give it with --model")
    return header["hint"]


def _pack_names(names: list[str]) -> dict:
    """Names as a pattern when they are ``prefix0..prefixN`` (npz inputs), else as a list."""
    if len(names) > 1 and "_" in names[0]:
        stem = names[0].rsplit("_", 1)[0]
        width = len(names[0]) - len(stem) - 1
        if all(n == f"{stem}_{i:0{width}d}" for i, n in enumerate(names)):
            return {"stem": stem, "width": width}
    return {"list": names}


def _unpack_names(packed: dict, n: int, name: str) -> list[str]:
    if "list" in packed:
        names = list(packed["list"])
    else:
        names = [f"{packed['stem']}_{i:0{packed['width']}d}" for i in range(n)]
    for stem in names:  # names become paths below the output folder: never above it
        if not stem or stem.startswith("/") or ".." in stem.split("/"):
            raise CodecError(f"{name}: holds the image name {stem!r}, which is not a path below a folder")
    return names


class _PrefixEnd(Exception):
    """A prefix of a file holds no more words: the levels decoded so far are all it determines."""


@dataclass
class Decoded:
    names: list[str]
    images: list[np.ndarray]  # uint8 [H, W, C] as given to compress
    stages: list[tuple[str, int, np.ndarray]]  # (level name, bytes of the file read so far, uint8 tiles)


def decompress(
    model: SelfVAE,
    data: bytes,
    name: str = "input",
    threads: int = 1,
    progress: bool = False,
    on_level: Callable[[str, int, torch.Tensor], None] | None = None,
    prefix: bool = False,
) -> Decoded:
    """Decode a file's images. ``on_level(level, bytes_read, tiles)`` sees each level of the first group as it
    becomes known. With ``prefix=True`` ``data`` may be a truncated file: what its words determine is decoded
    (use ``on_level``; later levels are garbage and no checksum can be checked)."""
    on_the_cpu(model)
    if prefix:
        header, words = Container.prefix_words(data, name)
    else:
        c = Container.from_bytes(data, name)
        header, words = c.header, c.words
    this_model = model_id(model)
    if header["model"] != this_model:
        raise CodecError(f"{name}: was written with another model (id {header['model']}, this one is "
                         f"{this_model}); decompress it with the model that compressed it")
    params = CodingParams(**header["params"])
    tile = header["tile"]
    if tile[0] != model.shapes[-1][0]:
        raise CodecError(f"{name}: its tiles have {tile[0]} channels, the model {model.shapes[-1][0]}")
    if tile[1] != tile[2]:
        raise CodecError(f"{name}: its tiles are {tile[1]}x{tile[2]}: not square, so not a tile this codec writes")
    try:
        model = at_tile(model, tile[1])
    except SelfVAEError as e:
        raise CodecError(f"{name}: its tiles are {tile[1]}x{tile[2]}, which this model cannot code: {e}") from None
    runner = ChunkRunner(params.chunk, threads, params.small_chunks)
    try:
        with coding_mode(model, exact=header["version"] < 4):
            coder = BitsBackCoder(model, params, runner)
            here = probe(coder)
            if here != header["probe"]:
                raise CodecError(
                    f"{name}: this machine computes the model differently from the one that wrote the file "
                    f"(probe {here} != {header['probe']}: another CPU type or PyTorch build); decode it "
                    f"on a machine like the writer's, with torch {torch.__version__} there or the writer's version")
            reader = _Reader(coder, header, words, len(data), prefix, on_level)
            if prefix:
                reader.first_levels()
                return Decoded([], [], reader.stages)
            tiles = reader.all_tiles(name, progress)
    finally:
        runner.close()
    if zlib.crc32(np.ascontiguousarray(tiles).tobytes()) != header["crc"]:
        raise CodecError(f"{name}: decoded images fail their checksum: the file is damaged or this machine "
                         f"computed a probability differently from the writer")
    shapes = [tuple(s) for s in header["images"]]
    images, at = [], 0
    for s, k in zip(shapes, header["tiles_per_image"], strict=True):
        images.append(from_tiles(tiles[at : at + k], s[0], s[1], s[2]))
        at += k
    return Decoded(_unpack_names(header["names"], len(shapes), name), images, reader.stages)


class _Reader:
    """Decodes a checked header's groups from the stack, recording the first group's levels as they come."""

    def __init__(self, coder: BitsBackCoder, header: dict, words: np.ndarray, total_bytes: int, prefix: bool,
                 on_level: Callable[[str, int, torch.Tensor], None] | None) -> None:
        self.coder, self.header, self.prefix, self.on_level = coder, header, prefix, on_level
        self.stack = Stack(words, decoding=True)
        self.n_words, self.total_bytes = len(words), total_bytes
        self.head = total_bytes - 4 * len(words) - (0 if prefix else 4)
        lossy = header["lossy"]
        self.lossy = None if not lossy else QuantisedZ(lossy["precision"], lossy["decode"])
        sizes = header["groups"]
        starts = np.cumsum([0, *sizes[:-1]]).tolist() if sizes else []
        self.groups = [range(a, a + k) for a, k in zip(starts, sizes, strict=True)]
        self.raw = np.asarray(header["raw"] or [0] * (sum(sizes)), dtype=bool)
        # which pixels of each tile were coded: the images' own from version 10 on (from their shapes), else all
        self.edge_cover = bool(header["params"].get("edge_cover"))
        tile = tuple(header["tile"])
        self.cover = Cover.of([tuple(s) for s in header["images"]], tile) if self.edge_cover else Cover.whole(
            len(self.raw), tile[1:])
        self.coded_cover = self.cover[~self.raw]  # the groups' tiles, in order
        self.stages: list[tuple[str, int, np.ndarray]] = []

    def seen(self, i: int, level: torch.Tensor) -> None:
        """Level ``i`` of the first group is known: record it with the bytes read so far."""
        if self.prefix and self.stack.num_words() < 2:  # the prefix ran out while decoding this level
            raise _PrefixEnd
        deepest = self.stack.low_water // 32  # words left at the deepest pop so far (the stack's low-water mark)
        read = min(self.head + 4 * (self.n_words - deepest + 2), self.total_bytes)  # +2: the ANS head's words
        self.stages.append((self.coder.level_name(i), read, level.numpy().copy()))
        if self.on_level:
            self.on_level(self.coder.level_name(i), read, level)

    def group(self, gi: int) -> torch.Tensor:
        h, g = self.header, self.groups[gi]
        n, on = len(g), self.seen if gi == 0 else None
        cover = self.coded_cover[g.start : g.stop]
        if h["chosen"][gi] >= 0:
            return ChosenCoder(self.coder, h["chosen"][gi]).decode(self.stack, n, on, self.lossy, cover)
        if h["samples"][gi] > 1:
            return ImportanceCoder(self.coder, h["samples"][gi]).decode(self.stack, n, on, cover)
        return self.coder.decode(self.stack, n, on, self.lossy, whole_mixture=gi == len(self.groups) - 1,
                                 cover=cover)

    def first_levels(self) -> None:
        """What a prefix of the file determines of the first group (its later levels: garbage or nothing)."""
        if self.groups:
            try:
                self.group(0)
            except (_PrefixEnd, StackUnderflow, KeyError):  # past the prefix: no bits, or garbage
                pass

    def all_tiles(self, name: str, progress: bool) -> np.ndarray:
        """Every tile of the file, model-coded and fallback ones in their places."""
        tile = tuple(self.header["tile"])
        with tqdm(total=len(self.raw), desc="decompress", unit="img", disable=not progress) as bar:
            out = []
            for gi, g in enumerate(self.groups):
                out.append(self.group(gi))
                bar.update(len(g))
            coded = torch.cat(out).numpy() if out else np.zeros((0, *tile), dtype=np.uint8)
            if not self.raw.any():
                return coded
            fallback = self.header["fallback"]
            if fallback is not None and "images" in fallback:  # every tile, as a PNG of each image
                raw_values = pop_image_pngs(self.stack, fallback, [tuple(s) for s in self.header["images"]], tile,
                                            self.edge_cover, name)
            else:
                raw_values = pop_fallback(self.stack, fallback, int(self.raw.sum()), tile, name)
                raw_values = self.cover[self.raw].fill(raw_values)  # a PNG of them held black there (Cover.blank)
            bar.update(int(self.raw.sum()))
        tiles = np.empty((len(self.raw), *tile), dtype=np.uint8)
        tiles[~self.raw], tiles[self.raw] = coded, raw_values
        return tiles


def nelbo_bits(model: SelfVAE, images: list[InputImage], batch: int = 64) -> float:
    """The model's negative ELBO (one posterior sample per tile, seeded) in bits, summed over ``images``, of their
    pixels as :func:`compress` tiles them (the padding of tiles partly outside an image not counted)."""
    tiles, cover = cut_images(images, model.shapes[-1], edge_cover=not model.cfg.consistent)  # as compress cuts them
    return float(tile_nelbo_bits(model, torch.from_numpy(tiles), batch, cover=cover).sum())


def tile_nelbo_bits(model: SelfVAE, tiles: torch.Tensor, batch: int = 64, progress: bool = False,
                    cover: Cover | None = None) -> np.ndarray:
    """The model's negative ELBO of each tile in bits (one posterior sample a tile, seeded): about what bits-back
    coding spends on it; with ``cover``, of the pixels it codes (the tiles' images', but a renormalised level,
    which is coded whole). ``progress``: a bar (files of many tiles: a photograph)."""
    inside = None
    if cover is not None and cover.partial.any() and not model.cfg.consistent:
        inside = torch.from_numpy(~cover.outside())
    out = []
    bar = tqdm(total=len(tiles), desc="model or fallback", unit="tile", leave=False,
               disable=not progress or len(tiles) <= batch)
    with torch.random.fork_rng(), torch.inference_mode():  # seeded without disturbing the caller's stream
        torch.manual_seed(0)
        for s in range(0, len(tiles), batch):
            part = None if inside is None else inside[s : s + batch]
            out.append(model.terms(tiles[s : s + batch], inside=part).nelbo.double().numpy() / math.log(2))
            bar.update(len(out[-1]))
    bar.close()
    return np.concatenate(out) if out else np.zeros(0)

