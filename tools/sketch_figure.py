"""docs/figures/sketch.png: real test images (rows x) above their `sketch` (rows d(x)) for MNIST,
Fashion-MNIST and CIFAR-10 (our JPEG copy).

    python tools/sketch_figure.py [--shared ../shared/data] [--fashion /usr/share/datasets/fashion-mnist]
"""

from __future__ import annotations

import argparse
import io
import tarfile
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from selfvae.data import load_dataset
from selfvae.transforms import build_transform
from selfvae.viz import save_rows


def first_per_class(images: torch.Tensor, labels: torch.Tensor, n: int = 10) -> torch.Tensor:
    return torch.stack([images[torch.nonzero(labels == c)[0, 0]] for c in range(n)])


def cifar_jpegs(tar_path: Path) -> torch.Tensor:
    """The first test image of each class from cifar10-jpeg.tar.gz, uint8 [10, 3, 32, 32]."""
    out: dict[str, torch.Tensor] = {}
    with tarfile.open(tar_path) as tar:
        for m in tar:
            parts = m.name.split("/")
            if len(parts) == 4 and parts[1] == "test" and m.isfile() and parts[2] not in out:
                im = Image.open(io.BytesIO(tar.extractfile(m).read())).convert("RGB")
                out[parts[2]] = torch.from_numpy(np.asarray(im).copy()).permute(2, 0, 1)
            if parts[1:2] == ["train"]:
                break
    return torch.stack([out[k] for k in sorted(out)])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shared", default="../shared/data")
    ap.add_argument("--fashion", default="/usr/share/datasets/fashion-mnist")
    ap.add_argument("-o", "--output", default="docs/figures/sketch.png")
    args = ap.parse_args()
    sketch = build_transform("sketch")
    rows = []
    for name, root in (("mnist", args.shared), ("fashion-mnist", args.fashion)):
        ds = load_dataset(name, root, "test", image_size=28)
        x = first_per_class(ds.images, ds.labels)
        rows += [x.expand(-1, 3, -1, -1), sketch(x)]
    x = cifar_jpegs(Path(args.shared) / "cifar10-jpeg.tar.gz")
    rows += [x, sketch(x)]
    rows = [torch.nn.functional.interpolate(r.float(), size=(32, 32), mode="nearest").to(torch.uint8) for r in rows]
    print(f"wrote {save_rows(rows, args.output, scale=3)}")


if __name__ == "__main__":
    main()
