"""selfvae: self-supervised variational auto-encoders in PyTorch.

``selfvae.load("mnist-srvae")`` (or ``from_pretrained``) gives a trained model: a shipped model's name
(``selfvae pretrained`` lists them), a folder written by ``selfvae export``, or a run directory.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

    from selfvae.models.selfvae import SelfVAE

__version__ = "0.1.0"


def load(name_or_path: str, device: str | torch.device = "cpu") -> SelfVAE:
    """A trained model in eval mode (EMA weights where the run kept them); ``model.config`` is its whole
    :class:`~selfvae.config.Config` (data set, training), ``model.cfg`` the architecture."""
    from selfvae.runs.loading import load_run

    return load_run(name_or_path, device)[1]


from_pretrained = load

__all__ = ["__version__", "from_pretrained", "load"]
