"""Attributions of a classifier's logit to its input pixels: the verb ``attribute``.

``attribute(model, inputs, target, method, **options)`` returns a tensor shaped like
``inputs``: the attribution of the target logit (no softmax) to every input element.
The four methods follow Captum 0.9's definitions exactly (Captum is a test-time
reference only; nothing here imports it):

* ``"saliency"`` — Simonyan, Vedaldi, Zisserman 2013, "Deep Inside Convolutional
  Networks": ``|d logit_t / d x|`` (``abs=False``: the signed gradient).
* ``"input_x_gradient"`` — Shrikumar, Greenside, Shcherbina, Kundaje 2016, "Not Just a
  Black Box": ``x * d logit_t / d x``.
* ``"integrated_gradients"`` — Sundararajan, Taly, Yan 2017, "Axiomatic Attribution
  for Deep Networks": ``(x - x') * integral_0^1 d logit_t / d x (x' + a (x - x')) da``,
  with Captum's quadrature rules (:data:`IG_METHODS`).
* ``"guided_backprop"`` — Springenberg, Dosovitskiy, Brox, Riedmiller 2014, "Striving
  for Simplicity": the gradient through the model's guided twin, see
  :mod:`engine.xai.guided`: ``rule="captum"`` is Captum's ``GuidedBackprop`` exactly,
  ``rule="textbook"`` the per-activation rule generalized to smooth rectifiers such as
  SiLU; ``auto`` (default) is captum on ReLU networks, textbook otherwise.

Batching: saliency, input × gradient and guided backprop are ONE forward and ONE
backward for the whole batch; integrated gradients is one batch of ``n_steps * N``
interpolated inputs, run ``internal_batch_size`` rows at a time. Gradients are taken
with ``torch.autograd.grad`` with respect to the inputs only, so parameters' ``.grad``
are never touched, and the caller's tensor is neither modified nor attached to a graph.
Attributions do not depend on the batch they are computed in as long as the model is
in eval mode (BatchNorm in training mode mixes samples: a warning is logged).
"""

from __future__ import annotations

import functools
import logging
import numbers
import weakref
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from engine.registry import Registry
from engine.xai.errors import (
    InvalidTargetError,
    InvalidXAIOptionError,
    NotAnImageBatchError,
    TargetOutOfRangeError,
    UnexpectedModelOutputError,
    UnknownXAIMethodError,
)
from engine.xai.guided import guided_model
from engine.xai.rules import from_gradient
from kernels.integrated_gradients import ig_accumulate, ig_interpolate

log = logging.getLogger(__name__)

__all__ = [
    "DEFAULT_IG_METHOD",
    "DEFAULT_N_STEPS",
    "IG_METHODS",
    "METHODS",
    "Target",
    "attribute",
    "integration_nodes",
]

Target = int | Tensor
"""A class index for every sample, or an integer tensor of shape (N,): one per sample."""

DEFAULT_N_STEPS = 50
"""Integrated gradients: number of interpolation steps (Captum's default)."""

DEFAULT_IG_METHOD = "gausslegendre"
"""Integrated gradients: quadrature rule (Captum's default)."""

IG_METHODS = (
    "gausslegendre",
    "riemann_left",
    "riemann_right",
    "riemann_middle",
    "riemann_trapezoid",
)
"""Integrated gradients: the quadrature rules, as named by Captum."""

_Method = Callable[..., Tensor]
_METHODS: Registry[str, _Method] = Registry(
    "XAI method", unknown=lambda method, known: UnknownXAIMethodError(method, tuple(known))
)
"""Method name -> ``fn(model, inputs, target, **options)``, in the paper's order."""
_method = _METHODS.register


# --- the verb --------------------------------------------------------------------------


