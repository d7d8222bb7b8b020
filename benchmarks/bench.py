"""Speed of the presets: parameters, training images/s and seconds per step (AdaMax, fp32 unless --amp),
IWAE evaluation images/s, sampling latency for 1 and 100 images, and peak memory.

Each preset runs in its own subprocess so the peak memory (CPU: ``ru_maxrss``, the process's peak resident
set; GPU: ``torch.cuda.max_memory_allocated``) belongs to that preset alone. Evaluation is reported at S = 1
importance sample per image (one forward pass of the whole model, ``analytic_kl=False``); S samples cost about
S forwards, so S = 512 runs about 512 times slower per image.

``--authors-src DIR`` (a checkout of ioangatop/srVAE) times the authors' own models beside ours, loaded from
``DIR`` at run time by :mod:`authors` (``authors-vae-realnvp``, ``authors-srvae``); without it the ``*-paper``
presets (the same function, ``authors_equivalence.py``) computed with their arithmetic (``PRESET:unfused``: each
dense unit as its two convs, :func:`selfvae.nn.paper.fuse_units`) stand in for them; ``--unfused`` adds those
beside the paper presets in any case; ``--amp bf16`` adds ``NAME:bf16`` beside every model, the authors' included
(their step under ``torch.autocast``; ours with ``train.amp``, likelihoods in float32). ``--reference`` adds the older
layer-for-layer rebuilds of :mod:`reference`. ``--interleave`` times every model in one process, one step of
each in turn, so a busy machine slows them alike (the way to compare speeds); otherwise each preset runs in its
own process (peak memory per preset, evaluation and sampling columns). ``--retain-memory`` makes glibc keep freed
memory in the process (:func:`selfvae.runtime.retain_freed_memory`, what ``selfvae train`` does by default), for
every model of the run alike, the authors' included. With ``--channels-last`` and ``--interleave``, their models also
run converted to channels-last (``authors-*:channels-last``), so ours is compared with the faster of their two.

Usage::

    python benchmarks/bench.py --presets cifar10-srvae-paper cifar10-vae-realnvp-paper --authors-src ~/srVAE \
        --interleave --threads 1 --batch-size 32 --steps 5
    python benchmarks/bench.py --presets cifar10-srvae cifar10-vae-realnvp --batch-size 32 --steps 5 --reference
    python benchmarks/bench.py --device cuda --amp bf16 --channels-last --compile
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

import torch

DEFAULT_PRESETS = ["cifar10-srvae", "cifar10-vae-realnvp"]
OURS_VS_AUTHORS = {"cifar10-vae-realnvp": "authors-vae-realnvp", "cifar10-srvae": "authors-srvae",
                   "cifar10-vae-realnvp-paper": "authors-vae-realnvp", "cifar10-srvae-paper": "authors-srvae"}
# NAME:VARIANT,..: UNFUSED, a paper preset's dense units as their two convs (selfvae.nn.paper.fuse_units);
# BF16, COMPILE, CUDAGRAPHS and GRAPHS, our nets' training settings as selfvae.runtime.SPEED_SETTINGS defines them
# (BF16 also for the authors' models: their step under bfloat16 autocast); CHANNELS_LAST, the authors' model
# converted to channels-last (with --channels-last: their run in our memory format)
UNFUSED, BF16, COMPILE, CUDAGRAPHS, GRAPHS, CHANNELS_LAST = ("unfused", "bf16", "compile", "cudagraphs", "graphs",
                                                             "channels-last")
# without their code, a paper preset computed with their arithmetic (units unfused) stands in for it
STAND_IN = {"authors-vae-realnvp": f"cifar10-vae-realnvp-paper:{UNFUSED}",
            "authors-srvae": f"cifar10-srvae-paper:{UNFUSED}"}


def _with(name: str, variant: str) -> str:
    """``name`` with one more variant: ``P`` -> ``P:v``, ``P:u`` -> ``P:u,v``."""
    return f"{name}{',' if ':' in name else ':'}{variant}"


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def _timed(fn, device: str, repeats: int) -> float:  # noqa: ANN001
    _sync(device)
    tic = time.perf_counter()
    for _ in range(repeats):
        fn()
    _sync(device)
    return (time.perf_counter() - tic) / repeats


def run_reference(args: argparse.Namespace, name: str) -> dict:
    """Training step of one of the authors' rebuilt models (AdaMax, fp32); the other columns do not apply."""
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.set_flush_denormal(True)
    torch.manual_seed(0)
    n_params, one_step = _step_fn(args, name)
    for _ in range(args.warmup):
        one_step()
    sec_step = _timed(one_step, args.device, args.steps)
    return {"preset": name, "params_M": n_params / 1e6,
            "train_img_s": args.batch_size / sec_step, "sec_per_step": sec_step}


