"""selfvae as a library: a trained model with one method for each thing the papers do, and training from Python.

:class:`Model` is the :class:`~selfvae.models.selfvae.SelfVAE` network with these methods (the same weights, the
same state dict); :func:`selfvae.load` / :meth:`Model.from_pretrained` return one. Every method takes images in
any form a user holds (:func:`as_images`: uint8 or float tensors, numpy arrays, PIL images, file paths, or a list of
them) and returns uint8 image tensors ``[N, C, H, W]`` or a typed result; a wrong shape, channel count or dtype
raises :class:`~selfvae.errors.SelfVAEError` naming the input. The command line, the report and the demo compute
their figures with the same functions (:mod:`selfvae.evaluation.bounds`, :mod:`selfvae.models.ops`), so a
number or a picture is made one way.

Latent levels are ``u, z_1, ..., z_K`` (coarse to fine), image levels ``y_1, ..., y_K, x``; K = 0 is a plain VAE.
"""

from __future__ import annotations

import copy
import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Union

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from selfvae.config import Config, check_config
from selfvae.data.images import image_size, pixels_of, read_model_inputs
from selfvae.distributions import DiagonalGaussian
from selfvae.errors import SelfVAEError
from selfvae.evaluation.bounds import evaluate, iw_bound, log_weights
from selfvae.models import ops
from selfvae.models.build import resolved
from selfvae.models.selfvae import SelfVAE
from selfvae.runs import layout
from selfvae.runs.loading import load_trained
from selfvae.runs.stored import write_json
from selfvae.runs.weights import write_weights

ImageLike = Union[Tensor, np.ndarray, Image.Image, str, Path, Sequence[Any]]  # noqa: UP007 - read at run time


# ----- inputs ------------------------------------------------------------------------------------------------
def as_images(x: ImageLike, shape: tuple[int, int, int], what: str = "x",
              own: tuple[int, int, int] | None = None) -> Tensor:
    """``x`` as uint8 ``[N, C, H, W]`` images of ``shape`` (C, H, W).

    Accepted: a uint8 tensor or array (0..255); a float tensor or array in [0, 1] (rounded to the grid k/255);
    channel-first ``[C, H, W]`` / ``[N, C, H, W]`` or channel-last ``[H, W, C]`` / ``[N, H, W, C]`` (C = 1 or
    3; a 2-D array is one grey image, ``[N, H, W]`` a batch of them); a PIL image; an image file's path (read as
    the model's data loader read its images: MNIST's 28x28 digits placed in their 32x32 frame); or a list of any
    of these. Images of the data's ``own`` size (when it differs from ``shape``) are placed in the frame the same
    way. Anything else raises :class:`SelfVAEError` naming ``what`` and what is wrong.
    """
    own = tuple(own or shape)
    if isinstance(x, (str, Path)):
        return read_model_inputs([x], tuple(shape), own)
    if isinstance(x, Image.Image):
        x = pixels_of(x, where=what)
    if isinstance(x, (list, tuple)):
        if not x:
            raise SelfVAEError(f"{what}: an empty list; expected images")
        return torch.cat([as_images(item, shape, f"{what}[{i}]", own) for i, item in enumerate(x)])
    if isinstance(x, np.ndarray):
        if x.dtype == object:
            raise SelfVAEError(f"{what}: a numpy array of Python objects; expected numbers")
        x = torch.from_numpy(np.array(x))  # a copy: the caller's array may be read-only or change later
    if not isinstance(x, Tensor):
        raise SelfVAEError(f"{what}: a {type(x).__name__}; expected images as a tensor, numpy array, PIL image, "
                           "file path or a list of them")
    return _frame(_channels_first(_to_uint8(x.detach().cpu(), what), what), tuple(shape), own, what)


