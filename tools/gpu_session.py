"""A lent GPU's 15 minutes, prepared: the CUDA tests, throughput against the authors' code, and training the
natural-image models (CIFAR-10 on official pixels, the photograph model).

Here (the CPU machine), once a session:

    python tools/gpu_session.py prepare   # .gpu/: the authors' srVAE source, wheels, the official CIFAR-10
                                          # pixels of ../shared (cifar10-official-part.npz, 15 MB) and the
                                          # photographs data set packed (photos/, 7.2 MiB); committed
                                          # files no call needs are set aside (SET_ASIDE), so that the call
                                          # carries at most CARRY_TARGET (56 MiB of the 64 a call may carry)

then on the device machine (the `device` tool's `run`, carrying `.gpu`, timeout_s 600), two calls:

    python3 tools/gpu_session.py bench --budget 330 --out $OUT --compiled graphs,bf16 --groups \
        compiled-cifar10-vae-ctx compiled-cifar10-srvae-cons compiled-photo-vae-ctx
        # what is still unmeasured: the paper presets' targets hold (2026-11-28, a fourth H200: the srVAE's
        # `graphs,bf16` step 1.55x the authors' fp32, compiled in 57 s; the VAE's `cudagraphs,bf16` 1.63x on
        # 2026-11-26; the srVAE's inductor compilation outlasted four calls' shares), and the trained models'
        # presets compiled never ran: each in a run of its own, eager fp32 beside `graphs` and `graphs,bf16`;
        # prints the fastest setting of each and a FASTEST line to paste into the next call
    python3 tools/gpu_session.py train test --budget S --train-variant '' PRESET=VARIANT... --out $OUT
        # at once (a warm machine goes back after 30 idle seconds), S = the device seconds left - 80: the models
        # of TRAINED at once, each at the setting the bench found fastest for it (eager fp32 for any it did not
        # measure: the small presets' fastest, 2026-11-27), while the CUDA tests run beside them (their result is
        # not a timing); 2026-11-28: 420 s gave 5.69 minutes each, three models shipped

A session has 15 minutes of device time in all (`status`), starting a machine takes one or two, and one command
at most ten; the first call is the timing a short session must not miss (nothing else on the GPU), the second
trains with what is left and checks correctness meanwhile.

Phases:

* ``test``: ``tests/test_device.py`` with ``SELFVAE_TEST_DEVICE=cuda`` (bound equal to the CPU's, bf16 +
  channels-last and fp16 + loss-scale training, compiled = eager, CUDA-graph training steps = eager steps, CLI and
  torchrun training, resume, sampling, a device model refused by the codec and coding once on the CPU); the log
  comes back. After ``train`` in one call it runs while the models train.
* ``bench``: the bf16 matrix-product rate of this GPU (the measured peak), FLOPs per training image of each
  model (``torch.utils.flop_counter``: forward + backward), then ``benchmarks/bench.py --interleave`` runs, each in
  its own process, profiled (GPU busy fraction, kernels and host operators a step: what bounds it) and cut off
  where the budget would not hold it, most wanted first: each paper preset's eager fp32 and bf16 steps beside the
  authors' own model (``.gpu/srVAE``) in fp32 and bf16 (the 1.5x target, nothing compiled); the presets of the
  trained models (:data:`TRAINED`: the cheap ones) eager in fp32 and bf16; each paper preset compiled with CUDA
  graphs (``--compiled``) beside the authors' again; the trained models' presets compiled (the fastest of each is
  printed as ``FASTEST``: the training call's ``--train-variant``). A compiled run is cut off a minute before the
  budget's end for each compiled run after it (on 2026-11-26 the paper srVAE's nets compiled as symbolic-shape
  graphs for over four minutes, twice: those calls measured it not at all;
  ``selfvae.runtime.compile_nets`` now compiles static graphs).
* ``train``: the natural-image models that ship (:data:`TRAINED`: ``cifar10-srvae-cons``, ``cifar10-vae-ctx`` on
  the official CIFAR-10 pixels, ``cifar10-official-part``: 4745 training images; ``photo-vae-ctx`` on the packed
  photographs' crops, issue 48) trained at once on the GPU for ``--minutes`` (with ``--budget``: what it leaves) at
  ``--train-variant`` (or the bench's fastest for that preset), channels-last, EMA, cosine over the wall clock,
  every weight on from the committed float16 weights each names (``--config`` + ``--init``, a fresh optimiser at
  ``--lr``) unless ``--from-scratch``, or resuming the run this machine kept; each returned as one ``NAME.tar``
  (float16 export, config, metrics, log, samples) that
  ``scripts/train_pretrained.py NAME --ship-only --run DIR/NAME/run --export DIR/NAME/export`` measures and ships
  (the IW bound too: the device measures the test ELBO alone).
  Beside them, issue 49.3 at a GPU's budget: the srVAE designs of ``experiments/z_candidates.py`` (``ON_GPU``),
  on from their committed weights where they have some (``GO_ON``: z-paper-ship, whose z the third H200 revived;
  carried, ``CARRIED_RUNS``), else from random weights
  trained as the authors train theirs, their KL of z and active and informative units at each validation. Those of
  ``SHIPPABLE`` come back as ``NAME.tar`` too.

Everything measured goes into ``OUT/gpu_results.json`` and ``OUT/gpu_results.md`` (tables ``docs/RESULTS.md``
takes as they are). ``--device cpu --tiny`` runs every phase in seconds (``tests/test_gpu_session.py``).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tarfile
import threading
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import IO, NamedTuple

ROOT = Path(__file__).resolve().parents[1]


def _experiment(name: str):
    """The script ``experiments/NAME.py`` as a module (experiments/ is a folder of scripts, not a package)."""
    spec = importlib.util.spec_from_file_location(name, ROOT / "experiments" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


z_candidates = _experiment("z_candidates")
AUTHORS_REPO = "/work/.mirror/ioangatop+srVAE/repo/.git"  # `fetch github:ioangatop/srVAE` puts it here
DATA = "cifar10-official-part.npz"  # the official CIFAR-10 pixels of ../shared/data (a part: 4745 + 717 images)
WHEELS = ["constriction==0.5.0"]  # what the device image lacks of our dependencies
PAPER = ["cifar10-srvae-paper", "cifar10-vae-realnvp-paper"]  # the srVAE first: the VAE's ratio is measured (H200)
AUTHORS = {"cifar10-vae-realnvp-paper": "authors-vae-realnvp", "cifar10-srvae-paper": "authors-srvae"}  # same nets
PHOTOS = "photos"  # .gpu/photos: the photographs data set packed (selfvae.data.photos.pack: 7.2 MiB of lossless WebP)
# what `train` trains: the natural-image models that ship (issue 49: the sub-pixel-context VAE, the renormalised
# srVAE with contexts on x and y_1; issue 48: the photograph model), each with the data it reads from .gpu and the
# float16 weights it goes on from (committed; carried): the shipped ones (the VAE went on from ctx-on, a CPU run
# that had gone further, until the shipped cifar10-vae-ctx passed it on 2026-11-28). The small
# models (cifar10-vae-small, cifar10-srvae-small, photo-vae) trained here until 2026-11-27; the contexts beat them
# by 0.15-0.7 bits/dim
TRAINED = {"cifar10-srvae-cons": (DATA, "cifar10-official-part", "src/selfvae/pretrained/cifar10-srvae-cons"),
           "cifar10-vae-ctx": (DATA, "cifar10-official-part", "src/selfvae/pretrained/cifar10-vae-ctx"),
           "photo-vae-ctx": (PHOTOS, "photos", "src/selfvae/pretrained/photo-vae-ctx")}
# what `bench` times unless --presets says: the paper srVAE (the VAE's compiled step was measured: 1.63x the authors'
# fp32 step, H200, docs/gpu/2026-11-26-h200.json) and the presets of the models `train` trains, so that the fastest
# setting the bench prints (FASTEST) is one `train` can take for each of them; until 2026-11-28 the bench timed the
# small presets while `train` trained the context models, and no measured setting ever reached a training
BENCHED = ["cifar10-srvae-paper", *TRAINED]
# issue 49.3: the srVAE designs trained beside them (experiments/z_candidates.py): from their committed weights
# where they have some, else from random weights (none now: the shipped srVAE's z is alive); --tiny: z-paper-ship
# from its weights, a few steps
Z_DESIGNS = z_candidates.ON_GPU
Z_TINY = "z-paper-ship"
CARRY_LIMIT = 64 * 2**20  # what one device call may send
CARRY_TARGET = 56 * 2**20  # what prepare lets it carry: the rest is room for new weights in the tree
# committed files no device call needs, taken out of the working tree by `prepare` (`git checkout -- PATH` brings
# them back): the grey-image models, the natural-image models that no longer train here (the device tests sample
# cifar10-srvae-cons, which trains here) and the float16 weights of CPU runs kept between sessions
# (experiments/real_pixels/, experiments/context/: --init where a run is lost) but those a trained model or a z
# design goes on from (CARRIED_RUNS)
SET_ASIDE = [*(f"src/selfvae/pretrained/{name}" for name in ("mnist-vae", "mnist-srvae", "mnist-2lvl",
                                                             "fashion-mnist-vae", "fashion-mnist-srvae",
                                                             "fashion-mnist-2lvl", "cifar10-vae-small",
                                                             "cifar10-srvae-small", "cifar10-srvae-ctx",
                                                             "photo-vae")),
             "experiments/real_pixels", "experiments/context"]
CARRIED_RUNS = (*(z_candidates.GO_ON[name] for name in z_candidates.ON_GPU if name in z_candidates.GO_ON),
                *(w for _, _, w in TRAINED.values() if w.startswith("experiments/")))
# --budget: seconds kept for the bench after the tests; seconds a training run spends beside its --minutes
# (start, data, initialisation, evaluations, export: 43 s on the H200 on 2026-11-26 with the 717 official test
# images, ~2.5 min on the H100 on 2026-11-25 with the JPEG copy's 10000)
BENCH_RESERVE_S, TRAIN_OVERHEAD_S = 290, 75
MIN_RUN_S = 60  # the least a bench run is started with
TRAIN_RESERVE_S = TRAIN_OVERHEAD_S + 120  # what the bench leaves when training follows in the same call
BF16_VARIANT, CUDAGRAPHS_VARIANT, GRAPHS_VARIANT = "bf16", "cudagraphs", "graphs"  # bench.py's training settings
BF16_SPEC_TFLOPS = 989.4  # dense, the H100 SXM5 and H200 data sheets; the measured rate is reported beside it


# ----- here: what the device call carries -----------------------------------------------------------
def prepare(shared: Path, gpu_dir: Path, photos_root: Path = Path("/usr/share")) -> None:
    """Fill ``.gpu/`` with the official CIFAR-10 pixels, the photographs (from ``photos_root``), the authors'
    source and the wheels the device lacks; a call that would carry more than :data:`CARRY_TARGET` is refused
    here, before any device time is spent."""
    from selfvae.errors import SelfVAEError

    gpu_dir.mkdir(exist_ok=True)
    authors = gpu_dir / "srVAE"
    if not (authors / "src").is_dir():
        if not Path(AUTHORS_REPO).is_dir():  # a fresh machine: the mirror is fetched, not part of the checkout
            raise SystemExit(f"the authors' srVAE is not at {AUTHORS_REPO}: fetch github:ioangatop/srVAE first (or "
                             "clone https://github.com/ioangatop/srVAE there); the bench times their step beside ours")
        authors.mkdir(exist_ok=True)
        archive = subprocess.run(["git", f"--git-dir={AUTHORS_REPO}", "archive", "HEAD", "src"], check=True,
                                 capture_output=True).stdout
        subprocess.run(["tar", "-x", "-C", str(authors)], input=archive, check=True)
    whl = gpu_dir / "whl"
    whl.mkdir(exist_ok=True)
    subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:",
                    "--python-version", "3.12", "--implementation", "cp", "--platform", "manylinux_2_17_x86_64",
                    "--platform", "manylinux2014_x86_64", "-d", str(whl), *WHEELS], check=True)
    for old in gpu_dir.glob("*.tar.gz"):  # what earlier versions carried (the CIFAR-10 JPEG copy)
        old.unlink()
    shutil.copyfile(shared / "data" / DATA, gpu_dir / DATA)
    if not (gpu_dir / PHOTOS).is_dir():
        try:
            from selfvae.data import photos

            print(f"{gpu_dir / PHOTOS}: {photos.pack(photos_root, gpu_dir / PHOTOS) / 2**20:.1f} MiB of photographs")
        except SelfVAEError as e:  # the wallpaper packages not installed here: no photograph model trains there
            print(f"photographs not packed ({e}); the device call trains the CIFAR-10 models only")
    for path in SET_ASIDE:
        set_aside(path, keep=CARRIED_RUNS)
    total = _travelling_bytes() + _dir_bytes(gpu_dir)
    print(f"{gpu_dir}: {_dir_bytes(gpu_dir) / 2**20:.1f} MiB to carry (run(..., carry=['.gpu'])); the whole call "
          f"{total / 2**20:.1f} MiB of {CARRY_LIMIT / 2**20:.0f} (at most {CARRY_TARGET / 2**20:.0f})")
    if total > CARRY_TARGET:
        raise SystemExit(f"the device call would carry {total / 2**20:.1f} MiB, more than {CARRY_TARGET / 2**20:.0f}: "
                         "set more committed files aside (SET_ASIDE) or ship smaller weights")


def set_aside(path: str, keep: tuple[str, ...] = ()) -> None:
    """Remove ``path``'s files but those under ``keep`` from the working tree where every one is committed unchanged
    (else leave them), saying how to bring them back."""
    tracked = subprocess.run(["git", "ls-files", "-z", "--", path], cwd=ROOT, check=True,
                             capture_output=True).stdout.split(b"\0")
    kept = tuple(f"{k}/" for k in keep)
    tracked = [ROOT / n.decode() for n in tracked if n and not n.decode().startswith(kept)]
    changed = subprocess.run(["git", "status", "--porcelain", "--", path], cwd=ROOT, check=True,
                             capture_output=True).stdout.strip()
    if not tracked or changed:
        if changed:
            print(f"{path}: has changes not committed; left in the tree (it travels)")
        return
    size = sum(f.stat().st_size for f in tracked if f.is_file())
    for f in tracked:
        f.unlink(missing_ok=True)
    print(f"{path}: {size / 2**20:.1f} MiB set aside for the device calls; `git checkout -- {path}` brings it back")


def _dir_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def _travelling_bytes() -> int:
    """Bytes of the working tree that every device call sends: tracked files and untracked ones not ignored."""
    names = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                           check=True, capture_output=True).stdout.split(b"\0")
    return sum((ROOT / n.decode()).stat().st_size for n in names if n and (ROOT / n.decode()).is_file())


# ----- there ----------------------------------------------------------------------------------------
def _env() -> dict[str, str]:
    """The environment of every child: our source and the carried wheels importable, output unbuffered."""
    paths = [str(ROOT / "src"), str(ROOT / "benchmarks"), str(ROOT / "tests")]
    if (Path("/tmp/site")).is_dir():
        paths.append("/tmp/site")
    return {**os.environ, "PYTHONPATH": os.pathsep.join(paths + [os.environ.get("PYTHONPATH", "")]),
            "PYTHONUNBUFFERED": "1"}


def install_wheels(gpu_dir: Path) -> None:
    whl = sorted((gpu_dir / "whl").glob("*.whl"))
    missing = [w for w in whl if not _importable(w.name.split("-")[0])]
    if missing:
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-deps", "--no-compile",
                        "--target", "/tmp/site", *map(str, missing)], check=True)


def _importable(module: str) -> bool:
    return subprocess.run([sys.executable, "-c", f"import {module}"], capture_output=True).returncode == 0


def _run(cmd: list[str], log: Path, timeout: float | None = None) -> int:
    """Run ``cmd`` with its output teed into ``log``; returns the exit status, -9 where it ran past ``timeout``
    seconds and was killed (a timer kills it: reading its output would otherwise wait for it however long it
    runs, as the 2026-11-26 bench did for 70 s past its budget until the call's limit cut everything off)."""
    print("+", " ".join(cmd), flush=True)
    with log.open("a") as f:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=_env(),
                                cwd=ROOT)
        killed: list[bool] = []
        timer = None if timeout is None else threading.Timer(max(timeout, 0.0), lambda: (killed.append(True),
                                                                                          proc.kill()))
        if timer:
            timer.start()
        assert proc.stdout is not None
        for line in proc.stdout:
            sys.stdout.write(line)
            f.write(line)
        rc = proc.wait()
        if timer:
            timer.cancel()
        return -9 if killed else rc


