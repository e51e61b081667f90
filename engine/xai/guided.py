"""Guided twins of models: Guided Backpropagation without module hooks.

Guided Backpropagation (Springenberg, Dosovitskiy, Brox, Riedmiller 2014, "Striving for
Simplicity: The All Convolutional Net") backpropagates through every ReLU only the
positive part of the gradient. Two readings of "the gradient" differ on networks with
skip connections, where a ReLU's input tensor also feeds another branch; they are the
:data:`GUIDED_RULES`:

* ``"captum"`` — Captum's ``GuidedBackprop`` (and so the paper's public code): hooks on
  each ``nn.ReLU``'s *input tensor* replace that tensor's **total** gradient ``G`` (the
  ReLU's branch plus every other use of the tensor, the skip included) by ``relu(G)``;
  the ReLU itself backpropagates plainly. Only ``nn.ReLU`` modules are guided: on a
  SiLU network (EfficientNet) the result is the plain gradient. On XceptionNet, whose
  blocks start with a ReLU of the block input that the skip also reads, this differs
  from the textbook rule.
* ``"textbook"`` — the rule applied to each activation's own branch,
  ``grad_in = relu(phi'(x) * grad_out)``, generalized to every elementwise activation
  ``phi`` of the ReLU family and the smooth rectifiers (see
:data:`GUIDED_ACTIVATIONS`: ``nn.ReLU`` incl. ``inplace=True``, ``ReLU6``, ``LeakyReLU``,
``ELU``, ``SiLU``, ``GELU``, ``Mish``, ``Hardswish`` and timm's ``Swish``, ``SwishMe``,
``Mish``, ``MishMe``, ``GELU``, ``GELUTanh``, ``QuickGELU``, ``HardSwish``,
``HardSwishMe``). Gates are never guided: sigmoid gates of squeeze-excite blocks,
softmax and tanh keep their plain gradient. ``phi'(x) * grad_out`` is computed by the
same ATen backward kernel PyTorch's autograd uses for that activation.

``"auto"`` (the default) is ``"captum"`` on a ReLU network (every guided-type activation
is an ``nn.ReLU``: XceptionNet, ResNet), so Detect-ResNet50 weights trained on the paper
code's maps see the same maps, and ``"textbook"`` otherwise: on EfficientNetB4ST
Captum's rule is the plain gradient, which is what the public code of "Detecting
Adversarial Attacks in Deepfake Detectors Using XAI" (Pinhasov et al. 2024) silently
computed; ask for ``"captum"`` to get those maps.

Instead of module hooks, :func:`guided_model` builds a *guided twin*: a structural copy of the
model in which each guided activation module is replaced by a :class:`GuidedActivation`
that calls a custom :class:`torch.autograd.Function` (forward: the original module;
backward: the guided rule). The twin copies only the modules on the path from the root
to an activation (shallow copies whose ``_parameters`` and ``_buffers`` dicts are the
original's own dict objects); every other module is the original object itself. So:

* no weight is copied, the original model is never mutated and no hook is registered;
* in-place updates (optimizer steps, ``load_state_dict``) are seen by the twin, and so
  are tensors swapped into the shared dicts (``.to(device)``, ``.half()``);
* plain attributes (``training``, ...) of copied modules are re-synchronized on every
  :func:`guided_model` call, and the twin is rebuilt when the model's module tree
  changed (a submodule replaced, added or removed);
* the twin is an ordinary ``nn.Module`` with no hooks, so it can be ``torch.compile``-d.

Twins are cached per model in a :class:`weakref.WeakKeyDictionary` (the twin never
references the root model, so the cache does not keep models alive).

Limitations: activations called functionally in ``forward`` (``F.relu(x)``,
``x.sigmoid() * x``) cannot be guided: they keep their plain gradient. When a twin has no
guided activation at all a warning is logged. Modules that keep references to their
submodules outside ``_modules`` (e.g. bound methods stored as attributes) call the
original, unguided submodules. TorchScript modules cannot be twinned; a
``torch.compile``-d model is twinned through its ``_orig_mod``. The ``"captum"`` rule
registers a tensor hook on each ReLU's input inside the twin's forward (a tensor hook,
not a module hook; ``torch.compile`` traces it).
"""

