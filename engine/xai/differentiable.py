"""XAI maps that can be differentiated again: for attackers who optimize through them.

:func:`attribute_differentiable` computes the same attributions as
:func:`engine.xai.attribute` (saliency, input × gradient, integrated gradients, guided
backprop) but keeps the graph (``create_graph=True``), so a loss on the map can be
backpropagated to the input image (double backpropagation). :func:`prepare_map_differentiable`
is :func:`engine.xai.prepare_map` with the same values and a gradient. Together they let
an adaptive white-box attacker optimize through the whole defended pipeline
(``training.attacks.adaptive``).

Second-order details, which decide whether such an attack can work at all:

* **Guided backprop.** The engine's guided twin (:mod:`engine.xai.guided`) computes
  ``φ'(x)·g`` with ATen backward kernels; some of them have no derivative
  (``silu_backward``), so it cannot be differentiated twice. And even where it can, a
  module whose backward is always the guided rule gives the wrong second order: when a
  loss on the map is differentiated, autograd also walks back through the *forward*
  pass (the map depends on the pre-activations, which depend on the input through the
  activations), and there the activation's true derivative applies. Here every guided
  activation is a custom ``autograd.Function`` whose backward is the guided rule
  ``relu(φ'(x)·g)`` only while the explanation's own backward pass runs
  (:attr:`RuleActivation.explaining`), and ``φ'(x)·g`` otherwise, both built from
  differentiable autograd operations. The result is the exact second order of guided
  backprop (tested against finite differences). The set of guided activation types is
  the engine's (:data:`engine.xai.GUIDED_ACTIVATIONS`; ``relu_only=True``: ``nn.ReLU``).
* **ReLU networks.** A ReLU network is piecewise linear: every gradient map is locally
  constant in the input, its exact derivative is zero almost everywhere, and an
  attack through the map gets no signal. ``smooth_beta=β`` replaces, *in the second
  order only*, the ReLU step ``1[x > 0]`` by ``sigmoid(βx)`` (the derivative of
  softplus_β, the surrogate of Dombrowski et al., "Explanations can be manipulated
  and geometry is to blame", NeurIPS 2019) in the explanation's backward rule: the
  map's value is unchanged (a straight-through term ``s − s.detach()`` adds exactly
  zero), while its derivative with respect to the pre-activations is softplus_β's
  second derivative. The forward path keeps ReLU's own derivative. β → ∞ recovers the
  exact (zero) derivative.
* **prepare_map.** The per-sample quantile scale is treated as a constant
  (``detach``): it is an order statistic, whose gradient would flow to a single
  pixel. The uint8 quantization is straight-through: the value is exactly the
  engine's quantized map, the gradient that of the unquantized one
  (``quantize=False``: no quantization at all).

Only ``nn.Module`` activations can be replaced (as in :mod:`engine.xai.guided`);
activations called functionally keep their plain autograd derivatives.
"""

from __future__ import annotations

import numbers
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

from engine.registry import Registry
from engine.xai import (
    DEFAULT_IG_METHOD,
    DEFAULT_N_STEPS,
    DEFAULT_QUANTILE,
    GUIDED_ACTIVATIONS,
    METHODS,
    UNSIGNED_METHODS,
    InvalidXAIOptionError,
    NotAnImageBatchError,
    TargetOutOfRangeError,
    UnexpectedModelOutputError,
    UnknownXAIMethodError,
    integration_nodes,
)
from engine.xai.attribute import target_vector
from engine.xai.rules import from_gradient
from engine.xai.twin import build_twin, unwrap
from kernels.xai_map import map_levels, map_scale, map_values

__all__ = ["attribute_differentiable", "prepare_map_differentiable"]


# --- the verbs -------------------------------------------------------------------------------


def attribute_differentiable(
    model: nn.Module,
    inputs: Tensor,
    target: int | Tensor,
    method: str,
    *,
    smooth_beta: float | None = None,
    **options: Any,
) -> Tensor:
    """:func:`engine.xai.attribute`'s attribution, differentiable with respect to ``inputs``.

    Args:
        model: a classifier of [0, 1] images returning logits ``(N, C)``, in eval mode.
        inputs: ``(N, C, H, W)``. If it requires grad (an attack's variable), the result
            is a function of it; otherwise of a detached copy.
        target: class index for all samples, or an integer tensor ``(N,)``.
        method: one of :data:`engine.xai.METHODS`.
        smooth_beta: None (exact second order) or β > 0: the second order of every
            ``nn.ReLU`` follows softplus_β (module docstring); values are unchanged.
        **options: as :func:`engine.xai.attribute`: ``abs`` (saliency), ``relu_only``
            (guided backprop), ``baselines``, ``n_steps``, ``ig_method``
            (integrated gradients; all interpolation steps in one batch).

    Returns:
        Attributions shaped like ``inputs``, with a graph (``create_graph=True``).
    """
    fn = _METHODS.get(method)
    if not (isinstance(inputs, Tensor) and inputs.dim() == 4 and inputs.is_floating_point()):
        raise NotAnImageBatchError("inputs", inputs)
    if smooth_beta is not None and not smooth_beta > 0:
        raise InvalidXAIOptionError("smooth_beta", smooth_beta, "None or a number > 0")
    x = inputs if inputs.requires_grad else inputs.detach().requires_grad_(True)
    targets = target_vector(target, x.shape[0], x.device)
    with torch.enable_grad():
        return fn(model, x, targets, smooth_beta, **options)


