"""What a trained selfVAE can do besides scoring: generation, super-resolution, reconstructions,
interpolation. Every function returns uint8 images; lists of levels are ordered ``[y_1, ..., y_K, x]``.

Reconstruction modes, named as the thesis names them (ch. 5.2 and the figures of ch. 7; latents are ordered
``u, z_1, ..., z_K``):

* ``rs{j}`` (``j = 1..K+1``), *reconstruction* RSj: the first ``j`` latents are inferred from the image
  (``u ~ q(u|y_1*)``, ``z_k ~ q(z_k|y_{k+1}*)``), the rest are sampled from their priors; every ``y`` is
  generated. ``rs1`` is the thesis's *reconstruction* (``y* -> u -> y -> z -> x``) and RS1 ("only u"),
  ``rs2`` its RS2 ("u and z"); for K = 0, ``rs1`` is the plain VAE reconstruction.
* ``cr``, *conditional reconstruction* (CR): ``y_K*`` and ``z_K ~ q(z_K|x*)`` are given:
  ``x ~ p(x|y_K*, z_K)``. Aliases: ``conditional-reconstruction``, ``cond``.
* ``cg``, *conditional generation* (super-resolution for downscaling): only ``y_K* = d(x*)`` is given:
  ``u ~ q(u|y_1*)``, ``z_k ~ p(z_k|y_k*, z_{k-1})``, ``x ~ p(x|y_K*, z_K)``. Aliases:
  ``conditional-generation``, ``super-resolution``, ``superres``.

(Earlier versions of this library called ``cg`` "superres" and ``cr`` "cond"; both names still work.)
:func:`memory_cost` counts the values each mode must send.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from tqdm import tqdm

from selfvae.distributions import DiscretizedLogisticMixture, SubpixelMixture
from selfvae.errors import SelfVAEError
from selfvae.models.selfvae import SelfVAE, to_uint8
from selfvae.renormalise import sample_tables

Temperature = float | Sequence[float]  # one for every level, or one per latent level: u, z_1, ..., z_K


def temperatures(model: SelfVAE, temperature: Temperature) -> list[float]:
    """One temperature per latent level ``[t_u, t_z1, ..., t_zK]`` from a number (all alike) or a sequence of
    ``K + 1``. Level ``k``'s temperature scales its latent's prior draw and the draw of the image level that
    latent decodes to (``t_u``: ``u`` and ``y_1``; ``t_zk``: ``z_k`` and ``y_{k+1}``, ``x`` for the last), as NVAE
    and VDVAE set a temperature per level of their hierarchies."""
    if isinstance(temperature, (int, float)):
        ts = [float(temperature)] * (model.K + 1)
    else:
        ts = [float(t) for t in temperature]
        if len(ts) != model.K + 1:
            names = ", ".join(["u"] + [f"z{k + 1}" for k in range(model.K)])
            raise SelfVAEError(f"temperature: {len(ts)} values given; this model has {model.K + 1} latent levels "
                               f"({names}): give one number or one per level")
    if not all(math.isfinite(t) and t >= 0 for t in ts):
        raise SelfVAEError(f"temperature {temperature!r}: expected numbers >= 0")
    return ts


def _decode(dist, how: str, temperature: float) -> Tensor:
    if how == "sample":
        return dist.sample(temperature)
    if how == "mean":
        return dist.mean()
    if how == "mode":
        return dist.mode()
    raise SelfVAEError(f"decode {how!r}: expected sample, mean or mode")


def _latent(q, infer: bool, how: str, temperature: float) -> Tensor:
    """A latent from a Gaussian: its mean when decoding deterministically, else a sample."""
    if how != "sample":
        return q.mu
    return q.sample(temperature) if not infer else q.sample()


@torch.no_grad()
def decode_from(
    model: SelfVAE,
    u: Tensor,
    inferred_z: list[Tensor] | None = None,
    given_y: list[Tensor] | None = None,
    temperature: Temperature = 1.0,
    decode: str = "sample",
) -> list[Tensor]:
    """Run the generative chain from ``u``: ``y_1 ~ p(y_1|u)``, then per level ``z_k`` (from
    ``inferred_z[k]`` when given, else its prior) and ``y_{k+1}``. ``given_y[k]`` (uint8), when not None,
    replaces the generated level ``k``. ``temperature``: one number or one per latent level
    (:func:`temperatures`). Returns ``[y_1, ..., y_K, x]`` as uint8."""
    inferred_z = inferred_z or []
    given_y = given_y or []
    ts = temperatures(model, temperature)
    levels: list[Tensor] = []
    y = given_y[0] if given_y and given_y[0] is not None else to_uint8(
        _decode(model.p_y_given(u), decode, ts[0])
    )
    levels.append(y)
    z_prev = u
    for k in range(model.K):
        if k < len(inferred_z) and inferred_z[k] is not None:
            z = inferred_z[k]
        else:
            z = _latent(model.p_z_given(k, levels[k], z_prev), False, decode, ts[k + 1])
        nxt = given_y[k + 1] if k + 1 < len(given_y) and given_y[k + 1] is not None else None
        if nxt is None:
            p_x = model.p_x_given(k, levels[k], z)
            if model.cfg.consistent and decode == "sample" and not isinstance(p_x, SubpixelMixture):
                nxt = sample_consistent(model, k, p_x.tempered(ts[k + 1]), levels[k])
            else:
                nxt = to_uint8(_decode(p_x, decode, ts[k + 1]))
        levels.append(nxt)
        z_prev = z
    return levels


def sample_consistent(model: SelfVAE, k: int, p: DiscretizedLogisticMixture, y: Tensor) -> Tensor:
    """Level ``k + 1`` (uint8) drawn from ``p`` renormalised onto ``d(level) = y``: the model's own distribution
    when ``cfg.consistent`` (its blocks all average to ``y``). The first channel block by block
    (:class:`selfvae.renormalise.BlockConstraint`), later channels from their tables given the earlier ones."""
    rng = np.random.default_rng(int(torch.randint(0, 2**62, ())))  # follows torch's seed
    d = model.chain[model.K - 1 - k]
    out = torch.zeros((y.shape[0], *model.shapes[k + 1]), dtype=torch.uint8)
    first = d.block_constraint(p.bin_probs(0).double().cpu().numpy(), y[:, 0].cpu().numpy())
    out[:, 0] = torch.from_numpy(first.sample(rng))
    for c in range(1, out.shape[1]):
        probs = p.bin_probs(c, model.target(out.to(p.params.device))).double().cpu().numpy()
        out[:, c] = torch.from_numpy(sample_tables(probs, rng).astype(np.uint8))
    return out.to(y.device)


@torch.no_grad()
def generate(model: SelfVAE, n: int, temperature: Temperature = 1.0, decode: str = "sample") -> list[Tensor]:
    """Ancestral sampling ``u ~ p(u) -> y_1 -> z_1 -> y_2 -> ... -> x``; all levels, uint8. ``temperature``: one
    number, or one per latent level ``u, z_1, ..., z_K`` (:func:`temperatures`)."""
    model.eval()
    u = model.p_u.sample(n, temperatures(model, temperature)[0])
    return decode_from(model, u, temperature=temperature, decode=decode)


MODE_ALIASES = {
    "reconstruction": "rs1",
    "conditional-reconstruction": "cr",
    "cond": "cr",
    "conditional-generation": "cg",
    "super-resolution": "cg",
    "superres": "cg",
}


def modes(model: SelfVAE) -> list[str]:
    """Reconstruction modes this model supports (canonical names)."""
    out = [f"rs{j}" for j in range(1, model.K + 2)]
    if model.K:
        out += ["cr", "cg"]
    return out


def canonical_mode(model: SelfVAE, mode: str) -> str:
    """The canonical name of ``mode`` (aliases resolved); a mode the model lacks raises SelfVAEError."""
    name = MODE_ALIASES.get(mode.lower(), mode.lower())
    if name not in modes(model):
        known = ", ".join(modes(model))
        aliases = ", ".join(f"{a} = {c}" for a, c in MODE_ALIASES.items() if c in modes(model))
        raise SelfVAEError(f"mode {mode!r}: this model (K = {model.K}) supports {known} (aliases: {aliases})")
    return name


def mode_label(model: SelfVAE, mode: str) -> str:
    """A short column label saying what ``mode`` is given, e.g. ``RS2: u, z1`` or ``CG: y2 (super-res.)``."""
    name = canonical_mode(model, mode)
    if name.startswith("rs"):
        j = int(name[2:])
        return f"RS{j}: " + ", ".join(["u"] + [f"z{k}" for k in range(1, j)])
    yk = f"y{model.K}"
    return f"CR: {yk}, z{model.K}" if name == "cr" else f"CG: {yk} (super-res.)"


@torch.no_grad()
def reconstruct(
    model: SelfVAE, x: Tensor, mode: str, temperature: Temperature = 1.0, decode: str = "sample"
) -> list[Tensor]:
    """Reconstruct uint8 images ``x`` in ``mode`` (see the module docstring); returns all levels."""
    model.eval()
    mode = canonical_mode(model, mode)
    levels = model.levels(x)
    q_u = model.q_u_given(levels[0])
    u = _latent(q_u, True, decode, temperature)
    if mode.startswith("rs"):
        j = int(mode[2:])
        zs = [_latent(model.q_z_given(k, levels[k + 1]), True, decode, temperature) for k in range(j - 1)]
        return decode_from(model, u, inferred_z=zs, temperature=temperature, decode=decode)
    given = [*levels[:-1], None]
    if mode == "cg":
        return decode_from(model, u, given_y=given, temperature=temperature, decode=decode)
    # cr: the finest y and the finest z are given; the coarser z's are not needed for x.
    zs: list[Tensor | None] = [None] * (model.K - 1)
    zs.append(_latent(model.q_z_given(model.K - 1, levels[-1]), True, decode, temperature))
    return decode_from(model, u, inferred_z=zs, given_y=given, temperature=temperature, decode=decode)


@torch.no_grad()
def level_columns(model: SelfVAE, x: Tensor) -> list[tuple[str, Tensor]]:
    """``x`` and each ``y_k = d(x)`` as labelled picture columns (``y_k`` labels carry their size)."""
    ys = model.levels(x)[:-1]
    return [("x", x)] + [(f"y{k + 1} = d(x)\n{tuple(y.shape[2:])}", y) for k, y in enumerate(ys)]


@torch.no_grad()
def mode_columns(
    model: SelfVAE, x: Tensor, names: list[str] | None = None, temperature: float = 1.0, decode: str = "sample"
) -> list[tuple[str, Tensor]]:
    """The reconstruction of ``x`` in each mode of ``names`` (default: all) as labelled picture columns."""
    return [(mode_label(model, m).replace(": ", "\n", 1), reconstruct(model, x, m, temperature, decode)[-1])
            for m in (names or modes(model))]


@torch.no_grad()
def superres_columns(model: SelfVAE, y: Tensor, n: int, temperature: Temperature = 1.0,
                     decode: str = "sample") -> list[tuple[str, Tensor]]:
    """``n`` super-resolutions of ``y_K`` (:func:`super_resolve`) as labelled picture columns ``sample i``: the
    report's and the demo's figure."""
    return [(f"sample {i + 1}", super_resolve(model, y, temperature, decode)[-1]) for i in range(n)]


@torch.no_grad()
def super_resolve(
    model: SelfVAE, y: Tensor, temperature: Temperature = 1.0, decode: str = "sample", level: int | None = None
) -> list[Tensor]:
    """Generate x from a given level ``y_level`` (uint8, e.g. a real low-resolution image; default ``y_K``, the
    finest: a factor of 2 for downscaling; ``level=1`` of a 2-level model: a factor of 4, ``y_2`` generated too).

    The coarser levels are computed from ``y`` with the rest of the transform chain, so any image of the
    shape of ``y_level`` works, not only test images.
    """
    model.eval()
    level = model.K if level is None else level
    if model.K == 0:
        raise SelfVAEError("super-resolution needs a selfVAE (K >= 1); this run is a plain VAE")
    if not 1 <= level <= model.K:
        raise SelfVAEError(f"level {level}: this model's levels are y_1 .. y_{model.K}")
    want = model.shapes[level - 1]
    if y.dtype != torch.uint8 or tuple(y.shape[1:]) != tuple(want):
        raise SelfVAEError(
            f"low-resolution images have shape {tuple(y.shape[1:])} and dtype {y.dtype}; this model "
            f"expects uint8 images of shape {want}"
        )
    given: list[Tensor] = [y]
    for t in model.chain[model.K - level + 1 :]:
        given.insert(0, t(given[0]))
    u = _latent(model.q_u_given(given[0]), True, decode, temperature)
    return decode_from(model, u, given_y=[*given, *[None] * (model.K - level + 1)], temperature=temperature,
                       decode=decode)


@torch.no_grad()
def _tile_starts(n: int, t: int, stride: int) -> list[int]:
    """Starts of windows of ``t`` covering ``0..n`` at ``stride``, the last flush with the end."""
    starts = list(range(0, max(n - t, 0) + 1, stride))
    if starts[-1] != max(n - t, 0):
        starts.append(n - t)
    return starts


def _feather(size: int, ramp: int) -> Tensor:
    """Blending weights along one side of a tile: rising linearly over ``ramp`` pixels at each end, never 0."""
    i = torch.arange(size, dtype=torch.float32) + 0.5
    if ramp <= 0:
        return torch.ones(size)
    return torch.minimum(torch.ones(size), torch.minimum(i, size - i) / ramp)


@torch.no_grad()
def super_resolve_tiled(model: SelfVAE, y: Tensor, overlap: int = 4, batch: int = 64, temperature: float = 1.0,
                        decode: str = "mean", progress: bool = False, level: int | None = None) -> Tensor:
    """Super-resolve a whole low-resolution image ``y`` (uint8 ``[C, H, W]``, any size) tile by tile.

    The image is cut into tiles of the model's ``y_K`` size that overlap by ``overlap`` pixels (edges replicated
    where it is smaller than one tile); each tile is super-resolved on its own (:func:`super_resolve`) and the
    results are blended with weights that fall linearly across the overlap, so no tile edge shows as a seam.
    Returns uint8 ``[C, f H, f W]`` (``f``: the factor from level ``level``, default ``y_K``, to x; see
    :func:`super_resolve`). Tiles run ``batch`` at a time, a row of tiles after another; the float accumulators hold
    one row of tiles' output rows, so beyond the uint8 output the memory does not grow with the image's height."""
    level = model.K if level is None else level
    if not 1 <= level <= model.K:
        raise SelfVAEError(f"level {level}: this model's levels are y_1 .. y_{model.K}")
    c, th, tw = model.shapes[level - 1]
    _, xh, xw = model.shapes[-1]
    f = xh // th
    if y.dtype != torch.uint8 or y.dim() != 3 or y.shape[0] != c:
        raise SelfVAEError(f"low-resolution image has shape {tuple(y.shape)} and dtype {y.dtype}; this model "
                           f"super-resolves uint8 images with {c} channel(s)")
    if not 0 <= overlap < min(th, tw):
        raise SelfVAEError(f"overlap {overlap}: must be at least 0 and below the tile size {th}x{tw}")
    h, w = y.shape[1:]
    padded = F.pad(y[None].float(), (0, max(tw - w, 0), 0, max(th - h, 0)), mode="replicate")[0].to(torch.uint8)
    hp, wp = padded.shape[1:]
    rows, cols = _tile_starts(hp, th, th - overlap), _tile_starts(wp, tw, tw - overlap)
    weight = _feather(xh, f * overlap)[:, None] * _feather(xw, f * overlap)[None, :]
    out = torch.empty(c, f * hp, f * wp, dtype=torch.uint8)
    # float accumulators for one band of output rows: [base, base + xh), the rows the current tile row covers
    acc, wsum = torch.zeros(c, xh, f * wp), torch.zeros(xh, f * wp)
    device = next(model.parameters()).device
    bar = tqdm(total=len(rows) * len(cols), desc="superres", unit="tile", disable=not progress)
    for i, r in enumerate(rows):
        for j in range(0, len(cols), batch):
            part = cols[j : j + batch]
            tiles = torch.stack([padded[:, r : r + th, q : q + tw] for q in part]).to(device)
            x = super_resolve(model, tiles, temperature, decode=decode, level=level)[-1].float().cpu()
            for q, xt in zip(part, x, strict=True):
                acc[:, :, f * q : f * q + xw] += xt * weight
                wsum[:, f * q : f * q + xw] += weight
            bar.update(len(part))
        done = f * (rows[i + 1] - r) if i + 1 < len(rows) else xh  # rows no later tile touches
        out[:, f * r : f * r + done] = (acc[:, :done] / wsum[:done]).round().clamp(0, 255).to(torch.uint8)
        acc, wsum = acc.roll(-done, 1), wsum.roll(-done, 0)  # the rows the next tile row shares move up
        acc[:, xh - done :], wsum[xh - done :] = 0, 0
    bar.close()
    return out[:, : f * h, : f * w]


def interpolate(
    model: SelfVAE, a: Tensor, b: Tensor, steps: int = 8, decode: str = "mean", spherical: bool = False
) -> Tensor:
    """Images along the line (or great circle) between the posterior means of ``u`` for ``a`` and ``b``.

    ``a``, ``b``: uint8 ``[N, C, H, W]``; returns uint8 ``[N, steps, C, H, W]`` of x (the latents
    ``z`` follow their priors' means when ``decode`` is deterministic).
    """
    model.eval()
    ua = model.q_u_given(model.levels(a)[0]).mu
    ub = model.q_u_given(model.levels(b)[0]).mu
    ts = torch.linspace(0, 1, steps, device=ua.device)
    outs = []
    for t in ts:
        if spherical:
            fa, fb = ua.flatten(1), ub.flatten(1)
            omega = torch.arccos((fa * fb).sum(1) / (fa.norm(dim=1) * fb.norm(dim=1))).clamp_min(1e-6)
            w_a = torch.sin((1 - t) * omega) / torch.sin(omega)
            w_b = torch.sin(t * omega) / torch.sin(omega)
            u = (w_a[:, None] * fa + w_b[:, None] * fb).view_as(ua)
        else:
            u = torch.lerp(ua, ub, t)
        outs.append(decode_from(model, u, decode=decode)[-1])
    return torch.stack(outs, 1)


def memory_cost(model: SelfVAE, mode: str) -> dict[str, float]:
    """Values that must be sent to reconstruct in ``mode``: inferred latents and/or given ``y``.

    Returns counts and the fraction of the original image's values.
    """
    lat = math.prod(model.cfg.latent_shape)
    x_dims = model.x_dims
    mode = canonical_mode(model, mode)
    if mode.startswith("rs"):
        n_lat, n_y = int(mode[2:]), 0
    else:
        n_lat, n_y = int(mode == "cr"), math.prod(model.shapes[-2])
    values = n_lat * lat + n_y
    return {"latent_values": n_lat * lat, "y_values": n_y, "values": values, "fraction": values / x_dims}
