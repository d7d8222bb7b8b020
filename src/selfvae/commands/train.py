"""``selfvae presets`` and ``selfvae train``."""

from __future__ import annotations

import argparse
import sys

from selfvae.commands.base import THREADS, Args, Command, device, whole
from selfvae.config import CHOICES
from selfvae.run_config import DEFAULT_PRESET, TrainRequest
from selfvae.runs import layout


def presets_options(s: argparse.ArgumentParser) -> None:
    s.add_argument("--params", action="store_true", help="also count each preset's parameters")


def run_presets(args: Args) -> None:
    from selfvae.presets import PRESETS

    width = max(map(len, PRESETS))
    for name, cfg in PRESETS.items():
        extra = ""
        if args.params:
            from selfvae.evaluation.rows import count_params
            from selfvae.models.selfvae import SelfVAE

            n = count_params(SelfVAE(cfg.model))
            extra = f"  [{n / 1e6:.1f}M parameters]"
        print(f"{name:<{width}}  {cfg.description}{extra}")


TRAIN_FLAGS = {"image_size": "data.image_size", "batch_size": "train.batch_size", "on_bad_file": "data.on_bad_file",
               "amp": "train.amp", "workers": "train.workers", "accum_steps": "train.accum_steps",
               "threads": "train.num_threads"}
TRAIN_SWITCHES = ("channels_last", "deterministic")  # train.FIELD = True when given


def train_options(s: argparse.ArgumentParser) -> None:
    s.add_argument("--preset", help=f"see `selfvae presets` (default: {DEFAULT_PRESET}, or --init's config)")
    s.add_argument("--init", metavar="MODEL",
                   help="start from this model's weights (run directory, exported folder or pretrained name) with "
                        "a fresh optimiser: fine-tune it on --data-dir, or restart its schedule; its config is the "
                        "base unless --preset or --config is given")
    s.add_argument("--data-dir", help="where the data set lives (default: the data set's standard place); a folder "
                   "of your own images (or an .npz) that is not the preset's data set is read as data.name=folder")
    s.add_argument("--out", help="run directory (default: runs/PRESET)")
    s.add_argument("--image-size", type=whole(1), metavar="N",
                   help="resize the data to N x N (data.image_size; non-square images: --set data.resize=crop|pad)")
    s.add_argument("--steps", type=whole(1))
    s.add_argument("--epochs", type=whole(1))
    s.add_argument("--batch-size", type=whole(1))
    s.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    s.add_argument("--set", action="append", metavar="SECTION.FIELD=VALUE",
                   help="override a config field, e.g. train.lr=1e-3 (repeatable)")
    s.add_argument("--no-progress", action="store_true", help="no progress bar")
    s.add_argument("--config", metavar="FILE",
                   help=f"train the config in this JSON file (as in a run's {layout.CONFIG})")
    s.add_argument("--on-bad-file", choices=["skip", "error"],
                   help="unreadable files in an image folder: warn and skip them, or stop (default)")
    s.add_argument("--amp", choices=["bf16", "fp16"],
                   help="run the networks in bfloat16 (or float16, with a dynamic loss scale: GPUs without bfloat16) "
                        "autocast; likelihoods in fp32")
    s.add_argument("--compile", nargs="?", const="default", metavar="MODE",
                   choices=CHOICES["train.compile_mode"],
                   help="torch.compile the networks (MODE reduce-overhead: and replay them as CUDA graphs on a GPU, "
                        "where eager steps are bound by kernel launches)")
    s.add_argument("--channels-last", action="store_true", help="channels-last memory format (fast on GPU)")
    s.add_argument("--workers", type=whole(0), help="data-loading worker processes (default 0: main process)")
    s.add_argument("--accum-steps", type=whole(1), help="split each batch into this many micro-batches per process")
    s.add_argument("--threads", type=THREADS, help="torch CPU threads")
    s.add_argument("--deterministic", action="store_true",
                   help="deterministic algorithms only (with --threads: bit-exact resume on the CPU)")


def train_request(args: Args) -> TrainRequest:
    """The parsed ``selfvae train`` options as a :class:`~selfvae.run_config.TrainRequest`."""
    settings = {field: getattr(args, flag) for flag, field in TRAIN_FLAGS.items() if getattr(args, flag) is not None}
    settings.update({f"train.{flag}": True for flag in TRAIN_SWITCHES if getattr(args, flag)})
    if args.compile:
        settings.update({"train.compile": True, "train.compile_mode": args.compile})
    return TrainRequest(preset=args.preset, config_file=args.config, init=args.init, resume=args.resume,
                        out=args.out, data_dir=args.data_dir, settings=settings, sets=tuple(args.set or ()),
                        steps=args.steps, epochs=args.epochs)


def run_train(args: Args) -> None:
    from selfvae.data import infer_dataset, load_split
    from selfvae.run_config import base_config, train_config
    from selfvae.training.loop import train

    req = train_request(args)
    cfg, out, notes = train_config(req, base_config(req), infer_dataset, lambda c: len(load_split(c, "train")))
    for note in notes:
        print(f"selfvae: {note}", file=sys.stderr)
    if args.resume:  # step-count changes must outlive this call
        cfg.save(out / layout.CONFIG)
    result = train(cfg, out, device=device(args.device), resume=args.resume, progress=not args.no_progress)
    if "stopped" in result:
        print(result["stopped"], file=sys.stderr)
        sys.exit(130)
    if "bpd_elbo" not in result:  # a non-zero rank of a data-parallel run, or no final evaluation
        return
    print(f"run directory: {out}")
    print(f"{result['split']} bits/dim: {result['bpd_elbo']:.4f} (ELBO over {result['n_images']} images), "
          f"{result['bpd_iw']:.4f} (IW bound, S={result['iw_samples']}, over the first {result['iw_n_images']}; "
          f"`selfvae eval {out}` for more)")
    print(f"samples: {out / layout.FINAL_SAMPLES}; metrics: {out / layout.FINAL_METRICS}")


COMMANDS = [
    Command("presets", "list the named presets", presets_options, run_presets, model=False),
    Command("train", "train a preset (or resume a run)", train_options, run_train, model=False),
]
