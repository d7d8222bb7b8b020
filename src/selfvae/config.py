"""Explicit configuration: dataclasses for data, model and training, grouped in :class:`Config`.

Presets (:mod:`selfvae.presets`) are named ``Config`` instances; a run directory stores its config as
JSON (a run's config file, :mod:`selfvae.runs.layout`) so evaluation and sampling rebuild exactly the trained model.
"""

from __future__ import annotations

import dataclasses
import json
import math
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from selfvae.data.datasets import ON_BAD_FILE
from selfvae.data.images import RESIZE_POLICIES
from selfvae.errors import SelfVAEError
from selfvae.nn.nets import NetSpec

CONFIG_VERSION = 1


@dataclass
class DataConfig:
    """Which data set, where, and how it is split and augmented."""

    name: str = "fashion-mnist"
    root: str | None = None
    augment: bool | None = None  # None: the data set's default (paper protocol)
    image_size: int | None = None  # resize to this square side (None: the data set's own size)
    resize: str = "crop"  # how non-square images become square first: "crop" (centre) or "pad" (black bars)
    channels: int | None = None  # 1 (grey) or 3 (RGB); None: the model's image_shape[0]
    val_fraction: float = 0.15
    split_seed: int = 0
    on_bad_file: str = "error"  # unreadable image files in folders: "error" or "skip" (warn and drop)


@dataclass
class ModelConfig:
    """A K-level selfVAE. ``transforms`` is the chain ``d`` from x downwards, e.g. ``"downscale,downscale"``;
    the empty chain gives the plain VAE (K = 0). Each network role has its own size."""

    image_shape: tuple[int, int, int] = (1, 32, 32)
    # The data's own image shape when ``image_shape`` holds it zero-padded (MNIST: 28x28 in 32x32); bits/dim
    # are per dimension of this shape. None: ``image_shape`` (filled in from the data set when a model is built).
    data_shape: tuple[int, int, int] | None = None
    transforms: str = ""
    latent_shape: tuple[int, int, int] = (16, 8, 8)
    prior: str = "realnvp"
    prior_kwargs: dict[str, Any] = field(default_factory=dict)
    n_mix: int = 10
    q_u: NetSpec = NetSpec()
    p_y: NetSpec = NetSpec()
    q_z: NetSpec = NetSpec()
    p_z: NetSpec = NetSpec()
    p_x: NetSpec = NetSpec()
    # Optional sizes of the inner nets of p(z|y,u) (its y-encoder) and p(x|y,z) (its z-decoder); None: as
    # p_z / p_x (INNER_NETS). The authors' srVAE sizes them apart (growth 32 / 5 steps, growth 64 / 8 steps).
    p_z_y: NetSpec | None = None
    p_x_z: NetSpec | None = None
    INNER_NETS: ClassVar[dict[str, str]] = {"p_z_y": "p_z", "p_x_z": "p_x"}
    # A second encoder of y_1 (x in a plain VAE) of these sizes whose output is added to q_u's (the mean and the raw
    # log-variance of q(u | y_1)); its last layer starts at zero, so a trained model given one (``train.init``) is
    # the same model until it trains: an encoder widened where a posterior optimised per image beats the amortised
    # one (`selfvae eval --refine`). None: q_u alone.
    q_u_residual: NetSpec | None = None
    OPTIONAL_NETS: ClassVar[tuple[str, ...]] = ("q_u_residual",)  # nets a model has only where sized
    nets: str = "selfvae"  # "selfvae": selfvae.nn.nets; "paper": the srVAE authors' exact nets (selfvae.nn.paper)
    # The family of the z side (q_z, p_z, p_x) where it differs from the u side's (q_u, p_y: ``nets``); None: ``nets``.
    # A model may join one model's u side (a VAE of y_1) to another's z side (x given y_1): experiments/z_hybrid.py
    z_nets: str | None = None
    # Renormalise each p(y_k+1 | y_k, z_k) (and p(x | y_K, z_K)) onto the images its transform maps to y_k, by
    # Transform.log_mass_consistent: a proper likelihood on the images that can occur, so a tighter valid bound.
    # Only the box-average `downscale` supports it; with RGB the constraint is applied to the first channel. With a
    # sub-pixel context (below; x's last transform `downscale`, factor 2) every channel of each 2x2 group is
    # renormalised onto the values its block's average allows (selfvae.distributions.WindowedMixture).
    consistent: bool = False
    # Sub-pixel context (selfvae.nn.context): x's likelihood over its 2x2 sub-pixel groups, each conditioned on the
    # groups before it by a net of ``context_layers`` 3x3 convolutions of ``context_width`` channels; 0: none (the
    # pixels independent given the latents, as in the papers). Needs an even image size.
    context_width: int = 0
    context_layers: int = 3
    # The same for a selfVAE's coarsest level y_1 (p(y_1 | u), whose pixels are otherwise independent given u): a
    # context net of ``y_context_width`` channels (``context_layers`` layers) over y_1's 2x2 groups; 0: none. A
    # plain VAE's y_1 is x itself: its context is ``context_width``'s.
    y_context_width: int = 0

    def inner(self, name: str) -> NetSpec:
        """The sizes of inner net ``name`` (a key of :data:`INNER_NETS`): its own where set, else its parent's."""
        return getattr(self, name) or getattr(self, self.INNER_NETS[name])


