"""Stride-1 convolution whose weight gradient is one matrix product (CPU training, channels-last).

oneDNN's backward-weights kernel for fp32 3x3 convolutions runs at 50-65% of this CPU's matrix-product rate
(forward and backward-data run near it): on one core of the 2-core AVX2 machine, 50-54 GFLOP/s against 80-89
for the forward pass of the same convolution. The weight gradient of a ``k x k`` stride-1 convolution,

    dW[o, i, dy, dx] = sum_{n, h, w} dY[n, o, h, w] X[n, i, h + dy - p, w + dx - p],

is, with ``h' = h + dy - p``, one product ``S^T X`` of the output gradient shifted into ``k^2 O`` columns
(``S[n h' w', (dy, dx, o)] = dY[n, o, h' - dy + p, w' - dx + p]``, zero outside; an im2col of the *output*
gradient, the thinner tensor in a dense unit) with the input as it is stored (channels-last ``X`` is the matrix
``[N H W, I]`` already): a matrix product with ``k^2 O`` rows, which runs near the matrix-product peak. The
values are the same up to float summation order (``tests/test_conv.py``).

With fewer than :data:`MIN_ROWS` rows (``k^2 O``) the product is too thin to beat oneDNN (1x1 convolutions,
or 3x3 ones to 8 channels: 0.73x), and :func:`conv2d` is ``F.conv2d``. Whole training steps of the authors'
networks (``benchmarks/bench.py``): see docs/RESULTS.md.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

MIN_ROWS = 576  # k^2 O: 3x3 convolutions to 64 channels or more (forward+backward 1.03-1.17x on one core here)


class _Conv2dGemmGrad(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor, weight: Tensor, bias: Tensor | None, padding: int) -> Tensor:  # noqa: ANN001
        ctx.save_for_backward(x, weight)
        ctx.padding, ctx.has_bias = padding, bias is not None
        return F.conv2d(x, weight, bias, padding=padding)

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor | None, Tensor | None, Tensor | None, None]:  # noqa: ANN001
        x, weight = ctx.saved_tensors
        p = ctx.padding
        grad = grad.contiguous(memory_format=torch.channels_last)
        grad_x = grad_w = grad_b = None
        if ctx.needs_input_grad[0]:
            grad_x = torch.ops.aten.convolution_backward(
                grad, x, weight, None, [1, 1], [p, p], [1, 1], False, [0, 0], 1, [True, False, False]
            )[0]
        if ctx.needs_input_grad[1]:
            grad_w = weight_grad(x, grad, weight.shape[-1], p).to(memory_format=_format(weight))
        if ctx.has_bias and ctx.needs_input_grad[2]:
            grad_b = grad.sum(dim=(0, 2, 3))
        return grad_x, grad_w, grad_b, None


def _format(t: Tensor) -> torch.memory_format:
    return torch.channels_last if t.is_contiguous(memory_format=torch.channels_last) else torch.contiguous_format


def weight_grad(x: Tensor, grad: Tensor, k: int, padding: int) -> Tensor:
    """``dW`` ``[O, I, k, k]`` of the stride-1 convolution of ``x`` ``[N, I, H, W]`` whose output gradient is
    ``grad`` ``[N, O, H', W']`` (both channels-last), as one matrix product (module docstring)."""
    n, c_in, h, w = x.shape
    c_out, h_out, w_out = grad.shape[1:]
    xm = x.permute(0, 2, 3, 1).reshape(-1, c_in)
    g = grad.permute(0, 2, 3, 1)
    if k == 1 and padding == 0:
        return (g.reshape(-1, c_out).t() @ xm).view(c_out, c_in, 1, 1)
    # S[n, h', w', dy, dx, o] = dY[n, o, h' - dy + p, w' - dx + p]; dY padded by k - 1 - p before, p after
    lo = k - 1 - padding
    gp = F.pad(g, (0, 0, lo, w - w_out - lo + k - 1, lo, h - h_out - lo + k - 1))
    s = grad.new_empty(n, h, w, k, k, c_out)
    for dy in range(k):
        for dx in range(k):
            s[:, :, :, dy, dx] = gp[:, k - 1 - dy : k - 1 - dy + h, k - 1 - dx : k - 1 - dx + w]
    return (s.view(-1, k * k * c_out).t() @ xm).view(k, k, c_out, c_in).permute(2, 3, 0, 1)


def conv2d(x: Tensor, weight: Tensor, bias: Tensor | None, padding: int) -> Tensor:
    """``F.conv2d(x, weight, bias, padding=padding)`` (stride 1), with the weight gradient as one matrix product
    when training on a CPU with channels-last ``x`` and the product has :data:`MIN_ROWS` rows (elsewhere, exactly
    ``F.conv2d``)."""
    if (torch.is_grad_enabled() and x.device.type == "cpu" and weight.requires_grad
            and weight.shape[0] * weight.shape[2] * weight.shape[3] >= MIN_ROWS
            and x.is_contiguous(memory_format=torch.channels_last) and x.dtype == weight.dtype == torch.float32):
        return _Conv2dGemmGrad.apply(x, weight, bias, padding)
    return F.conv2d(x, weight, bias, padding=padding)