def phase_test(args: argparse.Namespace, results: dict) -> None:
    log = args.out / "tests.log"
    cmd = [sys.executable, "-m", "pytest", "tests/test_device.py", "-o", "addopts=", "-q", "-p", "no:cacheprovider",
           "--durations=5"]
    if args.tiny:
        cmd += ["-k", "sampling_stays"]
    elif _importable("xdist"):  # the compiling tests side by side (the GPU machine has 16 cores)
        cmd += ["-n", "4"]
    os.environ["SELFVAE_TEST_DEVICE"] = args.device
    tic = time.perf_counter()
    left = _left(args, reserve=BENCH_RESERVE_S if _follows(args, "test", "bench") else 0)
    rc = _run(cmd, log, timeout=None if left is None else max(left, 60))
    tail = [ln for ln in log.read_text().splitlines() if " passed" in ln or " failed" in ln or " error" in ln]
    results["tests"] = {"device": args.device, "returncode": rc, "summary": tail[-1] if tail else "",
                        "seconds": round(time.perf_counter() - tic, 1)}


def matmul_tflops(device: str, n: int = 8192, repeats: int = 10) -> float:
    """The bf16 rate of one large matrix product on ``device``, TFLOP/s: the peak a network can approach."""
    import torch

    if not device.startswith("cuda"):
        n, repeats = 512, 2
    a = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    b = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    for _ in range(3):
        a @ b
    _sync(device)
    tic = time.perf_counter()
    for _ in range(repeats):
        a @ b
    _sync(device)
    return 2 * n**3 * repeats / (time.perf_counter() - tic) / 1e12