@dataclass
class TrainConfig:
    """Optimisation (thesis ch. 6: AdaMax, lr 2e-3, per-step exponential decay floored at 1e-4)."""

    batch_size: int = 64
    steps: int = 2000
    lr: float = 2e-3
    # "exp": lr * lr_decay**step floored at lr_min (the thesis); "cosine": from lr down to lr_min at ``steps``;
    # "cosine-time": the same over the run's ``max_minutes`` on its ``clock`` (equal-clock comparisons; a resumed
    # run goes on along the same curve)
    lr_schedule: str = "exp"
    lr_decay: float = 0.999999
    lr_min: float = 1e-4
    lr_warmup_steps: int = 0  # linear warm-up from 0 over this many steps, before either schedule
    grad_clip: float | None = 200.0
    grad_skip: float | None = None  # skip steps whose gradient norm exceeds this (VDVAE)
    max_consecutive_skips: int = 50
    ema_decay: float | None = None
    # What the optimiser minimises besides the bound (the bound itself is what is logged and evaluated):
    kl_warmup_steps: int = 0  # KL terms weighted by min(1, step / kl_warmup_steps) (0: always 1)
    free_bits: float = 0.0  # each z_k's KL (batch mean, nats per image) counts as at least this (Kingma 2016)
    free_bits_per: str = "level"  # what free_bits floors: each z_k's whole KL, or each "channel" of every z_k
    eval_every: int = 500
    eval_limit: int | None = 2000  # validation images per evaluation during training (None: all)
    log_every: int = 25
    checkpoint_every: int = 250
    sample_every: int = 1000
    # Final evaluation after training: the ELBO (S = 1) on the first ``final_eval_limit`` test images (None:
    # all) and the IW bound with ``final_iw_samples`` on the first ``final_iw_limit`` of them (None: all; 0 or
    # S = 1: none). The defaults end a small CPU run within a minute; `selfvae eval` gives the full IWAE.
    final_iw_samples: int = 128
    final_eval_limit: int | None = None
    final_iw_limit: int | None = 100
    seed: int = 0
    init_batch: int = 256  # images for the data-dependent initialisation
    # Start from these weights instead (a run directory, an exported folder or a pretrained name; the evaluation
    # weights it would load with): fine-tuning, or a warm restart with a fresh optimiser and schedule
    init: str | None = None
    # Train only the parameters whose names start with one of these comma-separated prefixes (e.g. "x_context":
    # a sub-pixel context added to a trained model, the rest frozen); None: all of them
    trainable: str | None = None
    # Stop (as if done) after this much training time: the run's steps over all its sessions, as ``steps``
    # counts them (a resumed run spends what is left; validation, samples and checkpoints do not count)
    max_minutes: float | None = None
    # The clock of ``max_minutes`` and "cosine-time": "wall" (seconds passed) or "cpu" (the CPU seconds of the
    # steps: equal-budget comparisons that stay fair when other work shares the machine's cores)
    clock: str = "wall"
    accum_steps: int = 1  # micro-batches per process per step (gradient accumulation; same global batch)
    num_threads: int | None = None  # torch.set_num_threads for the run (None: torch's default)
    deterministic: bool = False  # torch.use_deterministic_algorithms (bit-exact resume on CPU)
    amp: str | None = None  # "bf16" / "fp16": the networks run under autocast (fp16: loss-scaled); likelihoods fp32
    channels_last: bool = False  # convolutions in channels-last memory format
    compile: bool = False  # torch.compile every network
    # torch.compile's mode: "reduce-overhead" also replays each network's kernels as CUDA graphs (one launch where
    # eager issues hundreds: what a host-bound GPU step needs); no CUDA graphs on the CPU, where it compiles alone
    compile_mode: str = "default"
    # torch.compile's backend: "inductor" (generated kernels, fused; minutes to compile a paper srVAE) or
    # "cudagraphs" (the eager kernels replayed as CUDA graphs: no code generation, compiled in the time dynamo takes to
    # trace, the launches a host-bound step spends gone all the same; eager on the CPU)
    compile_backend: str = "inductor"
    workers: int = 0  # data-loading worker processes (0: load batches in the main process)
    flush_denormal: bool = True  # CPU: treat subnormal floats as 0 (avoids slow steps; no effect on the bound)
    # CPU with glibc: freed memory stays in the process for the next step's tensors instead of being page-faulted
    # in anew (selfvae.runtime; benchmarks/bench.py --retain-memory measures it); the process keeps its peak memory
    retain_memory: bool = True


