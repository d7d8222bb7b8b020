"""The stride-1 convolution with a matrix-product weight gradient: the values and gradients of ``F.conv2d``."""

from __future__ import annotations

from functools import partial

import pytest
import torch
import torch.nn.functional as F

from selfvae.nn.conv import MIN_ROWS, conv2d, conv_transpose2d, weight_grad
from selfvae.nn.layers import WNConv2d

CL = torch.channels_last


@pytest.mark.parametrize(
    ("k", "stride", "padding", "size"),
    [(3, 1, 1, (6, 5)), (3, 1, 0, (7, 6)), (5, 1, 2, (5, 8)), (1, 1, 0, (4, 4)), (3, 2, 1, (8, 6)), (3, 2, 1, (7, 5)),
     (4, 2, 1, (6, 6))],
)
def test_weight_grad_is_the_convolutions_in_float64(k: int, stride: int, padding: int, size: tuple[int, int]) -> None:
    torch.manual_seed(0)
    x = torch.randn(3, 5, *size, dtype=torch.float64).contiguous(memory_format=CL)
    w = torch.randn(7, 5, k, k, dtype=torch.float64, requires_grad=True)
    y = F.conv2d(x, w, stride=stride, padding=padding)
    grad = torch.randn_like(y).contiguous(memory_format=CL)
    y.backward(grad)
    got = weight_grad(x, grad, k, stride, padding)
    assert got.shape == w.shape
    torch.testing.assert_close(got, w.grad, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize(("k", "stride", "padding"), [(3, 2, 1), (4, 2, 1), (3, 1, 1), (3, 3, 1)])
def test_transposed_weight_grad_is_the_convolutions_in_float64(k: int, stride: int, padding: int) -> None:
    torch.manual_seed(3)
    x = torch.randn(2, 6, 5, 4, dtype=torch.float64).contiguous(memory_format=CL)
    w = torch.randn(6, 4, k, k, dtype=torch.float64, requires_grad=True)  # [I, O, k, k]
    y = F.conv_transpose2d(x, w, stride=stride, padding=padding, output_padding=stride - 1)
    grad = torch.randn_like(y).contiguous(memory_format=CL)
    y.backward(grad)
    got = weight_grad(x, grad, k, stride, padding, transposed=True)
    assert got.shape == w.shape
    torch.testing.assert_close(got, w.grad, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize(("stride", "transposed"), [(1, False), (2, False), (2, True)])
def test_values_and_all_gradients_match_torchs(stride: int, transposed: bool) -> None:
    torch.manual_seed(1)
    x = torch.randn(4, 70, 9, 10).contiguous(memory_format=CL)
    w = torch.randn(*((70, MIN_ROWS // 9) if transposed else (MIN_ROWS // 9, 70)), 3, 3) * 0.1
    b = torch.randn(MIN_ROWS // 9)
    if transposed:
        ours, torchs = conv_transpose2d, partial(F.conv_transpose2d, output_padding=stride - 1)
    else:
        ours, torchs = conv2d, F.conv2d
    grads = []
    for fn in (torchs, ours):
        xs, ws, bs = (t.clone().requires_grad_() for t in (x, w, b))
        y = fn(xs, ws, bs, stride=stride, padding=1)
        if fn is ours:  # the matrix-product backward is the one taken
            assert type(y.grad_fn).__name__ == "_ConvGemmGradBackward"
        (y * torch.linspace(-1, 1, y.numel()).view_as(y)).sum().backward()
        grads.append((y.detach(), xs.grad, ws.grad, bs.grad))
    for ref, got in zip(*grads, strict=True):
        torch.testing.assert_close(got, ref, rtol=1e-4, atol=1e-5 * ref.abs().max().item())


def test_thin_products_and_inference_stay_f_conv2d() -> None:
    x = torch.randn(2, 64, 6, 6).contiguous(memory_format=CL)
    thin = torch.randn(MIN_ROWS // 9 - 1, 64, 3, 3, requires_grad=True)
    assert type(conv2d(x, thin, None, padding=1).grad_fn).__name__ == "ConvolutionBackward0"
    wide = torch.randn(MIN_ROWS // 9, 64, 3, 3, requires_grad=True)
    with torch.no_grad():
        assert conv2d(x, wide, None, padding=1).grad_fn is None
    assert type(conv2d(x.contiguous(), wide, None, padding=1).grad_fn).__name__ == "ConvolutionBackward0"


def test_weight_normed_layer_trains_through_it_like_f_conv2d() -> None:
    """A :class:`WNConv2d` wide enough takes the matrix-product path; its ``g``, ``v``, ``b`` gradients match the
    same layer through ``F.conv2d``."""
    torch.manual_seed(2)
    layer = WNConv2d(64, 64, 3)
    x = torch.randn(2, 64, 5, 5).contiguous(memory_format=CL)
    layer(x).pow(2).sum().backward()
    ours = [p.grad.clone() for p in (layer.v, layer.g, layer.b)]
    layer.zero_grad()
    F.conv2d(x, layer.weight(), layer.b, padding=1).pow(2).sum().backward()
    for got, ref in zip(ours, (layer.v.grad, layer.g.grad, layer.b.grad), strict=True):  # float32 sums differ
        torch.testing.assert_close(got, ref, rtol=1e-4, atol=1e-5 * ref.abs().max().item())