from __future__ import annotations

import logging
import threading
import weakref
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any

import torch
from timm.layers import activations as timm_act
from timm.layers import activations_me as timm_act_me
from torch import Tensor, nn

from engine.config import GUIDED_RULES
from engine.registry import Registry
from engine.xai.errors import InvalidXAIOptionError
from engine.xai.twin import build_twin, sync, unwrap

log = logging.getLogger(__name__)

__all__ = [
    "GUIDED_ACTIVATIONS",
    "GUIDED_RULES",
    "GuidedActivation",
    "guided_activation_count",
    "guided_model",
]


class _GuidedFunction(torch.autograd.Function):
    """Forward: the wrapped activation module. Backward: ``relu(phi'(x) * grad_out)``."""

    @staticmethod
    def forward(ctx: Any, x: Tensor, guide: GuidedActivation) -> Tensor:
        # An in-place module runs on a copy: x is kept for phi'(x), and the output is a
        # new tensor (torch.compile does not trace in-place custom Functions).
        y = guide.act(x.clone() if getattr(guide.act, "inplace", False) else x)
        if y is x:  # internal invariant: in-place modules declare `inplace`
            raise RuntimeError(
                f"{type(guide.act).__name__} modified its input in place "
                "without an `inplace` attribute; it cannot be guided"
            )
        ctx.save_for_backward(x)
        ctx.guide = guide
        return y

    @staticmethod
    def backward(ctx: Any, grad_out: Tensor) -> tuple[Tensor, None]:
        (x,) = ctx.saved_tensors
        return torch.relu(ctx.guide.local_grad(grad_out, x)), None


class GuidedActivation(nn.Module, ABC):
    """An activation module whose backward follows the guided rule.

    Forward calls the wrapped original module ``act`` (outputs are bit-identical; an
    in-place module is run on a copy of its input, so the input itself is not modified).
    Backward returns ``relu(phi'(x) * grad_out)``, where subclasses give
    ``phi'(x) * grad_out`` in :meth:`local_grad`.
    """

    def __init__(self, act: nn.Module) -> None:
        super().__init__()
        self.act = act

    def forward(self, x: Tensor) -> Tensor:
        return _GuidedFunction.apply(x, self)

    @abstractmethod
    def local_grad(self, grad_out: Tensor, x: Tensor) -> Tensor:
        """``phi'(x) * grad_out``: the plain gradient the activation passes back."""

    def extra_repr(self) -> str:
        return "guided"


class CaptumGuidedReLU(GuidedActivation):
    """An ``nn.ReLU`` under Captum's rule: its input tensor's total gradient ``G`` is
    replaced by ``relu(G)`` (a tensor hook); the ReLU itself backpropagates plainly
    (``local_grad``), not through the textbook rule of :class:`GuidedActivation`."""

    def local_grad(self, grad_out: Tensor, x: Tensor) -> Tensor:
        return _aten.threshold_backward(grad_out, x, 0)

    def forward(self, x: Tensor) -> Tensor:
        if x.requires_grad:
            x.register_hook(torch.relu)
        return self.act(x.clone() if self.act.inplace else x)

    def extra_repr(self) -> str:
        return "guided (captum)"


_aten = torch.ops.aten

GUIDED_ACTIVATIONS: Registry[type[nn.Module], type[GuidedActivation]] = Registry(
    "guided activation"
)
"""Activation module type -> its guided replacement (matched along the type's MRO)."""

_guides = GUIDED_ACTIVATIONS.register


@_guides(nn.ReLU)
class GuidedReLU(GuidedActivation):
    def local_grad(self, grad_out: Tensor, x: Tensor) -> Tensor:
        return _aten.threshold_backward(grad_out, x, 0)