@dataclass
class Config:
    """Everything a run needs; ``description`` is shown by ``selfvae presets``."""

    name: str = "custom"
    description: str = ""
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["version"] = CONFIG_VERSION
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Config:
        d = dict(d)
        version = d.pop("version", None)
        if version != CONFIG_VERSION:
            raise SelfVAEError(
                f"config version {version!r} is not supported (this selfvae reads version {CONFIG_VERSION})"
            )
        try:
            m = dict(d["model"])
            for role in ("q_u", "p_y", "q_z", "p_z", "p_x"):
                m[role] = NetSpec(**m[role])
            for role in (*ModelConfig.INNER_NETS, *ModelConfig.OPTIONAL_NETS):
                if m.get(role) is not None:
                    m[role] = NetSpec(**m[role])
            m["image_shape"] = tuple(m["image_shape"])
            m["latent_shape"] = tuple(m["latent_shape"])
            if m.get("data_shape") is not None:
                m["data_shape"] = tuple(m["data_shape"])
            cfg = cls(
                name=d["name"],
                description=d.get("description", ""),
                data=DataConfig(**d["data"]),
                model=ModelConfig(**m),
                train=TrainConfig(**d["train"]),
            )
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            raise SelfVAEError(f"config is malformed or from an incompatible version: {e}") from e
        return check_config(cfg)

    def with_data_root(self, root: str | None) -> Config:
        """A copy reading its data set from ``root`` (``--data-dir``)."""
        return dataclasses.replace(self, data=dataclasses.replace(self.data, root=root))

    def save(self, path: Path) -> None:
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.to_dict(), indent=2))
        tmp.replace(path)

    @classmethod
    def load(cls, path: Path) -> Config:
        if not path.is_file():
            raise SelfVAEError(f"{path}: no such config file (is this a selfvae run directory?)")
        try:
            return cls.from_dict(json.loads(path.read_text()))
        except json.JSONDecodeError as e:
            raise SelfVAEError(f"{path}: not valid JSON ({e})") from e


