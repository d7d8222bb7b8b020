"""selfvae: self-supervised variational auto-encoders in PyTorch.

The library in a few lines (the tutorial, ``docs/TUTORIAL.md``, has each step with its output)::

    import selfvae
    model = selfvae.load("cifar10-srvae-small")      # a shipped model, an exported folder or a run directory
    model.bits_per_dim(images, iw_samples=64)        # Bound: bpd_elbo, bpd_iw, terms, active units
    x = model.sample(16, temperature=[1.0, 0.8])     # uint8 [16, 3, 32, 32]; one temperature per latent level
    big = model.super_resolve(small, factor=2)       # x from y = d(x); any size, tile by tile
    model = selfvae.train("mnist-vae", train_data=tensor, steps=500, out="runs/mine")
    model.save_pretrained("my-model"); selfvae.from_pretrained("my-model")

Everything named in ``__all__`` is documented with its shapes and units; ``selfvae.api`` holds it.
"""

from __future__ import annotations

import torch

from selfvae.api import Bound, Latents, Model, as_images, train

__version__ = "0.1.0"


def load(name_or_path: str, device: str | torch.device = "cpu") -> Model:
    """A trained :class:`~selfvae.api.Model` in eval mode (EMA weights where the run kept them): a shipped model's
    name (``selfvae pretrained`` lists them), a folder written by ``save_pretrained`` or ``selfvae export``, or a
    run directory. ``model.config`` is its whole :class:`~selfvae.config.Config` (data set, training),
    ``model.cfg`` the architecture."""
    return Model.from_pretrained(name_or_path, device)


from_pretrained = load

__all__ = ["__version__", "Bound", "Latents", "Model", "as_images", "from_pretrained", "load", "train"]