def run_one(args: argparse.Namespace, preset: str) -> dict:
    from selfvae import runtime
    from selfvae.models.ops import generate
    from selfvae.models.selfvae import SelfVAE
    from selfvae.nn.layers import data_dependent_init
    from selfvae.presets import get_preset
    from selfvae.training.step import train_step

    if args.threads:
        torch.set_num_threads(args.threads)
    dev = args.device
    torch.set_flush_denormal(True)  # as the training loop does (train.flush_denormal)
    cfg = get_preset(preset)
    t = cfg.train
    t.batch_size, t.amp, t.channels_last, t.compile = args.batch_size, args.amp, args.channels_last, args.compile
    torch.manual_seed(0)
    model = SelfVAE(cfg.model).to(dev)
    n_params = sum(p.numel() for p in model.parameters())
    x = torch.randint(0, 256, (args.batch_size, *cfg.model.image_shape), dtype=torch.uint8, device=dev)
    data_dependent_init(model, lambda: model.terms(x))
    runtime.prepare(model, t)  # channels-last, float32 likelihood inputs under --amp, compiled: as training does
    opt = torch.optim.Adamax(model.parameters(), lr=t.lr)
    step = {"i": 0}

    def one_step() -> None:
        train_step(model, opt, x, cfg, None, step=step["i"])
        step["i"] += 1

    for _ in range(args.warmup):
        one_step()
    if dev.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    sec_step = _timed(one_step, dev, args.steps)

    @torch.no_grad()
    def iw_eval() -> None:
        model.eval()
        with runtime.autocast(dev, args.amp):
            model.terms(x, n_samples=1, analytic_kl=False)

    iw_eval()
    sec_eval = _timed(iw_eval, dev, max(2, args.steps))

    @torch.no_grad()
    def sample(n: int):  # noqa: ANN202
        model.eval()
        with runtime.autocast(dev, args.amp):
            return generate(model, n)

    sample(1)
    lat1 = _timed(lambda: sample(1), dev, 3)
    lat100 = _timed(lambda: sample(100), dev, 1)
    if dev.startswith("cuda"):
        peak = torch.cuda.max_memory_allocated() / 2**20
        peak_what = "GPU MiB"
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        peak_what = "RSS MiB"
    return {
        "preset": preset, "params_M": n_params / 1e6, "train_img_s": args.batch_size / sec_step,
        "sec_per_step": sec_step, "eval_img_s_S1": args.batch_size / sec_eval, "sample_1_s": lat1,
        "sample_100_s": lat100, "peak_mem_MiB": peak, "peak_what": peak_what, "threads": torch.get_num_threads(),
    }


def _variants(name: str) -> tuple[str, set[str]]:
    """``NAME:V1,V2`` as ``(NAME, {V1, V2})``; exits naming a variant that does not apply to the model."""
    base, _, variant = name.partition(":")
    variants = set(variant.split(",")) - {""}
    known = {BF16, CHANNELS_LAST} if base.startswith("authors-") else {UNFUSED, BF16, COMPILE, CUDAGRAPHS, GRAPHS}
    if variants - known:
        raise SystemExit(f"{name}: unknown variant(s) {sorted(variants - known)}")
    return base, variants


