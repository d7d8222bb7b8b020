"""tools/gpu_session.py, the lent GPU's prepared script, runs end to end on the CPU with a tiny budget (so that
it cannot rot between the sessions that get a GPU): tests, benchmark tables and CIFAR-10 training, each
model coming back as a tar of its float16 export that loads and gives the bound it was measured with."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import tarfile
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from selfvae.runs.loading import load_run

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def gpu():
    """tools/gpu_session.py as a module (a script, not part of the package)."""
    spec = importlib.util.spec_from_file_location("gpu_session", ROOT / "tools" / "gpu_session.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_the_gpu_session_runs_every_phase_on_the_cpu(gpu, tmp_path):
    gpu_dir, out = tmp_path / "gpu", tmp_path / "out"
    gpu_dir.mkdir()
    rng = np.random.default_rng(0)  # the layout of ../shared/data/cifar10-official-part.npz
    np.savez(gpu_dir / "cifar10-official-part.npz", x_train=rng.integers(0, 256, (40, 32, 32, 3), dtype=np.uint8),
             y_train=np.arange(40) % 10, x_test=rng.integers(0, 256, (8, 32, 32, 3), dtype=np.uint8),
             y_test=np.arange(8))
    from selfvae.data import photos  # photos.pack's layout: the downscaled photographs as lossless WebP

    for rel in (r for rels in photos.PHOTOS.values() for r in rels):
        (gpu_dir / "photos" / rel).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (40, 48, 3), dtype=np.uint8)).save(
            (gpu_dir / "photos" / rel).with_suffix(photos.PACKED_SUFFIX), "WEBP", lossless=True)
    res = subprocess.run(
        [sys.executable, str(ROOT / "tools" / "gpu_session.py"), "bench", "train", "test", "--device", "cpu",
         "--tiny", "--budget", "900", "--gpu-dir", str(gpu_dir), "--out", str(out), "--work",
         str(tmp_path / "work")],
        capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=900)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    returned = [f for f in out.rglob("*") if f.is_file()]  # what a device call brings back: at most 8 files
    assert len(returned) <= 8 and {f.parent for f in returned} == {out}, returned
    with tarfile.open(out / "logs.tar") as tar:  # the logs, bundled
        assert {"tests.log", "bench.log", "photo-vae-ctx.train.log", "z-paper-ship.log"} <= set(tar.getnames())
    results = json.loads((out / "gpu_results.json").read_text())
    assert results["tests"]["returncode"] == 0 and "1 passed" in results["tests"]["summary"]
    bench = results["bench"]
    assert bench["matmul_bf16_tflops"] > 0 and bench["gflop_per_train_image"]["mnist-vae"] > 0.1
    (eager,) = bench["interleaved"]  # the eager steps first (--tiny compiles nothing)
    assert eager["label"] == "eager-mnist-vae"
    rows = {r["model"]: r for r in eager["rows"]}
    assert set(rows) == {"mnist-vae", "mnist-vae:bf16"} and all(r["train_img_s"] > 0 for r in rows.values())
    assert rows["mnist-vae"]["profile"]["top_level_ops"] > 100  # the host's operators of one step
    assert bench["per_process"]["rows"][0]["eval_img_s_S1"] > 0
    md = (out / "gpu_results.md").read_text()
    assert "| mnist-vae:bf16 |" in md and "| cifar10-srvae-cons | fp32 | 0 | 3 |" in md
    z = results["z"]["z-paper-ship"]  # a z design on from its committed weights (z_candidates.GO_ON)
    assert z["returncode"] == 0 and z["test_bpd_elbo"] > 0 and z["packed"]["steps"] == 3  # it ships: packed
    assert [v[0] for v in z["val_step_klz_auz_iuz_auu_bpd"]] == [3] and "| z-paper-ship | 0 | 3: " in md
    assert all(0 <= v[2] <= 1024 and 0 <= v[3] <= 1024 and v[1] >= 0 for v in z["val_step_klz_auz_iuz_auu_bpd"])
    for name in (*gpu.TRAINED, "z-paper-ship"):
        entry = results["train"][name] if name in results["train"] else results["z"][name]["packed"]
        assert entry.get("returncode", 0) == 0 and entry["steps"] == 3
        with tarfile.open(out / f"{name}.tar") as tar:
            tar.extractall(tmp_path / "back", filter="data")
        export = tmp_path / "back" / name / "export"
        assert (export / "model.safetensors").stat().st_size <= (8_000_000 if name == "photo-vae-ctx" else  # issue 48
                                                                 gpu.RETURNED_FILE_BYTES)  # it comes back
        cfg, model = load_run(export)
        design = name in gpu.z_candidates.CANDIDATES  # a z design: a preset with its own sizes, no IW bound
        assert cfg.name == (gpu.z_candidates.CANDIDATES[name][0] if design else name)
        assert all(p.isfinite().all() for p in model.parameters())
        assert cfg.data.name == ("photos" if name == "photo-vae-ctx" else "cifar10-official-part")  # official pixels
        assert (tmp_path / "back" / name / "run" / "init.json").exists() and cfg.train.ema_decay == 0.999  # went on
        if not design:  # every weight, from the committed ones in their own config (the shipped contexts kept)
            shipped = json.loads((ROOT / gpu.TRAINED[name][2] / "config.json").read_text())["model"]
            model_cfg = json.loads(json.dumps(cfg.to_dict()["model"]))
            assert cfg.train.trainable is None and cfg.train.clock == "wall"
            assert {k: model_cfg[k] for k in shipped} == shipped  # (older configs lack later fields: defaults)
        metrics = json.loads((tmp_path / "back" / name / "run" / "final" / "metrics.json").read_text())
        assert metrics["bpd_elbo"] == entry["test_bpd_elbo"]


def test_prepare_sets_aside_committed_files_only(gpu, tmp_path, monkeypatch, capsys):
    """What no device call needs leaves the working tree (to make room for the data set) only where git holds
    every file of it unchanged, so `git checkout` brings it back and nothing unsaved is lost."""
    repo = tmp_path / "repo"
    for folder in ("kept", "edited", "kept/carried"):
        (repo / folder).mkdir(parents=True)
        (repo / folder / "w.bin").write_bytes(b"\0" * 1000)
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run([*git, "init", "-q", str(repo)], check=True)
    subprocess.run([*git, "-C", str(repo), "add", "."], check=True)
    subprocess.run([*git, "-C", str(repo), "commit", "-qm", "w"], check=True)
    (repo / "edited" / "w.bin").write_bytes(b"\1" * 1000)  # a change not committed
    monkeypatch.setattr(gpu, "ROOT", repo)
    gpu.set_aside("kept", keep=("kept/carried",))
    gpu.set_aside("edited")
    assert not (repo / "kept" / "w.bin").exists() and (repo / "edited" / "w.bin").read_bytes() == b"\1" * 1000
    assert (repo / "kept" / "carried" / "w.bin").exists()  # what a call needs (a z design's weights) stays
    assert "git checkout -- kept" in capsys.readouterr().out
    subprocess.run(["git", "-C", str(repo), "checkout", "--", "kept"], check=True)
    assert (repo / "kept" / "w.bin").read_bytes() == b"\0" * 1000


def test_prepare_without_the_authors_code_says_where_to_get_it(gpu, tmp_path, monkeypatch):
    """On a fresh machine the authors' srVAE (benched beside ours) is not fetched yet: prepare stops in one line that
    names where it looks and how to get it, before copying anything."""
    monkeypatch.setattr(gpu, "AUTHORS_REPO", str(tmp_path / "missing" / ".git"))
    with pytest.raises(SystemExit, match=r"srVAE is not at .*missing/\.git: fetch github:ioangatop/srVAE"):
        gpu.prepare(tmp_path, tmp_path / "gpu")
    assert not (tmp_path / "gpu" / "srVAE").exists()


def test_a_prepared_device_call_carries_at_most_56_mib(gpu):
    """The tree as committed, less what prepare sets aside, plus the official CIFAR-10 pixels, the packed
    photographs (7.2 MiB measured; 7.5 allowed) and the authors' source and wheels (0.45 MiB measured; 1 allowed)
    stays within the 56 MiB that leave a call room for new weights."""
    tree = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, check=True, capture_output=True).stdout.split(b"\0")
    files = [ROOT / n.decode() for n in tree if n]
    aside = tuple(str(ROOT / p) + os.sep for p in gpu.SET_ASIDE)
    carried = tuple(str(ROOT / p) + os.sep for p in gpu.CARRIED_RUNS)
    assert all((ROOT / p / "model.safetensors").is_file() for p in gpu.CARRIED_RUNS)
    kept = sum(f.stat().st_size for f in files if f.is_file() and (str(f).startswith(carried)
                                                                   or not str(f).startswith(aside)))
    data = ROOT.parent / "shared" / "data" / gpu.DATA
    total = kept + data.stat().st_size + (1 + 7.5) * 2**20
    assert total <= gpu.CARRY_TARGET, (kept / 2**20, data.stat().st_size / 2**20)
    assert "src/selfvae/pretrained/cifar10-srvae-cons" not in gpu.SET_ASIDE  # the device tests sample it


def test_a_child_that_overruns_its_share_of_the_budget_is_killed_while_it_still_writes(gpu, tmp_path):
    """Each bench run is cut off where the call's budget would not hold it; the cut must come while the child is
    still writing (on 2026-11-26 it came only after the child ended, and the device call's limit killed all)."""
    import time

    chatty = [sys.executable, "-c", "import time\nwhile True:\n    print('step', flush=True)\n    time.sleep(0.05)"]
    tic = time.monotonic()
    assert gpu._run(chatty, tmp_path / "log", timeout=1.0) == -9
    assert time.monotonic() - tic < 10 and "step" in (tmp_path / "log").read_text()
    assert gpu._run([sys.executable, "-c", "print('done')"], tmp_path / "log", timeout=30) == 0


def test_the_bench_times_eager_steps_before_anything_compiles(gpu):
    """The throughput target's eager steps, ours beside the authors', and the cheap presets' eager steps come
    first, each in a run with nothing compiled, so that a compilation outlasting the call (the paper srVAE's, on
    two H200 calls) loses only the compiled rows; each compiled paper preset runs beside the authors' again."""
    groups = gpu.bench_groups(gpu.BENCHED, ["authors-srvae"], ["graphs,bf16", "cudagraphs,bf16"])
    flags = [compiled for _, _, compiled in groups]
    assert flags == sorted(flags) and any(flags) and not flags[0]  # every eager run before every compiled one
    for label, models, compiled in groups:
        assert compiled == any(":cudagraphs" in m or ":graphs" in m for m in models), label
    labels = {label: models for label, models, _ in groups}
    assert {"authors-srvae", "authors-srvae:bf16"} <= set(labels["eager-cifar10-srvae-paper"])
    for v in ("graphs,bf16", "cudagraphs,bf16"):  # each compiled variant in a run of its own, the authors' beside it
        assert labels[f"compiled-cifar10-srvae-paper:{v}"] == [f"cifar10-srvae-paper:{v}", "authors-srvae",
                                                                "authors-srvae:bf16"]
    assert [label for label, _, _ in gpu.bench_groups(gpu.BENCHED, [], [])] == ["eager-cifar10-srvae-paper",
                                                                               "eager-cheap"]


def test_each_bench_variant_is_a_training_setting(gpu):
    """A variant the bench measured trains with the settings the bench measured it at: both read them from
    ``runtime.SPEED_SETTINGS``."""
    from selfvae.config import apply_overrides
    from selfvae.presets import get_preset

    def trained(variant: str):
        flags = gpu._variant_flags(variant)
        assert flags[::2] == ["--set"] * (len(flags) // 2)
        cfg = get_preset("cifar10-srvae-paper")
        apply_overrides(cfg, flags[1::2])
        return cfg.train.amp, cfg.train.compile, cfg.train.compile_mode, cfg.train.compile_backend

    assert trained("") == (None, False, "default", "inductor")
    assert trained("cudagraphs,bf16") == ("bf16", True, "reduce-overhead", "inductor")
    assert trained("graphs") == (None, True, "default", "cudagraphs")
    for bad, why in (("graphs,cudagraphs", "exclude each other"), ("fp8", "not a training setting"),
                     ("compile", "not a training setting")):
        with pytest.raises(SystemExit, match=f"--train-variant '{bad}': .*{why}"):
            gpu._variant_flags(bad)


def test_the_bench_measures_a_setting_for_every_trained_model(gpu):
    """What ``train`` trains is what ``bench`` times: each trained model's compiled variants run beside its eager
    fp32 step, in a run of its own, and the fastest of them is a setting ``train`` takes for that model (until
    2026-11-28 the bench timed the small presets and the trained ones never got a measured setting)."""
    groups = {label: models for label, models, _ in gpu.bench_groups(gpu.BENCHED, [], ["graphs,bf16"])}
    for preset in gpu.TRAINED:
        assert groups[f"compiled-{preset}"] == [preset, f"{preset}:graphs", f"{preset}:graphs,bf16"]
        assert {preset, f"{preset}:bf16"} <= set(groups["eager-cheap"])
    rate = {"": 1.0, "bf16": 2.0, "graphs": 3.0, "graphs,bf16": 4.0}  # images/s of each setting, made up
    rows = [{"model": m, "train_img_s": rate[m.partition(":")[2]]} for models in groups.values() for m in models
            if not m.startswith("cifar10-srvae-paper")]
    fastest = gpu._fastest([{"rows": rows}], gpu._cheap(gpu.BENCHED, False))
    assert set(fastest) == set(gpu.TRAINED)
    assert {name: variant for name, (variant, _) in fastest.items()} == dict.fromkeys(gpu.TRAINED, "graphs,bf16")


def test_the_training_call_takes_a_setting_for_each_model(gpu):
    assert gpu.train_variants([""]) == {"": ""}
    assert gpu.train_variants(["bf16", "cifar10-vae-ctx=graphs,bf16", "photo-vae-ctx="]) == {
        "": "bf16", "cifar10-vae-ctx": "graphs,bf16", "photo-vae-ctx": ""}
    with pytest.raises(SystemExit, match="'mnist-vae=bf16': mnist-vae is not a trained model"):
        gpu.train_variants(["mnist-vae=bf16"])
    with pytest.raises(SystemExit, match="--train-variant 'fp8': .*not a training setting"):
        gpu.train_variants(["cifar10-vae-ctx=fp8"])


def test_a_bench_can_give_its_budget_to_the_runs_it_names(gpu):
    groups = gpu.bench_groups(gpu.BENCHED, ["authors-srvae"], ["cudagraphs,bf16"])
    assert gpu.chosen_groups(groups, None) == groups
    chosen = gpu.chosen_groups(groups, ["compiled-cifar10-srvae-paper:cudagraphs,bf16", "eager-cheap"])
    assert [label for label, _, _ in chosen] == ["compiled-cifar10-srvae-paper:cudagraphs,bf16", "eager-cheap"]
    with pytest.raises(SystemExit, match="compiled-cifar10-vae-realnvp-paper not among"):
        gpu.chosen_groups(groups, ["compiled-cifar10-vae-realnvp-paper"])


def test_every_z_design_builds_the_sizes_it_claims(gpu):
    """The z designs a lent GPU trains (experiments/z_candidates.py) are --set overrides: one that a config change
    broke would fail only on the device. Each builds, differs from its preset where it says, and the one called
    shippable fits the 8 MB float16 budget (4M parameters)."""
    from selfvae.config import apply_overrides
    from selfvae.models.selfvae import SelfVAE
    from selfvae.presets import get_preset

    z = gpu.z_candidates
    assert set(gpu.Z_DESIGNS) <= set(z.CANDIDATES) and gpu.Z_TINY in z.CANDIDATES
    sizes = {}
    for name, (preset, sizes_set) in z.CANDIDATES.items():
        args = z.train_args(name)
        assert args[:2] == ["--preset", preset] and args[2::2] == ["--set"] * (len(args) // 2 - 1)
        assert args[3::2] == [*z.AUTHORS_WAY, *sizes_set]
        cfg = get_preset(preset)
        apply_overrides(cfg, args[3::2])
        assert cfg.train.batch_size == 32 and cfg.train.grad_clip is None and cfg.train.ema_decay is None
        assert cfg.model != get_preset(preset).model  # its sizes are its own
        sizes[name] = sum(p.numel() for p in SelfVAE(cfg.model).parameters())
    shippable = max(sizes["z-paper-small"], sizes["z-paper-ship"])
    assert shippable <= 4_000_000 < sizes["z-paper-half"] < sizes["z-paper-zside"]
    assert sizes["z-paper-small"] < sizes["z-paper-pz"] < sizes["z-paper-px"] < sizes["z-paper-zside"]
    for name, folder in z.GO_ON.items():  # the committed weights a design goes on from are of its sizes
        args = z.go_on_args(name)
        assert args[args.index("--init") + 1] == folder
        cfg = get_preset(args[1])
        apply_overrides(cfg, [a for i, a in enumerate(args) if i and args[i - 1] == "--set"])
        stored, _ = load_run(ROOT / folder)
        assert stored.model == replace(cfg.model, data_shape=stored.model.data_shape) and cfg.train.ema_decay == 0.999
    assert sizes["z-small-dec"] > sum(p.numel() for p in SelfVAE(get_preset("cifar10-srvae-small").model).parameters())