def _sync(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()


def flops_per_image(preset: str, device: str, batch: int) -> float:
    """FLOPs of one training step (forward + backward of the negative ELBO) per image, by PyTorch's counter."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from selfvae.models.selfvae import SelfVAE
    from selfvae.presets import get_preset

    cfg = get_preset(preset)
    model = SelfVAE(cfg.model).to(device)
    x = torch.randint(0, 256, (batch, *cfg.model.image_shape), dtype=torch.uint8, device=device)
    with FlopCounterMode(display=False) as counter:
        model.bpd(model.terms(x).nelbo).mean().backward()
    return counter.get_total_flops() / batch


def _cheap(presets: list[str], tiny: bool) -> list[str]:
    """The presets without an authors' twin, whose fastest setting the training call takes (none with --tiny)."""
    return [] if tiny else [p for p in presets if p not in AUTHORS]


def bench_groups(presets: list[str], authors: list[str], compiled: list[str], tiny: bool = False
                 ) -> list[tuple[str, list[str], bool]]:
    """The interleaved bench runs, ``(label, models, compiled?)``, most wanted first: the throughput target at
    eager precision (each paper preset beside the authors' model, nothing compiled), the cheap presets' eager
    steps (the training setting where no compiled one is measured), then the compiled runs, the authors' steps
    again beside each compiled paper preset (the ratio within one run), one run a compiled variant (labelled
    ``compiled-PRESET:VARIANT``: a compilation that outlasts its share loses its own rows alone), and one run for
    each cheap preset's compiled variants beside its eager fp32 step (``compiled-PRESET``). A compiled run
    is cut off a minute before the budget's end for each compiled run after it (2026-11-26: the paper srVAE's
    compilation, alone in the first run, took all 290 s, and the eager and authors' steps measured beside it were
    lost with it)."""
    paper = [p for p in presets if p in AUTHORS or tiny]
    theirs = {p: [AUTHORS[p], f"{AUTHORS[p]}:bf16"] if AUTHORS.get(p) in authors else [] for p in paper}
    groups = [(f"eager-{p}", [p, f"{p}:bf16", *theirs[p]], False) for p in paper]
    cheap = _cheap(presets, tiny)
    if cheap:
        groups.append(("eager-cheap", [f"{p}{v}" for p in cheap for v in ("", ":bf16")], False))
    if compiled:
        groups += [(f"compiled-{p}:{v}", [f"{p}:{v}", *theirs[p]], True) for p in paper for v in compiled]
        variants = dict.fromkeys([*(c.removesuffix(",bf16") for c in compiled), *compiled])
        groups += [(f"compiled-{p}", [p, *(f"{p}:{v}" for v in variants)], True) for p in cheap]
    return groups


def chosen_groups(groups: list[tuple[str, list[str], bool]], labels: list[str] | None
                  ) -> list[tuple[str, list[str], bool]]:
    """The runs of ``groups`` that ``--groups`` names, in its order (all where it names none): a session whose eager
    ratios are measured gives its whole budget to a compilation (the paper srVAE's outlasted three calls' shares)."""
    if not labels:
        return groups
    known = {g[0]: g for g in groups}
    unknown = [label for label in labels if label not in known]
    if unknown:
        raise SystemExit(f"--groups: {', '.join(unknown)} not among this bench's runs ({', '.join(known)})")
    return [known[label] for label in labels]


def phase_bench(args: argparse.Namespace, results: dict) -> None:
    """The measured bf16 peak and FLOPs per image, then interleaved runs in their own processes, most
    wanted first, each profiled (what bounds the step) and cut off where the call's budget would not hold it:
    each paper preset's eager fp32 and bf16 steps beside the authors' (the throughput target, nothing compiled);
    the cheap presets' eager steps at both precisions; each paper preset compiled (``--compiled``: CUDA graphs)
    beside the authors' again; the cheap presets compiled. The fastest of each cheap preset is the training
    call's setting (``fastest``)."""
    import torch

    presets = args.presets or (["mnist-vae"] if args.tiny else BENCHED)
    bench = results.setdefault("bench", {})
    bench["device_name"] = torch.cuda.get_device_name() if args.device.startswith("cuda") else "cpu"
    bench["matmul_bf16_tflops"] = float(f"{matmul_tflops(args.device):.3g}")  # a loaded CPU's is below 0.05
    flop_batch = 2 if args.tiny else 32
    bench["gflop_per_train_image"] = {p: flops_per_image(p, args.device, flop_batch) / 1e9 for p in presets}
    authors = [] if args.tiny or not (args.gpu_dir / "srVAE" / "src").is_dir() else [AUTHORS[p] for p in presets
                                                                                       if p in AUTHORS]
    cheap = _cheap(presets, args.tiny)
    groups = bench_groups(presets, authors, args.compiled, args.tiny)
    groups = chosen_groups(groups, args.groups)
    reserve = TRAIN_RESERVE_S if _follows(args, "bench", "train") else 0
    for batch in args.batch_sizes:
        for i, (label, models, compiled) in enumerate(groups):
            left = _left(args, reserve)
            if left is not None and compiled:  # a minute kept for each compiled run after it
                left -= MIN_RUN_S * sum(c for _, _, c in groups[i + 1:])
            if left is not None and left < MIN_RUN_S:
                bench.setdefault("skipped", []).append(f"{label} b{batch}: {left:.0f} s of the budget left")
                continue
            json_file = args.out / f"bench_{label}_b{batch}.json"
            cmd = _bench_cmd(args, batch, json_file, "--interleave", "--models", *models)
            cmd += ["--profile", "2" if args.tiny else "3"]
            if authors:
                cmd += ["--authors-src", str(args.gpu_dir / "srVAE")]
            began = time.monotonic()
            rc = _run(cmd, args.out / "bench.log", timeout=left)
            if rc == 0:
                bench.setdefault("interleaved", []).append({"label": label, **json.loads(json_file.read_text())})
            else:
                bench.setdefault("skipped", []).append(
                    f"{label} b{batch}: exit {rc} after {time.monotonic() - began:.0f} s"
                    + (" (out of budget)" if rc == -9 else ""))
    fastest = _fastest(bench.get("interleaved", []), cheap)
    if fastest:
        bench["fastest"] = {name: variant for name, (variant, _) in fastest.items()}
        for name, (variant, img_s) in fastest.items():
            print(f"FASTEST {name}: {variant or 'eager fp32'} ({img_s:.0f} img/s)", flush=True)
        print("FASTEST for the training call: --train-variant "
              + " ".join(f"'{name}={variant}'" for name, variant in bench["fastest"].items()), flush=True)
    left = _left(args, reserve)
    if left is not None and left < 90:
        bench.setdefault("skipped", []).append(f"per-process evaluation and sampling: {left:.0f} s left")
        return
    json_file = args.out / "bench_per_process.json"  # evaluation, sampling and memory, bf16 as trained
    cmd = _bench_cmd(args, args.batch_sizes[-1], json_file, "--amp", "bf16", "--presets", *presets)
    if _run(cmd, args.out / "bench.log", timeout=left) == 0:
        bench["per_process"] = json.loads(json_file.read_text())


def _fastest(runs: list[dict], presets: list[str]) -> dict[str, tuple[str, float]]:
    """Each preset's fastest variant over the interleaved ``runs``, with its training images/s."""
    fastest: dict[str, tuple[str, float]] = {}
    for run in runs:
        for r in run["rows"]:
            name, _, variant = r["model"].partition(":")
            if name in presets and r["train_img_s"] > fastest.get(name, ("", 0.0))[1]:
                fastest[name] = (variant, r["train_img_s"])
    return fastest


def _bench_cmd(args: argparse.Namespace, batch: int, json_file: Path, *extra: str) -> list[str]:
    """``benchmarks/bench.py`` on this device, channels-last, at ``batch``, its rows into ``json_file``."""
    return [sys.executable, "benchmarks/bench.py", "--device", args.device, "--channels-last", "--batch-size",
            str(batch), "--steps", str(args.steps), "--warmup", str(args.warmup), "--json", str(json_file), *extra]


def _follows(args: argparse.Namespace, phase: str, later: str) -> bool:
    """Whether this call runs ``later`` after ``phase`` (whose budget then keeps its share)."""
    return later in args.phases[args.phases.index(phase) + 1:]


def _left(args: argparse.Namespace, reserve: float = 0.0) -> float | None:
    """Seconds of ``--budget`` left for this step after ``reserve`` for what follows; None without a budget."""
    return None if args.deadline is None else args.deadline - time.monotonic() - reserve


class Job(NamedTuple):
    """A training process of :func:`start_training`: its log file, its setting, and what to collect from it when it
    has ended (its exit status given), into ``results[into][name]``."""

    proc: subprocess.Popen
    log: IO
    variant: str
    collect: Callable[[int], dict]
    into: str = "train"


def start_training(args: argparse.Namespace, results: dict) -> dict[str, Job]:
    """The models of :data:`TRAINED` at once on the one GPU, each in its own process, at the fastest
    setting the bench measured (``--train-variant``); returns the processes for :func:`finish_training` (phases
    after ``train`` in the same call, the tests, run while they train)."""
    from selfvae.runs import layout
    from selfvae.training.state import minutes_spent

    runs = Path(args.work) / "runs"
    left = _left(args)
    if left is not None:  # the budget's minutes, less what starting, evaluating and packing a run take
        args.minutes = round((left - TRAIN_OVERHEAD_S) / 60, 2)
        if args.minutes < 1:
            results["train_skipped"] = f"{left:.0f} s of the budget left: too few to train"
            return {}
    procs = {}
    for preset, (data, data_name, weights) in TRAINED.items():
        if not (args.gpu_dir / data).exists():
            results.setdefault("train_skipped_data", {})[preset] = f"{args.gpu_dir / data}: not carried"
            continue
        run = runs / preset
        kept = layout.checkpoint(run).exists()  # this machine kept the run (a later call of the same session)
        minutes = args.minutes + (minutes_spent(run) if kept else 0.0)  # a budget counts the run's sessions
        if kept:
            start = ["--resume"]
        elif args.from_shipped:  # a fresh machine: every weight on from the committed ones, in their own config
            # (its contexts and flow differ from the preset's), on the wall clock, a fresh optimiser at --lr
            start = ["--config", str(ROOT / weights / "config.json"), "--init", str(ROOT / weights), "--set",
                     f"train.lr={args.lr}", "--set", "train.lr_warmup_steps=50", "--set", "train.trainable=null",
                     "--set", "train.clock=wall"]
        else:
            start = ["--preset", preset]
        cmd = [*_train_cmd(args, run, data, data_name, start),
               "--set", "train.lr_schedule=cosine-time", "--set", f"train.max_minutes={minutes:.2f}",
               "--set", f"train.batch_size={args.train_batch}", "--set", "train.eval_every=500"]
        variant = results.get("bench", {}).get("fastest", {}).get(preset, args.train_variant.get(preset,
                                                                                                args.train_variant[""]))
        variant = variant if args.device.startswith("cuda") else ""  # the CPU (the tiny test): eager fp32
        cmd += _variant_flags(variant)
        if args.tiny:
            cmd += ["--set", "train.eval_limit=32", "--set", "train.final_eval_limit=32", "--set",
                    "train.final_iw_limit=8", "--set", "train.final_iw_samples=2", "--set", "train.init_batch=16",
                    "--steps", "3", "--threads", "1"]
        procs[preset] = _started(args, f"{preset}.train.log", cmd, variant, partial(_packed, preset, run, args.out))
    if args.device.startswith("cuda") or args.tiny:  # issue 49.3: which design keeps z carrying information?
        for name in [Z_TINY] if args.tiny else Z_DESIGNS:
            run = runs / name
            if layout.checkpoint(run).exists():
                start = ["--resume"]
            elif name in z_candidates.GO_ON and (ROOT / z_candidates.GO_ON[name]).is_dir():  # on from its weights
                start = z_candidates.go_on_args(name)
            else:
                start = z_candidates.train_args(name)
            cmd = [*_train_cmd(args, run, DATA, "cifar10-official-part", start),
                   "--set", f"train.max_minutes={args.minutes:.2f}", "--set", "train.eval_limit=245",
                   "--set", "train.final_iw_limit=0", "--set", "train.sample_every=1000000",
                   "--set", f"train.eval_every={3 if args.tiny else 250}"]
            if args.tiny:
                cmd += ["--set", "train.eval_limit=16", "--set", "train.final_eval_limit=16", "--set",
                        "train.init_batch=16", "--set", "train.batch_size=8", "--steps", "3", "--threads", "1"]
            procs[name] = _started(args, f"{name}.log", cmd, "", partial(_z_collected, name, run, args.out), into="z")
    return procs


def _train_cmd(args: argparse.Namespace, run: Path, data: str, data_name: str, start: list[str]) -> list[str]:
    """``selfvae train`` into ``run`` on the carried ``data`` (data set ``data_name``) on this device, ``start``
    (``--resume``, or the preset and what it starts from) first; the caller adds its settings."""
    return [sys.executable, "-m", "selfvae.cli", "train", "--out", str(run), *start, "--data-dir",
            str(args.gpu_dir / data), "--set", f"data.name={data_name}", "--device", args.device, "--channels-last",
            "--no-progress", "--workers", str(args.workers)]


def _started(args: argparse.Namespace, log_name: str, cmd: list[str], variant: str, collect: Callable[[int], dict],
             into: str = "train") -> Job:
    """``cmd`` started in the background, its output into ``OUT/log_name``."""
    print("+", " ".join(cmd), flush=True)
    log = (args.out / log_name).open("w")
    return Job(subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=_env(), cwd=ROOT), log, variant,
               collect, into)