def _step_fn(args: argparse.Namespace, name: str):  # noqa: ANN202
    """``(parameters, one training step)`` of a preset, an authors' model or a rebuild, on a fixed batch."""
    base, variants = _variants(name)
    if base.startswith("authors-") and args.authors_src:
        from authors import load

        model = load(args.authors_src, base, args.device)
        if CHANNELS_LAST in variants:
            model.to(memory_format=torch.channels_last)
    elif base.startswith("authors-"):
        from reference import build

        model = build(base).to(args.device)
    else:
        from selfvae import runtime
        from selfvae.config import apply_overrides
        from selfvae.models.selfvae import SelfVAE
        from selfvae.nn.layers import data_dependent_init
        from selfvae.nn.paper import fuse_units
        from selfvae.presets import get_preset
        from selfvae.training.step import train_step

        cfg = get_preset(base)
        t = cfg.train
        t.batch_size, t.channels_last = args.batch_size, args.channels_last
        apply_overrides(cfg, runtime.speed_settings(variants - {UNFUSED}))  # bf16, compile, cudagraphs, graphs
        ours = SelfVAE(cfg.model).to(args.device)
        x = torch.randint(0, 256, (args.batch_size, *cfg.model.image_shape), dtype=torch.uint8, device=args.device)
        data_dependent_init(ours, lambda: ours.terms(x))
        fuse_units(ours, UNFUSED not in variants)
        runtime.prepare(ours, t)  # as training does: channels-last, float32 likelihood inputs, compiled
        opt = torch.optim.Adamax(ours.parameters(), lr=cfg.train.lr)
        return sum(p.numel() for p in ours.parameters()), lambda: train_step(ours, opt, x, cfg, None)
    x = torch.randint(0, 256, (args.batch_size, 3, 32, 32), dtype=torch.uint8, device=args.device)
    opt = torch.optim.Adamax(model.parameters(), lr=2e-3)

    cast = torch.autocast(torch.device(args.device).type, torch.bfloat16, enabled=BF16 in variants)

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        with cast:
            loss = model(x)
        loss.backward()
        opt.step()

    return sum(p.numel() for p in model.parameters()), step


def interleaved(args: argparse.Namespace, names: list[str]) -> dict[str, float]:
    """Training s/step of every model in one process, one step of each in turn (after ``--warmup`` each, timed
    apart: compilation and CUDA-graph recording happen there). A model that fails to build or to warm up is
    reported and left out, so one failing variant does not cost the others' figures."""
    for n in names:
        _variants(n)  # every name checked before the first one is built
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.set_flush_denormal(True)
    torch.manual_seed(0)
    models, warmup_s, failed = {}, {}, {}
    for n in names:
        tic = time.perf_counter()
        try:
            models[n] = _step_fn(args, n)
            for _ in range(args.warmup):
                models[n][1]()
            _sync(args.device)
        except Exception as e:  # noqa: BLE001 - reported with its model, the others go on
            models.pop(n, None)
            failed[n] = f"{type(e).__name__}: {(str(e).strip().splitlines() or [''])[0][:300]}"
            print(f"{n}: failed ({failed[n]})", flush=True)
            continue
        warmup_s[n] = time.perf_counter() - tic
    times: dict[str, list[float]] = {n: [] for n in models}
    for _ in range(args.steps):
        for n, (_, step) in models.items():
            times[n].append(_timed(step, args.device, 1))
    print(f"interleaved: {args.steps} timed steps of each, batch {args.batch_size}, "
          f"{torch.get_num_threads()} thread(s), channels_last {args.channels_last}")
    print(f"{'model':<40} {'params':>10} {'s/step':>8} {'img/s':>8} {'warm-up s':>9}")
    speed = {}
    for n in models:
        sec = sum(times[n]) / len(times[n])
        speed[n] = args.batch_size / sec
        print(f"{n:<40} {models[n][0] / 1e6:>9.2f}M {sec:>8.4f} {speed[n]:>8.2f} {warmup_s[n]:>9.1f}")
    profiles = {n: profile_step(step, args.device, args.profile) for n, (_, step) in models.items()} \
        if args.profile else {}
    for n, prof in profiles.items():
        print(f"{n}: {prof}")
    if args.json:
        rows = [{"model": n, "params_M": models[n][0] / 1e6, "sec_per_step": args.batch_size / speed[n],
                 "train_img_s": speed[n], "warmup_s": warmup_s[n], **({"profile": profiles[n]} if profiles else {})}
                for n in models]
        _write_json(args, {"mode": "interleaved", "rows": rows, "failed": failed})
    return speed