def _to_uint8(x: Tensor, what: str) -> Tensor:
    if x.dtype == torch.uint8:
        return x
    if x.dtype == torch.bool or not (x.is_floating_point() or x.dtype in (torch.int16, torch.int32, torch.int64)):
        raise SelfVAEError(f"{what}: dtype {x.dtype}; expected uint8 (0..255) or floats in [0, 1]")
    if not x.is_floating_point():
        if x.numel() and (x.min() < 0 or x.max() > 255):
            raise SelfVAEError(f"{what}: integers from {int(x.min())} to {int(x.max())}; expected 0..255")
        return x.to(torch.uint8)
    if not torch.isfinite(x).all():
        raise SelfVAEError(f"{what}: holds NaN or infinite values")
    if x.numel() and (x.min() < 0 or x.max() > 1):
        raise SelfVAEError(f"{what}: floats from {float(x.min()):.3g} to {float(x.max()):.3g}; expected [0, 1] "
                           "(or uint8 0..255; divide by 255 first)")
    return (x.double() * 255).round().to(torch.uint8)


def _channels_first(x: Tensor, what: str) -> Tensor:
    """``[N, C, H, W]`` from any of the layouts :func:`as_images` accepts (channel-first when both could be)."""
    if x.dim() == 2:
        return x[None, None]
    if x.dim() == 3:  # one image [C, H, W] or [H, W, C], else a batch of grey images [N, H, W]
        x = x[None] if x.shape[0] in (1, 3) or x.shape[2] in (1, 3) else x[:, None]
    if x.dim() != 4:
        raise SelfVAEError(f"{what}: shape {tuple(x.shape)}; expected [C, H, W], [H, W, C], [N, C, H, W] or "
                           "[N, H, W, C] images")
    if x.shape[1] in (1, 3):
        return x.contiguous()
    if x.shape[3] in (1, 3):
        return x.permute(0, 3, 1, 2).contiguous()
    raise SelfVAEError(f"{what}: shape {tuple(x.shape)} has no channel axis of 1 or 3")


def _frame(x: Tensor, shape: tuple[int, int, int], own: tuple[int, ...], what: str) -> Tensor:
    c, h, w = shape
    if x.shape[1] != c:
        kind = {1: "grey", 3: "RGB"}
        raise SelfVAEError(f"{what}: {kind[x.shape[1]]} images ({x.shape[1]} channel(s)); this model takes "
                           f"{kind.get(c, c)} images ({c}); convert them first")
    size = tuple(x.shape[2:])
    if size == (h, w):
        return x
    if size == tuple(own[1:]):
        top, left = (h - own[1]) // 2, (w - own[2]) // 2
        return torch.nn.functional.pad(x, (left, w - own[2] - left, top, h - own[1] - top))
    also = f" (or {own[2]}x{own[1]}, its data's own size)" if tuple(own[1:]) != (h, w) else ""
    raise SelfVAEError(f"{what}: images of {size[1]}x{size[0]} pixels; this model takes {w}x{h}{also}")


# ----- typed results -------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Bound:
    """Bounds on the negative log-likelihood of a set of images, as ``selfvae eval`` prints them.

    ``bpd_elbo`` / ``bpd_iw``: bits per dimension of the data's own images (``dims`` of them: 784 for MNIST)
    by the ELBO and by the importance-weighted bound with ``iw_samples`` samples (``bpd_iw <= bpd_elbo``);
    ``terms``: each term of the negative ELBO in nats per image (``re_y1``, ..., ``re_x``, ``kl_u``, ``kl_z1``,
    ...); ``active_units``: per latent (``u``, ``z1``, ...), ``(active, all)`` units (Burda et al., 2015);
    ``informative_units``: per conditional latent (``z1``, ...), ``(informative, all)``: the same test on the posterior
    mean measured from its image-dependent prior's (:meth:`selfvae.models.selfvae.SelfVAE.prior_offsets`).
    ``record`` is the whole ``selfvae eval --json`` record."""

    bpd_elbo: float
    bpd_iw: float
    iw_samples: int
    n_images: int
    dims: int
    terms: dict[str, float]
    active_units: dict[str, tuple[int, int]]
    informative_units: dict[str, tuple[int, int]]
    record: dict[str, Any]