def train_variants(entries: list[str]) -> dict[str, str]:
    """``--train-variant``'s entries as ``{preset: variant}``, the setting of every other trained model under
    ``""`` (eager fp32 where no entry gives one); each variant checked as :func:`_variant_flags` checks it and each
    preset one of :data:`TRAINED`, so that a typing error stops the call here rather than on the device."""
    variants = {"": ""}
    for entry in entries:
        preset, _, variant = entry.rpartition("=")
        if preset and preset not in TRAINED:
            raise SystemExit(f"--train-variant {entry!r}: {preset} is not a trained model ({', '.join(TRAINED)})")
        _variant_flags(variant)
        variants[preset] = variant
    return variants


def _variant_flags(variant: str) -> list[str]:
    """``selfvae train`` flags of a bench variant (``bf16``, ``cudagraphs`` or ``graphs``, ``bf16`` joined to either
    by a comma, or neither): the settings :data:`selfvae.runtime.SPEED_SETTINGS` gives the name."""
    from selfvae import runtime
    from selfvae.errors import SelfVAEError

    parts = set(filter(None, variant.split(",")))
    try:
        if parts - {BF16_VARIANT, CUDAGRAPHS_VARIANT, GRAPHS_VARIANT}:
            raise SelfVAEError("not a training setting")
        items = runtime.speed_settings(parts)
    except SelfVAEError as e:
        raise SystemExit(f"--train-variant {variant!r}: {e} (give {BF16_VARIANT}, {CUDAGRAPHS_VARIANT} or "
                         f"{GRAPHS_VARIANT}, {BF16_VARIANT} joined to either by a comma, or '')") from None
    return [arg for item in items for arg in ("--set", item)]


