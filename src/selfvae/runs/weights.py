"""The weights file of an exported model: safetensors with a format tag, float32 or float16, and the hash of
its tensors.

safetensors holds tensors and a string table only, so loading one never runs code. The SHA-256 of the tensors as
stored (:func:`digest`) is kept in the file's metadata (or, for files shipped before it was, in the model's
metrics) and checked on loading: a flipped bit or a zeroed tensor is refused, not evaluated.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping
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


def digest(state: Mapping[str, torch.Tensor]) -> str:
    """Hex SHA-256 of a state dict's tensors as they are (names, dtypes, shapes and bytes, in name order)."""
    h = hashlib.sha256()
    for name in sorted(state):
        t = state[name].detach().cpu().contiguous()
        h.update(f"{name}:{t.dtype}:{tuple(t.shape)};".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def check_digest(state: Mapping[str, torch.Tensor], expected: str | None, where: object) -> None:
    """Refuse weights whose :func:`digest` is not the one recorded with them (None: nothing was recorded)."""
    if expected is not None and digest(state) != expected:
        raise SelfVAEError(f"{where}: the weights do not match the hash recorded with them: the file is damaged "
                           f"(a flipped bit or a changed tensor); use another copy, checkpoint or export")


def read_weights(folder: Path, device: str | torch.device = "cpu", expected: str | None = None,
                 ) -> dict[str, torch.Tensor]:
    """The state dict in ``folder/model.safetensors`` (float32), checked for its format tag and against the hash
    in its metadata, else ``expected`` (a shipped model's recorded one)."""
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
            stored = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 - safe_open has no items()
    except (SafetensorError, OSError) as e:
        raise SelfVAEError(f"{path}: corrupt or truncated model file ({e})") from e
    check_digest(stored, meta.get("sha256", expected), path)
    return {k: v.float() for k, v in stored.items()}


def write_weights(model: torch.nn.Module, folder: Path, dtype: str, name: str) -> Path:
    """Write ``model``'s state dict to ``folder/model.safetensors`` in ``dtype`` (atomically).

    "float16" keeps the layers that output likelihood parameters (:func:`likelihood_outputs`) in float32. The
    bytes are written by Python, not by ``safetensors.torch.save_file``, which creates its file readable by its
    owner alone whatever the umask (0.8.0): a model written for others to load must be readable by them.
    """
    from safetensors.torch import save

    if dtype not in DTYPES:
        raise SelfVAEError(f"dtype={dtype!r}: expected one of {', '.join(DTYPES)}")
    keep = likelihood_outputs(model) if dtype == "float16" else set()
    state = {k: v.detach().to(torch.float32 if k.rsplit(".", 1)[0] in keep else DTYPES[dtype]).contiguous()
             for k, v in model.state_dict().items()}
    tmp = folder / (layout.WEIGHTS + ".tmp")
    data = save(state, metadata={"format": FORMAT, "version": FORMAT_VERSION, "dtype": dtype, "name": name,
                                 "sha256": digest(state)})
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    return tmp.replace(folder / layout.WEIGHTS)
