"""The weights file of an exported model: safetensors with a format tag, float32 or float16.

safetensors holds tensors and a string table only, so loading one never runs code.
"""

from __future__ import annotations

from pathlib import Path

import torch

from selfvae.errors import SelfVAEError
from selfvae.runs import layout

FORMAT = "selfvae-model"
FORMAT_VERSION = "1"
DTYPES = {"float32": torch.float32, "float16": torch.float16}


def likelihood_outputs(model: torch.nn.Module) -> set[str]:
    """Names of the modules whose outputs are likelihood parameters: the last weight-normed conv of ``p_y``
    and of each ``p_x[k]``."""
    from selfvae.nn.layers import WNConv2d

    names = set()
    for prefix in ["p_y", *(f"p_x.{k}" for k in range(len(model.p_x)))]:
        convs = [n for n, m in model.get_submodule(prefix).named_modules() if isinstance(m, WNConv2d)]
        names.add(f"{prefix}.{convs[-1]}")
    return names


def read_weights(folder: Path, device: str | torch.device = "cpu") -> dict[str, torch.Tensor]:
    """The state dict in ``folder/model.safetensors`` (float32), checked for its format tag."""
    from safetensors import SafetensorError, safe_open

    path = folder / layout.WEIGHTS
    try:
        with safe_open(str(path), framework="pt", device=str(device)) as f:
            meta = f.metadata() or {}
            if meta.get("format") != FORMAT:
                raise SelfVAEError(f"{path}: not a selfvae model file (format tag {meta.get('format')!r})")
            if meta.get("version") != FORMAT_VERSION:
                raise SelfVAEError(f"{path}: model format version {meta.get('version')!r} is not supported "
                                   f"(this selfvae reads {FORMAT_VERSION})")
            return {k: f.get_tensor(k).float() for k in f.keys()}  # noqa: SIM118 - safe_open has no items()
    except (SafetensorError, OSError) as e:
        raise SelfVAEError(f"{path}: corrupt or truncated model file ({e})") from e


def write_weights(model: torch.nn.Module, folder: Path, dtype: str, name: str) -> Path:
    """Write ``model``'s state dict to ``folder/model.safetensors`` in ``dtype`` (atomically).

    "float16" keeps the layers that output likelihood parameters (:func:`likelihood_outputs`) in float32.
    """
    from safetensors.torch import save_file

    if dtype not in DTYPES:
        raise SelfVAEError(f"dtype={dtype!r}: expected one of {', '.join(DTYPES)}")
    keep = likelihood_outputs(model) if dtype == "float16" else set()
    state = {k: v.detach().to(torch.float32 if k.rsplit(".", 1)[0] in keep else DTYPES[dtype]).contiguous()
             for k, v in model.state_dict().items()}
    tmp = folder / (layout.WEIGHTS + ".tmp")
    save_file(state, str(tmp), metadata={"format": FORMAT, "version": FORMAT_VERSION, "dtype": dtype, "name": name})
    return tmp.replace(folder / layout.WEIGHTS)
