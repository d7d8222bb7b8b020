"""Load the srVAE authors' own models from a checkout of their repository (ioangatop/srVAE), to time them.

Nothing of their code is copied here: :func:`load` imports it from ``DIR`` at run time and applies, in memory,
the patches it needs to run here:

- their ``src.utils.args`` parses ``sys.argv`` on import: ``sys.argv`` is set to the model's options for it;
- their package ``__init__`` files import the data loaders and plotting (torchvision, TensorBoard): the
  packages ``src``, ``src.models`` are entered without running those files, and ``torchvision`` (absent
  here: installing it replaces the CPU torch) is stood in for by a module with the names they import;
- their flow takes ``.view(B, -1)`` of tensors that their ``squeeze_2x2`` leaves permuted (torch 2.13 keeps
  that layout through elementwise ops, so the view fails): ``squeeze_2x2``'s result is made ``.contiguous()``;
- ``srVAE.compressed_transoformation`` resizes image by image through PIL: it is replaced by a batched
  2x2 average pool on the grid k/255, the same ``y`` our ``downscale`` computes (only the timing of this
  step is affected, and it is not the network's).

:func:`load` returns a module whose ``forward(x_uint8)`` is their negative ELBO (their ``calculate_elbo``),
so ``loss.backward()`` times their training step as ``benchmarks/bench.py`` times ours.
"""

from __future__ import annotations

import importlib
import sys
import types
import warnings
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

MODELS = {
    "authors-vae-realnvp": ("VAE", "densenet32", "src.models.vae.vae", "VAE"),
    "authors-srvae": ("srVAE", "densenet16x32", "src.models.srvae.srvae", "srVAE"),
}


def _stub_torchvision() -> None:
    if "torchvision" in sys.modules:
        return
    try:
        importlib.import_module("torchvision")
        return
    except ImportError:
        pass

    class _Transform:  # accepts any arguments; never called (the resize is patched)
        def __init__(self, *args: object, **kwargs: object) -> None:
            pass

    tv = types.ModuleType("torchvision")
    tr = types.ModuleType("torchvision.transforms")
    for name in ("Compose", "ToPILImage", "Resize", "ToTensor", "RandomHorizontalFlip", "Pad", "RandomAffine",
                 "CenterCrop", "Normalize"):
        setattr(tr, name, _Transform)
    ut = types.ModuleType("torchvision.utils")
    ut.make_grid = ut.save_image = lambda *a, **k: None
    tv.transforms, tv.utils = tr, ut
    sys.modules.update({"torchvision": tv, "torchvision.transforms": tr, "torchvision.utils": ut})


def _package(name: str, path: Path) -> None:
    """Register package ``name`` at ``path`` without executing its ``__init__.py``."""
    if name not in sys.modules:
        mod = types.ModuleType(name)
        mod.__path__ = [str(path)]
        sys.modules[name] = mod


class _NELBO(nn.Module):
    """Their model with ``forward(x uint8) -> mean negative ELBO`` (their ``calculate_elbo``)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x01 = x.float() / 255.0  # their ToTensor
        nelbo, _ = self.model.calculate_elbo(x01, self.model(x01))
        return nelbo


def load(src_dir: str | Path, name: str, device: str = "cpu", init_batch: torch.Tensor | None = None) -> nn.Module:
    """The authors' model ``name`` (a key of :data:`MODELS`) built from the checkout ``src_dir``; their
    data-dependent initialisation on ``init_batch`` (uint8 images; default 32 of uniform noise, enough to time it)."""
    root = Path(src_dir).resolve()
    if not (root / "src" / "modules" / "nn_layers.py").is_file():
        raise SystemExit(f"{root}: not a checkout of ioangatop/srVAE (no src/modules/nn_layers.py)")
    model_name, network, module, cls = MODELS[name]
    warnings.filterwarnings("ignore", category=FutureWarning)  # torch.nn.utils.weight_norm is deprecated
    _stub_torchvision()
    for key in [k for k in sys.modules if k == "src" or k.startswith("src.")]:  # their args are parsed once
        del sys.modules[key]
    argv = sys.argv
    sys.argv = ["main.py", "--model", model_name, "--network", network, "--prior", "RealNVP", "--device", device]
    sys.path.insert(0, str(root))
    try:
        _package("src", root / "src")
        _package("src.models", root / "src" / "models")
        mod = importlib.import_module(module)
    finally:
        sys.argv = argv
        sys.path.remove(str(root))
    flow = importlib.import_module("src.modules.priors.realnvp.model.real_nvp")
    squeeze = flow.squeeze_2x2
    flow.squeeze_2x2 = lambda *a, **k: squeeze(*a, **k).contiguous()
    model = getattr(mod, cls)(x_shape=(3, 32, 32), prior="RealNVP")
    if cls == "srVAE":
        def batched_y(x01: torch.Tensor) -> torch.Tensor:
            return torch.floor(F.avg_pool2d(torch.round(x01 * 255.0), 2) + 0.5) / 255.0  # round half up

        model.compressed_transoformation = batched_y
    model = _NELBO(model.to(device))
    if init_batch is None:
        init_batch = torch.randint(0, 256, (32, 3, 32, 32), dtype=torch.uint8)
    with torch.no_grad():  # their data-dependent init runs on the first forward pass
        model(init_batch.to(device))
    return model