# ----- checks: every number in its range, before any work -------------------------------------------------
MAX_IMAGE_SIZE = 4096  # data.image_size above this is refused (a 100000 side would ask for terabytes)


def _positive(v: Any) -> bool:
    return v > 0


def _at_least(low: float) -> Callable[[Any], bool]:
    return lambda v: v >= low


_CHECKS: dict[str, tuple[Callable[[Any], bool], str, bool]] = {
    # key: (test, what it must be, None allowed)
    "data.image_size": (lambda v: 1 <= v <= MAX_IMAGE_SIZE, f"a side from 1 to {MAX_IMAGE_SIZE}", True),
    "data.channels": (lambda v: v in (1, 3), "1 (grey) or 3 (RGB)", True),
    "data.val_fraction": (lambda v: 0 <= v < 1, "in [0, 1)", False),
    "model.n_mix": (_at_least(1), "at least 1", False),
    "model.context_width": (_at_least(0), "at least 0 (0: no sub-pixel context)", False),
    "model.context_layers": (_at_least(1), "at least 1", False),
    "model.y_context_width": (_at_least(0), "at least 0 (0: no sub-pixel context on y_1)", False),
    "train.batch_size": (_at_least(1), "at least 1", False),
    "train.steps": (_at_least(1), "at least 1", False),
    "train.lr": (_positive, "above 0", False),
    "train.lr_decay": (lambda v: 0 < v <= 1, "in (0, 1]", False),
    "train.lr_min": (_at_least(0), "at least 0", False),
    "train.lr_warmup_steps": (_at_least(0), "at least 0", False),
    "train.grad_clip": (_positive, "above 0 (or null: no clipping)", True),
    "train.grad_skip": (_positive, "above 0 (or null: no skipping)", True),
    "train.max_consecutive_skips": (_at_least(1), "at least 1", False),
    "train.ema_decay": (lambda v: 0 <= v < 1, "in [0, 1) (or null: no EMA)", True),
    "train.kl_warmup_steps": (_at_least(0), "at least 0", False),
    "train.free_bits": (_at_least(0), "at least 0", False),
    "train.eval_every": (_at_least(1), "at least 1", False),
    "train.eval_limit": (_at_least(1), "at least 1 (or null: all)", True),
    "train.log_every": (_at_least(1), "at least 1", False),
    "train.checkpoint_every": (_at_least(1), "at least 1", False),
    "train.sample_every": (_at_least(1), "at least 1", False),
    "train.final_iw_samples": (_at_least(1), "at least 1", False),
    "train.final_eval_limit": (_at_least(1), "at least 1 (or null: all)", True),
    "train.final_iw_limit": (_at_least(0), "at least 0 (or null: all)", True),
    "train.init_batch": (_at_least(1), "at least 1", False),
    "train.max_minutes": (_at_least(0), "at least 0 (0: stop at once; null: no budget)", True),
    "train.accum_steps": (_at_least(1), "at least 1", False),
    "train.num_threads": (_at_least(1), "at least 1 (or null: torch's default)", True),
    "train.workers": (_at_least(0), "at least 0", False),
}


NETS = ("selfvae", "paper")  # the net families (ModelConfig.nets, .z_nets)
# Settings that name one of a few choices (None allowed where the field is optional: OPTIONAL_CHOICES).
CHOICES: dict[str, tuple[str, ...]] = {
    "train.lr_schedule": ("exp", "cosine", "cosine-time"),
    "train.clock": ("wall", "cpu"),
    "train.free_bits_per": ("level", "channel"),
    "train.amp": ("bf16", "fp16"),
    "train.compile_mode": ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs"),
    "train.compile_backend": ("inductor", "cudagraphs"),
    "data.resize": RESIZE_POLICIES,
    "data.on_bad_file": ON_BAD_FILE,
    "model.nets": NETS,  # our networks, or the srVAE authors' (selfvae.nn.paper)
    "model.z_nets": NETS,  # the z side's, where it differs
}
OPTIONAL_CHOICES = ("train.amp", "model.z_nets")


