"""Every file name of a run directory and of an exported or shipped model, and how a name finds its folder.

A run directory (``selfvae train --out RUN``)::

    config.json        the run's Config: how to rebuild the model and continue the run
    last.pt, best.pt   checkpoints (the latest; the best on validation), each with its ``.prev``
    init.json          where a run started from ``--init`` took its weights (and their training)
    log.jsonl          one record per logged step and per validation
    tb/                TensorBoard events
    samples/           sample grids written during training
    curves.png         bits/dim and learning rate against step
    final/             metrics.json (test bounds), samples.png, fid.json (``selfvae fid``)

An exported model (``selfvae export``, and the models shipped in ``selfvae/pretrained/NAME/``)::

    config.json, model.safetensors, metrics.json, card.md

Anything that takes a run directory takes an exported folder or a shipped model's name as well
(:func:`resolve`). No other module spells these names.
"""

from __future__ import annotations

from pathlib import Path

from selfvae.errors import SelfVAEError

CONFIG = "config.json"
BEST = "best"  # checkpoint stems: FOLDER/STEM.pt
LAST = "last"
INIT = "init.json"
LOG = "log.jsonl"
TENSORBOARD = "tb"
SAMPLES = "samples"
CURVES = "curves.png"
FINAL = "final"
FINAL_METRICS = f"{FINAL}/metrics.json"
FINAL_SAMPLES = f"{FINAL}/samples.png"
FID = f"{FINAL}/fid.json"  # against the test split; fid_file names the others'
FID_REFS = ("test", "train")  # the splits FID is measured against (a data set without test/: val stands in)
WEIGHTS = "model.safetensors"
METRICS = "metrics.json"  # an exported model's
DATA = "data.npz"  # images a run was given in memory (selfvae.train): its data set, read as `npz`
CARD = "card.md"
REPORT = "report"  # where `selfvae report` writes by default, beside the model's other outputs
METRICS_FILES = (FINAL_METRICS, METRICS)  # where stored bounds are looked for: a run's, an exported model's

PACKAGED = Path(__file__).resolve().parent.parent / "pretrained"


def lock_file(folder: Path) -> Path:
    """What a training process holds while it trains into ``folder`` (beside it: it exists before the run does)."""
    return folder.parent / f".{folder.name}.lock"


def checkpoint(folder: Path, stem: str = LAST) -> Path:
    """``FOLDER/STEM.pt``."""
    return Path(folder) / f"{stem}.pt"


def previous(path: Path) -> Path:
    """Where a checkpoint's previous copy is kept: ``NAME.prev``."""
    return path.with_name(path.name + ".prev")


def fid_file(ref: str) -> str:
    """Where ``selfvae fid`` keeps a model's FID against the split ``ref``: :data:`FID` for the test split (the
    papers' main figure), ``final/fid-REF.json`` for another (the papers report the training set's too)."""
    return FID if ref == "test" else f"{FINAL}/fid-{ref}.json"


def fid_key(ref: str) -> str:
    """The key of an exported model's ``metrics.json`` that holds its FID against ``ref``."""
    return "fid" if ref == "test" else f"fid_{ref}"


def checkpoint_to_load(folder: Path, stem: str = BEST) -> Path:
    """The checkpoint a run's model is read from: ``STEM.pt``, else ``last.pt`` (a run stopped before it
    validated has no ``best.pt``)."""
    path = checkpoint(folder, stem)
    return path if path.exists() else checkpoint(folder, LAST)


def has_run(folder: Path) -> bool:
    """True where a run has saved a training state (``last.pt`` or its previous copy)."""
    last = checkpoint(folder, LAST)
    return last.exists() or previous(last).exists()


def has_model(folder: Path) -> bool:
    """True for a folder a model can be loaded from: a config and a checkpoint or exported weights."""
    folder = Path(folder)
    return (folder / CONFIG).is_file() and (
        is_exported(folder) or any(checkpoint(folder, s).is_file() for s in (BEST, LAST)))


def is_exported(folder: Path) -> bool:
    return (Path(folder) / WEIGHTS).is_file()


def pretrained_names() -> list[str]:
    """Names of the models shipped with this installation."""
    if not PACKAGED.is_dir():
        return []
    return sorted(p.name for p in PACKAGED.iterdir() if (p / WEIGHTS).is_file())


def pretrained_folder(name: str) -> Path:
    return PACKAGED / name


def resolve(name_or_path: str | Path) -> Path:
    """The folder behind a run directory, an exported model folder or a shipped model's name.

    A folder holding a model (``config.json``) wins over a name (``runs/x`` stays a run even if a model ``x``
    ships); other folders do not, so ``./NAME``, where commands put a shipped model's outputs, never hides it.
    """
    p = Path(name_or_path)
    if p.is_dir() and (p / CONFIG).is_file():
        return p
    if str(name_or_path) in pretrained_names():
        return pretrained_folder(str(name_or_path))
    if p.is_dir():
        return p  # not a model: the caller says what is missing
    if p.exists():
        raise SelfVAEError(f"{p}: is a file; expected a run directory, an exported model or a pretrained name")
    known = ", ".join(pretrained_names()) or "none in this installation"
    raise SelfVAEError(f"{name_or_path}: no such run directory and no pretrained model of that name "
                       f"(pretrained: {known})")


def check_run_dir(run_dir: str | Path) -> Path:
    """The folder of a run (config and a checkpoint), an exported model or a pretrained name, else
    :class:`SelfVAEError`."""
    p = resolve(run_dir)
    if not (p / CONFIG).is_file():
        raise SelfVAEError(f"{p}: not a selfvae run directory (no {CONFIG})")
    if not has_model(p):
        raise SelfVAEError(f"{p}: run directory has no checkpoint ({BEST}.pt or {LAST}.pt) and no {WEIGHTS}")
    return p


def is_packaged(folder: Path) -> bool:
    """True for a model shipped inside the package (commands must not write their outputs there)."""
    try:
        return Path(folder).resolve().parent == PACKAGED
    except OSError:
        return False


def output_dir(folder: Path) -> Path:
    """Where a command writes what it makes for a model by default: the run's own folder, except for a
    shipped model, whose outputs go to ``./NAME`` (the installed package is not written to)."""
    return Path.cwd() / folder.name if is_packaged(folder) else folder


def latest_run(root: str | Path) -> Path | None:
    """The most recently trained run directory directly under ``root`` (by its newest checkpoint), or None."""
    runs = [p.parent for p in Path(root).glob(f"*/{CONFIG}")
            if any(checkpoint(p.parent, s).exists() for s in (BEST, LAST))]
    if not runs:
        return None
    return max(runs, key=lambda p: max(f.stat().st_mtime for f in p.glob("*.pt")))
