"""Photographs to learn from: the photographs among Debian's desktop wallpapers, installed by name.

``apt-get install -y plasma-workspace-wallpapers mate-backgrounds lomiri-wallpapers`` puts them under
``/usr/share`` (the data set's default root). Of the wallpapers these packages hold, the photographs were chosen by
eye (drawings, renders, gradients and patterns left out; one grey photograph too, the models being RGB):
:data:`PHOTOS` names each with its split. Whole photographs are held out, never crops of training ones: 24 train,
3 validate, 4 test.

Each photograph is read through :func:`selfvae.data.images.read_pixels` and area-downscaled so that its shorter
side is :data:`SHORT_SIDE` pixels (2.7x to 8.8x: the JPEG blocks and the demosaicing of the camera average out,
as L3C downscales Open Images); :func:`pack` writes them losslessly into a folder that serves as the root where
the packages are not installed (a device machine). The downscaled photographs are cached (``$SELFVAE_CACHE/photos`` or
``~/.cache/selfvae/photos``). Training serves :data:`TRAIN_CROPS` random crops of the model's side drawn once from
a fixed seed (weighted by area; flips and whole-pixel shifts on top, as for CIFAR-10); validation and test are
every whole tile of their photographs (so their bits/dim are those of the whole photographs, tile by tile);
:func:`whole_photographs` gives the photographs themselves (the photo codec benchmark).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
from PIL import Image

from selfvae.cache import cache_dir, load_array, save_array
from selfvae.data.images import convert_channels, read_pixels
from selfvae.errors import SelfVAEError

PACKAGES = ("plasma-workspace-wallpapers", "mate-backgrounds", "lomiri-wallpapers")
SHORT_SIDE = 384  # the shorter side of every photograph after downscaling
# random crops of the training photographs, drawn once from CROP_SEED: 96000 32x32 crops (283 MiB) cover each
# place of the 5.5 megapixels ~18 times; the 24000 of the first photo-vae were learnt by heart within 10 epochs
# (its training batches 0.2 bits/dim under validation by step 3250)
TRAIN_CROPS = 96_000
CROP_SEED = 20261126
# photos-multiscale: the training photographs at these short sides too (the originals' shorter sides are 1037 px or
# more, so 768 still averages 1.35x or more of the camera's pixels)
MULTISCALE_SIDES = (SHORT_SIDE, 544, 768)
PACKED_SUFFIX = ".webp"  # pack()'s copies: the downscaled photographs, losslessly (Pillow reads them everywhere)

_KDE = "wallpapers/{}/contents/images/2560x1600.jpg"
_MATE = "backgrounds/mate/nature/{}.jpg"
_LOMIRI = "backgrounds/{}.jpg"
PHOTOS: dict[str, list[str]] = {  # relative to the root (/usr/share)
    "train": [
        *(_KDE.format(n) for n in ("BytheWater", "ColdRipple", "FallenLeaf", "OneStandsOut", "summer_1am")),
        *(_MATE.format(n) for n in ("Aqua", "Blinds", "Dune", "FreshFlower", "Garden", "GreenMeadow", "RainDrops",
                                    "Storm", "TwoWings")),
        *(_LOMIRI.format(n) for n in ("Dragonfly_by_Bolly", "Kleiber_by_Lukas_Baubkus", "Picture_0B_by_freespace",
                                      "Picture_1A_by_freespace", "Wine_by_Jakkub_Mede",
                                      "aitzgorri_by_Aitzol_Berasategi", "free_by_Peter_Nerlich",
                                      "life_by_Aitzol_Berasategi", "picosdeeuropa_by_Aitzol_Berasategi",
                                      "seeding_by_Clements_Engelhardt")),
    ],
    "val": [_KDE.format("Path"), _MATE.format("YellowFlower"), _LOMIRI.format("sunset_by_Aitzol_Berasategi")],
    "test": [_KDE.format("EveningGlow"), _MATE.format("LadyBird"), _LOMIRI.format("Bridge_by_Sander_Klootwijk"),
             _LOMIRI.format("friends_by_Aitzol_Berasategi")],
}


def downscaled(path: Path, short_side: int = SHORT_SIDE) -> np.ndarray:
    """One photograph as RGB uint8 ``[H, W, 3]``, area-downscaled to ``short_side`` on its shorter side (kept as
    it is when already smaller)."""
    x = convert_channels(read_pixels(path)[None], 3)[0]
    h, w = x.shape[:2]
    if min(h, w) <= short_side:
        return x
    scale = short_side / min(h, w)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    return np.asarray(Image.fromarray(x).resize(size, Image.Resampling.BOX), dtype=np.uint8)


def _cached(path: Path, short_side: int) -> np.ndarray:
    """:func:`downscaled` through the cache, keyed by the file's path, size and time and the target side."""
    st = path.stat()
    key = hashlib.sha256(f"{path.resolve()}|{st.st_size}|{st.st_mtime_ns}|{short_side}".encode()).hexdigest()[:20]
    file = cache_dir("photos") / f"{key}.npy"
    x = load_array(file)
    if x is None:
        x = downscaled(path, short_side)
        save_array(file, x)
    return x