def profile_step(step, device: str, steps: int) -> dict:  # noqa: ANN001 - a step function of _step_fn
    """What bounds a training step, by ``torch.profiler`` over ``steps`` steps: wall seconds a step, operators
    the host dispatched and (on a GPU) kernels launched a step, the seconds the GPU spent in kernels (its busy
    fraction: near 1 the GPU bounds the step, far below it the host's launches do) and the costliest kernels."""
    from torch.profiler import ProfilerActivity, profile

    cuda = device.startswith("cuda")
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    _sync(device)
    with profile(activities=activities) as prof:
        tic = time.perf_counter()
        for _ in range(steps):
            step()
        _sync(device)
        wall = (time.perf_counter() - tic) / steps
    events = prof.events()
    ops = sum(1 for e in events if e.device_type.name == "CPU" and e.name.startswith("aten::")
              and e.cpu_parent is None)
    out = {"wall_s": wall, "top_level_ops": ops / steps}
    if cuda:
        kernels = [e for e in events if e.device_type.name == "CUDA"]
        busy = sum(e.device_time_total for e in kernels) / 1e6 / steps  # from microseconds
        by_name: dict[str, float] = {}
        for e in kernels:
            by_name[e.name] = by_name.get(e.name, 0.0) + e.device_time_total / 1e6 / steps
        out |= {"kernels": len(kernels) / steps, "gpu_busy_s": busy, "gpu_busy_fraction": busy / wall,
                "top_kernels_s": dict(sorted(by_name.items(), key=lambda kv: -kv[1])[:5])}
    return out


def _write_json(args: argparse.Namespace, result: dict) -> None:
    """``--json FILE``: the run's settings and rows, for tools/gpu_session.py and docs/RESULTS.md tables."""
    from pathlib import Path

    meta = {"device": args.device, "device_name": torch.cuda.get_device_name() if args.device.startswith("cuda")
            else "cpu", "batch_size": args.batch_size, "steps": args.steps, "warmup": args.warmup,
            "channels_last": args.channels_last, "torch": torch.__version__}
    Path(args.json).write_text(json.dumps({**meta, **result}, indent=1))


def run_interleaved(args: argparse.Namespace) -> None:
    """``--interleave``: every model in one process, each against the authors' step and its own variants
    (``--models``: exactly these, variants and all)."""
    if args.models:
        compare(interleaved(args, args.models), args.models)
        return
    names = list(args.presets)
    names += [f"{n}:{UNFUSED}" for n in args.presets if args.unfused and n.endswith("-paper")]
    names += [_with(n, COMPILE) for n in list(names) if args.compile]
    theirs = sorted({OURS_VS_AUTHORS[n] for n in names if n in OURS_VS_AUTHORS})
    if args.authors_src or args.reference:
        names += theirs + [_with(t, CHANNELS_LAST) for t in theirs if args.channels_last]
    else:  # the paper presets compute the authors' function (authors_equivalence.py): unfused, they stand in
        names += [STAND_IN[t] for t in theirs if STAND_IN[t] not in names]
    if args.amp:
        names += [_with(n, BF16) for n in names]
    compare(interleaved(args, names), names)


