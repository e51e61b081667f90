"""engine.xai.differentiable: the engine's maps, with an exact (or smoothed) second order."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from engine.xai import METHODS, attribute, prepare_map
from engine.xai.differentiable import attribute_differentiable, prepare_map_differentiable

pytestmark = pytest.mark.numerics  # also run as an AVX2-only CPU would (Makefile)

OPTIONS = {"integrated_gradients": {"n_steps": 6}}


def tiny_cnn(act: type[nn.Module], dtype: torch.dtype = torch.float32) -> nn.Module:
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),
        act(),
        nn.MaxPool2d(2),
        nn.Conv2d(8, 8, 3, padding=1),
        act(),
        nn.AdaptiveAvgPool2d(2),
        nn.Flatten(),
        nn.Linear(32, 16),
        act(),
        nn.Linear(16, 2),
    )
    return net.to(dtype).eval()


def images(dtype: torch.dtype = torch.float32, n: int = 3) -> torch.Tensor:
    return torch.rand(n, 3, 12, 12, generator=torch.Generator().manual_seed(1), dtype=dtype)


def directional(fn, x: torch.Tensor, v: torch.Tensor, h: float = 1e-6) -> tuple[float, float]:
    """(autograd, central finite difference) derivative of scalar ``fn`` at x along v."""
    xg = x.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(fn(xg), xg)
    fd = (fn(x + h * v) - fn(x - h * v)) / (2 * h)
    return (grad * v).sum().item(), fd.item()


@pytest.mark.parametrize("act", [nn.ReLU, nn.SiLU])
@pytest.mark.parametrize("method", METHODS)
def test_attributions_equal_the_engines(method, act):
    model, x = tiny_cnn(act), images()
    expected = attribute(model, x, 0, method, **OPTIONS.get(method, {}))
    for beta in (None, 5.0):  # smoothing changes the second order only, never the value
        got = attribute_differentiable(
            model, x, 0, method, smooth_beta=beta, **OPTIONS.get(method, {})
        )
        assert got.requires_grad
        torch.testing.assert_close(
            got.detach(), expected, rtol=1e-5, atol=1e-6 * expected.abs().max().item()
        )


@pytest.mark.parametrize("size", [12, 7, 20])
@pytest.mark.parametrize("method", METHODS)
def test_map_equals_prepare_map_and_has_the_straight_through_gradient(method, size):
    a = torch.randn(3, 3, 12, 12, generator=torch.Generator().manual_seed(2))
    a = a.abs() if method == "saliency" else a
    assert torch.equal(prepare_map_differentiable(a, method, size), prepare_map(a, method, size))
    one = torch.randn(2, 1, 12, 12, generator=torch.Generator().manual_seed(3))
    assert torch.equal(
        prepare_map_differentiable(one, method, size), prepare_map(one, method, size)
    )
    weights = torch.randn(3, 3, size, size, generator=torch.Generator().manual_seed(4))
    grads = []
    for quantize in (True, False):
        x = a.clone().requires_grad_(True)
        (g,) = torch.autograd.grad(
            (prepare_map_differentiable(x, method, size, quantize=quantize) * weights).sum(), x
        )
        grads.append(g)
    assert grads[0].abs().sum() > 0
    torch.testing.assert_close(grads[0], grads[1])  # quantization is straight-through


@pytest.mark.parametrize("method", METHODS)
def test_second_order_is_exact_on_smooth_networks(method):
    """Double backprop through the map equals finite differences of the map (SiLU net).

    For guided backprop this needs the activations' true derivative on the forward path
    and the guided rule on the explanation's backward path only.
    """
    model, x = tiny_cnn(nn.SiLU, torch.float64), images(torch.float64)
    w = torch.randn(x.shape, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    v = torch.randn(x.shape, generator=torch.Generator().manual_seed(6), dtype=torch.float64)

    def loss(inputs: torch.Tensor) -> torch.Tensor:
        return (
            attribute_differentiable(model, inputs, 0, method, **OPTIONS.get(method, {})) * w
        ).sum()

    exact, fd = directional(loss, x, v)
    assert fd != 0
    assert exact == pytest.approx(fd, rel=1e-4)


@pytest.mark.parametrize("method", ["saliency", "guided_backprop"])
def test_relu_maps_are_flat_unless_smoothed(method):
    """A ReLU net's gradient maps are locally constant: zero second order; smooth_beta
    gives the softplus derivative instead, without changing the map."""
    model, x = tiny_cnn(nn.ReLU), images()
    w = torch.randn(x.shape, generator=torch.Generator().manual_seed(7))

    def grad_of_map(beta: float | None) -> torch.Tensor:
        xg = x.clone().requires_grad_(True)
        m = attribute_differentiable(model, xg, 0, method, smooth_beta=beta)
        (g,) = torch.autograd.grad((m * w).sum(), xg)
        return g

    assert torch.count_nonzero(grad_of_map(None)) == 0
    assert torch.count_nonzero(grad_of_map(5.0)) > x.numel() // 2


def test_target_may_differ_per_sample_and_inputs_need_not_require_grad():
    model, x = tiny_cnn(nn.SiLU), images()
    target = torch.tensor([0, 1, 0])
    with torch.no_grad():
        got = attribute_differentiable(model, x, target, "saliency")
    torch.testing.assert_close(got.detach(), attribute(model, x, target, "saliency"))