def finish_training(args: argparse.Namespace, jobs: dict[str, Job], results: dict) -> None:
    """Wait for the jobs of :func:`start_training` (to the budget's end) and collect what each left."""
    for name, job in jobs.items():
        try:
            rc = job.proc.wait(timeout=_left(args))
        except subprocess.TimeoutExpired:  # past the budget: its checkpoints stay for a later call's resume
            job.proc.kill()
            rc = job.proc.wait()
        job.log.close()
        entry = {"returncode": rc, "variant": job.variant, **job.collect(rc)}
        results.setdefault(job.into, {})[name] = entry
        print(f"{name}: exit {rc}, {entry}", flush=True)


def _packed(preset: str, run: Path, out: Path, rc: int) -> dict:
    """A finished run of ours packed (:func:`_pack`); nothing from one that failed."""
    return _pack(preset, run, out) if rc == 0 else {}


def _z_collected(name: str, run: Path, out: Path, rc: int) -> dict:
    """A z design's trajectory (:func:`_z_trajectory`) and, for one within the shipping budget
    (``z_candidates.SHIPPABLE``), its float16 export packed as ``NAME.tar`` (:func:`_pack`) to go on from."""
    entry = _z_trajectory(run, rc)
    if rc == 0 and name in z_candidates.SHIPPABLE:
        entry["packed"] = _pack(name, run, out)
    return entry