def attribute(
    model: nn.Module, inputs: Tensor, target: Target, method: str, **options: Any
) -> Tensor:
    """Attribution of ``model``'s ``target`` logit to each element of ``inputs``.

    Args:
        model: a classifier taking float NCHW images (in [0, 1]; it normalizes inside)
            and returning logits ``(N, C)``. Put it in eval mode. It is not modified.
        inputs: float tensor ``(N, C, H, W)``; may require grad or be part of a graph.
        target: class index for all samples (int) or per sample (integer tensor ``(N,)``).
        method: one of :data:`METHODS`.
        **options: per method —

            * ``saliency``: ``abs: bool = True`` (False: signed gradient).
            * ``integrated_gradients``: ``baselines: Tensor | float | None = None``
              (None: zeros; a tensor broadcastable to ``inputs``), ``n_steps: int = 50``,
              ``ig_method: str = "gausslegendre"`` (one of :data:`IG_METHODS`; Captum
              calls this ``method``), ``internal_batch_size: int | None = None`` (rows
              of the ``n_steps * N`` interpolation batch per forward; None: all at once).
            * ``guided_backprop``: ``rule: str = "auto"`` (one of
              :data:`engine.xai.GUIDED_RULES`; ``captum`` is Captum's ``GuidedBackprop``
              exactly).
            * ``input_x_gradient``: none.

    Returns:
        Detached attributions, same shape, dtype and device as ``inputs``.

    Raises:
        UnknownXAIMethodError: ``method`` is not in :data:`METHODS`.
        NotAnImageBatchError: ``inputs`` is not a 4-D floating-point tensor.
        InvalidTargetError: ``target`` has the wrong type or shape.
        TargetOutOfRangeError: a target is not in ``[0, C)``.
        UnexpectedModelOutputError: the model does not return ``(N, C)`` logits.
        InvalidXAIOptionError: an option value is invalid.
        TypeError: an option that ``method`` does not take.
    """
    fn = _METHODS.get(method)
    check_image_batch("inputs", inputs)
    if getattr(model, "training", False):
        _warn_training_once(model)
    # Callers may run under no_grad or inference_mode: gradients are needed here.
    with torch.inference_mode(False), torch.enable_grad():
        targets = target_vector(target, inputs.shape[0], inputs.device)
        if inputs.shape[0] == 0:
            return torch.zeros_like(inputs)
        return fn(model, inputs, targets, **options).detach()


# --- the methods -----------------------------------------------------------------------


@_method("saliency")
def _saliency(model: nn.Module, inputs: Tensor, target: Tensor, *, abs: bool = True) -> Tensor:
    return from_gradient("saliency", inputs, _logit_gradient(model, inputs, target), abs=abs)


@_method("input_x_gradient")
def _input_x_gradient(model: nn.Module, inputs: Tensor, target: Tensor) -> Tensor:
    grad = _logit_gradient(model, inputs, target)
    return from_gradient("input_x_gradient", inputs.detach(), grad)


@_method("integrated_gradients")
def _integrated_gradients(
    model: nn.Module,
    inputs: Tensor,
    target: Tensor,
    *,
    baselines: Tensor | float | None = None,
    n_steps: int = DEFAULT_N_STEPS,
    ig_method: str = DEFAULT_IG_METHOD,
    internal_batch_size: int | None = None,
) -> Tensor:
    alphas, weights = integration_nodes(ig_method, n_steps)
    x = inputs.detach()
    base = _baseline_tensor(baselines, x)
    diff = x - base
    n = x.shape[0]
    rows = n_steps * n  # row r is step r // n of sample r % n (Captum's order)
    if internal_batch_size is None:
        chunk = rows
    elif isinstance(internal_batch_size, int) and internal_batch_size >= 1:
        chunk = internal_batch_size
    else:
        raise InvalidXAIOptionError(
            "internal_batch_size", internal_batch_size, "a positive int (rows per forward) or None"
        )
    alpha = torch.tensor(alphas, dtype=x.dtype, device=x.device)
    weight = torch.tensor(weights, dtype=x.dtype, device=x.device)
    total = torch.zeros(x.shape, dtype=x.dtype, device=x.device)  # contiguous
    # Interpolation and the weighted sum: fused Triton kernels on CUDA, their PyTorch
    # references elsewhere (kernels.integrated_gradients); the last chunk also multiplies
    # the sums by (x - x'), giving the attributions in place.
    for start in range(0, rows, chunk):
        stop = min(start + chunk, rows)
        scaled = ig_interpolate(base, diff, alpha, start, stop)
        sample = torch.arange(start, stop, device=x.device) % n
        grads = _logit_gradient(model, scaled, target[sample])
        ig_accumulate(total, grads, weight, start, diff if stop == rows else None)
    return total


@_method("guided_backprop")
def _guided_backprop(
    model: nn.Module, inputs: Tensor, target: Tensor, *, rule: str = "auto"
) -> Tensor:
    return _logit_gradient(guided_model(model, rule=rule), inputs, target)


METHODS: tuple[str, ...] = tuple(_METHODS)
"""Names of the attribution methods, in the paper's order."""


# --- helpers ---------------------------------------------------------------------------