@dataclass(frozen=True)
class Latents:
    """Every latent of a batch: ``u`` ``[N, *latent_shape]`` and ``z = [z_1, ..., z_K]`` (values: the posterior
    means from :meth:`Model.encode`, or whatever :meth:`Model.decode` is given), with the posteriors they came
    from (``q_u``, ``q_z``; None where the values were set by hand)."""

    u: Tensor
    z: list[Tensor]
    q_u: DiagonalGaussian | None = None
    q_z: list[DiagonalGaussian] | None = None

    def sample(self) -> Latents:
        """One draw from the posteriors (the reparameterised sample the ELBO uses)."""
        if self.q_u is None or self.q_z is None:
            raise SelfVAEError("these latents have no posteriors to sample from (they were not made by encode)")
        return Latents(self.q_u.sample(), [q.sample() for q in self.q_z], self.q_u, self.q_z)


# ----- the model ---------------------------------------------------------------------------------------------
class Model(SelfVAE):
    """A trained self-supervised VAE with the library's methods (see the module docstring).

    ``config`` is the whole run :class:`~selfvae.config.Config` (data set, training), ``cfg`` the architecture,
    ``shapes`` the image levels ``[y_1, ..., y_K, x]`` as (C, H, W), ``K`` the number of selfVAE levels,
    ``trained`` the training its weights had (``{"steps", "seconds", "cpu_seconds"}``, None where not recorded),
    which :meth:`save_pretrained` keeps so that a run started from the saved folder counts it.
    """

    config: Config
    trained: dict[str, Any] | None = None

    # ----- loading and saving ---------------------------------------------------------------------------------
    @classmethod
    def from_pretrained(cls, name_or_path: str | Path, device: str | torch.device = "cpu") -> Model:
        """A trained model in eval mode: a shipped model's name (``selfvae pretrained`` lists them), a folder
        written by :meth:`save_pretrained` or ``selfvae export``, or a run directory (its best weights)."""
        cfg, model, trained = load_trained(name_or_path, device, cls=cls)
        model.trained = trained
        return model

    def save_pretrained(self, folder: str | Path, dtype: str = "float32") -> Path:
        """Write the model to ``folder`` as the shipped models are: ``config.json`` and ``model.safetensors``
        (``dtype`` "float16" keeps the likelihood's output layers in float32), and ``metrics.json`` with the
        training its weights had where it is known (:attr:`trained`: a model changed in Python, say a part grafted
        from another, keeps the record of the one it was loaded as). Returns the folder."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        write_weights(self, folder, dtype, self.config.name)
        resolved(self.config).save(folder / layout.CONFIG)
        if self.trained and any(v is not None for v in self.trained.values()):
            write_json({"training": self.trained}, folder / layout.METRICS)
        return folder

    def at_size(self, height: int, width: int) -> Model:
        """This model taking images ``[N, C, height, width]`` (multiples of its frame): the same weights, its
        channel attention pooling a box of its training frame's extent (:func:`selfvae.models.sizes.at_size`), so
        that, say, ``bits_per_dim`` measures a whole photograph in one pass instead of tile by tile."""
        from selfvae.models.sizes import at_size

        return at_size(self, height, width)

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def images(self, x: ImageLike, what: str = "x") -> Tensor:
        """``x`` as this model's input: uint8 ``[N, C, H, W]`` on its device (:func:`as_images`)."""
        own = tuple(self.cfg.data_shape or self.cfg.image_shape)
        return as_images(x, self.shapes[-1], what, own).to(self.device)

    def level_images(self, y: ImageLike, level: int, what: str = "y") -> Tensor:
        """``y`` as image level ``y_level`` (1-based; ``K + 1`` is x) of this model, uint8 on its device."""
        return as_images(y, self.shapes[level - 1], what).to(self.device)

    def enlargements(self) -> dict[int, int]:
        """``{factor: level}``: the factor by which x is larger than each image level ``y_level`` (1-based; srVAE:
        ``{2: 1}``; a two-level model: ``{4: 1, 2: 2}``; a sketch model: ``{1: 1}``, conditional generation), the
        super-resolutions it can do."""
        side = self.shapes[-1][-1]
        return {side // s[-1]: k + 1 for k, s in enumerate(self.shapes[:-1])}

    # ----- density -------------------------------------------------------------------------------------------
    @torch.no_grad()
    def bits_per_dim(self, x: ImageLike, iw_samples: int = 1, seed: int = 0, batch_size: int = 32,
                     progress: bool = False) -> Bound:
        """Bits per dimension of images ``x`` (N images of the model's shape, any form :func:`as_images` takes) by
        the ELBO and the IW bound with ``iw_samples`` samples, as a :class:`Bound` (terms in nats per image): the
        numbers ``selfvae eval --iw-samples S --seed SEED --batch-size B`` prints for the same images."""
        if iw_samples < 1:
            raise SelfVAEError(f"iw_samples={iw_samples}: expected at least 1")
        x = self.images(x)
        torch.manual_seed(seed)
        m = evaluate(self, x.split(batch_size), iw_samples, self.device, total=len(x), progress=progress)
        return _bound(m)

    @torch.no_grad()
    def log_prob(self, x: ImageLike, iw_samples: int = 64, seed: int | None = None, batch_size: int = 32) -> Tensor:
        """A lower bound on ``log p(x)`` of each image, in nats, ``[N]``: the IW bound with ``iw_samples`` samples
        (1: the ELBO). ``-log_prob(x).mean() / (dims * ln 2)`` is :meth:`bits_per_dim`'s ``bpd_iw`` at the same
        noise (``seed``, ``batch_size``)."""
        x = self.images(x)
        if seed is not None:
            torch.manual_seed(seed)
        self.eval()
        out = [iw_bound(log_weights(self, xb, iw_samples)[0]) for xb in x.split(batch_size)]
        return torch.cat(out).double()

    # ----- generation ----------------------------------------------------------------------------------------
    @torch.no_grad()
    def sample(self, n: int, temperature: ops.Temperature = 1.0, levels: bool = False, decode: str = "sample",
               seed: int | None = None) -> Tensor | list[Tensor]:
        """``n`` samples ``u ~ p(u) -> y_1 -> ... -> x`` as uint8 ``[n, C, H, W]`` (``levels``: the list
        ``[y_1, ..., y_K, x]``). ``temperature``: one number, or one per latent level ``[t_u, t_z1, ...]``;
        ``decode`` "sample", "mean" or "mode" for the images drawn from their likelihoods."""
        if n < 1:
            raise SelfVAEError(f"n={n}: expected at least 1 sample")
        if seed is not None:
            torch.manual_seed(seed)
        out = ops.generate(self, n, temperature, decode)
        return out if levels else out[-1]

    @torch.no_grad()
    def encode(self, x: ImageLike) -> Latents:
        """The posteriors of every latent of images ``x``: ``q(u | y_1)`` and each ``q(z_k | y_{k+1})``, with
        their means as the latents' values (each ``[N, *latent_shape]``, e.g. ``[N, 16, 8, 8]``)."""
        self.eval()
        lv = self.levels(self.images(x))
        q_u = self.q_u_given(lv[0])
        q_z = [self.q_z_given(k, lv[k + 1]) for k in range(self.K)]
        return Latents(q_u.mu, [q.mu for q in q_z], q_u, q_z)

    @torch.no_grad()
    def decode(self, latents: Latents | Tensor, temperature: ops.Temperature = 1.0, decode: str = "mean",
               levels: bool = False) -> Tensor | list[Tensor]:
        """Images from latents: ``y_1 ~ p(y_1 | u)``, then each ``y_{k+1} ~ p(y_{k+1} | y_k, z_k)`` with the given
        ``z_k`` (a bare ``u`` tensor, or latents with fewer z's: the rest drawn from their priors), as uint8 ``[N, C, H,
        W]`` (``levels``: the list ``[y_1, ..., x]``). ``decode`` "mean" (default: deterministic), "mode" or
        "sample"."""
        self.eval()
        lat = latents if isinstance(latents, Latents) else Latents(latents, [])
        if len(lat.z) > self.K:
            raise SelfVAEError(f"decode: {len(lat.z)} z latents given; this model has K = {self.K}")
        want = tuple(self.cfg.latent_shape)
        for name, t in [("u", lat.u), *[(f"z{k + 1}", z) for k, z in enumerate(lat.z)]]:
            if t.dim() != 4 or tuple(t.shape[1:]) != want:
                dims = ", ".join(map(str, want))
                raise SelfVAEError(f"decode: latent {name} has shape {tuple(t.shape)}; expected [N, {dims}]")
        out = ops.decode_from(self, lat.u.to(self.device), [z.to(self.device) for z in lat.z],
                              temperature=temperature, decode=decode)
        return out if levels else out[-1]

    @torch.no_grad()
    def reconstruct(self, x: ImageLike, mode: str = "rs1", first: int | None = None,
                    temperature: ops.Temperature = 1.0, decode: str = "sample", levels: bool = False,
                    seed: int | None = None) -> Tensor | list[Tensor]:
        """Reconstructions of ``x`` in one of the papers' modes (``selfvae.models.ops``): ``rs1`` (only u
        inferred), ``rs2``, ..., ``rs{K+1}`` (all latents inferred), ``cr`` (conditional reconstruction: y_K and z_K
        given), ``cg`` (conditional generation from y_K = d(x): super-resolution); or ``first=k``: from the first k
        latent levels (u, z_1, ..., z_{k-1}) inferred and the rest drawn from their priors (= ``rs{k}``). Returns uint8
        ``[N, C, H, W]`` (``levels``: the list ``[y_1, ..., x]``)."""
        if first is not None:
            if not 1 <= first <= self.K + 1:
                raise SelfVAEError(f"first={first}: this model has latent levels 1..{self.K + 1} (u, z_1..z_K)")
            mode = f"rs{first}"
        if seed is not None:
            torch.manual_seed(seed)
        out = ops.reconstruct(self, self.images(x), mode, temperature, decode)
        return out if levels else out[-1]

    @torch.no_grad()
    def super_resolve(self, y: ImageLike, factor: int = 2, temperature: ops.Temperature = 1.0,
                      decode: str = "sample", seed: int | None = None, overlap: int = 4,
                      progress: bool = False) -> Tensor:
        """Images ``factor`` times larger than ``y`` (2 for srVAE; 4 from y_1 of a two-level model): ``y`` is a
        batch of the level's size, or one image of any size, super-resolved tile by tile with blended seams
        (``overlap`` pixels of neighbouring tiles blended; ``progress``: a bar over the tiles).
        Returns uint8 ``[N, C, factor H, factor W]``."""
        sides = self.enlargements()
        if factor not in sides:
            ok = ", ".join(map(str, sorted(sides))) or "nothing (a plain VAE has no image level y)"
            raise SelfVAEError(f"factor={factor}: this model super-resolves by {ok}")
        level = sides[factor]
        if seed is not None:
            torch.manual_seed(seed)
        if _fits(y, self.shapes[level - 1][1:]):
            batch = self.level_images(y, level)
            return ops.super_resolve(self, batch, temperature, decode, level=level)[-1]
        one = _one_image(y, self.shapes[level - 1][0], "y")
        return ops.super_resolve_tiled(self, one, overlap=overlap, temperature=temperature, decode=decode,
                                       progress=progress, level=level)[None]

    @torch.no_grad()
    def interpolate(self, a: ImageLike, b: ImageLike, steps: int = 8, spherical: bool = False,
                    decode: str = "mean") -> Tensor:
        """Images along the line (``spherical``: great circle) from ``a``'s posterior mean of u to ``b``'s:
        uint8 ``[N, steps, C, H, W]`` (N pairs)."""
        xa, xb = self.images(a, "a"), self.images(b, "b")
        if len(xa) != len(xb):
            raise SelfVAEError(f"interpolate: {len(xa)} images in a and {len(xb)} in b; give as many of each")
        if steps < 2:
            raise SelfVAEError(f"steps={steps}: expected at least 2")
        return ops.interpolate(self, xa, xb, steps, decode, spherical)

    @torch.no_grad()
    def traverse(self, x: ImageLike, level: str = "u", unit: int | tuple[int, int, int] = 0,
                 values: Sequence[float] | Tensor = (-3, -2, -1, 0, 1, 2, 3), decode: str = "mean") -> Tensor:
        """A latent traversal: every latent of ``x`` at its posterior mean but one unit of ``level`` (``"u"``,
        ``"z1"``, ...) set to each of ``values``; uint8 ``[N, len(values), C, H, W]``. ``unit`` is a flat index
        into the latent or its ``(channel, row, column)``."""
        lat = self.encode(x)
        names = ["u"] + [f"z{k + 1}" for k in range(self.K)]
        if level not in names:
            raise SelfVAEError(f"level={level!r}: this model's latents are {', '.join(names)}")
        shape = tuple(self.cfg.latent_shape)
        flat = int(np.ravel_multi_index(unit, shape)) if isinstance(unit, tuple) else int(unit)
        if not 0 <= flat < math.prod(shape):
            raise SelfVAEError(f"unit={unit!r}: latent {level} has {math.prod(shape)} units of shape {shape}")
        outs = []
        for v in torch.as_tensor(values, dtype=torch.float32).tolist():
            u, zs = lat.u.contiguous().clone(), [z.contiguous().clone() for z in lat.z]
            target = u if level == "u" else zs[names.index(level) - 1]
            target.view(len(target), -1)[:, flat] = v
            outs.append(self.decode(Latents(u, zs), decode=decode))
        return torch.stack(outs, 1)


def _fits(y: ImageLike, size: tuple[int, int]) -> bool:
    """Whether ``y`` is a batch of images of ``size`` (else one image of another size, for tiling)."""
    if isinstance(y, (list, tuple)):
        return True
    if isinstance(y, (str, Path)):  # a missing or unreadable file: as_images says what is wrong
        return not Path(y).is_file() or image_size(Path(y))[1] == tuple(size)
    if isinstance(y, Image.Image):
        return (y.height, y.width) == size
    shape = tuple(y.shape)
    return size in (shape[-2:], shape[-3:-1])


def _one_image(y: ImageLike, channels: int, what: str) -> Tensor:
    arr = as_images(y, (channels, *_size_of(y)), what)
    if len(arr) != 1:
        raise SelfVAEError(f"{what}: {len(arr)} images of another size than the model's; give one at a time")
    return arr[0]


def _size_of(y: ImageLike) -> tuple[int, int]:
    if isinstance(y, (str, Path)):
        return image_size(Path(y))[1]
    if isinstance(y, Image.Image):
        return y.height, y.width
    return _shape_of(y, "y")[1:]


def _bound(m: dict[str, Any]) -> Bound:
    terms = {k: float(v) for k, v in m.items() if k.startswith(("re_", "kl_"))}
    active, informative = ({k[3:]: (int(m[k]), int(m["units_" + k[3:]])) for k in m if k.startswith(prefix)}
                           for prefix in ("au_", "iu_"))
    return Bound(m["bpd_elbo"], m["bpd_iw"], m["iw_samples"], m["n_images"], m["dims"], terms, active, informative,
                 dict(m))


# ----- training ----------------------------------------------------------------------------------------------
DataLike = Union[str, Path, Tensor, np.ndarray, torch.utils.data.Dataset, torch.utils.data.DataLoader]  # noqa: UP007


def train(preset_or_config: str | Config = "fashion-mnist-vae", train_data: DataLike | None = None,
          val_data: DataLike | None = None, test_data: DataLike | None = None, out: str | Path | None = None,
          steps: int | None = None, resume: bool = False, device: str = "cpu", progress: bool = True,
          **overrides: Any) -> Model:
    """Train a model from Python and return it (its best weights, in eval mode).

    ``preset_or_config``: a preset's name (``selfvae presets``) or a :class:`~selfvae.config.Config`.
    ``train_data``: None (the config's data set), a registered data set's name, a folder of images or an ``.npz``
    file, or images held in memory: a uint8 or [0, 1] float tensor or array (``[N, C, H, W]`` or ``[N, H, W, C]``),
    a torch ``Dataset`` (items are images or ``(image, label)`` tuples) or a ``DataLoader``. Images in memory are
    written once into the run folder (``data.npz``, read as data set ``npz``), so the run resumes, evaluates and
    exports as any other; ``val_data`` / ``test_data`` give its validation and test images (without ``val_data``,
    15% of the training images validate; without ``test_data`` the final evaluation is on the validation images).
    ``overrides``: settings by field name (``lr=1e-3``, ``batch_size=32``, ``free_bits=2.0``) or ``section__field``
    where a name is in more than one section (``train__seed=1``). The run folder ``out`` (default ``runs/NAME``)
    holds what ``selfvae train`` writes: checkpoints, log, curves, ``final/``; ``resume`` goes on from it.
    """
    from selfvae.presets import get_preset
    from selfvae.training.loop import train as train_run

    cfg = get_preset(preset_or_config) if isinstance(preset_or_config, str) else copy.deepcopy(preset_or_config)
    out = Path(out) if out is not None else Path("runs") / cfg.name
    if resume:
        cfg = Config.load(out / layout.CONFIG)
    else:
        _use_data(cfg, out, train_data, val_data, test_data)
    _override(cfg, overrides, steps)
    train_run(check_config(cfg), out, device=device, resume=resume, progress=progress)
    return Model.from_pretrained(out, device)


def _use_data(cfg: Config, out: Path, train_data: DataLike | None, val_data: DataLike | None,
              test_data: DataLike | None) -> None:
    """Point ``cfg.data`` at ``train_data`` (see :func:`train`), writing images held in memory to ``out``."""
    from selfvae.data import DATASETS, infer_dataset, own_shape

    if train_data is None:
        if val_data is not None or test_data is not None:
            raise SelfVAEError("val_data and test_data go with train_data images; none was given")
        return
    if isinstance(train_data, (str, Path)):
        if val_data is not None or test_data is not None:
            raise SelfVAEError("val_data and test_data go with images held in memory; a data set or folder "
                               "brings its own splits")
        if str(train_data) in DATASETS:
            cfg.data.name, cfg.data.root = str(train_data), None
        else:
            cfg.data.name, cfg.data.root = infer_dataset(cfg.data.name, str(train_data)), str(train_data)
        cfg.data.augment = None
        return
    arrays = {"x_train": _array_of(train_data, "train_data")}
    for key, data in (("x_val", val_data), ("x_test", test_data)):
        if data is not None:
            arrays[key] = _array_of(data, key.replace("x_", "") + "_data")
    shapes = {k: v.shape[1:] for k, v in arrays.items()}
    if len(set(shapes.values())) > 1:
        raise SelfVAEError(f"the images differ in shape between splits: {shapes}")
    h, w, c = arrays["x_train"].shape[1:]
    frame = tuple(cfg.model.image_shape)
    own = own_shape(cfg.data.name, frame, cfg.data.image_size)
    if (c, h, w) == own != frame:  # the preset's own size (MNIST's 28x28): placed in its frame as its loader does
        top, left = (frame[1] - h) // 2, (frame[2] - w) // 2
        pad = ((0, 0), (top, frame[1] - h - top), (left, frame[2] - w - left), (0, 0))
        arrays = {k: np.pad(v, pad) for k, v in arrays.items()}
        cfg.model.data_shape = own
    elif (c, h, w) != frame:  # another size: the model is built for it (its latent grid must divide it)
        cfg.model.image_shape, cfg.model.data_shape = (c, h, w), None
    if layout.has_run(out):
        raise SelfVAEError(f"{out}: holds a run already; pass resume=True to go on with it, or another out")
    out.mkdir(parents=True, exist_ok=True)
    path = out / layout.DATA
    tmp = path.with_name(path.name + ".tmp.npz")
    np.savez(tmp, **arrays)
    tmp.replace(path)
    cfg.data.name, cfg.data.root, cfg.data.augment = "npz", str(path.resolve()), False
    cfg.data.image_size, cfg.data.channels = None, None


def _array_of(data: DataLike, what: str) -> np.ndarray:
    """Images of a tensor, array, Dataset or DataLoader as one uint8 ``[N, H, W, C]`` array."""
    if isinstance(data, (Tensor, np.ndarray)):
        x = as_images(data, _shape_of(data, what), what)
    elif isinstance(data, (torch.utils.data.Dataset, torch.utils.data.DataLoader)):
        items = [item[0] if isinstance(item, (tuple, list)) else item for item in data]
        if not items:
            raise SelfVAEError(f"{what}: holds no images")
        first = as_images(items[0], _shape_of(items[0], f"{what}[0]"), f"{what}[0]")
        shape = tuple(first.shape[1:])
        x = torch.cat([as_images(it, shape, f"{what}[{i}]") for i, it in enumerate(items)])
    else:
        raise SelfVAEError(f"{what}: a {type(data).__name__}; expected a tensor, numpy array, torch Dataset or "
                           "DataLoader of images, a data set's name, a folder or an .npz file")
    return np.ascontiguousarray(x.permute(0, 2, 3, 1).numpy())


def _shape_of(x: Tensor | np.ndarray, what: str) -> tuple[int, int, int]:
    """(C, H, W) of the images of a tensor or array in any layout :func:`as_images` takes."""
    t = torch.as_tensor(x) if isinstance(x, np.ndarray) else x
    first = _channels_first(t if t.dtype == torch.uint8 else t.float().clamp(0, 1), what)
    return tuple(int(v) for v in first.shape[1:])


def _override(cfg: Config, overrides: dict[str, Any], steps: int | None) -> None:
    """Apply ``train()``'s keyword settings (see :func:`train`) through the rule ``--set`` follows."""
    from selfvae.config import apply_overrides

    sections = {"train": cfg.train, "data": cfg.data, "model": cfg.model}
    items = []
    for key, value in overrides.items():
        if "__" in key:
            path = key.replace("__", ".")
        else:
            found = [s for s, obj in sections.items() if key in {f.name for f in dataclasses.fields(obj)}]
            if len(found) != 1:
                where = f"is in {' and '.join(found)}" if found else "is no setting"
                raise SelfVAEError(f"{key}={value!r}: {key} {where}; name it as section__field, e.g. train__lr")
            path = f"{found[0]}.{key}"
        items.append(f"{path}={_text(value)}")
    apply_overrides(cfg, items)
    if steps is not None:
        cfg.train.steps = int(steps)


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    if isinstance(value, (tuple, list)):
        return ",".join(map(str, value))
    return str(value)