@_guides(nn.ReLU6)
class GuidedReLU6(GuidedActivation):
    def local_grad(self, grad_out: Tensor, x: Tensor) -> Tensor:
        return _aten.hardtanh_backward(grad_out, x, self.act.min_val, self.act.max_val)


@_guides(nn.LeakyReLU)
class GuidedLeakyReLU(GuidedActivation):
    def local_grad(self, grad_out: Tensor, x: Tensor) -> Tensor:
        return _aten.leaky_relu_backward(grad_out, x, self.act.negative_slope, False)


@_guides(nn.ELU)
class GuidedELU(GuidedActivation):
    def local_grad(self, grad_out: Tensor, x: Tensor) -> Tensor:
        return _aten.elu_backward(grad_out, self.act.alpha, 1, 1, False, x)


@_guides(nn.SiLU, timm_act.Swish, timm_act_me.SwishMe)
class GuidedSiLU(GuidedActivation):
    def local_grad(self, grad_out: Tensor, x: Tensor) -> Tensor:
        return _aten.silu_backward(grad_out, x)


@_guides(nn.GELU, timm_act.GELU)
class GuidedGELU(GuidedActivation):
    def local_grad(self, grad_out: Tensor, x: Tensor) -> Tensor:
        approximate = getattr(self.act, "approximate", "none")
        return _aten.gelu_backward(grad_out, x, approximate=approximate)


@_guides(timm_act.GELUTanh)
class GuidedGELUTanh(GuidedActivation):
    def local_grad(self, grad_out: Tensor, x: Tensor) -> Tensor:
        return _aten.gelu_backward(grad_out, x, approximate="tanh")


@_guides(timm_act.QuickGELU)
class GuidedQuickGELU(GuidedActivation):
    """timm's ``x * sigmoid(1.702 x)``."""

    def local_grad(self, grad_out: Tensor, x: Tensor) -> Tensor:
        s = torch.sigmoid(1.702 * x)
        return grad_out * (s + 1.702 * x * s * (1 - s))


@_guides(nn.Mish, timm_act.Mish, timm_act_me.MishMe)
class GuidedMish(GuidedActivation):
    def local_grad(self, grad_out: Tensor, x: Tensor) -> Tensor:
        return _aten.mish_backward(grad_out, x)


@_guides(nn.Hardswish, timm_act.HardSwish, timm_act_me.HardSwishMe)
class GuidedHardswish(GuidedActivation):
    def local_grad(self, grad_out: Tensor, x: Tensor) -> Tensor:
        return _aten.hardswish_backward(grad_out, x)


def _guide_for(module: nn.Module, rule: str) -> type[GuidedActivation] | None:
    """The guided class for ``module`` under a resolved ``rule``: for ``textbook``, that
    of its most specific registered base class; for ``captum``, nn.ReLU only."""
    if rule == "captum":
        return CaptumGuidedReLU if isinstance(module, nn.ReLU) else None
    for kind in type(module).__mro__:
        guide = GUIDED_ACTIVATIONS.find(kind)
        if guide is not None:
            return guide
    return None


# --- the twin --------------------------------------------------------------------------


@dataclass
class _Twin:
    module: nn.Module
    """The twin's root: a shallow copy of the model's root."""
    copies: list[tuple[nn.Module, nn.Module]]
    """(original, copy) for every copied non-root module, to re-sync attributes."""
    structure: list[tuple[str, nn.Module]]
    """The model's ``named_modules(remove_duplicate=False)`` without the root."""
    guides: list[GuidedActivation]
    """The guided activation modules (their ``training`` follows the original's)."""


_CACHE: weakref.WeakKeyDictionary[nn.Module, dict[str, _Twin]] = weakref.WeakKeyDictionary()
_LOCK = threading.Lock()