def prepare_map_differentiable(
    attributions: Tensor,
    method: str,
    size: int,
    quantile: float = DEFAULT_QUANTILE,
    *,
    signed: bool | None = None,
    quantize: bool = True,
) -> Tensor:
    """:func:`engine.xai.prepare_map` with a gradient (module docstring).

    With ``quantize=True`` the value equals ``prepare_map``'s exactly; the quantile
    scale is a constant for the gradient and the quantization is straight-through.
    """
    if not isinstance(method, str) or method not in METHODS:
        raise UnknownXAIMethodError(method, METHODS)
    if not (
        isinstance(attributions, Tensor)
        and attributions.dim() == 4
        and attributions.is_floating_point()
    ):
        raise NotAnImageBatchError("attributions", attributions)
    if attributions.shape[1] not in (1, 3):
        raise InvalidXAIOptionError("attributions channels", attributions.shape[1], "1 or 3")
    if signed is None:
        signed = method not in UNSIGNED_METHODS
    big = torch.finfo(torch.float32).max
    a = torch.nan_to_num(attributions.to(torch.float32), nan=0.0, posinf=big, neginf=-big)
    if a.shape[0] == 0:
        return a.new_zeros(0, 3, size, size)
    # The engine's own rule (kernels.xai_map), with the scale held constant.
    m = map_values(a, map_scale(a.detach(), float(quantile)), signed, size)
    if not quantize:
        return m
    levels = map_levels(m.detach()).to(torch.float32) / 255
    return levels + (m - m.detach())  # value: the quantized map; gradient: m's


# --- the methods -----------------------------------------------------------------------------

_Method = Callable[..., Tensor]
_METHODS: Registry[str, _Method] = Registry(
    "differentiable XAI method",
    unknown=lambda method, known: UnknownXAIMethodError(method, tuple(known)),
)


@_METHODS.register("saliency")
def _saliency(
    model: nn.Module, x: Tensor, target: Tensor, beta: float | None, *, abs: bool = True
) -> Tensor:
    grad = _logit_gradient(_twin(model, guided=False, beta=beta), x, target)
    return from_gradient("saliency", x, grad, abs=abs)


@_METHODS.register("input_x_gradient")
def _input_x_gradient(model: nn.Module, x: Tensor, target: Tensor, beta: float | None) -> Tensor:
    grad = _logit_gradient(_twin(model, guided=False, beta=beta), x, target)
    return from_gradient("input_x_gradient", x, grad)


@_METHODS.register("integrated_gradients")
def _integrated_gradients(
    model: nn.Module,
    x: Tensor,
    target: Tensor,
    beta: float | None,
    *,
    baselines: Tensor | float | None = None,
    n_steps: int = DEFAULT_N_STEPS,
    ig_method: str = DEFAULT_IG_METHOD,
) -> Tensor:
    alphas, weights = integration_nodes(ig_method, n_steps)
    if baselines is None:
        base = torch.zeros_like(x)
    elif isinstance(baselines, numbers.Real) and not isinstance(baselines, bool):
        base = torch.full_like(x, float(baselines))
    elif isinstance(baselines, Tensor):
        base = torch.broadcast_to(baselines.detach().to(x), x.shape)
    else:
        raise InvalidXAIOptionError("baselines", baselines, "None, a number or a tensor")
    alpha = torch.tensor(alphas, dtype=x.dtype, device=x.device).view(-1, 1, 1, 1, 1)
    weight = torch.tensor(weights, dtype=x.dtype, device=x.device).view(-1, 1, 1, 1, 1)
    diff = x - base
    scaled = (base + alpha * diff).flatten(0, 1)  # row s * N + i: step s of sample i
    twin = _twin(model, guided=False, beta=beta)
    grads = _logit_gradient(twin, scaled, target.repeat(n_steps))
    total = (grads.view(n_steps, *x.shape) * weight).sum(dim=0)
    return total * diff


@_METHODS.register("guided_backprop")
def _guided_backprop(
    model: nn.Module,
    x: Tensor,
    target: Tensor,
    beta: float | None,
    *,
    relu_only: bool = False,
) -> Tensor:
    twin = _twin(model, guided=True, beta=beta, relu_only=relu_only)
    return from_gradient("guided_backprop", x, _logit_gradient(twin, x, target))


# --- activations with a rule for the explanation's backward pass -----------------------------


