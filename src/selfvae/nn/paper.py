"""The srVAE authors' networks, the same function as their code (ioangatop/srVAE, ``src/modules/nn_layers.py``,
``densenet32.py``, ``densenet16x32.py``), for the ``*-paper`` presets (``ModelConfig.nets = "paper"``).

What makes them theirs, unlike :mod:`selfvae.nn.nets`:

* their ``Conv2d`` wrapper applies **no activation** by default: no ELU between a unit's 1x1 bottleneck and
  its 3x3 conv, none in the attention squeeze, none after a resampling conv;
* a dense unit is ``x = ELU(cat(x, conv3x3(conv1x1(x))))``: the ELU runs over the whole concatenation after
  every unit, so earlier channels are re-activated ``steps`` times, and the first unit sees ``x`` raw;
* encoders have no stem: dense layer, stride-2 3x3 conv on the whole concatenation to twice its width
  (growth doubles), ..., dense layer, 1x1 out; decoders: dense layer, transposed conv to half the
  concatenation's width (growth halves), ..., 3x3 out; same-resolution nets: dense layers, 1x1 out;
* every conv is weight-normalised with data-dependent init to output std 0.01 (their ``init_parameters``);
* Gaussian log-variances are ``hardtanh(-7, 7)``; images enter the nets in [0, 1] (``ToTensor``); ``y`` is
  resized for ``p(x|y,z)`` bilinearly (``align_corners=False``);
* the decoders' 100 outputs are their discretized-logistic layout (:class:`PaperDMoLParams`).

Their ``drop_prob`` is 0 everywhere, so dropout is left out.

Faster, the same function: with no activation between them, a unit's 1x1 and 3x3 convs compose into one linear
map, a 3x3 conv straight from the unit's ``c`` input channels to its ``growth`` new ones (:class:`PaperUnit`). Where
``c`` is small against ``growth`` that costs fewer multiply-adds an output pixel (``9 c growth`` against
``4 c growth + 36 growth^2``), forward and backward, and stores no ``4 growth``-channel bottleneck for the
backward pass; the gradients of ``g``, ``v`` and ``b`` of both convs come through the composed kernel.
:func:`fuse_units` turns it off (for bit-level comparisons with their code: composed, results differ by float
rounding only).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from selfvae.nn.conv import conv2d
from selfvae.nn.layers import Network, WNConv2d, box_mean, elu, memory_format_of, spatial_mean

INIT_SCALE = 0.01  # their init_parameters overrides the 0.05 default with 0.01
# A unit is computed composed when its two convs need this many times the composed conv's multiply-adds: the
# composed conv's few output channels run slower per multiply-add (on this 2-core CPU, one thread, batch 16, it
# broke even at about 1.3x fewer; benchmarks/bench.py --unfused)
COMPOSED_MARGIN = 1.4


def _conv(c_in: int, c_out: int, k: int, stride: int = 1, transposed: bool = False) -> WNConv2d:
    return WNConv2d(c_in, c_out, k, stride=stride, transposed=transposed, init_scale=INIT_SCALE)


class PaperAttention(nn.Module):
    """Their ``CALayer``: average pool, 1x1 conv to C/8, 1x1 conv back (no activation between), sigmoid.
    ``window``: a local pool instead of the global one, as :class:`selfvae.nn.layers.ChannelAttention`'s (a model
    at another size, :func:`selfvae.models.sizes.at_size`)."""

    def __init__(self, channels: int, reduction: int = 8) -> None:
        super().__init__()
        self.squeeze = _conv(channels, channels // reduction, 1)
        self.excite = _conv(channels // reduction, channels, 1)
        self.window: tuple[int, int] | None = None  # None: the global mean (theirs)

    def forward(self, x: Tensor) -> Tensor:
        pooled = spatial_mean(x) if self.window is None else box_mean(x, self.window)
        return x * torch.sigmoid(self.excite(self.squeeze(pooled)))


class PaperUnit(nn.Sequential):
    """One dense unit's convs, ``conv3x3(conv1x1(x))`` (their ``DenseNetBlock`` without the concatenation), computed
    as one composed 3x3 conv where that needs fewer multiply-adds (see the module docstring).

    Composed: ``W[o, i] = sum_m W3[o, m] W1[m, i]`` (a 3x3 kernel per pair), and the 1x1 conv's bias ``b1`` becomes
    the map ``conv3x3(b1 everywhere; W3)``, which near the border sums only the taps inside the image (zero
    padding pads the 1x1 conv's *output*, bias included, with zeros); plus ``b3``. Composing the kernel costs
    ``36 c growth^2`` multiply-adds a pass whatever the batch, so a batch is computed composed only where its
    pixels save more than that (wide units on small batches of small maps are not)."""

    def __init__(self, in_channels: int, growth: int) -> None:
        super().__init__(_conv(in_channels, 4 * growth, 1), _conv(4 * growth, growth, 3))
        self.fused = True  # composed where it pays (fuse_units)

    def pays(self, x: Tensor) -> bool:
        """Whether composing saves enough multiply-adds (:data:`COMPOSED_MARGIN`) on the batch ``x``."""
        c, g = self[0].v.shape[1], self[1].v.shape[0]
        pixels = x.shape[0] * x.shape[2] * x.shape[3]
        return pixels * (4 * c * g + 36 * g * g) > COMPOSED_MARGIN * pixels * 9 * c * g + 36 * c * g * g

    def forward(self, x: Tensor) -> Tensor:
        conv1, conv3 = self[0], self[1]
        if not (self.fused and self.pays(x)) or conv1.initialising() or conv3.initialising():
            return conv3(conv1(x))
        w1, w3 = conv1.kernel()[:, :, 0, 0], conv3.kernel()
        kernel = torch.einsum("omyx,mi->oiyx", w3, w1)
        bias_kernel = torch.einsum("omyx,m->oyx", w3, conv1.b).unsqueeze(1)
        bias = F.conv2d(x.new_ones(1, 1, *x.shape[2:]), bias_kernel, conv3.b, padding=1)
        return conv2d(x, kernel, None, padding=1) + bias


def fuse_units(module: nn.Module, on: bool) -> None:
    """Compute the dense units inside ``module`` composed where that pays (``on``, a new net's default) or always
    as their two convs (``off``: their code's arithmetic, bit for bit)."""
    for unit in module.modules():
        if isinstance(unit, PaperUnit):
            unit.fused = on


class PaperDenseLayer(nn.Module):
    """Their ``DenseNetLayer``: ``steps`` units ``x = ELU(cat(x, conv3x3(conv1x1(x))))``, then attention."""

    def __init__(self, in_channels: int, growth: int, steps: int) -> None:
        super().__init__()
        self.units = nn.ModuleList()
        c = in_channels
        for _ in range(steps):
            self.units.append(PaperUnit(c, growth))
            c += growth
        self.out_channels = c
        self.attention = PaperAttention(c)

    def forward(self, x: Tensor) -> Tensor:
        # the layer's input in its convs' memory format: a concatenation of mixed formats comes out
        # contiguous, and every later unit would then convert it back (channels-last weights: much slower convs)
        fmt = memory_format_of(self.units[0][1].v)
        x = x.contiguous(memory_format=fmt)
        for unit in self.units:
            new = unit(x)
            if torch.compiler.is_compiling():  # the compiler fuses the two passes itself (and traces no out=)
                x = F.elu(torch.cat([x, new], dim=1))
            elif torch.is_grad_enabled() and new.dtype == x.dtype:
                x = _CatELU.apply(x, new, fmt)
            else:  # in place, as theirs: the concatenation is used by nothing but the ELU
                x = elu(torch.cat([x, new], dim=1), inplace=True)
        return self.attention(x)


class _CatELU(torch.autograd.Function):
    """``F.elu(torch.cat([a, b], 1))`` written in one pass into the concatenation (their code concatenates, then
    runs the ELU over the result in place: two passes over the layer's widest tensor per unit); the same values
    and gradients, the ELU's output saved for its backward as theirs."""

    @staticmethod
    def forward(ctx, a: Tensor, b: Tensor, fmt: torch.memory_format) -> Tensor:  # noqa: ANN001
        out = torch.empty((a.shape[0], a.shape[1] + b.shape[1], *a.shape[2:]), dtype=a.dtype, device=a.device,
                          memory_format=fmt)
        torch.ops.aten.elu.out(a, 1.0, 1, 1, out=out[:, : a.shape[1]])
        torch.ops.aten.elu.out(b, 1.0, 1, 1, out=out[:, a.shape[1] :])
        ctx.save_for_backward(out)
        ctx.split = a.shape[1]
        return out

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, Tensor, None]:  # noqa: ANN001
        (out,) = ctx.saved_tensors
        grad_in = torch.ops.aten.elu_backward(grad, 1.0, 1, 1, True, out)
        return grad_in[:, : ctx.split], grad_in[:, ctx.split :], None


class PaperNet(nn.Sequential, Network):
    """One of the authors' networks (encoder, decoder or same-resolution net): a sequence of their layers."""

    def forward(self, x: Tensor) -> Tensor:
        # nn.Sequential's own forward, written here: torch.compile skips a top frame in torch.nn's files and
        # would compile each layer apart (a recompilation per width, past its limit, then eager)
        for layer in self:
            x = layer(x)
        return x


def paper_encoder(in_channels: int, out_channels: int, growth: int, steps: int, n_down: int) -> PaperNet:
    """Their ``DenselyEncoder``: ``n_down`` times (dense layer, stride-2 conv to 2x width), dense layer, 1x1."""
    layers: list[nn.Module] = []
    c, g = in_channels, growth
    for _ in range(n_down):
        dense = PaperDenseLayer(c, g, steps)
        c = dense.out_channels
        layers += [dense, _conv(c, 2 * c, 3, stride=2)]
        c, g = 2 * c, 2 * g
    dense = PaperDenseLayer(c, g, steps)
    layers += [dense, _conv(dense.out_channels, out_channels, 1)]
    return PaperNet(*layers)


def paper_decoder(in_channels: int, out_channels: int, growth: int, steps: int, n_up: int) -> PaperNet:
    """Their ``DenselyDecoder``: ``n_up`` times (dense layer, transposed conv to half width), 3x3 out."""
    layers: list[nn.Module] = []
    c, g = in_channels, growth
    for _ in range(n_up):
        dense = PaperDenseLayer(c, g, steps)
        c = dense.out_channels
        layers += [dense, _conv(c, c // 2, 3, stride=2, transposed=True)]
        c, g = c // 2, g // 2
    layers.append(_conv(c, out_channels, 3))
    return PaperNet(*layers)


def paper_network(in_channels: int, out_channels: int, growth: int, steps: int, blocks: int) -> PaperNet:
    """Their ``DenselyNetwork``: ``blocks`` dense layers, 1x1 out."""
    layers: list[nn.Module] = []
    c = in_channels
    for _ in range(blocks):
        dense = PaperDenseLayer(c, growth, steps)
        layers.append(dense)
        c = dense.out_channels
    layers.append(_conv(c, out_channels, 1))
    return PaperNet(*layers)


def paper_n_params(channels: int, n_mix: int) -> int:
    """Their ``n_embenddings``: ``(3C + 1) M`` outputs (100 for RGB with 10 components)."""
    return (3 * channels + 1) * n_mix


class PaperDMoLParams(nn.Module):
    """Their discretized-logistic parametrisation, rewritten in the layout and units of
    :class:`~selfvae.distributions.DiscretizedLogisticMixture` (which then gives their likelihood).

    Theirs (``dmol_loss``): channels ``[logits M | means M x C | log-scales M x C | coefficients M x C]``,
    component-major; x, means and scales in [0, 1] units; log-scales clamped at -7 there; coefficients through
    tanh, coupling ``mean_G += a x_R``, ``mean_B += b x_R + c x_G`` with x in [0, 1]. In [-1, 1] units that is
    ``loc = 2 mean - 1`` (plus ``a``, resp. ``b + c``, since ``x_01 = (x_pm1 + 1) / 2``), the same coefficients,
    and ``log-scale + log 2`` (so their clamp at -7 becomes -7 + log 2, above ours). For C != 3 their code has no
    working layout; here it is the same without coefficients.
    """

    def __init__(self, channels: int, n_mix: int) -> None:
        super().__init__()
        self.channels, self.n_mix = channels, n_mix

    def forward(self, raw: Tensor) -> Tensor:
        m, c = self.n_mix, self.channels
        b, _, h, w = raw.shape
        logits, means, log_scales, raw_coeffs = raw.split([m, m * c, m * c, raw.shape[1] - m - 2 * m * c], dim=1)
        means = means.reshape(b, m, c, h, w)
        log_scales = log_scales.reshape(b, m, c, h, w).clamp(min=-7.0) + math.log(2.0)
        locs = 2.0 * means - 1.0
        parts = [logits]
        tail = []
        if c == 3:
            raw_coeffs = raw_coeffs.reshape(b, m, 3, h, w)
            coeffs = torch.tanh(raw_coeffs)
            a, bb, cc = coeffs[:, :, 0], coeffs[:, :, 1], coeffs[:, :, 2]
            locs = torch.stack([locs[:, :, 0], locs[:, :, 1] + a, locs[:, :, 2] + bb + cc], dim=2)
            tail = [raw_coeffs.transpose(1, 2).reshape(b, 3 * m, h, w)]  # ours applies the tanh itself
        parts += [locs.transpose(1, 2).reshape(b, c * m, h, w), log_scales.transpose(1, 2).reshape(b, c * m, h, w)]
        return torch.cat(parts + tail, dim=1)