def check_config(cfg: Config) -> Config:
    """Refuse a config whose numbers are out of range, not numbers, whose choices are not among :data:`CHOICES`,
    or whose shapes are not three positive sizes, naming the key (``--set`` and config files reach every field);
    returns ``cfg``."""
    for key, (test, what, nullable) in _CHECKS.items():
        section, name = key.split(".")
        value = getattr(getattr(cfg, section), name)
        if value is None and nullable:
            continue
        number = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
        if not number or not test(value):
            raise SelfVAEError(f"{key}={value!r}: must be {what}")
    for key, options in CHOICES.items():
        section, name = key.split(".")
        value = getattr(getattr(cfg, section), name)
        if value not in options and not (value is None and key in OPTIONAL_CHOICES):
            raise SelfVAEError(f"{key}={value!r}: must be one of {', '.join(options)}")
    if cfg.train.lr_schedule == "cosine-time" and not cfg.train.max_minutes:
        raise SelfVAEError("train.lr_schedule='cosine-time' anneals over train.max_minutes; set it")
    m = cfg.model
    for key, shape in (("image_shape", m.image_shape), ("latent_shape", m.latent_shape), ("data_shape", m.data_shape)):
        if shape is None and key == "data_shape":
            continue
        if not (isinstance(shape, tuple | list) and len(shape) == 3
                and all(isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in shape)):
            raise SelfVAEError(f"model.{key}={shape!r}: must be three positive sizes, e.g. [16, 8, 8]")
    return cfg


# ----- overrides: ``--set section.field=value`` ----------------------------------------------------------
def _field_names(obj: Any) -> list[str]:
    return [f.name for f in dataclasses.fields(obj)]


def _keys_below(obj: Any, prefix: str) -> list[str]:
    """Every settable dotted key below a dataclass (``model.q_u.width``, ...), for error messages."""
    keys = []
    for name in _field_names(obj):
        value = getattr(obj, name)
        if dataclasses.is_dataclass(value):
            keys += _keys_below(value, f"{prefix}{name}.")
        elif name == "prior_kwargs":
            keys.append(f"{prefix}{name}.<option>")
        else:
            keys.append(f"{prefix}{name}")
    return keys


def _parse(text: str, hint: Any, key: str) -> Any:
    """``text`` as a value of the annotated type ``hint`` (int, float, bool, str, tuple of ints, ``X | None``)."""
    args = typing.get_args(hint)
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        if text.lower() in ("none", "null"):
            if type(None) in args:
                return None
        inner = [a for a in args if a is not type(None)]
        if len(inner) == 1:
            return _parse(text, inner[0], key)
    if hint is bool:
        if text.lower() in ("true", "1", "yes"):
            return True
        if text.lower() in ("false", "0", "no"):
            return False
        raise SelfVAEError(f"--set {key}={text}: expected true or false")
    if hint in (int, float):
        try:
            return hint(text)
        except ValueError:
            raise SelfVAEError(f"--set {key}={text}: expected {'an integer' if hint is int else 'a number'}") from None
    if typing.get_origin(hint) is tuple:
        try:
            return tuple(int(v) for v in text.split(","))
        except ValueError:
            raise SelfVAEError(f"--set {key}={text}: expected comma-separated integers, e.g. 1,32,32") from None
    if hint is str:
        return text
    raise SelfVAEError(f"--set {key}: cannot be set from the command line (type {hint})")