def compare(speed: dict[str, float], names: list[str]) -> None:
    """Print each of our models against the authors' step (fp32, and bf16 for a bf16 model) and its variants."""
    pairs = []  # (model, reference): each against the authors' fp32 step and at its own precision ...
    for ours in names:
        theirs_name = OURS_VS_AUTHORS.get(ours.partition(":")[0])
        if theirs_name is not None:
            ref = theirs_name if theirs_name in speed else STAND_IN[theirs_name]
            pairs += [(ours, ref)] + ([(ours, _with(ref, BF16))] if BF16 in ours else [])
            pairs += [(ours, _with(ref, CHANNELS_LAST))]  # where it ran: their code in our memory format
    # ... then each preset against its variants (their arithmetic, in part or whole; bf16)
    pairs += [(v.partition(":")[0], v) for v in names if v != v.partition(":")[0]]
    for a, b in dict.fromkeys(pairs):  # in order, each pair once (a stand-in is also a variant)
        if a != b and a in speed and b in speed:
            print(f"{a}: {speed[a] / speed[b]:.2f}x the training images/s of {b}")


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--presets", nargs="+", default=DEFAULT_PRESETS)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--device", default="cpu")
    p.add_argument("--steps", type=int, default=5, help="timed training steps (after --warmup)")
    p.add_argument("--warmup", type=int, default=4, help="untimed steps first (the allocator and oneDNN warm up)")
    p.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--amp", choices=["bf16"], help="bfloat16 autocast (--interleave: NAME:bf16 beside each model)")
    p.add_argument("--compile", action="store_true",
                   help="torch.compile our nets (with --interleave: NAME:compile beside each of our models)")
    p.add_argument("--channels-last", action="store_true")
    p.add_argument("--retain-memory", action="store_true",
                   help="glibc keeps freed memory in the process (selfvae.runtime, train.retain_memory's default); "
                        "with --interleave it holds for every model, the authors' too")
    p.add_argument("--reference", action="store_true", help="also time the authors' rebuilt architectures")
    p.add_argument("--authors-src", metavar="DIR", help="a checkout of ioangatop/srVAE: time the authors' own models")
    p.add_argument("--interleave", action="store_true", help="all models in one process, steps taken in turn")
    p.add_argument("--models", nargs="+", metavar="NAME[:VARIANT,...]",
                   help=f"with --interleave: exactly these models (variants {UNFUSED}, {BF16}, {COMPILE}, "
                        f"{CUDAGRAPHS}, {GRAPHS}; the authors' {BF16}, {CHANNELS_LAST}) instead of what --presets and "
                        "flags make")
    p.add_argument("--unfused", action="store_true",
                   help="with --interleave: also each paper preset with its dense units as two convs (PRESET:unfused)")
    p.add_argument("--json", metavar="FILE", help="also write the rows as JSON")
    p.add_argument("--profile", type=int, metavar="STEPS",
                   help="with --interleave: then profile STEPS steps of each model (what bounds the step: host "
                        "operators, kernels, the GPU's busy fraction)")
    p.add_argument("--one", help=argparse.SUPPRESS)  # internal: run one preset, print JSON
    args = p.parse_args(argv)
    if args.retain_memory:
        from selfvae.runtime import retain_freed_memory

        print(f"retain_freed_memory: {retain_freed_memory()}")
    if args.interleave:
        run_interleaved(args)
        return
    if args.one:
        run = run_reference if args.one in OURS_VS_AUTHORS.values() else run_one
        print(json.dumps(run(args, args.one)))
        return
    opts = ["--batch-size", str(args.batch_size), "--device", args.device, "--steps", str(args.steps),
            "--warmup", str(args.warmup)]
    opts += ["--threads", str(args.threads)] if args.threads else []
    opts += ["--amp", args.amp] if args.amp else []
    opts += ["--compile"] * args.compile + ["--channels-last"] * args.channels_last
    opts += ["--retain-memory"] * args.retain_memory
    print(f"device {args.device}, batch {args.batch_size}, {args.steps} timed steps, amp {args.amp or 'fp32'}, "
          f"compile {args.compile}, channels_last {args.channels_last}")
    head = (f"{'preset':<22} {'params':>8} {'train img/s':>11} {'s/step':>7} {'eval img/s (S=1)':>16} "
            f"{'sample 1 (s)':>12} {'sample 100 (s)':>14} {'peak mem':>14}")
    print(head)
    print("-" * len(head))
    names = list(args.presets)
    if args.reference:
        names += [OURS_VS_AUTHORS[n] for n in args.presets if n in OURS_VS_AUTHORS]
    speed, rows = {}, []
    for name in names:
        res = subprocess.run([sys.executable, __file__, "--one", name, *opts], capture_output=True, text=True)
        if res.returncode:
            print(f"{name:<22} failed: {res.stderr.strip().splitlines()[-1] if res.stderr else res.returncode}")
            continue
        r = json.loads(res.stdout.strip().splitlines()[-1])
        speed[name] = r["train_img_s"]
        rows.append(r)
        row = f"{r['preset']:<22} {r['params_M']:>7.1f}M {r['train_img_s']:>11.1f} {r['sec_per_step']:>7.2f} "
        if "eval_img_s_S1" in r:
            row += (f"{r['eval_img_s_S1']:>16.1f} {r['sample_1_s']:>12.3f} {r['sample_100_s']:>14.2f} "
                    f"{r['peak_mem_MiB']:>6.0f} {r['peak_what']}")
        print(row)
        sys.stdout.flush()
    for ours, theirs in OURS_VS_AUTHORS.items():
        if ours in speed and theirs in speed:
            print(f"{ours}: {speed[ours] / speed[theirs]:.2f}x the training images/s of {theirs}")
    if args.json:
        _write_json(args, {"mode": "per-process", "amp": args.amp, "compile": args.compile, "rows": rows})


if __name__ == "__main__":
    main()
