"""Convolutions whose weight gradient is one matrix product (CPU training, channels-last).

oneDNN's fp32 backward-weights kernels run well below the CPU's matrix-product rate where its forward and
backward-data kernels run near it (measured in docs/RESULTS.md, ``benchmarks/roofline.py``), most of all for the
stride-2 and transposed convolutions of the authors' encoders and decoders.
The weight gradient of a ``k x k`` convolution with stride ``s`` and padding ``p``,

    dW[o, i, dy, dx] = sum_{n, h, w} dY[n, o, h, w] X[n, i, s h + dy - p, s w + dx - p],

is one matrix product of one tensor as it is stored (channels-last ``[N, C, H, W]`` is the matrix
``[N H W, C]`` already) with the ``k^2``-column im2col of the other (:func:`_patches`):

* stride 1: the patches of ``dY`` (thinner than ``X`` in a dense unit) around each input pixel,
  ``dW[o, i, dy, dx] = sum_{n, h', w'} dY[n, o, h' - dy + p, w' - dx + p] X[n, i, h', w']``;
* stride ``s > 1``: the patches of ``X`` under each output pixel (its ``s``-strided samples);
* transposed (the adjoint, ``dW[i, o, dy, dx] = sum x[n, i, h, w] dY[n, o, s h + dy - p, s w + dx - p]``): the
  patches of ``dY`` above each input pixel. Its input gradient is the forward convolution with the same
  kernel, for which oneDNN's forward kernel is used (its backward-data of a transposed one is slower).

A product with ``k^2 min(I, O)`` under :data:`MIN_ROWS` is too thin to beat oneDNN (1x1 convolutions, or 3x3 ones
to 8 channels: 0.73x), and there :func:`conv2d` is ``F.conv2d``. The values are the same up to float summation
order (``tests/test_conv.py``); whole training steps: docs/RESULTS.md.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

MIN_ROWS = 576  # k^2 min(I, O): 3x3 convolutions with 64 channels or more on both sides

CL = torch.channels_last


def _patches(t: Tensor, grid: tuple[int, int], k: int, stride: int, padding: int) -> Tensor:
    """``P[n, h, w, dy, dx, c] = t[n, c, stride h + dy - padding, stride w + dx - padding]`` (zero outside ``t``)
    for ``(h, w)`` on ``grid``, as the matrix ``[N h w, k^2 C]``."""
    n, c, height, width = t.shape
    gh, gw = grid
    after_h = max(0, stride * (gh - 1) + k - padding - height)
    after_w = max(0, stride * (gw - 1) + k - padding - width)
    tp = F.pad(t.permute(0, 2, 3, 1), (0, 0, padding, after_w, padding, after_h))
    out = t.new_empty(n, gh, gw, k, k, c)
    span_h, span_w = stride * (gh - 1) + 1, stride * (gw - 1) + 1
    for dy in range(k):
        for dx in range(k):
            out[:, :, :, dy, dx] = tp[:, dy : dy + span_h : stride, dx : dx + span_w : stride]
    return out.view(-1, k * k * c)


def _matrix(t: Tensor) -> Tensor:
    """A channels-last ``[N, C, H, W]`` as the matrix ``[N H W, C]`` (a view)."""
    return t.permute(0, 2, 3, 1).reshape(-1, t.shape[1])


def weight_grad(x: Tensor, grad: Tensor, k: int, stride: int, padding: int, transposed: bool = False) -> Tensor:
    """The kernel gradient (``[O, I, k, k]``, or ``[I, O, k, k]`` ``transposed``) of the convolution of ``x``
    whose output gradient is ``grad``, both channels-last, as one matrix product (module docstring)."""
    c_in, c_out = x.shape[1], grad.shape[1]
    if transposed:  # patches of dY above each input pixel
        p = _patches(grad, x.shape[2:], k, stride, padding)
        return (_matrix(x).t() @ p).view(c_in, k, k, c_out).permute(0, 3, 1, 2)
    if stride == 1:  # patches of dY around each input pixel: offsets run backwards, so the kernel comes flipped
        p = _patches(grad, x.shape[2:], k, 1, k - 1 - padding)
        return (p.t() @ _matrix(x)).view(k, k, c_out, c_in).flip(0, 1).permute(2, 3, 0, 1)
    p = _patches(x, grad.shape[2:], k, stride, padding)  # patches of X under each output pixel
    return (_matrix(grad).t() @ p).view(c_out, k, k, c_in).permute(0, 3, 1, 2)


def _torch_conv(x: Tensor, weight: Tensor, bias: Tensor | None, stride: int, padding: int, transposed: bool) -> Tensor:
    """PyTorch's convolution (a transposed one with ``output_padding = stride - 1``)."""
    if transposed:
        return F.conv_transpose2d(x, weight, bias, stride=stride, padding=padding, output_padding=stride - 1)
    return F.conv2d(x, weight, bias, stride=stride, padding=padding)


