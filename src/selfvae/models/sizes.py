"""A trained model at another image size: its networks are convolutional, so the same weights run on frames of
any multiple of the training frame (a photograph whole, or tiles larger than the training crops; HiLLoC, Townsend
et al. 2020, codes whole images so with a VAE trained on 32x32 crops).

Two things in a model depend on the frame: the shapes it checks (``cfg.image_shape``, ``cfg.latent_shape``), and
its channel attention, whose global mean would pool a whole photograph where training pooled 32x32. :func:`at_size`
rebuilds the model at the new frame with the same weights and gives every attention a local pool, the mean over a
box of ``2 s - 1`` around each position for a layer that saw maps of side ``s`` in training: identical to the global
mean at the training size (every box covers the whole map), a neighbourhood of the training frame's extent beyond.
"""

from __future__ import annotations

import dataclasses

import torch

from selfvae.errors import SelfVAEError
from selfvae.models.selfvae import SelfVAE
from selfvae.nn.layers import ChannelAttention, memory_format_of
from selfvae.nn.paper import PaperAttention

SIZE_FREE_PRIORS = ("standard", "realnvp")  # a mixture's components are over the flattened latent: one size only
ATTENTIONS = (ChannelAttention, PaperAttention)  # ours and the authors' (model.nets / model.z_nets "paper")


def attention_sizes(model: SelfVAE) -> dict[str, tuple[int, int]]:
    """The ``(h, w)`` of the maps each channel attention of ``model`` sees at its own frame, by name (one forward
    pass of a black image)."""
    seen: dict[str, tuple[int, int]] = {}

    def record(name: str):  # noqa: ANN202 - a forward pre-hook
        def hook(module: torch.nn.Module, args: tuple) -> None:
            seen.setdefault(name, tuple(args[0].shape[2:]))
        return hook

    hooks = [m.register_forward_pre_hook(record(name)) for name, m in model.named_modules()
             if isinstance(m, ATTENTIONS)]
    try:
        with torch.no_grad():
            model.terms(torch.zeros(1, *model.shapes[-1], dtype=torch.uint8, device=next(model.parameters()).device))
    finally:
        for h in hooks:
            h.remove()
    return seen


def check_size_free(model: SelfVAE) -> None:
    """Refuse a model whose weights hold one frame size (a mixture prior)."""
    if model.cfg.prior not in SIZE_FREE_PRIORS:
        raise SelfVAEError(f"a model with the {model.cfg.prior!r} prior runs at its own frame only (its prior is over "
                           f"the flattened latent); priors that run at any size: {', '.join(SIZE_FREE_PRIORS)}")


def at_size(model: SelfVAE, height: int, width: int) -> SelfVAE:
    """``model`` with its weights, taking images of ``height x width`` (multiples of the frame it was trained at),
    its channel attention pooling locally (see the module docstring); in eval mode, on the model's device, dtype
    and memory format. Bits/dim of the new model count every pixel of its frame. A model already moved keeps its
    training frame and windows (``trained_frame``, ``attention_windows``)."""
    check_size_free(model)
    c, fh, fw = getattr(model, "trained_frame", model.shapes[-1])
    if height < 1 or width < 1 or height % fh or width % fw:
        raise SelfVAEError(f"size {height}x{width}: must be multiples of the model's frame {fh}x{fw}")
    windows = getattr(model, "attention_windows", None) or {
        name: (2 * h - 1, 2 * w - 1) for name, (h, w) in attention_sizes(model).items()}
    (_, h0, w0), (lc, lh, lw) = model.shapes[-1], model.cfg.latent_shape
    cfg = dataclasses.replace(model.cfg, image_shape=(c, height, width), data_shape=None,
                              latent_shape=(lc, lh * height // h0, lw * width // w0))
    param = next(model.parameters())
    new = type(model)(cfg).to(device=param.device, dtype=param.dtype)  # a subclass (selfvae.api.Model) stays one
    if hasattr(model, "config"):  # the whole run's config (selfvae.api.Model), its model at the new size
        new.config = dataclasses.replace(model.config, model=cfg)
    new.load_state_dict(model.state_dict())
    for mine, theirs in zip(new.parameters(), model.parameters(), strict=True):  # each kernel stored as it was:
        if mine.dim() == 4:  # as fast, and the noise drawn like activations laid out the same
            mine.data = mine.data.contiguous(memory_format=memory_format_of(theirs))
    for name, m in new.named_modules():
        if isinstance(m, ATTENTIONS):
            m.window = windows[name]
    new.trained_frame, new.attention_windows = (c, fh, fw), windows
    return new.eval()