@functools.lru_cache(maxsize=64)
def integration_nodes(ig_method: str, n_steps: int) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """``(alphas, weights)`` of Captum's quadrature rule ``ig_method`` on [0, 1].

    Gauss-Legendre: numpy's ``leggauss`` nodes and weights mapped from [-1, 1] to
    [0, 1]. Riemann rules: weights ``1/n`` at alphas ``k/n`` (left), ``(k+1)/n`` (right),
    ``(k+1/2)/n`` (middle); "trapezoid" puts alphas at ``k/(n-1)`` and halves the first and
    last weights of ``1/n`` — so its weights sum to ``(n-1)/n``, as Captum's do.
    """
    if ig_method not in IG_METHODS:
        raise InvalidXAIOptionError("ig_method", ig_method, f"one of {', '.join(IG_METHODS)}")
    least = 1 if ig_method == "gausslegendre" else 2  # Captum's limits
    if isinstance(n_steps, bool) or not isinstance(n_steps, int) or n_steps < least:
        raise InvalidXAIOptionError("n_steps", n_steps, f"an int >= {least} for {ig_method}")
    if ig_method == "gausslegendre":
        nodes, w = np.polynomial.legendre.leggauss(n_steps)
        return tuple((0.5 * (1 + nodes)).tolist()), tuple((0.5 * w).tolist())
    k = np.arange(n_steps, dtype=np.float64)
    weights = np.full(n_steps, 1.0 / n_steps)
    if ig_method == "riemann_left":
        alphas = k / n_steps
    elif ig_method == "riemann_right":
        alphas = (k + 1) / n_steps
    elif ig_method == "riemann_middle":
        alphas = (k + 0.5) / n_steps
    else:  # riemann_trapezoid
        alphas = k / (n_steps - 1)
        weights[0] /= 2
        weights[-1] /= 2
    return tuple(alphas.tolist()), tuple(weights.tolist())


def check_image_batch(what: str, value: object) -> None:
    """Raise :class:`NotAnImageBatchError` unless ``value`` is a 4-D float tensor."""
    if not (isinstance(value, Tensor) and value.dim() == 4 and value.is_floating_point()):
        raise NotAnImageBatchError(what, value)


def target_vector(target: Target, batch: int, device: torch.device) -> Tensor:
    """``target`` as a LongTensor ``(batch,)`` on ``device`` (range checked later)."""
    if isinstance(target, numbers.Integral) and not isinstance(target, bool):
        return torch.full((batch,), int(target), dtype=torch.long, device=device)
    if not isinstance(target, Tensor):
        raise InvalidTargetError(target, batch, f"a {type(target).__name__} is not a class index")
    if target.is_floating_point() or target.is_complex() or target.dtype == torch.bool:
        raise InvalidTargetError(target, batch, f"dtype {target.dtype} is not an integer dtype")
    if target.dim() == 0:
        return target.to(device=device, dtype=torch.long).expand(batch)
    if tuple(target.shape) != (batch,):
        raise InvalidTargetError(target, batch, f"shape {tuple(target.shape)} is not ({batch},)")
    return target.to(device=device, dtype=torch.long)


def _logit_gradient(model: nn.Module, inputs: Tensor, target: Tensor) -> Tensor:
    """``d logits[n, target[n]] / d inputs[n]`` for every n: one forward, one backward."""
    x = inputs.detach()
    if x.is_inference():
        x = x.clone()
    x.requires_grad_(True)
    logits = model(x)
    if not isinstance(logits, Tensor) or logits.dim() != 2 or logits.shape[0] != x.shape[0]:
        shape = tuple(logits.shape) if isinstance(logits, Tensor) else ()
        raise UnexpectedModelOutputError(shape, x.shape[0])
    num_classes = logits.shape[1]
    bad = (target < 0) | (target >= num_classes)
    if bool(bad.any()):
        raise TargetOutOfRangeError(target[bad].unique().tolist(), x.shape[0], num_classes)
    # Samples are independent, so the gradient of the sum is each sample's gradient.
    selected = logits.gather(1, target[:, None]).sum()
    (grad,) = torch.autograd.grad(selected, x)
    return grad


def _baseline_tensor(baselines: Tensor | float | None, x: Tensor) -> Tensor:
    """The integrated-gradients baseline, broadcast to the shape of ``x``."""
    if baselines is None:
        return torch.zeros_like(x)
    if isinstance(baselines, numbers.Real) and not isinstance(baselines, bool):
        return torch.full_like(x, float(baselines))
    if isinstance(baselines, Tensor):
        try:
            return torch.broadcast_to(baselines.detach().to(x), x.shape)
        except RuntimeError:
            pass
    raise InvalidXAIOptionError(
        "baselines", baselines, f"None, a number, or a tensor broadcastable to {tuple(x.shape)}"
    )


_warned_training: weakref.WeakSet[nn.Module] = weakref.WeakSet()


def _warn_training_once(model: nn.Module) -> None:
    if model not in _warned_training:
        _warned_training.add(model)
        log.warning(
            "xai: %s is in training mode, so BatchNorm/Dropout make attributions "
            "depend on the batch; call model.eval() first",
            type(model).__name__,
        )
