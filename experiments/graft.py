"""One model's part grafted onto another: the weights of ``BASE`` with those of ``DONOR`` whose names start with
``--part`` (e.g. ``y_context``), written as a model folder (float32 ``config.json`` + ``model.safetensors``) to
train on with ``selfvae train --config OUT/config.json --init OUT``.

Two runs that went on from the same weights apart (one trained every weight, the other a context added and
trained alone) are joined so: the context learnt on the shared start works on the other's decoder nearly as well,
and a short run of the context alone on the joined model takes up the difference.

    python experiments/graft.py runs/ctx-srvae-cons-on4 runs/ctx-srvae-cons-y --part y_context \
        --out runs/srvae-cons-on4y-graft

The model's config is the donor's (it has the part); every other weight must exist, with the same shape, in both.
"""

from __future__ import annotations

import argparse
import copy
from pathlib import Path

from selfvae.api import Model
from selfvae.errors import SelfVAEError
from selfvae.models.build import build_model


def graft(base: Model, donor: Model, part: str) -> Model:
    """A model of the donor's config with the donor's ``part.*`` weights and the base's others, and the base's
    training record (the weights it holds most of; the donor's part's own steps, taken apart from a shared start,
    are not added)."""
    prefix = part.rstrip(".") + "."
    theirs = donor.state_dict()
    grafted = {k: v for k, v in theirs.items() if k.startswith(prefix)}
    if not grafted:
        raise SelfVAEError(f"--part {part}: the donor has no weight whose name starts with {prefix!r}")
    state = {k: v for k, v in base.state_dict().items() if not k.startswith(prefix)}
    differ = [k for k in state if k not in theirs or theirs[k].shape != state[k].shape]
    if differ:
        raise SelfVAEError(f"the base's weights {differ[:3]} are not the donor's shapes: not one architecture")
    cfg = copy.deepcopy(donor.config)
    model = build_model(cfg, cls=Model)
    model.load_state_dict({**state, **grafted})  # strict: every weight from one of the two
    model.config = cfg
    model.trained = base.trained
    return model


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("base", help="run directory, exported folder or shipped name: every weight but the part")
    ap.add_argument("donor", help="the same, holding the part (and the config written)")
    ap.add_argument("--part", required=True, help="the prefix of the donor's weights to take (e.g. y_context)")
    ap.add_argument("--out", type=Path, required=True)
    a = ap.parse_args()
    model = graft(Model.from_pretrained(a.base), Model.from_pretrained(a.donor), a.part)
    model.save_pretrained(a.out)
    n = sum(v.numel() for k, v in model.state_dict().items() if k.startswith(a.part))
    print(f"wrote {a.out}: {a.part} ({n / 1e6:.2f}M parameters) of {a.donor} on {a.base}")


if __name__ == "__main__":
    main()
