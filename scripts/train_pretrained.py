"""Train (or resume) a shipped model from its preset and seed, then measure it and write it into the package.

    python scripts/train_pretrained.py mnist-srvae --minutes 120           # train/resume runs/pretrained/NAME
    python scripts/train_pretrained.py mnist-srvae --ship-only             # measure + ship the run as it is
    python scripts/train_pretrained.py mnist-vae --run runs/mnist-vae --ship-only   # ship another run of the preset

Training is `selfvae train --preset NAME --set train.seed=SEED` with a time budget, resumable across sessions
(`--minutes` more each call). Shipping exports the run's evaluation weights (raw or EMA, whichever validated
better) as float16 (likelihood output layers float32) when the full-test-set ELBO of that file is within 0.002
bits/dim of the float32 one (same posterior noise), else as float32; then it measures the shipped file (ELBO
over the whole test split; the IW bound on a subset at S = --max-s, and the smallest S within 0.005 bits/dim
of it) and writes ``model.safetensors``, ``config.json``, ``metrics.json``, ``card.md`` into
``src/selfvae/pretrained/NAME/``, with the card's pictures: ``samples.png`` and, for a selfVAE, ``superres.png``
(``--pictures`` draws them again for a shipped model and puts them in its card).
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from selfvae.config import Config
from selfvae.data import batches_of, load_split
from selfvae.data.datasets import DATASETS
from selfvae.evaluation.bounds import choose_iw_samples, evaluate
from selfvae.presets import get_preset
from selfvae.runs import layout
from selfvae.runs.checkpoint import load_checkpoint
from selfvae.runs.export import export
from selfvae.runs.layout import PACKAGED
from selfvae.runs.loading import eval_weights, load_run, with_source
from selfvae.runs.log import read_log, with_train_seconds
from selfvae.runs.records import WeightsUsed, weights_used
from selfvae.runs.stored import read_json, stored_fid, write_json
from selfvae.runs.weights import digest
from selfvae.training.state import minutes_spent

FP16_TOLERANCE = 0.002  # bits/dim the float16 file may move the bound by
PICTURES = "## Pictures"  # the card's last section (--pictures replaces it)
N_SAMPLES, N_SUPERRES = 32, 8


def train(name: str, run: Path, minutes: float, seed: int, data_dir: str | None, sets: list[str],
          steps: int) -> None:
    """``minutes`` more of training: a run's ``train.max_minutes`` counts all its sessions, so a resumed run's
    budget is what it has had on its clock plus ``minutes``."""
    cmd = [sys.executable, "-m", "selfvae.cli", "train", "--out", str(run), "--no-progress", "--channels-last"]
    if layout.checkpoint(run).exists():
        minutes += minutes_spent(run, Config.load(run / layout.CONFIG).train.clock)
        cmd += ["--resume"]
    else:
        cmd += ["--preset", name, "--set", f"train.seed={seed}", "--steps", str(steps)]
        if data_dir:
            cmd += ["--data-dir", data_dir]
        for item in sets:
            cmd += ["--set", item]
    cmd += ["--set", f"train.max_minutes={minutes:.2f}"]
    print("+", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True)


def test_elbo(folder: Path, data_dir: str | None, limit: int | None = None, seed: int = 0,
              consistent: bool = False) -> dict:
    """The ELBO over the test split (its first ``limit`` images); ``consistent``: with each ``p(x | y, z)``
    renormalised onto the images whose downscaling is ``y`` (a selfVAE's tighter bound, same weights)."""
    cfg, model = load_run(folder, data_dir=data_dir)
    if consistent:
        model.set_consistent(True)
    ds = load_split(cfg, "test")
    n = len(ds) if limit is None else min(limit, len(ds))
    torch.manual_seed(seed)
    return evaluate(model, batches_of(ds, 64, n), 1, total=n, progress=False)


def shipped_checkpoint(run: Path) -> dict:
    """Step and evaluation weights of the checkpoint a run's export takes (``best.pt``, else ``last.pt``); for a
    run that came back without checkpoints (a GPU session returns its export and log), the validation record
    ``best.pt`` was written at: the lowest validation bits/dim."""
    path = layout.checkpoint_to_load(run)
    if not path.exists():
        best = min((r for r in read_log(run / layout.LOG) if r.get("split") == "val"), key=lambda r: r["bpd"])
        return {"checkpoint": f"{layout.checkpoint(run, layout.BEST).name} (from the log: the checkpoint stayed on the "
                              "GPU machine)",
                "step": best["step"], "weights": best.get("weights", "model")}
    state = load_checkpoint(path)
    weights = state.get("eval_weights", "ema" if state.get("ema") else "model")
    return {"checkpoint": path.name, "step": state["step"], "weights": weights}


def training_time(run: Path, step: int, started_from: str | None = None) -> tuple[int, float, float | None, str]:
    """Steps, training seconds (wall clock) and CPU seconds (None where the log has none) up to ``step``, and how
    they were obtained (the log's clock, or its step times); ``started_from`` names the weights the run started
    from in that text (default: the init's path)."""
    recs = [r for r in with_train_seconds(read_log(run / layout.LOG)) if r["step"] <= step]  # up to its validation
    if not recs:
        return 0, 0.0, None, "no log"
    how = "partly estimated from the logged step times" if any(r.get("clock_estimated") for r in recs) else "measured"
    steps, seconds = recs[-1]["step"], recs[-1]["train_seconds"]
    cpu = next((r["cpu_seconds"] for r in reversed(recs) if r.get("cpu_seconds") is not None), None)
    init = run / layout.INIT
    if init.is_file():  # the run started from another model's weights (train.init): count its training too
        src = json.loads(init.read_text())
        steps, seconds = steps + (src.get("steps") or 0), seconds + (src.get("seconds") or 0.0)
        cpu = None if cpu is None or src.get("cpu_seconds") is None else cpu + src["cpu_seconds"]
        how += (f"; with the {src.get('steps')} steps ({(src.get('seconds') or 0) / 3600:.2f} h) of the weights it "
                f"started from, {started_from or src['init']}")
    return steps, seconds, cpu, how


def lr_history(run: Path, step: int) -> str:
    """The logged learning rate up to ``step`` as segments split where it jumps (a schedule changed on resume)."""
    recs = [r for r in read_log(run / layout.LOG) if r.get("split") == "train" and "lr" in r and r["step"] <= step]
    if not recs:
        return "not logged"
    warmup = Config.load(run / layout.CONFIG).train.lr_warmup_steps  # its linear rise is not a new stage
    segments = [[recs[0]]]
    for prev, r in zip(recs, recs[1:], strict=False):
        if abs(r["lr"] / prev["lr"] - 1) > 0.2 and r["step"] > warmup:
            segments.append([])
        segments[-1].append(r)
    def rates(g: list[dict]) -> str:
        peak = max(r["lr"] for r in g)
        via = f" -> {peak:.1e}" if peak > 1.2 * max(g[0]["lr"], g[-1]["lr"]) else ""  # a warm-up's top
        return f"{g[0]['lr']:.1e}{via} -> {g[-1]['lr']:.1e} over steps {g[0]['step']}-{g[-1]['step']}"

    return "; ".join(rates(g) for g in segments)


# Settings that change how long or how fast a run goes, not what it computes.
_NOT_DIFFERENCES = {"train.steps", "train.max_minutes", "train.num_threads", "train.channels_last", "data.root",
                    "model.data_shape"}


def _differences(name: str, cfg) -> str:  # noqa: ANN001 - Config
    """The run's config fields that differ from its preset (what `--set` changed)."""
    from selfvae.presets import get_preset

    def flat(d: dict, prefix: str = "") -> dict:
        out = {}
        for k, v in d.items():
            out.update(flat(v, f"{prefix}{k}.") if isinstance(v, dict) else {f"{prefix}{k}": v})
        return out

    ours, preset = flat(cfg.to_dict()), flat(get_preset(name).to_dict())
    horizon = {"cosine": "train.steps", "cosine-time": "train.max_minutes"}.get(cfg.train.lr_schedule)
    ignore = _NOT_DIFFERENCES - {horizon}  # where the schedule anneals to is part of what it computes
    return ", ".join(f"`{k}={ours[k]}`" for k in sorted(ours) if ours[k] != preset.get(k) and k not in ignore
                     and k not in ("name", "description"))


def draw_pictures(folder: Path, data_dir: str | None, seed: int = 0) -> None:
    """The card's pictures, from the shipped model: ``N_SAMPLES`` samples and, for a selfVAE, the first
    ``N_SUPERRES`` test images' ``y_K`` super-resolved (rows: ``y_K``, two samples of x, the real x)."""
    from selfvae.models.ops import generate, super_resolve
    from selfvae.viz import save_grid, save_rows

    cfg, model = load_run(folder, data_dir=data_dir)
    torch.manual_seed(seed)
    save_grid(generate(model, N_SAMPLES)[-1], folder / "samples.png", nrow=8)
    (folder / "superres.png").unlink(missing_ok=True)
    if model.K:
        x = load_split(cfg, "test").images[:N_SUPERRES]
        y = model.levels(x)[-2]
        torch.manual_seed(seed)
        rows = [y, *(super_resolve(model, y)[-1] for _ in range(2)), x]
        save_rows(rows, folder / "superres.png")


def pictures_section(name: str, folder: Path, seed: int = 0) -> str:
    """The card's pictures section (empty where none are drawn): each with the command that draws it."""
    if not (folder / "samples.png").is_file():
        return ""
    text = (f"\n{PICTURES}\n\n![{N_SAMPLES} samples](samples.png)\n\n{N_SAMPLES} samples, seed {seed} (the "
            f"same samples: `selfvae sample {name} -n {N_SAMPLES} --seed {seed}`).\n")
    if (folder / "superres.png").is_file():
        text += (f"\n![super-resolution](superres.png)\n\nThe first {N_SUPERRES} test images: y = d(x) (the "
                 "level x is generated from, drawn at x's size), two samples of x given it, and the real x "
                 f"(`selfvae superres {name} ...`).\n")
    return text


def card(name: str, folder: Path, metrics: dict, steps: int, seconds: float, how: str, seed: int, lr: str) -> str:
    """The model card of the shipped ``folder``: its training (the run's own seed, from its config) and bounds;
    ``seed`` is the measurements' and pictures' seed."""
    cfg, model = load_run(folder)
    params = sum(p.numel() for p in model.parameters())
    terms = ", ".join(f"{k} {v:.2f}" for k, v in metrics.items() if k.startswith(("re_", "kl_")))
    active = ", ".join(f"{k[3:]} {v} of {metrics.get('units_' + k[3:])}" for k, v in metrics.items()
                       if k.startswith("au_"))  # each latent's units whose posterior mean varies over the images
    informative = ", ".join(f"{k[3:]} {v} of {metrics.get('units_' + k[3:])}" for k, v in metrics.items()
                            if k.startswith("iu_"))  # ... measured from z's image-dependent prior
    iw = metrics["iw"]
    shipped = metrics["training"]
    cpu_hours = f" ({shipped['cpu_seconds'] / 3600:.2f} CPU-hours)" if shipped.get("cpu_seconds") else ""
    ema = (f"the raw weights of step {shipped['step']} (they validated better than the {cfg.train.ema_decay} EMA)"
           if cfg.train.ema_decay and shipped["weights"] == "model" else
           f"the {cfg.train.ema_decay} EMA of step {shipped['step']}" if cfg.train.ema_decay else
           f"step {shipped['step']} (no EMA)")
    if shipped.get("weights_note"):  # weights made from the checkpoint's, say a mix with another model's
        ema = shipped["weights_note"].format(checkpoint=ema)
    rows = [
        ("data", f"{metrics.get('data_note') or cfg.data.name}, test split ({metrics['n_images']} images); bits/dim "
                 f"per {metrics['dims']} dimensions of the data's own images"),
        ("architecture", f"preset `{name}`: transforms `{cfg.model.transforms or 'none'}`, prior "
                         f"{cfg.model.prior}, latents {tuple(cfg.model.latent_shape)}, {params / 1e6:.2f}M parameters"),
        ("weights", f"{metrics['weights']}; {ema}"),
        ("training", f"{steps} steps of batch {cfg.train.batch_size}, seed {cfg.train.seed}, {seconds / 3600:.2f} h"
                     f"{cpu_hours} on {shipped.get('hardware', 'a 2-core CPU')} ({how})"),
        ("test bpd, ELBO", f"**{metrics['bpd_elbo']:.4f}** (all {metrics['n_images']} test images)"),
        ("test bpd, IW bound", f"**{iw['bpd_iw']:.4f}** with S = {iw['iw_samples']} on the first {iw['n_images']} "
                               f"test images (ELBO of those: {iw['bpd_elbo']:.4f}; S = {iw['s_within_0.005']} is "
                               "within 0.005 of it)"),
        *_measured_later(name, metrics),
        ("terms (nats per image)", terms),
        *([("active units (Burda et al. 2015)", active)] if active else []),
        *([("informative units (z measured from its prior)", informative)] if informative else []),
        ("learning rate (from the log)", lr),
        ("settings beyond the preset", _differences(name, cfg) or "none"),
    ]
    table = "\n".join(f"| {k} | {v} |" for k, v in rows)
    reproduce = (f"Reproduce: `python scripts/train_pretrained.py {name}` (trains `--preset {name} --set "
                 f"train.seed={cfg.train.seed}` under a time budget, resumable; then measures and ships), with the "
                 "settings beyond the preset above given as `--set`.")
    if cfg.train.init:
        source = (f"`{cfg.train.init}` as shipped before it (its card is in the repository's history)"
                  if cfg.train.init in layout.pretrained_names()
                  else f"`{metrics['started_from']}`" if metrics.get("started_from")
                  else f"the run `{cfg.train.init}` (the data row says how they were made)")
        reproduce += (f" This run started from the weights of {source} with a fresh optimiser (`selfvae train "
                      "--init`); the commands are in docs/RESULTS.md.")
    if ";" in lr:  # the schedule changed on resume: one command does not give the same run
        reproduce += (" This run was trained in stages, resumed with other learning-rate settings (the learning-rate "
                      "row; the commands are in docs/RESULTS.md); the settings above are its last stage's.")
    return (f"# {name}\n\n{cfg.description}.\n\n| | |\n| --- | --- |\n{table}\n\n{reproduce}\n"
            f"Check: `selfvae eval {name} --json`.\n{pictures_section(name, folder, seed)}")


def _measured_later(name: str, metrics: dict) -> list[tuple[str, str]]:
    """Card rows for what is measured after shipping and stored in ``metrics.json`` by hand or by a command:
    the IW bound over the whole test set, FID, the bound renormalised onto ``d(x) = y``."""
    rows = []
    if "iw_full_test" in metrics:
        full = metrics["iw_full_test"]
        sub = metrics.get("iw", {})
        easier = (f": the first {sub['n_images']} test images are easier than the rest"
                  if sub and sub["bpd_elbo"] < full["bpd_elbo"] else "")
        rows.append((f"test bpd, IW bound, all {full['n_images']}",
                     f"**{full['bpd_iw']:.4f}** with S = {full['iw_samples']} (`selfvae eval {name} --iw-samples "
                     f"{full['iw_samples']} --json`; its ELBO {full['bpd_elbo']:.4f}){easier}"))
    for ref in layout.FID_REFS:
        f = metrics.get(layout.fid_key(ref))
        if f:
            rows.append((f"FID ({ref})", f"**{f['fid']:.1f}** ({f['n']} samples vs the first {f['n_ref']} {f['ref']} "
                                         f"images, seed {f['seed']}; `selfvae fid {name} --n {f['n']} --n-ref "
                                         f"{f['n_ref']} --ref {f['ref']}`)"))
    if "bpd_elbo_consistent" in metrics:
        rows.append(("test bpd, ELBO renormalised onto d(x) = y",
                     f"**{metrics['bpd_elbo_consistent']:.4f}** (all {metrics['n_images']}; `selfvae eval {name} "
                     "--consistent --iw-samples 1`: the same weights, a valid and tighter bound)"))
    return rows


def ship(name: str, run: Path, data_dir: str | None, seed: int, iw_limit: int, max_s: int,
         exported: Path | None = None, hardware: str | None = None, data_note: str | None = None,
         started_from: str | None = None, weights_note: str | None = None) -> Path:
    """Measure and ship the run's export (float16 where it moves the test ELBO by < FP16_TOLERANCE); with
    ``exported``, a float16 export made elsewhere (a GPU session: its float32 weights did not come back). A
    shipped model's ``data_note`` (what its data set is) stays unless another is given; its hardware does not. The
    model is named ``name`` whatever its run's config says (a run from another model's config, such as a refitted
    prior's, names that model), keeping the earlier shipped description then. ``weights_note``: how the shipped
    weights were made from the run's checkpoint where they are not simply its weights (see :func:`write_card`)."""
    dest = PACKAGED / name
    data_note = data_note or (read_json(dest / layout.METRICS) or {}).get("data_note")
    previous = read_json(dest / layout.CONFIG) or {}
    with tempfile.TemporaryDirectory() as tmp:
        if exported is not None:
            chosen, delta = exported, None
            metrics = test_elbo(chosen, data_dir)
        else:
            f32, f16 = export(run, Path(tmp) / "f32"), export(run, Path(tmp) / "f16", dtype="float16")
            tic = time.perf_counter()
            m32, m16 = test_elbo(f32, data_dir), test_elbo(f16, data_dir)
            delta = abs(m16["bpd_elbo"] - m32["bpd_elbo"])
            chosen, metrics = (f16, m16) if delta < FP16_TOLERANCE else (f32, m32)
            print(f"test ELBO float32 {m32['bpd_elbo']:.5f}, float16 {m16['bpd_elbo']:.5f} (|diff| {delta:.5f}); "
                  f"shipping {chosen.name} ({time.perf_counter() - tic:.0f} s)", flush=True)
        if dest.exists():
            shutil.rmtree(dest)
        # (what `selfvae fid` wrote; an export kept in a run folder beside its log and init record)
        shutil.copytree(chosen, dest, ignore=shutil.ignore_patterns(layout.FINAL, layout.LOG, layout.INIT))
        config = read_json(dest / layout.CONFIG)
        if exported is not None and data_dir is not None:  # the data set's place here, not the GPU machine's
            config["data"]["root"] = data_dir
        if config["name"] != name:
            config.update(name=name, description=previous.get("description", config["description"]))
        write_json(config, dest / layout.CONFIG)
    float16 = exported is not None or chosen.name == "f16"
    cfg, model = load_run(dest, data_dir=data_dir)
    ds = load_split(cfg, "test")
    n = min(iw_limit, len(ds))
    torch.manual_seed(seed)
    x = ds.images[:n]
    s_enough, curve = choose_iw_samples(model, x, max_s=max_s)
    iw = curve[max_s]
    metrics.update(weights="float16 (likelihood output layers float32)" if float16 else "float32",
                   fp16_elbo_delta=delta, params=sum(p.numel() for p in model.parameters()),
                   iw={"bpd_iw": iw["bpd_iw"], "bpd_elbo": iw["bpd_elbo"], "iw_samples": max_s, "n_images": n,
                       "s_within_0.005": s_enough, "curve": {str(k): v["bpd_iw"] for k, v in curve.items()}})
    metrics.update(iw_figures(metrics, iw["bpd_iw"]), iw_samples=max_s, iw_n_images=n)
    if exported is not None:  # FIDs `selfvae fid EXPORT` measured of these very weights go with them
        for ref in layout.FID_REFS:
            fid = stored_fid(exported, ref, weights_used(model, {}))
            if fid is not None:
                metrics[layout.fid_key(ref)] = fid
    if model.K and not cfg.model.consistent and model.x_context is None and all(t.renormalisable for t in model.chain):
        # the same weights' tighter bound, which the card reports
        metrics["bpd_elbo_consistent"] = test_elbo(dest, data_dir, consistent=True)["bpd_elbo"]
    draw_pictures(dest, data_dir, seed)
    write_card(name, run, dest, metrics, seed, hardware, data_note, started_from, weights_note)
    return dest


def iw_figures(metrics: dict, bpd_iw: float) -> dict:
    """Every IW figure of ``metrics`` from the IW bound ``bpd_iw`` (bits per data dimension): the S = 1 pass over
    the whole test set left copies of its ELBO under the IW keys (nats, per joint and per padded dimension)."""
    dims = metrics["dims"]
    out = {"bpd_iw": bpd_iw, "nll_iw_nats": bpd_iw * dims * math.log(2)}
    out["bpd_joint_iw"] = bpd_iw * metrics["bpd_joint_elbo"] / metrics["bpd_elbo"]  # same nats, joint dimensions
    if "padded_dims" in metrics:
        out["bpd_iw_padded"] = bpd_iw * dims / metrics["padded_dims"]
    return out


def write_card(name: str, run: Path, dest: Path, metrics: dict, seed: int, hardware: str | None = None,
               data_note: str | None = None, started_from: str | None = None, weights_note: str | None = None) -> None:
    """Training facts of the shipped checkpoint and the run's FIDs into ``metrics.json``, and the model card.
    ``hardware`` (where it was trained), ``data_note`` (what the data set is) and ``started_from`` (the weights the
    run's ``train.init`` named, as a reader finds them: a local run folder means nothing to one) and
    ``weights_note`` (the card's weights row where the shipped weights are made from the checkpoint's, such as a mix
    with the weights the run started from; ``{checkpoint}`` in it stands for the checkpoint's own description) are
    kept from an earlier card when not given; so are FIDs the run has none of."""
    shipped = shipped_checkpoint(run)
    if started_from:
        metrics["started_from"] = started_from
    steps, seconds, cpu, how = training_time(run, shipped["step"], metrics.get("started_from"))
    if layout.checkpoint_to_load(run, layout.BEST).exists():  # (a GPU run came back as its export alone)
        sampled = WeightsUsed(digest(eval_weights(run)), with_source({"steps": shipped["step"]}, run)["steps"])
        for ref in layout.FID_REFS:  # what `selfvae fid RUN` measured of the shipped weights goes with them
            fid = stored_fid(run, ref, sampled)  # not a FID of the run's earlier weights
            if fid is not None:
                metrics[layout.fid_key(ref)] = fid
    hardware = hardware or metrics.get("training", {}).get("hardware", "a 2-core CPU")
    weights_note = weights_note or metrics.get("training", {}).get("weights_note")
    metrics["training"] = {**shipped, "steps": steps, "seconds": round(seconds), "clock": how,
                           "seed": Config.load(run / layout.CONFIG).train.seed,  # the run's, not the measurements'
                           "hardware": hardware, **({"cpu_seconds": round(cpu)} if cpu is not None else {}),
                           **({"weights_note": weights_note} if weights_note else {})}
    if data_note:
        metrics["data_note"] = data_note
    write_json(metrics, dest / layout.METRICS)
    lr = lr_history(run, shipped["step"])
    (dest / layout.CARD).write_text(card(name, dest, metrics, steps, seconds, how, seed, lr))
    print((dest / layout.CARD).read_text())


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("name", help="a preset name; the shipped model gets the same name")
    p.add_argument("--run", help="run directory (default runs/pretrained/NAME)")
    p.add_argument("--minutes", type=float, default=120.0, help="training time in this call")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--data-dir", help="the data set's folder (default: its own location, ../shared/data for MNIST)")
    p.add_argument("--steps", type=int, default=1_000_000,
                   help="train.steps of a new run (where a cosine learning-rate schedule ends)")
    p.add_argument("--ship-only", action="store_true", help="do not train; measure and ship the run as it is")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="settings beyond the preset for a new run (passed to selfvae train)")
    p.add_argument("--export", help="with --ship-only: ship this float16 export of the run (made on a GPU machine)")
    p.add_argument("--hardware", help="where it was trained, for the card (default: a 2-core CPU)")
    p.add_argument("--data-note", help="what the data set is, for the card (default: the data set's name)")
    p.add_argument("--weights-note", help="how the shipped weights were made from the run's checkpoint, for the card "
                   "('{checkpoint}' stands for the checkpoint's own description; kept like --hardware)")
    p.add_argument("--started-from", help="the weights the run started from (train.init) as the card names them, "
                                          "e.g. 'cifar10-vae-ctx as shipped before it' (default: the init's path)")
    p.add_argument("--card-only", action="store_true", help="only rewrite the shipped model's card and training facts")
    p.add_argument("--pictures", action="store_true",
                   help="only draw the shipped model's pictures again and put them in its card")
    p.add_argument("--iw-limit", type=int, default=200, help="test images for the IW bound")
    p.add_argument("--max-s", type=int, default=128, help="largest S the doubling rule may pick")
    a = p.parse_args()
    if a.data_dir is None and DATASETS[get_preset(a.name).data.name].default_root is None:
        a.data_dir = "../shared/data"  # where this project keeps MNIST; Fashion-MNIST has a Debian location
    run = Path(a.run or f"runs/pretrained/{a.name}")
    if a.pictures:
        dest = PACKAGED / a.name
        draw_pictures(dest, a.data_dir, a.seed)
        text = (dest / layout.CARD).read_text()
        (dest / layout.CARD).write_text(text.split(f"\n{PICTURES}\n")[0] + pictures_section(a.name, dest, a.seed))
        return
    if a.card_only:
        write_card(a.name, run, PACKAGED / a.name, json.loads((PACKAGED / a.name / layout.METRICS).read_text()),
                   a.seed, a.hardware, a.data_note, a.started_from, a.weights_note)
        return
    if not a.ship_only:
        train(a.name, run, a.minutes, a.seed, a.data_dir, a.set, a.steps)
    ship(a.name, run, a.data_dir, a.seed, a.iw_limit, a.max_s, Path(a.export) if a.export else None, a.hardware,
         a.data_note, a.started_from, a.weights_note)


if __name__ == "__main__":
    main()
