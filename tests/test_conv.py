"""The stride-1 convolution with a matrix-product weight gradient: the values and gradients of ``F.conv2d``."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from selfvae.nn.conv import MIN_ROWS, conv2d, weight_grad
from selfvae.nn.layers import WNConv2d

CL = torch.channels_last


@pytest.mark.parametrize(("k", "padding", "size"), [(3, 1, (6, 5)), (3, 0, (7, 6)), (5, 2, (5, 8)), (1, 0, (4, 4))])
def test_weight_grad_is_the_convolutions_in_float64(k: int, padding: int, size: tuple[int, int]) -> None:
    torch.manual_seed(0)
    x = torch.randn(3, 5, *size, dtype=torch.float64).contiguous(memory_format=CL).requires_grad_()
    w = torch.randn(7, 5, k, k, dtype=torch.float64, requires_grad=True)
    y = F.conv2d(x, w, padding=padding)
    grad = torch.randn_like(y).contiguous(memory_format=CL)
    y.backward(grad)
    got = weight_grad(x.detach(), grad, k, padding)
    assert got.shape == w.shape
    torch.testing.assert_close(got, w.grad, rtol=1e-12, atol=1e-12)


def test_conv2d_values_and_all_gradients_match_f_conv2d() -> None:
    torch.manual_seed(1)
    x = torch.randn(4, 24, 9, 10).contiguous(memory_format=CL)
    w = torch.randn(MIN_ROWS // 9, 24, 3, 3) * 0.1
    b = torch.randn(MIN_ROWS // 9)
    grads = []
    for fn in (F.conv2d, conv2d):
        xs, ws, bs = (t.clone().requires_grad_() for t in (x, w, b))
        y = fn(xs, ws, bs, padding=1)
        if fn is conv2d:  # the matrix-product backward is the one taken
            assert type(y.grad_fn).__name__ == "_Conv2dGemmGradBackward"
        (y * torch.linspace(-1, 1, y.numel()).view_as(y)).sum().backward()
        grads.append((y.detach(), xs.grad, ws.grad, bs.grad))
    for ref, got in zip(*grads):
        torch.testing.assert_close(got, ref, rtol=1e-4, atol=1e-5)


def test_thin_products_and_inference_stay_f_conv2d() -> None:
    x = torch.randn(2, 4, 6, 6).contiguous(memory_format=CL)
    thin = torch.randn(MIN_ROWS // 9 - 1, 4, 3, 3, requires_grad=True)
    assert type(conv2d(x, thin, None, 1).grad_fn).__name__ == "ConvolutionBackward0"
    wide = torch.randn(MIN_ROWS // 9, 4, 3, 3, requires_grad=True)
    with torch.no_grad():
        assert conv2d(x, wide, None, 1).grad_fn is None
    assert type(conv2d(x.contiguous(), wide, None, 1).grad_fn).__name__ == "ConvolutionBackward0"


def test_weight_normed_layer_trains_through_it_like_f_conv2d() -> None:
    """A :class:`WNConv2d` wide enough takes the matrix-product path; its ``g``, ``v``, ``b`` gradients match the
    same layer through ``F.conv2d``."""
    torch.manual_seed(2)
    layer = WNConv2d(8, 64, 3)
    x = torch.randn(2, 8, 5, 5).contiguous(memory_format=CL)
    layer(x).pow(2).sum().backward()
    ours = [p.grad.clone() for p in (layer.v, layer.g, layer.b)]
    layer.zero_grad()
    F.conv2d(x, layer.weight(), layer.b, padding=1).pow(2).sum().backward()
    for got, ref in zip(ours, (layer.v.grad, layer.g.grad, layer.b.grad)):  # float32 sums in another order
        torch.testing.assert_close(got, ref, rtol=1e-4, atol=1e-5 * ref.abs().max().item())