def _z_trajectory(run: Path, rc: int) -> dict:
    """A z design's run: at each validation the step, KL of z (nats), active and informative units of z, active
    units of u, and the bits/dim; the test ELBO where it finished (its weights stay on the device)."""
    from selfvae.runs import layout
    from selfvae.runs.log import read_log

    records = read_log(run / layout.LOG) if (run / layout.LOG).exists() else []
    vals = [[r["step"], round(r.get("kl_z1", float("nan")), 2), r.get("au_z1"), r.get("iu_z1"), r.get("au_u"),
             round(r["bpd"], 4)] for r in records if r.get("split") == "val"]
    metrics = run / layout.FINAL_METRICS
    test = json.loads(metrics.read_text()).get("bpd_elbo") if rc == 0 and metrics.exists() else None
    return {"val_step_klz_auz_iuz_auu_bpd": vals, "test_bpd_elbo": test}


def _pack(preset: str, run: Path, out: Path) -> dict:
    """Export the run (float16, its better of raw and EMA weights) and put what comes back into ``NAME.tar``."""
    from selfvae.runs import layout
    from selfvae.runs.log import read_log

    export = run.parent / f"{preset}-export"
    subprocess.run([sys.executable, "-m", "selfvae.cli", "export", str(run), "-o", str(export), "--dtype",
                    "float16"], check=True, env=_env(), cwd=ROOT)
    metrics = json.loads((run / layout.FINAL_METRICS).read_text())
    records = read_log(run / layout.LOG)
    train_recs = [r for r in records if r.get("split") == "train"]
    with tarfile.open(out / f"{preset}.tar", "w") as tar:
        for f in sorted(export.iterdir()):
            tar.add(f, arcname=f"{preset}/export/{f.name}")
        for name in (layout.CONFIG, layout.LOG, layout.CURVES, layout.FINAL_METRICS, layout.FINAL_SAMPLES,
                     layout.INIT):  # INIT: the training of the shipped weights it went on from, for the card
            if (run / name).exists():
                tar.add(run / name, arcname=f"{preset}/run/{name}")
    return {"steps": train_recs[-1]["step"] if train_recs else 0, "test_bpd_elbo": metrics.get("bpd_elbo"),
            "test_bpd_iw": metrics.get("bpd_iw"), "iw_samples": metrics.get("iw_samples"),
            "n_images": metrics.get("n_images"), "seconds": train_recs[-1].get("train_seconds") if train_recs else None}


