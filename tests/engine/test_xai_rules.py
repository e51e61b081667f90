"""The one table of gradient rules, shared by attribute(), the differentiable path and
the pipeline's fused step."""

from __future__ import annotations

import pytest
import torch

from engine.pipeline import FUSABLE_METHODS
from engine.xai.rules import GRADIENT_METHODS, from_gradient


def test_each_one_backward_method_maps_the_gradient_as_its_paper_says():
    g = torch.Generator().manual_seed(0)
    x, grad = torch.rand(2, 3, 4, 4, generator=g), torch.randn(2, 3, 4, 4, generator=g)
    assert torch.equal(from_gradient("saliency", x, grad), grad.abs())
    assert torch.equal(from_gradient("saliency", x, grad, abs=False), grad)
    assert torch.equal(from_gradient("input_x_gradient", x, grad), x * grad)
    assert torch.equal(from_gradient("guided_backprop", x, grad), grad)
    assert set(FUSABLE_METHODS) == set(GRADIENT_METHODS)


def test_the_rule_keeps_autograd_history_for_the_differentiable_path():
    x = torch.rand(1, 3, 2, 2, requires_grad=True)
    grad = torch.randn(1, 3, 2, 2)
    from_gradient("input_x_gradient", x, grad).sum().backward()
    assert torch.equal(x.grad, grad)


def test_methods_that_are_not_one_backward_are_refused():
    with pytest.raises(ValueError, match="integrated_gradients"):
        from_gradient("integrated_gradients", torch.zeros(1), torch.zeros(1))