def resolve_rule(model: nn.Module, rule: str = "auto") -> str:
    """``captum`` or ``textbook``: ``rule``, with ``auto`` resolved for ``model`` (captum
    when every activation module of a guided type is an ``nn.ReLU``)."""
    if rule not in GUIDED_RULES:
        raise InvalidXAIOptionError("rule", rule, f"one of {', '.join(GUIDED_RULES)}")
    if rule != "auto":
        return rule
    kinds = [m for m in unwrap(model).modules() if _guide_for(m, "textbook") is not None]
    relu_net = bool(kinds) and all(isinstance(m, nn.ReLU) for m in kinds)
    return "captum" if relu_net else "textbook"


def guided_model(model: nn.Module, *, rule: str = "auto") -> nn.Module:
    """The guided twin of ``model`` (cached; rebuilt when the module tree changed).

    Args:
        model: any eager ``nn.Module``; it is neither modified nor hooked.
        rule: one of :data:`GUIDED_RULES`: ``captum`` (Captum's ``GuidedBackprop``
            exactly: nn.ReLU only, the total gradient of each ReLU's input clamped),
            ``textbook`` (each activation of :data:`GUIDED_ACTIVATIONS` clamps its own
            branch), ``auto`` (captum on ReLU networks, textbook otherwise).

    Returns:
        A module computing the same forward as ``model`` (bit-identical outputs), sharing
        its parameters and buffers, whose gradients follow the guided rule.
    """
    rule = resolve_rule(model, rule)
    model = unwrap(model)
    with _LOCK:
        per_model = _CACHE.setdefault(model, {})
        twin = per_model.get(rule)
        if twin is None or not _same_structure(model, twin.structure):
            if twin is not None:
                log.info("guided twin of %s: module tree changed, rebuilding", type(model).__name__)
            twin = per_model[rule] = _build_twin(model, rule)
        else:
            sync(model, twin.module)
            for original, copy in twin.copies:
                sync(original, copy)
            for guide in twin.guides:
                guide.training = guide.act.training
        return twin.module


def guided_activation_count(model: nn.Module, *, rule: str = "auto") -> int:
    """How many activation modules the guided twin of ``model`` replaces."""
    guided_model(model, rule=rule)
    with _LOCK:
        return len(_CACHE[unwrap(model)][resolve_rule(model, rule)].guides)


def _build_twin(model: nn.Module, rule: str) -> _Twin:
    def guided(module: nn.Module) -> nn.Module | None:
        guide = _guide_for(module, rule)
        if guide is None:
            return None
        twin = guide(module)
        twin.training = module.training
        return twin

    built = build_twin(model, guided, copy_root=True)  # the cache must not hold model
    root, copies, guides = built.module, built.copies, built.replaced
    structure = _structure(model)
    unguided = sorted(
        {
            type(m).__name__
            for _, m in structure
            if _guide_for(m, "textbook") and not _guide_for(m, rule)
        }
    )
    name = type(model).__name__
    if not guides:
        reason = (
            f"the captum rule leaves its {', '.join(unguided)} modules unguided, as "
            "Captum's GuidedBackprop does"
            if unguided
            else "it has no activation module of a guided type (activations called "
            "functionally, e.g. F.relu, cannot be guided)"
        )
        log.warning(
            "guided backprop on %s: nothing to guide: %s; the result is the plain gradient",
            name,
            reason,
        )
    elif unguided:
        log.info(
            "guided backprop on %s with the captum rule: its %s modules keep their plain "
            "gradient, as in Captum's GuidedBackprop",
            name,
            ", ".join(unguided),
        )
    log.debug(
        "guided twin of %s: %d activation modules guided, %d modules copied",
        name,
        len(guides),
        len(copies) + 1,
    )
    return _Twin(root, copies, structure, guides)


def _structure(model: nn.Module) -> list[tuple[str, nn.Module]]:
    return [(name, m) for name, m in model.named_modules(remove_duplicate=False) if m is not model]


def _same_structure(model: nn.Module, recorded: list[tuple[str, nn.Module]]) -> bool:
    current = _structure(model)
    return len(current) == len(recorded) and all(
        a[0] == b[0] and a[1] is b[1] for a, b in zip(current, recorded, strict=True)
    )