# ----- the report -----------------------------------------------------------------------------------
def markdown(results: dict) -> str:
    """The tables of ``results`` in Markdown (RESULTS.md takes them as they are)."""
    lines = []
    if "tests" in results:
        t = results["tests"]
        lines += [f"**Tests on {t['device']}** (`tests/test_device.py`): {t['summary']} (exit {t['returncode']}, "
                  f"{t['seconds']} s)", ""]
    b = results.get("bench")
    if b:
        peak = b["matmul_bf16_tflops"]
        lines += [f"**Throughput on {b['device_name']}**; bf16 matrix product measured at {peak} TFLOP/s "
                  f"(H100/H200 data sheet {BF16_SPEC_TFLOPS}); FLOPs per training image by `torch.utils.flop_counter` "
                  "(forward + backward).", ""]
        for run in b.get("interleaved", []):
            lines += _interleaved_table(run, b["gflop_per_train_image"], peak)
        pp = b.get("per_process")
        if pp:
            memory = pp["rows"][0]["peak_what"] if pp["rows"] else "memory"
            lines += [f"One process per preset, bf16, batch {pp['batch_size']}:", "",
                      f"| preset | train img/s | eval img/s (S=1) | sample 1 (s) | sample 100 (s) | peak {memory} |",
                      "| --- | --- | --- | --- | --- | --- |"]
            for r in pp["rows"]:
                lines.append(f"| {r['preset']} | {r['train_img_s']:.1f} | {r['eval_img_s_S1']:.1f} | "
                             f"{r['sample_1_s']:.4f} | {r['sample_100_s']:.3f} | {r['peak_mem_MiB']:.0f} |")
            lines.append("")
        if b.get("skipped"):
            lines += ["Not run: " + "; ".join(b["skipped"]), ""]
    if "train_skipped" in results:
        lines += [f"**Training on the GPU**: not run ({results['train_skipped']})", ""]
    if "train" in results:
        lines += ["**Training on the GPU** (the CIFAR-10 models on official pixels, cifar10-official-part: 4745 "
                  "training images, tested on its 717 test images; the photograph model on the photographs' 32x32 "
                  "crops, tested on the 924 tiles of the 4 test photographs; bits per 3072 dimensions):", "",
                  "| preset | setting | exit | steps | train s | test ELBO | test IW (S, images) |",
                  "| --- | --- | --- | --- | --- | --- | --- |"]
        for name, e in results["train"].items():
            iw = f"{e['test_bpd_iw']:.4f} (S={e['iw_samples']})" if e.get("test_bpd_iw") else ""
            elbo = f"{e['test_bpd_elbo']:.4f} ({e['n_images']} images)" if e.get("test_bpd_elbo") else ""
            lines.append(f"| {name} | {e.get('variant') or 'fp32'} | {e['returncode']} | {e.get('steps', '')} | "
                         f"{e.get('seconds') or ''} | {elbo} | {iw} |")
        lines.append("")
    for name, why in results.get("train_skipped_data", {}).items():
        lines += [f"{name}: not trained ({why})", ""]
    designs = results.get("z", {})
    if designs:
        lines += ["srVAE designs for z (experiments/z_candidates.py; from random weights, trained as the authors "
                  "train theirs), at each validation: step, KL_z nats, active and informative units of z, active units "
                  "of u (of 1024), bits/dim:", "",
                  "| design | exit | validations | test ELBO |", "| --- | --- | --- | --- |"]
        for name, e in designs.items():
            rows = "; ".join(f"{st}: {kl}, z {az} ({iz}), u {au}, {bpd}" for st, kl, az, iz, au, bpd in
                             e.get("val_step_klz_auz_iuz_auu_bpd", []))
            lines.append(f"| {name} | {e['returncode']} | {rows or 'none'} | {e.get('test_bpd_elbo') or ''} |")
        lines.append("")
    return "\n".join(lines)


