"""The shipped models as a papers-style table (Markdown), from their ``metrics.json``, with the literature's
MNIST figures beside them.

    python tools/pretrained_table.py            # prints the table docs/RESULTS.md shows

Every figure of ours comes from the shipped files' ``metrics.json`` (written by ``scripts/train_pretrained.py``,
which measures the shipped weights); the literature rows are the published test bits/dim of 8-bit MNIST (28x28,
784 dimensions), as tabulated by Chen et al. (2019, Residual Flows, Table 1).
"""

from __future__ import annotations

import json

from selfvae import load
from selfvae.runs import layout
from selfvae.runs.layout import PACKAGED, pretrained_names

LITERATURE = [  # (model, MNIST test bits/dim per 784 dims, source)
    ("RealNVP (Dinh et al., 2017)", 1.06, "Chen et al. 2019, Table 1"),
    ("Glow (Kingma & Dhariwal, 2018)", 1.05, "Chen et al. 2019, Table 1"),
    ("FFJORD (Grathwohl et al., 2019)", 0.99, "Chen et al. 2019, Table 1"),
    ("Residual Flows (Chen et al., 2019)", 0.97, "Chen et al. 2019, Table 1"),
]


def _terms(m: dict) -> str:
    return ", ".join(f"{k} {v:.1f}" for k, v in m.items() if k.startswith(("re_", "kl_")))


def _iw(m: dict) -> str:
    """The IW bounds: over the whole test set where measured (``iw_full_test``), then on the first images, each
    with the ELBO of the same images where they are fewer than the ELBO column's (the first tiles of a photograph
    can be harder than the rest: the two columns compare only on the same images)."""
    bounds = [m[k] for k in ("iw_full_test", "iw") if k in m]

    def one(b: dict) -> str:
        same = f"; ELBO {b['bpd_elbo']:.4f}" if "bpd_elbo" in b and b["n_images"] != m.get("n_images") else ""
        return f"{b['bpd_iw']:.4f} (S={b['iw_samples']}, {b['n_images']}{same})"

    return "; ".join(one(b) for b in bounds) or "-"


def _elbo(m: dict) -> str:
    """The test ELBO, and a selfVAE's bound renormalised onto ``d(x) = y`` where measured."""
    out = f"{m['bpd_elbo']:.4f}"
    return out + (f"; {m['bpd_elbo_consistent']:.4f} renormalised" if "bpd_elbo_consistent" in m else "")


def _fid(m: dict, ref: str) -> str:
    f = m.get(layout.fid_key(ref))
    return f"{f['fid']:.1f} ({f['n']} vs {f['n_ref']})" if f else "-"


def _training(m: dict) -> str:
    tr = m.get("training", {})
    clock = "~" if "estimated" in tr.get("clock", "") else ""
    hardware = tr.get("hardware", "")
    where = ("CPU, then GPU" if "CPU" in hardware else "GPU") if "NVIDIA" in hardware else "CPU"
    hours = f"{clock}{tr.get('seconds', 0) / 3600:.2f} h {where}"
    if tr.get("cpu_seconds"):  # a run on the CPU clock: its budget was CPU time
        hours = f"{tr['cpu_seconds'] / 3600:.2f} CPU-hours ({hours} wall)"
    return f"{tr.get('steps', '?')} steps, {hours}"


def main() -> None:
    refs = " | ".join(f"FID vs {ref} (samples vs images)" for ref in layout.FID_REFS)
    print("| model | data | params | training | test bpd ELBO (all) | test bpd IW (S, images; their ELBO where not "
          f"all) | terms (nats/image) | {refs} |")
    print("| --- " * (7 + len(layout.FID_REFS)) + "|")
    for name in pretrained_names():
        m = json.loads((PACKAGED / name / layout.METRICS).read_text())
        cfg = json.loads((PACKAGED / name / layout.CONFIG).read_text())
        params = sum(p.numel() for p in load(name).parameters())
        fids = " | ".join(_fid(m, ref) for ref in layout.FID_REFS)
        print(f"| {name} | {cfg['data']['name']} | {params / 1e6:.2f}M | {_training(m)} | {_elbo(m)} | {_iw(m)} | "
              f"{_terms(m)} | {fids} |")
    for model, bpd, source in LITERATURE:
        print(f"| {model} | mnist | | | | {bpd:.2f} (exact likelihood; {source}) | |" + " |" * len(layout.FID_REFS))


if __name__ == "__main__":
    main()
