"""``selfvae demo [MODEL]``: a local web page (Gradio) to try a trained model without reading docs.

Tabs: *Your image* (upload any image: what the model sees, x and each ``y_k = d(x)``; super-resolution
samples from ``y``; every reconstruction mode side by side), *Samples* (seed and temperature sliders, with
the generation chain ``y_1 -> ... -> x`` for a selfVAE) and *Interpolation* (between two uploads).
``MODEL`` is a run directory; without it the newest run under ``./runs`` is used. Gradio is an optional
extra (``pip install -e ".[demo]"``). Every failure reaches the page as a one-line message, never a
traceback. The page is served on 127.0.0.1 unless ``--host`` says otherwise; nothing is fetched from outside.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from selfvae.config import Config
from selfvae.data.formats import IMAGE_EXTENSIONS
from selfvae.errors import SelfVAEError
from selfvae.evaluation.rows import count_params
from selfvae.models.selfvae import SelfVAE

DEFAULT_PRETRAINED = "mnist-srvae"  # a selfVAE, so every panel of the page has something to show
DISPLAY = 128  # pixels per image on the page (small images are upscaled by nearest neighbour)
MAX_UPLOAD_MB = 30


def find_default_run(root: str | Path = "runs") -> str:
    """The most recently trained run directory under ``root``, else the shipped pretrained selfVAE
    (``DEFAULT_PRETRAINED``), so the page works before any training."""
    from selfvae.runs.layout import latest_run, pretrained_names

    run = latest_run(root)
    if run is not None:
        return str(run)
    if DEFAULT_PRETRAINED in pretrained_names():
        return DEFAULT_PRETRAINED
    raise SelfVAEError(
        f"no MODEL given, no trained run under {Path(root).resolve()} and no pretrained model shipped; train "
        "one first (selfvae train --preset mnist-srvae --data-dir ../shared/data) or pass its run directory: "
        "selfvae demo RUN_DIR"
    )


def _scale(model: SelfVAE) -> int:
    return max(1, DISPLAY // model.shapes[-1][-1])


def _user_errors(fn: Callable) -> Callable:
    """Turn any failure into ``gr.Error`` with one line: the page shows a message, never a traceback."""

    @functools.wraps(fn)
    def wrapped(*args: Any) -> Any:
        import gradio as gr

        try:
            return fn(*args)
        except gr.Error:
            raise
        except SelfVAEError as e:  # the user's mistake: a message, no traceback anywhere
            raise gr.Error(str(e), print_exception=False) from None
        except Exception as e:  # noqa: BLE001 - a bug: the page gets one line, the terminal the traceback
            raise gr.Error(f"{type(e).__name__}: {e}") from e

    return wrapped


class DemoModel:
    """The loaded model and the operations the page calls; each returns pictures as uint8 HxWx3 arrays."""

    def __init__(self, cfg: Config, model: SelfVAE, name: str, device: str = "cpu") -> None:
        self.cfg, self.model, self.name, self.device = cfg, model, name, device

    def _read(self, path: str | None, what: str = "image") -> torch.Tensor:
        from selfvae.models.build import read_inputs

        if not path:
            raise SelfVAEError(f"upload an {what} first")
        if Path(path).stat().st_size > MAX_UPLOAD_MB * 1_000_000:
            raise SelfVAEError(f"{Path(path).name}: larger than {MAX_UPLOAD_MB} MB; upload a smaller image")
        return read_inputs(self.cfg, [path]).to(self.device)

    def _columns(self, cols: list[tuple[str, torch.Tensor]]) -> np.ndarray:
        from selfvae.viz import labelled_columns

        return labelled_columns([(label, t.cpu()) for label, t in cols], scale=_scale(self.model))

    def describe(self) -> str:
        m, cfg = self.model, self.cfg
        n = count_params(m)
        kind = "a plain VAE (K = 0)" if m.K == 0 else f"a {m.K}-level selfVAE, d = {cfg.model.transforms}"
        text = (f"**{self.name}**: {kind}, images {tuple(cfg.model.image_shape)}, prior {cfg.model.prior}, "
                f"{n / 1e6:.2f}M parameters, trained on {cfg.data.name}.")
        from selfvae.runs.layout import resolve
        from selfvae.runs.records import per_data_dims
        from selfvae.runs.stored import stored_metrics

        stored = stored_metrics(resolve(self.name))
        if stored is not None:
            r = per_data_dims(stored, m.x_dims, m.padded_dims)
            text += (f" Test bound: {r['bpd_elbo']:.3f} bits/dim (ELBO), {r['bpd_iw']:.3f} "
                     f"(IW, S={r['iw_samples']}).")
        return text

    @torch.no_grad()
    def image(self, path: str | None, seed: float) -> tuple[np.ndarray, np.ndarray | None, np.ndarray]:
        """What the model sees (x and each y_k), super-resolution samples from y_K, every reconstruction mode."""
        from selfvae.models.ops import level_columns, mode_columns, superres_columns

        x = self._read(path)
        seen = level_columns(self.model, x)
        torch.manual_seed(int(seed))
        superres = None
        if self.model.K:
            y = seen[-1][1]
            cols = [(f"given y{self.model.K}", y), *superres_columns(self.model, y, 4)]
            superres = self._columns(cols + [("original x", x)])
        torch.manual_seed(int(seed))
        return self._columns(seen), superres, self._columns([("x", x), *mode_columns(self.model, x)])

    @torch.no_grad()
    def samples(self, seed: float, temperature: float, n: float = 8) -> np.ndarray:
        """``n`` samples in columns; for a selfVAE one row per level of the chain y_1 -> ... -> x."""
        from selfvae.models.ops import generate
        from selfvae.viz import labelled_columns

        torch.manual_seed(int(seed))
        levels = generate(self.model, int(n), float(temperature))
        # columns are samples, so transpose: one column per sample holding its chain top to bottom
        size = levels[-1].shape[-1]
        chain = [torch.nn.functional.interpolate(lv.float(), size=(size, size), mode="nearest").to(torch.uint8)
                 .expand(-1, levels[-1].shape[1], -1, -1) for lv in levels]
        cols = [(f"#{i + 1}", torch.stack([lv[i] for lv in chain])) for i in range(int(n))]
        return labelled_columns(cols, scale=_scale(self.model))

    @torch.no_grad()
    def interpolation(self, a: str | None, b: str | None, steps: float) -> np.ndarray:
        """A, ``steps`` points on the line between the posterior means of u, B."""
        from selfvae.models.ops import interpolate

        xa, xb = self._read(a, "image A"), self._read(b, "image B")
        path = interpolate(self.model, xa, xb, int(steps))[0]
        cols = [("A", xa)] + [(f"{t:.2f}", path[i : i + 1]) for i, t in
                              enumerate(np.linspace(0, 1, int(steps)))] + [("B", xb)]
        return self._columns(cols)


class DemoModels:
    """The models the page offers (the one it was started with, then every shipped one: grey digits and garments,
    and the natural-image CIFAR-10 models), each loaded when first chosen and kept."""

    def __init__(self, first: DemoModel, device: str = "cpu") -> None:
        from selfvae.runs.layout import pretrained_names

        self.device = device
        self.loaded = {first.name: first}
        self.names = list(dict.fromkeys([first.name, *pretrained_names()]))

    def get(self, name: str) -> DemoModel:
        if name not in self.names:
            raise SelfVAEError(f"{name}: not one of the models this page offers")
        if name not in self.loaded:
            from selfvae.runs.loading import load_run

            cfg, model = load_run(name, self.device)
            self.loaded[name] = DemoModel(cfg, model, name, self.device)
        return self.loaded[name]

    def on(self, method: str) -> Callable:
        """A page handler calling ``method`` of the chosen model (the dropdown's value comes first)."""
        return _user_errors(lambda name, *args: getattr(self.get(name), method)(*args))


def build_demo(dm: DemoModel | DemoModels):  # noqa: ANN201 - a gradio Blocks
    """The page: a model chooser over three tabs (:class:`DemoModels`)."""
    import gradio as gr

    models = dm if isinstance(dm, DemoModels) else DemoModels(dm, dm.device)
    first = models.get(models.names[0])
    image_types = sorted(IMAGE_EXTENSIONS)  # what the data loaders read
    with gr.Blocks(title=f"selfvae demo: {Path(first.name).name}", analytics_enabled=False) as demo:
        gr.Markdown("# selfvae demo")
        choice = gr.Dropdown(models.names, value=first.name, label="Model", elem_id="model")
        about = gr.Markdown(first.describe(), elem_id="about")
        choice.change(models.on("describe"), choice, about)
        with gr.Tab("Your image"):
            gr.Markdown("Upload an image of any size: it is placed as the model's training images were (made "
                        "square by the run's crop or pad, then resized to the model's size).")
            with gr.Row():
                upload = gr.File(label="Image", file_types=image_types, elem_id="upload")
                seed = gr.Number(value=0, precision=0, label="Seed", elem_id="image-seed")
            gr.Markdown("### What the model sees: x and each y = d(x)")
            seen = gr.Image(show_label=False, type="numpy", elem_id="seen")
            gr.Markdown("### Super-resolution: x sampled from y alone (conditional generation; selfVAEs only)")
            superres = gr.Image(show_label=False, type="numpy", elem_id="superres")
            gr.Markdown("### Reconstruction modes (RSj: from the first j latents; CR: from y and z; CG: from y)")
            recs = gr.Image(show_label=False, type="numpy", elem_id="modes")
            upload.upload(models.on("image"), [choice, upload, seed], [seen, superres, recs])
        with gr.Tab("Samples"):
            with gr.Row():
                s_seed = gr.Slider(0, 999, value=0, step=1, label="Seed", elem_id="sample-seed")
                temp = gr.Slider(0.1, 1.2, value=1.0, step=0.05, label="Temperature")
            s_btn = gr.Button("Sample", elem_id="sample-button")
            gr.Markdown("### Samples (for a selfVAE: the chain y1 -> ... -> x, top to bottom)")
            s_out = gr.Image(show_label=False, type="numpy", elem_id="samples")
            s_btn.click(models.on("samples"), [choice, s_seed, temp], s_out)
            s_seed.release(models.on("samples"), [choice, s_seed, temp], s_out)
        with gr.Tab("Interpolation"):
            with gr.Row():
                a = gr.File(label="Image A", file_types=image_types, elem_id="upload-a")
                b = gr.File(label="Image B", file_types=image_types, elem_id="upload-b")
                steps = gr.Slider(3, 12, value=8, step=1, label="Steps")
            i_btn = gr.Button("Interpolate", elem_id="interpolate-button")
            gr.Markdown("### Interpolation between the posterior means of u")
            i_out = gr.Image(show_label=False, type="numpy", elem_id="interpolation")
            i_btn.click(models.on("interpolation"), [choice, a, b, steps], i_out)
    return demo


def launch(model: str | None, host: str = "127.0.0.1", port: int = 7860, device: str = "cpu",
           block: bool = True):  # noqa: ANN201
    """Load ``model`` (a run directory, exported model or pretrained name; default: the newest run under
    ./runs, else the shipped pretrained selfVAE) and serve the page."""
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    try:
        import gradio
    except ImportError:
        raise SelfVAEError('the demo needs Gradio: pip install -e ".[demo]" (or pip install gradio)') from None
    from selfvae.runs.loading import load_run

    run = model or find_default_run()
    cfg, m = load_run(run, device)
    demo = build_demo(DemoModel(cfg, m, str(run), device))
    demo.queue(default_concurrency_limit=1)
    print(f"selfvae demo of {run} on http://{host}:{port}", flush=True)
    local_fonts = gradio.themes.Default(font=["ui-sans-serif", "system-ui", "sans-serif"],
                                        font_mono=["ui-monospace", "monospace"])  # no web fonts to fetch
    return demo.launch(server_name=host, server_port=port, prevent_thread_lock=not block, ssr_mode=False,
                       mcp_server=False, share=False, quiet=True, max_file_size=f"{MAX_UPLOAD_MB}mb",
                       footer_links=[], theme=local_fonts)