def _parse_option(text: str, default: Any, key: str) -> Any:
    """A prior option: typed like its default (bool, int, float), else JSON or the plain string."""
    for typ in (bool, int, float):
        if isinstance(default, typ):
            return _parse(text, typ, key)
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def _set_path(obj: Any, parts: list[str], text: str, key: str) -> Any:
    """Return ``obj`` with the field at ``parts`` set; frozen dataclasses are replaced, not mutated."""
    name = parts[0]
    where = ".".join(key.split(".")[: len(key.split(".")) - len(parts)])
    if not dataclasses.is_dataclass(obj):
        raise SelfVAEError(f"--set {key}: {where} is a value, not a section; use --set {where}=VALUE")
    if name not in _field_names(obj):
        if not where:  # the top level: name the sections, not the ~80 keys
            raise SelfVAEError(f"--set {key}: no config section or field {name!r}; valid: "
                               f"{', '.join(_field_names(obj))} (e.g. train.lr, model.q_u.width)")
        raise SelfVAEError(f"--set {key}: {where} has no field {name!r}; valid keys: "
                           f"{', '.join(_keys_below(obj, where + '.'))}")
    current = getattr(obj, name)
    if current is None and len(parts) > 1 and name in getattr(obj, "INNER_NETS", {}):
        current = obj.inner(name)  # an unset inner net is sized as its parent: start there
    elif current is None and len(parts) > 1 and name in getattr(obj, "OPTIONAL_NETS", ()):
        current = NetSpec()  # an optional net: its sizes start at NetSpec's defaults
    if len(parts) == 1:
        if dataclasses.is_dataclass(current) or isinstance(current, dict):
            below = _keys_below(current, key + ".") if dataclasses.is_dataclass(current) else [key + ".<option>"]
            raise SelfVAEError(f"--set {key}: is a section; set one of its keys: {', '.join(below)}")
        new = _parse(text, typing.get_type_hints(type(obj))[name], key)
    elif isinstance(current, dict):
        if len(parts) != 2:
            raise SelfVAEError(f"--set {key}: expected {'.'.join(key.split('.')[:-len(parts) + 1])}.<option>=value")
        new = {**current, parts[1]: text}  # typed against the prior once all overrides are in
    else:
        new = _set_path(current, parts[1:], text, key)
    if type(obj).__dataclass_params__.frozen:
        return dataclasses.replace(obj, **{name: new})
    setattr(obj, name, new)
    return obj


def apply_overrides(cfg: Config, items: list[str]) -> None:
    """Apply ``section.field=value`` overrides in place: any field, nested ones included
    (``train.lr=1e-3``, ``model.q_u.width=64``, ``model.prior_kwargs.num_blocks=4``).

    Values are parsed by the field's type; an unknown key or a value of the wrong type raises
    :class:`SelfVAEError` listing the valid keys. Changing ``model.prior`` drops the old prior's options;
    prior options are checked against the prior's constructor.
    """
    from selfvae.priors import prior_options

    old_prior = cfg.model.prior
    given_options: dict[str, str] = {}
    for item in items:
        key, sep, text = item.partition("=")
        if not sep or not key:
            raise SelfVAEError(f"--set {item!r}: expected section.field=value, e.g. train.lr=1e-3")
        parts = key.split(".")
        if parts[:2] == ["model", "prior_kwargs"] and len(parts) == 3:
            given_options[parts[2]] = text
            continue
        _set_path(cfg, parts, text, key)
    if cfg.model.prior != old_prior:
        cfg.model.prior_kwargs = {}
    options = prior_options(cfg.model.prior)
    for name, text in given_options.items():
        if name not in options:
            raise SelfVAEError(f"--set model.prior_kwargs.{name}: prior {cfg.model.prior!r} has no option {name!r}; "
                               f"valid: {', '.join(f'model.prior_kwargs.{o}' for o in options) or 'none'}")
        cfg.model.prior_kwargs[name] = _parse_option(text, options[name], f"model.prior_kwargs.{name}")