class _ConvGemmGrad(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor, weight: Tensor, bias: Tensor | None, stride: int, padding: int,  # noqa: ANN001
                transposed: bool) -> Tensor:
        ctx.save_for_backward(x, weight)
        ctx.conf, ctx.has_bias = (stride, padding, transposed), bias is not None
        return _torch_conv(x, weight, bias, stride, padding, transposed)

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor | None, ...]:  # noqa: ANN001
        x, weight = ctx.saved_tensors
        stride, padding, transposed = ctx.conf
        grad = grad.contiguous(memory_format=CL)
        grad_x = grad_w = grad_b = None
        if ctx.needs_input_grad[0] and transposed:  # the adjoint of a transposed convolution is the convolution
            grad_x = F.conv2d(grad, weight, stride=stride, padding=padding)
        elif ctx.needs_input_grad[0]:
            grad_x = torch.ops.aten.convolution_backward(
                grad, x, weight, None, [stride] * 2, [padding] * 2, [1, 1], False, [0, 0], 1, [True, False, False]
            )[0]
        if ctx.needs_input_grad[1]:
            grad_w = weight_grad(x, grad, weight.shape[-1], stride, padding, transposed)
            grad_w = grad_w.contiguous(memory_format=CL if weight.is_contiguous(memory_format=CL) else
                                       torch.contiguous_format)
        if ctx.has_bias and ctx.needs_input_grad[2]:
            grad_b = grad.sum(dim=(0, 2, 3))
        return grad_x, grad_w, grad_b, None, None, None


def _gemm_pays(x: Tensor, weight: Tensor) -> bool:
    return (torch.is_grad_enabled() and x.device.type == "cpu" and weight.requires_grad
            and weight.shape[2] * weight.shape[3] * min(weight.shape[0], weight.shape[1]) >= MIN_ROWS
            and x.is_contiguous(memory_format=CL) and x.dtype == weight.dtype == torch.float32)


def conv2d(x: Tensor, weight: Tensor, bias: Tensor | None, stride: int = 1, padding: int = 0) -> Tensor:
    """``F.conv2d``, with the weight gradient as one matrix product when training on a CPU with channels-last
    ``x`` and a product of :data:`MIN_ROWS` rows (elsewhere, exactly ``F.conv2d``)."""
    if _gemm_pays(x, weight):
        return _ConvGemmGrad.apply(x, weight, bias, stride, padding, False)
    return _torch_conv(x, weight, bias, stride, padding, False)


def conv_transpose2d(x: Tensor, weight: Tensor, bias: Tensor | None, stride: int = 1, padding: int = 0) -> Tensor:
    """``F.conv_transpose2d`` with ``output_padding = stride - 1`` (the output exactly ``stride`` times the input),
    with the gradients of :func:`conv2d`'s path under the same conditions."""
    if _gemm_pays(x, weight):
        return _ConvGemmGrad.apply(x, weight, bias, stride, padding, True)
    return _torch_conv(x, weight, bias, stride, padding, True)
