"""Question (issue 48, speed): is the photograph codec's speed bound by its networks' arithmetic? If so, a model
with a fraction of the FLOPs would code a photograph that many times faster.

Models of ``photo-vae-ctx``'s shape at smaller widths (the decoder ``p_y``'s width and growth, the encoder ``q_u``'s,
the sub-pixel context's and the RealNVP prior's middle channels), each data-initialised and trained for
``--minutes`` CPU-minutes on the photographs' crops (so that the coder codes distributions of a trained model's kind,
not the near-uniform ones of random weights, which it sends raw), then one held-out photograph coded and decoded:
megapixels/s, and where the encoder's time goes (cProfile, cumulative): the encoder q(u|x), the decoder p(x|u), the
sub-pixel context's nets, the flow prior's coding, the pixels' tables and ANS, and the rest. Bits/dim of such
briefly trained models say nothing of the architecture: only the times count here.

    python experiments/codec_speed.py --threads 1 --minutes 3 128,64,16,64,32 32,16,8,16,8

Each variant is ``P_Y_WIDTH,P_Y_GROWTH,Q_U_WIDTH,CONTEXT_WIDTH,FLOW_MID`` (the first is the shipped shape).
"""

from __future__ import annotations

import argparse
import cProfile
import dataclasses
import pstats
import time
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

from selfvae.codec.files import compress, decompress
from selfvae.codec.images import InputImage
from selfvae.config import Config
from selfvae.data.photos import random_crops, whole_photographs
from selfvae.models.build import build_model
from selfvae.models.selfvae import SelfVAE
from selfvae.nn.layers import data_dependent_init
from selfvae.presets import get_preset

PHASES = {  # the encoder's phases, each a function whose cumulative time is the phase's (they do not nest)
    "q(u|x)": "q_u_given",
    "p(x|u)": "p_y_given",
    "context nets": "forward@context.py",
    "flow prior": "through_flow",
    "pixel tables + ANS": "_push_pixels",
}


def variant(base: Config, spec: str) -> Config:
    """``base`` with the widths of ``spec`` (``P_Y_WIDTH,P_Y_GROWTH,Q_U_WIDTH,CONTEXT_WIDTH,FLOW_MID``)."""
    py_w, py_g, qu_w, ctx_w, mid = (int(v) for v in spec.split(","))
    m = base.model
    return dataclasses.replace(base, model=dataclasses.replace(
        m, p_y=dataclasses.replace(m.p_y, width=py_w, growth=py_g), q_u=dataclasses.replace(m.q_u, width=qu_w,
                                                                                          growth=qu_w),
        context_width=ctx_w, prior_kwargs={**m.prior_kwargs, "mid_channels": mid}))


def trained(cfg: Config, crops: torch.Tensor, minutes: float) -> tuple[SelfVAE, int]:
    """A model of ``cfg`` data-initialised and trained on ``crops`` for ``minutes`` of CPU time (Adam 1e-3)."""
    torch.manual_seed(0)
    model = build_model(cfg)
    data_dependent_init(model, lambda: model.terms(crops[:256]))
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    start, steps = time.process_time(), 0
    while time.process_time() - start < 60 * minutes:
        loss = model.terms(crops[torch.randint(0, len(crops), (32,))]).nelbo.mean()
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 200.0)
        opt.step()
        steps += 1
    return model.eval(), steps


def phase_seconds(stats: pstats.Stats) -> dict[str, float]:
    """Cumulative seconds of each of :data:`PHASES` in ``stats``."""
    out = dict.fromkeys(PHASES, 0.0)
    for (file, _, func), (_, _, _, cumulative, _) in stats.stats.items():
        for phase, key in PHASES.items():
            name, _, where = key.partition("@")
            if func == name and (not where or file.endswith(where)):
                out[phase] += cumulative
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("variants", nargs="+", help="P_Y_WIDTH,P_Y_GROWTH,Q_U_WIDTH,CONTEXT_WIDTH,FLOW_MID")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--minutes", type=float, default=3.0, help="training of each variant, CPU-minutes")
    ap.add_argument("--photo", type=int, default=0, help="which held-out test photograph")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    name, x = whole_photographs(Path("/usr/share"), "test")[a.photo]
    train = [p for _, p in whole_photographs(Path("/usr/share"), "train")]
    crops = torch.from_numpy(random_crops(train, 32, 20000)).permute(0, 3, 1, 2).contiguous()
    mp = x.shape[0] * x.shape[1] / 1e6
    for spec in a.variants:
        model, steps = trained(variant(get_preset("photo-vae-ctx"), spec), crops, a.minutes)
        with torch.no_grad(), FlopCounterMode(display=False) as flops:
            model.terms(crops[:1])
        params = sum(p.numel() for p in model.parameters())
        profile = cProfile.Profile()
        tic = time.perf_counter()
        profile.enable()
        data, _ = compress(model, [InputImage(name, x)], threads=a.threads, png_instead=False)
        profile.disable()
        enc = time.perf_counter() - tic
        tic = time.perf_counter()
        decoded = decompress(model, data, threads=a.threads)
        dec = time.perf_counter() - tic
        assert (decoded.images[0] == x).all(), "round trip not exact"
        phases = phase_seconds(pstats.Stats(profile))
        rest = enc - sum(phases.values())
        split = ", ".join(f"{k} {v:.2f}" for k, v in {**phases, "rest": rest}.items())
        print(f"{spec}: {params / 1e6:.2f}M parameters, {flops.get_total_flops() / 1e9:.3f} GFLOP a tile, trained "
              f"{steps} steps; {name} {len(data) * 8 / x.size:.3f} bits/dim; encode {mp / enc:.3f} MP/s, decode "
              f"{mp / dec:.3f} MP/s (exact); encoder seconds (profiled): {split}", flush=True)


if __name__ == "__main__":
    main()
