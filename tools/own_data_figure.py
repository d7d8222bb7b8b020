"""docs/figures/own_images.png: image files of any size and colour as stored (left), and what a model with
``image_size=32`` sees of them: grey (a 1-channel model) with ``resize=crop``, and RGB with ``resize=pad``.

    python tools/own_data_figure.py FILE... [-o docs/figures/own_images.png]
"""

from __future__ import annotations

import argparse

import numpy as np
import torch
from PIL import Image

from selfvae.data.images import read_image_file
from selfvae.viz import labelled_columns


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("files", nargs="+")
    ap.add_argument("-o", "--output", default="docs/figures/own_images.png")
    ap.add_argument("--size", type=int, default=32)
    args = ap.parse_args()
    box = 112  # the stored images, letterboxed into one column at their own scale
    stored, grey, rgb, names = [], [], [], []
    for f in args.files:
        with Image.open(f) as im:
            im = im.convert("RGB")
            names.append(f"{f.split('/')[-1]} {im.size[0]}x{im.size[1]}")
            canvas = Image.new("RGB", (box, box), "white")
            im.thumbnail((box, box))
            canvas.paste(im, ((box - im.size[0]) // 2, (box - im.size[1]) // 2))
        stored.append(torch.from_numpy(np.asarray(canvas).copy()).permute(2, 0, 1))
        grey.append(read_image_file(f, (1, args.size, args.size), resize=True, policy="crop"))
        rgb.append(read_image_file(f, (3, args.size, args.size), resize=True, policy="pad"))
    cols = [("as stored", torch.stack(stored)),
            (f"grey model\nimage_size={args.size}, crop", torch.stack(grey)),
            (f"RGB model\nimage_size={args.size}, pad", torch.stack(rgb))]
    Image.fromarray(labelled_columns(cols, scale=1)).save(args.output)
    print(f"wrote {args.output} ({', '.join(names)})")


if __name__ == "__main__":
    main()
