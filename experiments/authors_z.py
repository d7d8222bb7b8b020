"""Question (issue 49.3): does the authors' own srVAE (ioangatop/srVAE, densenet16x32 with the RealNVP prior) use
its z when trained on the official CIFAR-10 pixels at our CPU budget, where ours collapses (KL_z 0.02 nats, 0 of
1024 units active, the collapse within the first 100 steps)?

Their model is built from their code (benchmarks/authors.py: nothing copied) and trained as their main.py trains
it: AdaMax lr 2e-3, betas (0.9, 0.999), eps 1e-7, their LowerBoundedExponentialLR (gamma 0.999999, floor 1e-4),
batch 32, no KL warm-up, no free bits, no clipping; their data-dependent init on a training batch; their
augmentation (a flip and a whole-pixel shift of up to 2 px with edges repeated: selfvae's augment_shift). Images:
the first 4500 official training images (../shared/data/cifar10-official-part.npz); the other 245 are the
validation images on which the active units are counted (Burda et al. 2015: variance over images of the posterior
mean above 0.01) every --au-every steps. One JSON line per logged step in OUT/log.jsonl (bits/dim, RE_x, RE_y,
KL_u, KL_z, and at validations au_u, au_z); a checkpoint OUT/last.pt each validation (written atomically;
--resume goes on from it) until --minutes are spent: CPU time on the CPU, wall-clock time on a GPU.

    python experiments/authors_z.py --authors-src .gpu/srVAE --out runs/authors-srvae-z --minutes 60
    python experiments/authors_z.py --authors-src .gpu/srVAE --out OUT/authors-srvae-z --minutes 5 --device cuda
        # (tools/gpu_session.py train runs it beside our models)

(.gpu/srVAE: `python tools/gpu_session.py prepare` puts their source there.)

Answer (2026-11-26, 60 CPU-minutes, 160 steps; docs/RESULTS.md, "Real pixels"): their z collapses at the start
as ours does: KL_z 25.8 nats at step 2, 1.2-1.7 by steps 40-60, a bump to 15 around step 120, 0.6-1.4 by 140-160;
0 of 1024 units of z active at every validation but one (26 at step 100), while u's reach 1024 of 1024.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import authors

from selfvae.data.datasets import augment_shift

N_VAL, ACTIVE = 245, 0.01


def batches(x: torch.Tensor, batch: int, gen: torch.Generator):  # noqa: ANN201 - an endless iterator
    """Endless shuffled epochs of ``x`` (uint8 [N, 3, 32, 32]), each image augmented."""
    while True:
        for idx in torch.randperm(len(x), generator=gen).split(batch):
            if len(idx) == batch:
                yield torch.stack([augment_shift(x[i]) for i in idx])


def _clock(device: str) -> float:
    """Seconds of the budget's clock: this process's CPU time on the CPU, the wall clock (synchronised) on a GPU."""
    if device.startswith("cuda"):
        torch.cuda.synchronize()
        return time.perf_counter()
    return time.process_time()


@torch.no_grad()
def active_units(model: torch.nn.Module, x: torch.Tensor) -> dict[str, int]:
    """Units of u and z whose posterior mean varies over the images ``x`` by more than :data:`ACTIVE`."""
    net = model.model
    net.eval()
    means = {"u": [], "z": []}
    for xb in x.split(64):
        out = net(xb.float() / 255.0)
        means["u"].append(out["u_q_mean"].flatten(1))
        means["z"].append(out["z_q_mean"].flatten(1))
    net.train()
    return {f"au_{k}": int((torch.cat(v).var(0) > ACTIVE).sum()) for k, v in means.items()} | {
        f"units_{k}": int(torch.cat(v).shape[1]) for k, v in means.items()}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--authors-src", required=True, help="a checkout of ioangatop/srVAE")
    p.add_argument("--data", default=str(Path(__file__).resolve().parents[2] / "shared" / "data"
                                          / "cifar10-official-part.npz"))
    p.add_argument("--out", required=True)
    p.add_argument("--minutes", type=float, default=60.0, help="CPU minutes of training in all (sessions summed)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--device", default="cpu")
    p.add_argument("--log-every", type=int, default=5)
    p.add_argument("--au-every", type=int, default=25)
    p.add_argument("--resume", action="store_true")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    x = torch.from_numpy(np.load(args.data)["x_train"]).permute(0, 3, 1, 2).contiguous()
    train, val = x[:-N_VAL], x[-N_VAL:].to(args.device)
    torch.manual_seed(0)
    model = authors.load(args.authors_src, "authors-srvae", args.device, init_batch=train[:32])
    opt = torch.optim.Adamax(model.parameters(), lr=2e-3, betas=(0.9, 0.999), eps=1e-7)
    step, cpu = 0, 0.0
    gen = torch.Generator().manual_seed(0)
    if args.resume and (out / "last.pt").is_file():
        state = torch.load(out / "last.pt", weights_only=True, map_location=args.device)
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["opt"])
        step, cpu = state["step"], state["cpu_seconds"]
        gen.set_state(state["gen"].cpu())
        torch.set_rng_state(state["rng"].cpu())
    log = (out / "log.jsonl").open("a")
    clock = "wall" if args.device.startswith("cuda") else "cpu"  # what "cpu_seconds" counts
    if step == 0:
        log.write(json.dumps({"step": 0, "split": "val", **active_units(model, val)}) + "\n")
    data = batches(train, 32, gen)
    while cpu < args.minutes * 60:
        tic = _clock(args.device)
        for g in opt.param_groups:  # their LowerBoundedExponentialLR, stepped once a batch
            g["lr"] = max(2e-3 * 0.999999**step, 1e-4)
        opt.zero_grad()
        xb = next(data).to(args.device)
        x01 = xb.float() / 255.0
        nelbo, diag = model.model.calculate_elbo(x01, model.model(x01))
        nelbo.backward()
        opt.step()
        step += 1
        cpu += _clock(args.device) - tic
        if step % args.log_every == 0:
            log.write(json.dumps({"step": step, "split": "train", "cpu_seconds": round(cpu, 1), "clock": clock,
                                  "bpd": diag["bpd"], **{k: diag[k] for k in ("RE_x", "RE_y", "KL_u", "KL_z")}})
                      + "\n")
            log.flush()
            print(f"step {step} cpu {cpu / 60:.1f} min bpd {diag['bpd']:.4f} KL_u {diag['KL_u']:.1f} "
                  f"KL_z {diag['KL_z']:.2f}", flush=True)
        if step % args.au_every == 0 or cpu >= args.minutes * 60:
            au = active_units(model, val)
            log.write(json.dumps({"step": step, "split": "val", "cpu_seconds": round(cpu, 1), "clock": clock, **au})
                      + "\n")
            log.flush()
            print(f"step {step}: active units {au}", flush=True)
            tmp = out / "last.pt.tmp"
            torch.save({"model": model.state_dict(), "opt": opt.state_dict(), "step": step, "cpu_seconds": cpu,
                        "gen": gen.get_state(), "rng": torch.get_rng_state()}, tmp)
            tmp.replace(out / "last.pt")
        if not math.isfinite(diag["bpd"]):
            raise SystemExit(f"step {step}: the loss is not finite")
    log.close()


if __name__ == "__main__":
    main()