def _interleaved_table(run: dict, gflop: dict[str, float], peak: float) -> list[str]:
    """One interleaved run as a table (throughput, warm-up, share of the peak, profile), then each of our models
    against the authors' steps timed in the same run."""
    lines = [f"{run.get('label', 'interleaved')}: batch {run['batch_size']}, {run['steps']} timed steps each in turn, "
             f"channels-last {run['channels_last']}, torch {run['torch']}:", "",
             "| model | s/step | img/s | warm-up s | GFLOP/img | of measured bf16 peak | GPU busy | kernels/step "
             "| host ops/step |", "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    speed = {}
    for r in run["rows"]:
        speed[r["model"]] = r["train_img_s"]
        gf = gflop.get(r["model"].partition(":")[0])
        share = f"{100 * gf * r['train_img_s'] / 1e3 / peak:.1f}%" if gf and peak else ""
        prof = r.get("profile", {})
        busy = f"{100 * prof['gpu_busy_fraction']:.0f}%" if "gpu_busy_fraction" in prof else ""
        kernels = f"{prof['kernels']:.0f}" if "kernels" in prof else ""
        ops = f"{prof['top_level_ops']:.0f}" if "top_level_ops" in prof else ""
        lines.append(f"| {r['model']} | {r['sec_per_step']:.4f} | {r['train_img_s']:.1f} | {r.get('warmup_s', 0):.1f} "
                     f"| {f'{gf:.2f}' if gf else ''} | {share} | {busy} | {kernels} | {ops} |")
    lines.append("")
    for name, img_s in speed.items():
        theirs = AUTHORS.get(name.partition(":")[0])
        for ref in (theirs, f"{theirs}:bf16") if theirs else ():
            if ref in speed:
                lines.append(f"- {name}: **{img_s / speed[ref]:.2f}x** the training images/s of {ref}")
    for name, why in run.get("failed", {}).items():
        lines.append(f"- {name}: failed ({why})")
    return [*lines, ""] if lines[-1] else lines


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("phases", nargs="+", choices=["prepare", "test", "bench", "train"])
    p.add_argument("--out", type=Path, default=Path(os.environ.get("OUT", "gpu_out")))
    p.add_argument("--device", default="cuda")
    p.add_argument("--gpu-dir", type=Path, default=ROOT / ".gpu", help="what the device call carries (ignored)")
    p.add_argument("--shared", type=Path, default=ROOT.parent / "shared", help="prepare: where shared/data is")
    p.add_argument("--tiny", action="store_true", help="a few steps of everything (the CPU test of this script)")
    p.add_argument("--presets", nargs="+",
                   help="bench: these presets (default: the paper srVAE and those of the trained models)")
    p.add_argument("--budget", type=float, metavar="SECONDS",
                   help="the call's wall-clock budget: tests keep the bench its share, each bench run is cut off "
                        "where it would overrun, training gets what is left (its --minutes from it)")
    p.add_argument("--groups", nargs="+", metavar="LABEL",
                   help="bench: only these runs, in this order (labels as bench_groups names them: eager-PRESET, "
                        "eager-cheap, compiled-PRESET:VARIANT for a paper preset, compiled-PRESET for a cheap one)")
    p.add_argument("--batch-sizes", type=int, nargs="+", default=[128], help="bench: interleaved at each")
    p.add_argument("--steps", type=int, default=10, help="bench: timed steps of each model")
    p.add_argument("--warmup", type=int, default=3, help="bench: steps first (compilation, CUDA-graph recording)")
    p.add_argument("--compiled", nargs="*", default=[GRAPHS_VARIANT + ",bf16", CUDAGRAPHS_VARIANT + ",bf16"],
                   metavar="VARIANTS",
                   help="bench: the compiled variants of our presets, in turn (benchmarks/bench.py names: graphs, "
                        "the eager kernels as CUDA graphs, compiled in about a minute; cudagraphs, inductor's kernels "
                        "as CUDA graphs, compiled in minutes; compile; each with ,bf16 or not)")
    p.add_argument("--minutes", type=float, default=8.0,
                   help="train: minutes of training each in this call (both at once; a later call: as many more)")
    p.add_argument("--train-batch", type=int, default=64)
    p.add_argument("--workers", type=int, default=4, help="train: data-loading worker processes per run")
    p.add_argument("--work", default="/tmp/gpu_session", help="train: run folders")
    p.add_argument("--from-scratch", dest="from_shipped", action="store_false",
                   help="train: start from random weights, not from the shipped model of the same name (--init)")
    p.add_argument("--lr", type=float, default=1e-4,
                   help="train: peak learning rate from the committed weights (the CPU runs that took every weight "
                        "of the context models on peaked at 1e-4: 3e-4 went the wrong way first; 5e-4 took photo-vae "
                        "up on the H200 of 2026-11-26)")
    p.add_argument("--train-variant", nargs="+", default=[BF16_VARIANT], metavar="[PRESET=]VARIANT",
                   help="train: the setting where this call's bench measured none (a bench variant: bf16, "
                        "cudagraphs, graphs, one of the two joined to bf16 by a comma, or '' for eager fp32), for "
                        "every trained model or, as PRESET=VARIANT, for one; the bench prints FASTEST lines to paste")
    args = p.parse_args(argv)
    args.train_variant = train_variants(args.train_variant)
    args.deadline = None if args.budget is None else time.monotonic() + args.budget
    if args.tiny:  # (compiling takes minutes on a CPU: tests/test_device.py covers it)
        args.batch_sizes, args.steps, args.warmup, args.workers, args.train_batch = [2], 1, 1, 0, 8
        args.compiled = []
    if "prepare" in args.phases:
        prepare(args.shared, args.gpu_dir)
        return
    args.out.mkdir(parents=True, exist_ok=True)
    install_wheels(args.gpu_dir)
    sys.path[:0] = [str(ROOT / "src"), "/tmp/site"]
    results_file = args.out / "gpu_results.json"
    results = json.loads(results_file.read_text()) if results_file.exists() else {}
    training = {}
    for phase in args.phases:  # training runs in the background while the phases after it run
        if phase == "train":
            training = start_training(args, results)
        else:
            {"test": phase_test, "bench": phase_bench}[phase](args, results)
        _save(args.out, results)
    if training:
        finish_training(args, training, results)
        _save(args.out, results)
    bundle(args.out)
    print(markdown(results))


KEPT_APART = ("gpu_results.json", "gpu_results.md")  # with the models' tars: what comes back as files of their own
RETURNED_FILES, RETURNED_FILE_BYTES = 8, 16 * 2**20  # what a device call brings back from $OUT: files, each's size


def bundle(out: Path) -> None:
    """Everything under ``out`` but the results and the models' tars into one ``logs.tar``: a device call
    brings back at most :data:`RETURNED_FILES` files (2026-11-26: thirteen were written and photo-vae's tar was
    among those left behind) of at most :data:`RETURNED_FILE_BYTES` each (a checkpoint is left out: its weights
    stay on the device)."""
    loose = sorted(f for f in out.rglob("*") if f.is_file() and f.name not in KEPT_APART
                   and not (f.parent == out and f.suffix == ".tar"))
    if not loose:
        return
    with tarfile.open(out / "logs.tar", "a") as tar:
        for f in loose:
            if f.stat().st_size < RETURNED_FILE_BYTES // 4:
                tar.add(f, arcname=str(f.relative_to(out)))
    for f in loose:
        f.unlink()
    for d in sorted((d for d in out.rglob("*") if d.is_dir()), key=lambda d: len(d.parts), reverse=True):
        d.rmdir()
    if (out / "logs.tar").stat().st_size > RETURNED_FILE_BYTES:
        print(f"{out / 'logs.tar'}: over the {RETURNED_FILE_BYTES >> 20} MiB a returned file may have", flush=True)
    if len(kept := sorted(f.name for f in out.iterdir())) > RETURNED_FILES:
        print(f"{out}: {len(kept)} files, of which a device call brings back {RETURNED_FILES}: {kept}", flush=True)


def _save(out: Path, results: dict) -> None:
    (out / "gpu_results.json").write_text(json.dumps(results, indent=1))
    (out / "gpu_results.md").write_text(markdown(results))


if __name__ == "__main__":
    main()
