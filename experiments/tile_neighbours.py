"""Question (issue 48, the photographs' bits beyond WebP's): would a prior that sees a tile's neighbours pay?

The photograph codec codes each 32x32 tile with its own latent u (KL ~700 nats a tile: ~0.33 bits/dim, where the
photographs' bits beyond WebP's sit). Neighbouring tiles of one photograph look alike, so a prior
``p(u_t | neighbours)`` that the decoder evaluates from tiles it has already decoded (their posterior means, which it
can compute from their pixels) might code u_t in fewer bits. Measured on the photograph model's posteriors, on
the tile grid of each photograph (the training photographs at four grid offsets, the test ones at the codec's):

* a linear-Gaussian base in the flow's space, ``v_t ~ N(W m_nbr + b, diag s^2)`` under the model's own flow (ridge,
  its strength chosen on held-out training tiles): the bits it saves over the flow's ``N(0, I)`` base;
* Gaussians in u's own space with full covariance, marginal and with u's top principal components predicted
  linearly from the neighbours' (a prediction of all 1024 dimensions from 4096 features adds more estimation noise to
  the posterior-noise-sized directions than it explains): what the neighbours tell about u_t beyond what its own
  dimensions tell about each other.

    python experiments/tile_neighbours.py photo-vae-ctx --data-dir /usr/share

Prints each figure in nats a tile and bits/dim (3072 dimensions a tile), on the test photographs' tiles that have all
their neighbours.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from selfvae.api import Model
from selfvae.data.photos import tiles_of, whole_photographs

SIDE = 32
TRAIN_OFFSETS = ((0, 0), (16, 16), (8, 24), (24, 8))  # more training tiles: the grid shifted, neighbours still 32 apart
NEIGHBOURS = {"up, left (raster order)": ((-1, 0), (0, -1)),
              "up, left, down, right (a checkerboard's second half)": ((-1, 0), (0, -1), (1, 0), (0, 1))}
PCS = (16, 64, 128)  # principal components of u predicted from the neighbours' (the rest left to the marginal)
BITS = SIDE * SIDE * 3 * np.log(2)  # nats a tile -> bits/dim


def tile_grid(photo: np.ndarray, oy: int, ox: int) -> tuple[np.ndarray, int, int]:
    """The whole ``SIDE``-tiles of ``photo`` (``[H, W, 3]``) on the grid offset by ``(oy, ox)``, row by row:
    ``[R*C, 3, S, S]``, R and C."""
    shifted = photo[oy:, ox:]
    tiles = np.ascontiguousarray(tiles_of([shifted], SIDE).transpose(0, 3, 1, 2))
    return tiles, shifted.shape[0] // SIDE, shifted.shape[1] // SIDE


def posteriors(model: Model, root: Path, part: str, offsets: tuple, seed: int = 0) -> list[dict[str, np.ndarray]]:
    """Per photograph and offset, ``[R, C, ...]`` grids: q(u|x)'s mean ``mu`` and variance ``var``, one sample's
    base ``v = f(u)`` under the flow and its ``logdet``."""
    g = torch.Generator().manual_seed(seed)
    grids = []
    for _, photo in whole_photographs(root, part):
        for oy, ox in offsets:
            tiles, rows, cols = tile_grid(photo, oy, ox)
            parts: dict[str, list[torch.Tensor]] = {"mu": [], "var": [], "v": [], "logdet": []}
            with torch.inference_mode():
                for i in range(0, len(tiles), 128):
                    q = model.q_u_given(model.levels(torch.from_numpy(tiles[i : i + 128]))[0])
                    v, logdet = model.p_u.forward(q.mu + torch.exp(0.5 * q.logvar) * torch.randn(q.mu.shape,
                                                                                                  generator=g))
                    for k, t in zip(parts, (q.mu, q.logvar.exp(), v, logdet), strict=True):
                        parts[k].append(t.reshape(len(t), -1))
            grids.append({k: torch.cat(t).double().numpy().reshape(rows, cols, -1) for k, t in parts.items()})
    return grids


def with_neighbours(grids: list[dict[str, np.ndarray]], offsets: tuple) -> dict[str, np.ndarray]:
    """Rows of every tile that has all ``offsets``' neighbours: ``x`` their means side by side, and the tile's own
    ``mu``, ``var``, ``v``, ``logdet``."""
    out: dict[str, list[np.ndarray]] = {"x": [], "mu": [], "var": [], "v": [], "logdet": []}
    for g in grids:
        rows, cols = g["logdet"].shape[:2]
        for r in range(rows):
            for c in range(cols):
                near = [(r + dr, c + dc) for dr, dc in offsets]
                if all(0 <= a < rows and 0 <= b < cols for a, b in near):
                    out["x"].append(np.concatenate([g["mu"][a, b] for a, b in near]))
                    for k in ("mu", "var", "v", "logdet"):
                        out[k].append(g[k][r, c])
    return {k: np.array(v) for k, v in out.items()}


def entropy(var: np.ndarray) -> np.ndarray:
    """The entropy of ``N(mu, diag var)`` in nats, a row of variances each."""
    return (0.5 * (np.log(var) + 1 + np.log(2 * np.pi))).sum(-1)


def log_normal(y: np.ndarray, mean: np.ndarray | float, var: np.ndarray | float) -> np.ndarray:
    """``log N(y; mean, var)`` summed over the last axis."""
    return (-0.5 * (np.log(2 * np.pi * var) + (y - mean) ** 2 / var)).sum(-1)


def ridge(x: np.ndarray, y: np.ndarray, strength: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``y ~ (x - x_mean) W + y_mean``: ``(W, x_mean, y_mean)``, the penalty ``strength`` per training row."""
    xm, ym = x.mean(0), y.mean(0)
    xc = x - xm
    w = np.linalg.solve(xc.T @ xc + strength * len(x) * np.eye(x.shape[1]), xc.T @ (y - ym))
    return w, xm, ym