def whole_photographs(root: Path, part: str, short_side: int | None = None) -> list[tuple[str, np.ndarray]]:
    """``(name, RGB uint8 [H, W, 3])`` of every photograph of split ``part`` ("train", "val", "test"),
    downscaled to ``short_side`` (default :data:`SHORT_SIDE`); a missing file raises :class:`SelfVAEError` saying
    which packages install them."""
    short_side = short_side or SHORT_SIDE
    files = [_found(root, rel) for rel in PHOTOS[part]]
    missing = [rel for rel, f in zip(PHOTOS[part], files, strict=True) if f is None]
    if missing:
        raise SelfVAEError(f"{root}: {len(missing)} of the photographs are missing (first: {missing[0]}); install "
                           f"them with `apt-get install -y {' '.join(PACKAGES)}` (root /usr/share)")
    return [(_name(rel), _cached(f, short_side)) for rel, f in zip(PHOTOS[part], files, strict=True)]


def _name(rel: str) -> str:
    return Path(rel).stem if "wallpapers/" not in rel else rel.split("/")[1]


def _found(root: Path, rel: str) -> Path | None:
    """The photograph ``rel`` under ``root`` as installed, or as :func:`pack` wrote it; None where neither is."""
    for f in (root / rel, (root / rel).with_suffix(PACKED_SUFFIX)):
        if f.is_file():
            return f
    return None


def pack(root: Path, dest: Path) -> int:
    """Write every photograph of every split under ``dest``, downscaled, as lossless WebP at its path with
    :data:`PACKED_SUFFIX` (``dest`` then serves as the data set's root, with no wallpaper package installed: a
    device machine's copy, 7.2 MiB for the 31); returns the bytes written."""
    written = 0
    for part in PHOTOS:
        for rel, (_, x) in zip(PHOTOS[part], whole_photographs(root, part), strict=True):
            out = (dest / rel).with_suffix(PACKED_SUFFIX)
            out.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(x).save(out, "WEBP", lossless=True, quality=100)
            written += out.stat().st_size
    return written


def random_crops(photos: list[np.ndarray], side: int, n: int, seed: int = CROP_SEED) -> np.ndarray:
    """``n`` crops ``[n, side, side, 3]`` at uniformly random places, each photograph chosen with probability
    proportional to the crops it holds (so every place of every photograph is equally likely)."""
    rng = np.random.default_rng(seed)
    room = np.array([(p.shape[0] - side + 1) * (p.shape[1] - side + 1) for p in photos], dtype=np.float64)
    if (room <= 0).any():
        raise SelfVAEError(f"a photograph is smaller than the crop side {side}")
    which = rng.choice(len(photos), size=n, p=room / room.sum())
    out = np.empty((n, side, side, 3), dtype=np.uint8)
    for i, k in enumerate(which):
        p = photos[k]
        top, left = rng.integers(0, p.shape[0] - side + 1), rng.integers(0, p.shape[1] - side + 1)
        out[i] = p[top : top + side, left : left + side]
    return out


def tiles_of(photos: list[np.ndarray], side: int) -> np.ndarray:
    """Every whole ``side x side`` tile of each photograph, row by row from the top left (a last partial row
    or column left out): ``[N, side, side, 3]``."""
    out = [p[r : r + side, c : c + side] for p in photos
           for r in range(0, p.shape[0] - side + 1, side) for c in range(0, p.shape[1] - side + 1, side)]
    return np.stack(out)


def read_photos(root: Path, part: str, opts, multiscale: bool = False  # noqa: ANN001 - formats.ReadOptions
                ) -> tuple[np.ndarray, None]:
    """The data set reader: training crops (``part`` "train") or the held-out photographs' tiles ("val", "test")
    at ``opts.image_size`` (default 32). ``multiscale``: the training crops are drawn in equal numbers from the
    training photographs downscaled to each short side of :data:`MULTISCALE_SIDES` (the held-out photographs stay
    at :data:`SHORT_SIDE`): 24 photographs give about 3.4 times the pixels, each scale with its own detail and
    noise, where the 96000 crops of one scale were learnt by heart."""
    side = opts.image_size or 32
    if part != "train":
        return tiles_of([x for _, x in whole_photographs(root, part)], side), None
    sides = MULTISCALE_SIDES if multiscale else (SHORT_SIDE,)
    crops = []
    for k, short_side in enumerate(sides):
        photos = [x for _, x in whole_photographs(root, part, short_side)]
        if multiscale:
            _check_large_enough(root, PHOTOS[part], photos, short_side)
        n = TRAIN_CROPS // len(sides) + (k < TRAIN_CROPS % len(sides))
        crops.append(random_crops(photos, side, n, seed=CROP_SEED + k))
    return np.concatenate(crops), None


def _check_large_enough(root: Path, names: list[str], photos: list[np.ndarray], short_side: int) -> None:
    """Refuse multi-scale crops from photographs smaller than ``short_side`` (a packed copy stored downscaled)."""
    small = [name for (name, x) in zip(names, photos, strict=True) if min(x.shape[:2]) < short_side]
    if small:
        raise SelfVAEError(f"{root}: {len(small)} training photographs are smaller than the short side "
                           f"{short_side} the multi-scale crops need (first: {small[0]}); read them as installed "
                           f"(`apt-get install -y {' '.join(PACKAGES)}`), not packed")
