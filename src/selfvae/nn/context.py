"""Local context for the likelihood of x: its 2x2 sub-pixel groups, each conditioned on the groups before it.

A VAE's decoder makes the pixels independent given the latents, so every bit of detail the latents do not hold
is paid for pixel by pixel, however well a pixel's neighbours would predict it. Here the pixels of ``x`` are split
into the four sub-images of a 2x2 grid (:data:`ORDER`, as ``pixel_unshuffle`` splits them) and

    p(x | latents) = prod_g p(x_g | latents, x_0, ..., x_{g-1})

with each factor a discretized logistic mixture: group 0 under the decoder's own parameters at its pixels,
group ``g >= 1`` under those plus a correction from a small fully convolutional net that sees the groups before
it (and what the decoder predicted for them). Group 1 (the ``(1, 1)`` pixels) sees its four diagonal neighbours,
groups 2 and 3 their four direct ones. The correction's last layer starts at zero, so a trained model given a
context starts as exactly the model it was (``--init`` fine-tuning loses nothing). Coding, sampling and the bound
visit the groups in this order; everything is local (3x3 convolutions on the sub-image grid), so it runs at any
even image size. In the spirit of PixelVAE (Gulrajani et al., 2017) with the 2x2 sub-pixel order of
multiscale PixelCNNs (Reed et al., 2017), kept to four network calls so sampling and coding stay parallel.

A selfVAE may give its coarsest level ``y_1`` the same context (``model.y_context_width``): p(y_1 | u) then codes
y_1's pixels from their neighbours too.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from selfvae.errors import SelfVAEError

ORDER: tuple[tuple[int, int], ...] = ((0, 0), (1, 1), (0, 1), (1, 0))  # (row, column) offset of each group
GROUPS = len(ORDER)


def group_of(t: Tensor, g: int) -> Tensor:
    """The pixels of group ``g`` of ``t`` ``[..., H, W]``: ``[..., H/2, W/2]``."""
    dy, dx = ORDER[g]
    return t[..., dy::2, dx::2]


def join_groups(parts: list[Tensor]) -> Tensor:
    """The inverse of :func:`group_of`: four ``[B, C, h, w]`` -> ``[B, C, 2h, 2w]``."""
    b, c, h, w = parts[0].shape
    out = parts[0].new_empty(b, c, 2 * h, 2 * w)
    for g, part in enumerate(parts):
        dy, dx = ORDER[g]
        out[..., dy::2, dx::2] = part
    return out


def check_even(shape: tuple[int, ...], what: str) -> None:
    """Refuse an image shape the 2x2 groups do not tile."""
    if shape[-1] % 2 or shape[-2] % 2:
        raise SelfVAEError(f"{what} {tuple(shape)}: a likelihood with sub-pixel context (model.context_width > 0) "
                           f"needs an even height and width")


class SubpixelContext(nn.Module):
    """The corrections to the decoder's parameters of groups 1..3 (see the module docstring).

    ``channels``: the image's; ``n_params``: the likelihood's parameters per pixel; ``width`` and ``layers``: each
    group's net (``layers`` 3x3 convolutions of ``width`` channels with ELUs, then one to ``n_params``, zero at
    the start). Group ``g``'s net reads the ``g`` earlier groups' pixels and the decoder's means there (so their
    residuals), and the decoder's raw parameters at group ``g``; with ``cond_channels``, also the level above x
    (a selfVAE's ``y_K``) on the half-size grid, where a downscaled ``y`` is each 2x2 block's mean: with three of
    a block's pixels known it nearly fixes the fourth."""

    def __init__(self, channels: int, n_params: int, width: int = 64, layers: int = 3, cond_channels: int = 0) -> None:
        super().__init__()
        if width < 1 or layers < 1:
            raise SelfVAEError(f"model.context_width {width} and model.context_layers {layers}: must be >= 1")
        self.channels, self.n_params, self.cond_channels = channels, n_params, cond_channels
        self.nets = nn.ModuleList(self._net(2 * channels * g + n_params + cond_channels, width, layers)
                                  for g in range(1, GROUPS))

    def _net(self, c_in: int, width: int, layers: int) -> nn.Sequential:
        mods: list[nn.Module] = [nn.Conv2d(c_in, width, 3, padding=1)]
        for _ in range(layers - 1):
            mods += [nn.ELU(), nn.Conv2d(width, width, 3, padding=1)]
        last = nn.Conv2d(width, self.n_params, 3, padding=1)
        nn.init.zeros_(last.weight)
        nn.init.zeros_(last.bias)
        return nn.Sequential(*mods, nn.ELU(), last)

    def forward(self, g: int, base: Tensor, known: Tensor, known_means: Tensor, cond: Tensor | None = None) -> Tensor:
        """Parameters of group ``g >= 1`` ``[B, n_params, h, w]``: ``base`` (the decoder's there) plus the correction
        from ``known`` (the earlier groups' pixels in [-1, 1], ``[B, C g, h, w]``), ``known_means`` (the decoder's
        means of those, in [-1, 1], same shape) and ``cond`` (the level above, ``[B, cond_channels, h, w]`` in
        [-1, 1]; where the net has ``cond_channels``)."""
        parts = [known, known_means, base] if cond is None else [known, known_means, base, cond]
        return base + self.nets[g - 1](torch.cat(parts, dim=1))