class _RuleFunction(torch.autograd.Function):
    """Forward: the activation module. Backward: the rule while the explanation's own
    backward pass runs (``rule.explaining``), the activation's true derivative otherwise.

    Both are built from autograd operations, so they can be differentiated again. The
    switch is what makes the second order exact: differentiating the map, autograd also
    walks back through the forward pass (the map depends on the pre-activations, which
    depend on the input through the activations), and there the activation's true
    derivative applies, not the guided rule.
    """

    @staticmethod
    def forward(ctx: Any, x: Tensor, rule: RuleActivation) -> Tensor:
        ctx.save_for_backward(x)
        ctx.rule = rule
        return rule.act(x.clone() if getattr(rule.act, "inplace", False) else x)

    @staticmethod
    def backward(ctx: Any, grad_out: Tensor) -> tuple[Tensor, None]:
        (x,) = ctx.saved_tensors
        rule: RuleActivation = ctx.rule
        if rule.explaining:
            return rule.local_grad(x, grad_out), None
        return rule.true_grad(x, grad_out), None


class RuleActivation(nn.Module):
    """An activation whose backward follows :class:`_RuleFunction`: guided
    (``relu(φ'(x)·g)``) and/or with the smooth second order (``beta``) while
    :attr:`explaining`, plain ``φ'(x)·g`` otherwise."""

    def __init__(self, act: nn.Module, guided: bool, beta: float | None) -> None:
        super().__init__()
        self.act, self.guided, self.beta = act, guided, beta
        self.explaining = False
        self.training = act.training

    def forward(self, x: Tensor) -> Tensor:
        return _RuleFunction.apply(x, self)

    def true_grad(self, x: Tensor, grad_out: Tensor) -> Tensor:
        """``φ'(x)·g`` by autograd (differentiable when grad mode is on)."""
        create_graph = torch.is_grad_enabled()  # True inside a create_graph backward
        with torch.enable_grad():
            xr = x if x.requires_grad else x.detach().requires_grad_(True)
            y = self.act(xr.clone() if getattr(self.act, "inplace", False) else xr)
            (local,) = torch.autograd.grad(y, xr, grad_out, create_graph=create_graph)
        return local

    def local_grad(self, x: Tensor, grad_out: Tensor) -> Tensor:
        """The explanation's rule: ``φ'(x)·g`` (+ the smooth straight-through term), and
        its relu when guided."""
        local = self.true_grad(x, grad_out)
        if self.beta is not None and isinstance(self.act, nn.ReLU):
            with torch.enable_grad():
                soft = torch.sigmoid(self.beta * x)  # d softplus_β / dx
                local = local + grad_out * (soft - soft.detach())  # adds exactly 0
        return torch.relu(local) if self.guided else local

    def extra_repr(self) -> str:
        return f"guided={self.guided}, beta={self.beta}"


def _twin(
    model: nn.Module, *, guided: bool, beta: float | None, relu_only: bool = False
) -> nn.Module:
    """``model`` with its activations replaced by :class:`RuleActivation` s, sharing every
    parameter and buffer (shallow copies on the path to each replaced module). Built per
    call, so concurrent calls never share a rule's :attr:`~RuleActivation.explaining`.

    Replaced: guided — the engine's guided activation types (``relu_only``: nn.ReLU);
    not guided — ``nn.ReLU`` when ``beta`` is set; otherwise nothing (``model`` itself).
    """
    if guided:
        kinds: tuple[type[nn.Module], ...] = (nn.ReLU,) if relu_only else tuple(GUIDED_ACTIVATIONS)
    elif beta is not None:
        kinds = (nn.ReLU,)
    else:
        return model

    def rule_for(module: nn.Module) -> nn.Module | None:
        return RuleActivation(module, guided, beta) if isinstance(module, kinds) else None

    return build_twin(unwrap(model), rule_for).module


# --- helpers ---------------------------------------------------------------------------------


def _logit_gradient(model: nn.Module, inputs: Tensor, target: Tensor) -> Tensor:
    """``d logits[n, target[n]] / d inputs[n]`` with ``create_graph=True``; the rules of
    the model's :class:`RuleActivation` s apply during this backward pass only."""
    logits = model(inputs)
    if not isinstance(logits, Tensor) or logits.dim() != 2 or logits.shape[0] != len(inputs):
        shape = tuple(logits.shape) if isinstance(logits, Tensor) else ()
        raise UnexpectedModelOutputError(shape, len(inputs))
    bad = (target < 0) | (target >= logits.shape[1])
    if bool(bad.any()):
        raise TargetOutOfRangeError(target[bad].unique().tolist(), len(inputs), logits.shape[1])
    selected = logits.gather(1, target[:, None]).sum()
    rules = [m for m in model.modules() if isinstance(m, RuleActivation)]
    for rule in rules:
        rule.explaining = True
    try:
        (grad,) = torch.autograd.grad(selected, inputs, create_graph=True)
    finally:
        for rule in rules:
            rule.explaining = False
    return grad
