"""Pretrained models: the weights shipped with selfvae, and the export format any run can be written in.

An exported model is a folder holding

- ``config.json``: the run's :class:`~selfvae.config.Config` (how to rebuild the model);
- ``model.safetensors``: the evaluation weights (EMA where the run kept them), float32 or float16.
  safetensors holds tensors and a string table only, so loading one never runs code;
- ``metrics.json``: the test bounds measured on these very weights (bits/dim per dimension of the data's
  own images), FID where measured;
- ``card.md``: the model card (data, steps, wall clock, numbers).

The models shipped with the package live in ``selfvae/pretrained/NAME/`` and are found by name after
``pip install .`` as well as in a checkout; anything that takes a run directory takes such a name.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from selfvae.errors import SelfVAEError

PACKAGED = Path(__file__).resolve().parent.parent / "pretrained"
WEIGHTS = "model.safetensors"
FORMAT = "selfvae-model"
FORMAT_VERSION = "1"
DTYPES = {"float32": torch.float32, "float16": torch.float16}


def pretrained_names() -> list[str]:
    """Names of the models shipped with this installation."""
    if not PACKAGED.is_dir():
        return []
    return sorted(p.name for p in PACKAGED.iterdir() if (p / WEIGHTS).is_file())


def resolve(name_or_path: str | Path) -> Path:
    """The folder behind a run directory, an exported model folder or a shipped model's name.

    A folder holding a model (``config.json``) wins over a name (``runs/x`` stays a run even if a model ``x``
    ships); other folders do not, so ``./NAME``, where commands put a shipped model's outputs, never hides it.
    """
    p = Path(name_or_path)
    if p.is_dir() and (p / "config.json").is_file():
        return p
    if str(name_or_path) in pretrained_names():
        return PACKAGED / str(name_or_path)
    if p.is_dir():
        return p  # not a model: the caller says what is missing
    if p.exists():
        raise SelfVAEError(f"{p}: is a file; expected a run directory, an exported model or a pretrained name")
    known = ", ".join(pretrained_names()) or "none in this installation"
    raise SelfVAEError(f"{name_or_path}: no such run directory and no pretrained model of that name "
                       f"(pretrained: {known})")


def is_packaged(folder: Path) -> bool:
    """True for a model shipped inside the package (commands must not write their outputs there)."""
    try:
        return folder.resolve().parent == PACKAGED
    except OSError:
        return False


def likelihood_outputs(model: torch.nn.Module) -> set[str]:
    """Names of the modules whose outputs are likelihood parameters: the last weight-normed conv of ``p_y``
    and of each ``p_x[k]``."""
    from selfvae.nn.layers import WNConv2d

    names = set()
    for prefix in ["p_y", *(f"p_x.{k}" for k in range(len(model.p_x)))]:
        convs = [n for n, m in model.get_submodule(prefix).named_modules() if isinstance(m, WNConv2d)]
        names.add(f"{prefix}.{convs[-1]}")
    return names


def output_dir(folder: Path) -> Path:
    """Where a command writes what it makes for a model by default: the run's own folder, except for a
    shipped model, whose outputs go to ``./NAME`` (the installed package is not written to)."""
    return Path.cwd() / folder.name if is_packaged(folder) else folder


def is_exported(folder: Path) -> bool:
    return (folder / WEIGHTS).is_file()


def read_weights(folder: Path, device: str | torch.device = "cpu") -> dict[str, torch.Tensor]:
    """The state dict in ``folder/model.safetensors`` (float32), checked for its format tag."""
    from safetensors import SafetensorError, safe_open

    path = folder / WEIGHTS
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


def export(run: str | Path, out: str | Path, dtype: str = "float32", which: str = "best") -> Path:
    """Write the run's model to ``out`` in the exported format; returns ``out``.

    ``dtype`` "float16" halves the file: every tensor in float16 except the layers that output likelihood
    parameters (the last conv of ``p(y_1|u)`` and of each ``p(y_{k+1}|y_k,z_k)``), which stay float32: rounding
    the locations of sharp logistics to float16 cost mnist-srvae 0.0023 bits/dim, keeping those 2k parameters
    in float32 0.0003. Check the bound it gives with ``selfvae eval OUT`` (the shipped models are float16 only
    where the full test set's bound moved by less than 0.002 bits/dim).
    """
    from safetensors.torch import save_file

    from selfvae.evaluation.bounds import per_data_dims
    from selfvae.evaluation.table import stored_fid, stored_metrics
    from selfvae.models.loading import load_run

    if dtype not in DTYPES:
        raise SelfVAEError(f"dtype={dtype!r}: expected one of {', '.join(DTYPES)}")
    src = resolve(run)
    cfg, model = load_run(src, which=which)
    out = Path(out)
    if out.resolve() == src.resolve():
        raise SelfVAEError(f"{out}: is the run being exported; choose another folder")
    out.mkdir(parents=True, exist_ok=True)
    keep = likelihood_outputs(model) if dtype == "float16" else set()
    state = {k: v.detach().to(torch.float32 if k.rsplit(".", 1)[0] in keep else DTYPES[dtype]).contiguous()
             for k, v in model.state_dict().items()}
    tmp = out / (WEIGHTS + ".tmp")
    save_file(state, str(tmp), metadata={"format": FORMAT, "version": FORMAT_VERSION, "dtype": dtype,
                                         "name": cfg.name})
    tmp.replace(out / WEIGHTS)
    cfg.save(out / "config.json")
    metrics: dict[str, Any] = {}
    stored = stored_metrics(src)
    if stored is not None:
        stored.pop("source")  # which file it came from: a fact about the run folder, not the model
        metrics = per_data_dims(stored, model.x_dims, model.padded_dims)
        metrics["weights"] = "float32 (the run's own; re-measure the exported file with `selfvae eval`)"
    fid = stored_fid(src)
    if fid is not None:
        metrics["fid"] = fid
    if metrics:
        (out / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    return out
