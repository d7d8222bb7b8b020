"""Building blocks of every network (paper Appendix D, thesis ch. 5.3).

* :class:`WNConv2d` -- a (transposed) convolution with weight normalisation and data-dependent
  initialisation (Salimans & Kingma, 2016): ``w = g * v / ||v||``; on the first batch ``g`` and ``b`` are
  set so that each output channel has zero mean and standard deviation ``init_scale``.
* :class:`ChannelAttention` -- squeeze-and-excitation gating of channels (Zhang et al., 2018).
* :class:`DenseLayer` -- ``steps`` densely connected ELU-conv1x1-ELU-conv3x3 units, then channel attention.
* :func:`elu` -- the activation every network uses; without autograd a faster form of the same function.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from selfvae.nn.conv import conv2d, conv_transpose2d

_EXACT_ELU = [False]  # set inside exact_elu(): process-wide, so a coder's pool threads see it too


def elu(x: Tensor, inplace: bool = False) -> Tensor:
    """ELU, ``x`` if ``x > 0`` else ``exp(x) - 1``.

    With autograd (training) it is ``F.elu``. Without it, on a CPU (evaluation, sampling, coding), it is
    ``max(x, exp(min(x, 0)) - 1)``, the same function since ``exp(x) - 1 >= x``: within 6e-8 of ``F.elu``
    (whose vectorised ``expm1`` is the slow part) and faster, where ELUs are a large share of inference.
    Inside :func:`exact_elu` it is always ``F.elu`` (the codec's files of format 3 and older were made so).
    ``inplace`` overwrites ``x`` (as ``F.elu``'s).
    """
    if _EXACT_ELU[0] or torch.is_grad_enabled() or x.device.type != "cpu":
        return F.elu(x, inplace=inplace)
    t = torch.clamp(x, max=0.0).exp_().sub_(1.0)
    return torch.maximum(x, t, out=x if inplace else t)


@contextmanager
def exact_elu():
    """Within: :func:`elu` is ``F.elu`` without autograd too (process-wide)."""
    before = _EXACT_ELU[0]
    _EXACT_ELU[0] = True
    try:
        yield
    finally:
        _EXACT_ELU[0] = before


def memory_format_of(kernel: Tensor) -> torch.memory_format:
    """``torch.channels_last`` if the 4-D ``kernel`` is stored so (``model.to(memory_format=...)``), else
    ``torch.contiguous_format``. Ambiguous for 1x1 kernels (both at once): pass a wider one."""
    if kernel.dim() == 4 and not kernel.is_contiguous() and kernel.is_contiguous(memory_format=torch.channels_last):
        return torch.channels_last
    return torch.contiguous_format


class Network:
    """Marks a network whose outputs parametrise a distribution (a mixin of no state): under ``--amp`` its
    outputs leave autocast as float32, and ``--compile`` compiles it (:mod:`selfvae.runtime`)."""


class _SpatialMean(torch.autograd.Function):
    """``x.mean((2, 3), keepdim=True)`` whose gradient stays a broadcast view: autograd's own divides the expanded
    gradient into a dense contiguous tensor, which then meets a channels-last one in an add ten times slower than
    either (0.4 s of a paper srVAE step, one attention at 32x32)."""

    @staticmethod
    def forward(ctx, x: Tensor) -> Tensor:  # noqa: ANN001
        ctx.shape = x.shape
        return x.mean(dim=(2, 3), keepdim=True)

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:  # noqa: ANN001
        h, w = ctx.shape[2:]
        return (grad / (h * w)).expand(ctx.shape)


def spatial_mean(x: Tensor) -> Tensor:
    """The mean over height and width, ``[B, C, 1, 1]`` (same values and gradient as ``x.mean((2, 3), True)``)."""
    return _SpatialMean.apply(x)


class ELU(nn.Module):
    """:func:`elu` as a module, for ``nn.Sequential``."""

    def forward(self, x: Tensor) -> Tensor:
        return elu(x)


def fused_weight_norm(v: Tensor, g: Tensor, transposed: bool) -> Tensor:
    """``g * v / ||v||`` by ``torch._weight_norm`` (the output channel is dim 1 of a transposed kernel)."""
    dim = 1 if transposed else 0
    shape = [1] * v.dim()
    shape[dim] = -1
    return torch._weight_norm(v, g.view(shape), dim)


class WNConv2d(nn.Module):
    """Weight-normalised 2-D convolution (or transposed convolution) with data-dependent init.

    The layer is *uninitialised* until :func:`data_dependent_init` runs a batch through the network;
    the ``initialized`` buffer is saved in checkpoints so a resumed run never re-initialises.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 3,
        stride: int = 1,
        padding: int | None = None,
        transposed: bool = False,
        init_scale: float = 1.0,
    ) -> None:
        super().__init__()
        if padding is None:
            padding = kernel_size // 2
        self.stride, self.padding, self.transposed = stride, padding, transposed
        self.init_scale = init_scale
        shape = (in_channels, out_channels) if transposed else (out_channels, in_channels)
        self.v = nn.Parameter(torch.randn(*shape, kernel_size, kernel_size) * 0.05)
        self.g = nn.Parameter(torch.ones(out_channels))
        self.b = nn.Parameter(torch.zeros(out_channels))
        self.register_buffer("initialized", torch.tensor(False))
        self._ddi = False
        self._frozen: Tensor | None = None  # the kernel, computed once inside frozen_weights()

    def weight(self) -> Tensor:
        """The effective kernel ``g * v / ||v||`` (norm over everything but the output channel).

        On a GPU it is PyTorch's fused weight norm, one kernel forward and one backward: the explicit form
        below is ~25 operators a layer with its gradient, and a GPU step of the paper presets is bound by the
        host's operator launches (``benchmarks/op_count.py``: 15230 operators a step against the authors'
        8692, who use the fused one). The CPU keeps the explicit form, whose rounding the codec's files pin."""
        if self.v.is_cuda:
            return fused_weight_norm(self.v, self.g, self.transposed)
        if self.transposed:
            norm = self.v.pow(2).sum(dim=(0, 2, 3), keepdim=True).clamp_min(1e-12).sqrt()
            return self.v * (self.g.view(1, -1, 1, 1) / norm)
        norm = self.v.pow(2).sum(dim=(1, 2, 3), keepdim=True).clamp_min(1e-12).sqrt()
        return self.v * (self.g.view(-1, 1, 1, 1) / norm)

    def _conv(self, x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
        if self.transposed:  # output_padding = stride - 1: the output is exactly stride times the input
            return conv_transpose2d(x, weight, bias, stride=self.stride, padding=self.padding)
        return conv2d(x, weight, bias, stride=self.stride, padding=self.padding)

    def kernel(self) -> Tensor:
        """The kernel this layer convolves with: :meth:`weight`, or the one computed inside :func:`frozen_weights`."""
        return self._frozen if self._frozen is not None else self.weight()

    def initialising(self) -> bool:
        """Whether the next forward pass initialises this layer (inside :func:`data_dependent_init`)."""
        return self._ddi and not bool(self.initialized)

    def forward(self, x: Tensor) -> Tensor:
        if self._frozen is None and self.initialising():
            return self._init_from(x)
        return self._conv(x, self.kernel(), self.b)

    @torch.no_grad()
    def _init_from(self, x: Tensor) -> Tensor:
        self.g.fill_(1.0)
        self.b.zero_()
        t = self._conv(x, self.weight(), None)
        mean = t.mean(dim=(0, 2, 3))
        std = t.std(dim=(0, 2, 3)).clamp_min(1e-6)
        scale = self.init_scale / std
        self.g.mul_(scale)
        self.b.copy_(-mean * scale)
        self.initialized.fill_(True)
        return (t - mean.view(1, -1, 1, 1)) * scale.view(1, -1, 1, 1)


def weight_norm_layers(module: nn.Module) -> Iterator[WNConv2d]:
    """All :class:`WNConv2d` layers inside ``module``."""
    return (m for m in module.modules() if isinstance(m, WNConv2d))


@contextmanager
def frozen_weights(module: nn.Module):
    """Compute every weight-normed kernel in ``module`` once, for many forward passes with fixed weights (the
    codec's thousands of network calls); the same values as computing it per call. No gradients flow to
    ``g`` and ``v`` inside."""
    layers = list(weight_norm_layers(module))
    with torch.no_grad():
        for layer in layers:
            layer._frozen = layer.weight()
    try:
        yield
    finally:
        for layer in layers:
            layer._frozen = None


@torch.no_grad()
def data_dependent_init(module: nn.Module, run: callable) -> None:
    """Initialise every uninitialised weight-normed layer from one forward pass ``run()``.

    Layers are initialised in the order the forward pass reaches them, each seeing the already
    normalised outputs of the layers before it, as in Salimans & Kingma (2016).
    """
    layers = list(weight_norm_layers(module))
    for layer in layers:
        layer._ddi = True
    try:
        with exact_elu():  # the init training has always had, bit for bit
            run()
    finally:
        for layer in layers:
            layer._ddi = False
    for layer in layers:  # layers the pass did not reach keep the plain init but count as initialised
        layer.initialized.fill_(True)


def box_mean(x: Tensor, window: tuple[int, int]) -> Tensor:
    """The mean of ``x`` ``[B, C, H, W]`` over a ``window = (kh, kw)`` box (odd sides) centred on every position,
    cut at the borders (each position averages the entries its box holds: ``count_include_pad=False``), by
    cumulative sums: O(1) a position whatever the box's size. A map of at most ``((kh + 1) / 2, (kw + 1) / 2)``
    gets its global mean everywhere, since every box then covers all of it."""
    _, _, h, w = x.shape
    for dim, size, k in ((2, h, window[0]), (3, w, window[1])):
        r = k // 2
        s = torch.nn.functional.pad(x.cumsum(dim), (0, 0, 1, 0) if dim == 2 else (1, 0))
        hi = torch.arange(size, device=x.device).add(r + 1).clamp(max=size)
        lo = torch.arange(size, device=x.device).sub(r).clamp(min=0)
        count = (hi - lo).to(x.dtype)
        x = (s.index_select(dim, hi) - s.index_select(dim, lo)) / (count.view(-1, 1) if dim == 2 else count)
    return x


class ChannelAttention(nn.Module):
    """Channel-wise attention: global average pool -> bottleneck -> sigmoid gate (RCAN).

    ``window`` ``(kh, kw)``: the pool becomes a local one, the mean over a box of that size around each position
    (:func:`box_mean`); :func:`selfvae.models.sizes.at_size` sets it to ``2 s - 1`` for a layer that saw maps of
    side ``s`` in training, so the layer computes the same as before on maps of that size and on larger ones pools
    what it pooled then: a neighbourhood of the training frame's size, not a whole photograph."""

    def __init__(self, channels: int, reduction: int = 8) -> None:
        super().__init__()
        hidden = max(channels // reduction, 4)
        self.squeeze = WNConv2d(channels, hidden, 1)
        self.excite = WNConv2d(hidden, channels, 1)
        self.window: tuple[int, int] | None = None  # None: the global mean

    def forward(self, x: Tensor) -> Tensor:
        pooled = spatial_mean(x) if self.window is None else box_mean(x, self.window)
        return x * torch.sigmoid(self.excite(elu(self.squeeze(pooled))))


class DenseLayer(nn.Module):
    """``steps`` densely connected units; each adds ``growth`` channels. Ends with channel attention.

    Output channels: ``in_channels + steps * growth``.
    """

    def __init__(self, in_channels: int, growth: int, steps: int, bottleneck: int = 4) -> None:
        super().__init__()
        self.units = nn.ModuleList()
        c = in_channels
        for _ in range(steps):
            self.units.append(
                nn.ModuleList([WNConv2d(c, bottleneck * growth, 1), WNConv2d(bottleneck * growth, growth, 3)])
            )
            c += growth
        self.out_channels = c
        self.attention = ChannelAttention(c)

    def forward(self, x: Tensor) -> Tensor:
        # elu(cat(a, b)) == cat(elu(a), elu(b)): activate each new piece once instead of re-activating the
        # whole growing concatenation in every unit (same result, O(steps) instead of O(steps^2) ELU work).
        pieces, active = [x], [elu(x)]
        for i, (conv1, conv3) in enumerate(self.units):
            h = active[0] if len(active) == 1 else torch.cat(active, dim=1)
            new = conv3(elu(conv1(h)))
            pieces.append(new)
            if i + 1 < len(self.units):  # the last piece is only concatenated, never fed to another unit
                active.append(elu(new))
        return self.attention(torch.cat(pieces, dim=1))
