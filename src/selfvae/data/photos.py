"""Photographs to learn from: the photographs among Debian's desktop wallpapers, installed by name.

``apt-get install -y plasma-workspace-wallpapers mate-backgrounds lomiri-wallpapers`` puts them under
``/usr/share`` (the data set's default root). Of the wallpapers these packages hold, the photographs were chosen by
eye (drawings, renders, gradients and patterns left out; one grey photograph too, the models being RGB):
:data:`PHOTOS` names each with its split. Whole photographs are held out, never crops of training ones: 24 train,
3 validate, 4 test.

Each photograph is read through :func:`selfvae.data.images.read_pixels` and area-downscaled so that its shorter
side is :data:`SHORT_SIDE` pixels (2.7x to 8.8x: the JPEG blocks and the demosaicing of the camera average out,
as L3C downscales Open Images). The downscaled photographs are cached (``$SELFVAE_CACHE/photos`` or
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
TRAIN_CROPS = 24_000  # random crops of the training photographs, drawn once from CROP_SEED
CROP_SEED = 20261126

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


def _cached(path: Path) -> np.ndarray:
    """:func:`downscaled` through the cache, keyed by the file's path, size and time and the target side."""
    st = path.stat()
    key = hashlib.sha256(f"{path.resolve()}|{st.st_size}|{st.st_mtime_ns}|{SHORT_SIDE}".encode()).hexdigest()[:20]
    file = cache_dir("photos") / f"{key}.npy"
    x = load_array(file)
    if x is None:
        x = downscaled(path)
        save_array(file, x)
    return x


def whole_photographs(root: Path, part: str) -> list[tuple[str, np.ndarray]]:
    """``(name, RGB uint8 [H, W, 3])`` of every photograph of split ``part`` ("train", "val", "test"),
    downscaled; a missing file raises :class:`SelfVAEError` saying which packages install them."""
    missing = [rel for rel in PHOTOS[part] if not (root / rel).is_file()]
    if missing:
        raise SelfVAEError(f"{root}: {len(missing)} of the photographs are missing (first: {missing[0]}); install "
                           f"them with `apt-get install -y {' '.join(PACKAGES)}` (root /usr/share)")
    return [(Path(rel).stem if "wallpapers/" not in rel else rel.split("/")[1], _cached(root / rel))
            for rel in PHOTOS[part]]


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


def read_photos(root: Path, part: str, opts) -> tuple[np.ndarray, None]:  # noqa: ANN001 - formats.ReadOptions
    """The data set reader: training crops (``part`` "train") or the held-out photographs' tiles ("val", "test")
    at ``opts.image_size`` (default 32)."""
    side = opts.image_size or 32
    photos = [x for _, x in whole_photographs(root, part)]
    if part == "train":
        return random_crops(photos, side, TRAIN_CROPS), None
    return tiles_of(photos, side), None