def linear_base_gain(train: dict[str, np.ndarray], test: dict[str, np.ndarray]) -> tuple[float, float]:
    """Nats a test tile that ``v_t ~ N(W x + b, diag s^2)`` saves over ``N(0, I)``, the strength chosen on the last
    fifth of the training rows; and that strength."""
    n = int(0.8 * len(train["x"]))
    best = None
    for strength in (1e-3, 1e-2, 1e-1, 1.0):
        w, xm, ym = ridge(train["x"][:n], train["v"][:n], strength)
        var = (train["v"][:n] - ym - (train["x"][:n] - xm) @ w).var(0)
        held = log_normal(train["v"][n:], ym + (train["x"][n:] - xm) @ w, var).mean()
        best = max(best or (held, strength), (held, strength))
    w, xm, ym = ridge(train["x"], train["v"], best[1])
    var = (train["v"] - ym - (train["x"] - xm) @ w).var(0)
    gain = log_normal(test["v"], ym + (test["x"] - xm) @ w, var) - log_normal(test["v"], 0.0, 1.0)
    return float(gain.mean()), best[1]


def gaussian_kl(train_u: np.ndarray, test_u: np.ndarray, test_var: np.ndarray) -> float:
    """KL(q || N) in nats a test tile, for the full-covariance Gaussian fitted to ``train_u`` (samples of u or their
    residuals), with ``test_u`` one sample of each test posterior."""
    cov = np.cov(train_u.T) + 1e-6 * np.eye(train_u.shape[1])
    chol = np.linalg.cholesky(cov)
    z = np.linalg.solve(chol, (test_u - train_u.mean(0)).T)
    cross = 0.5 * (z**2).sum(0) + np.log(np.diag(chol)).sum() + 0.5 * train_u.shape[1] * np.log(2 * np.pi)
    return float((cross - entropy(test_var)).mean())


def principal_axes(u: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The mean of the rows ``u`` and their covariance's eigenvectors, largest variance first (columns)."""
    values, vectors = np.linalg.eigh(np.cov(u.T))
    return u.mean(0), vectors[:, np.argsort(values)[::-1]]


def neighbour_scores(x: np.ndarray, n: int, mean: np.ndarray, axes: np.ndarray) -> np.ndarray:
    """The ``n`` neighbours' means (side by side in ``x``) on the principal ``axes``, side by side."""
    return ((x.reshape(len(x), n, -1) - mean) @ axes).reshape(len(x), -1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("model", help="a photograph model: a run directory, exported folder or shipped model's name")
    ap.add_argument("--data-dir", type=Path, default=Path("/usr/share"))
    a = ap.parse_args()
    torch.set_num_threads(1)
    model = Model.from_pretrained(a.model)
    train_grids = posteriors(model, a.data_dir, "train", TRAIN_OFFSETS)
    test_grids = posteriors(model, a.data_dir, "test", ((0, 0),))
    rng = np.random.default_rng(0)
    for name, offsets in NEIGHBOURS.items():
        train, test = with_neighbours(train_grids, offsets), with_neighbours(test_grids, offsets)
        flow_kl = -(log_normal(test["v"], 0.0, 1.0) + test["logdet"]) - entropy(test["var"])
        gain, strength = linear_base_gain(train, test)
        print(f"{name}: {len(train['x'])} training tiles, {len(test['x'])} test tiles; the flow's KL_u "
              f"{flow_kl.mean():.1f} nats a tile; a linear-Gaussian base given the neighbours saves {gain:.1f} nats "
              f"({gain / BITS:.4f} bits/dim; ridge {strength:g})", flush=True)
        u, test_u = (s["mu"] + np.sqrt(s["var"]) * rng.standard_normal(s["mu"].shape) for s in (train, test))
        mean, axes = principal_axes(u)
        scores, test_scores = (u - mean) @ axes, (test_u - mean) @ axes
        marginal = gaussian_kl(scores, test_scores, test["var"])
        saved = []
        for k in PCS:
            near, test_near = (neighbour_scores(s["x"], len(offsets), mean, axes[:, :k]) for s in (train, test))
            w, xm, ym = ridge(near, scores[:, :k], 1e-3)
            given, test_given = scores.copy(), test_scores.copy()
            given[:, :k] -= ym + (near - xm) @ w
            test_given[:, :k] -= ym + (test_near - xm) @ w
            saved.append(marginal - gaussian_kl(given, test_given, test["var"]))
        print(f"  u's own space, a full-covariance Gaussian: KL_u {marginal:.1f} nats a tile; its top "
              + ", ".join(f"{k}" for k in PCS) + " principal components predicted from the neighbours' save "
              + ", ".join(f"{g:.1f}" for g in saved) + f" nats ({saved[-1] / BITS:.4f} bits/dim at {PCS[-1]})",
              flush=True)


if __name__ == "__main__":
    main()
