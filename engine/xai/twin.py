"""The one twin builder: a model with some of its modules replaced, nothing copied.

A *twin* of a model computes the same forward as the model, shares every parameter and
buffer with it, and differs only in chosen modules (activations whose backward follows an
explanation rule). Both the guided twins of :mod:`engine.xai.guided` (cached, for the
eager and fused paths) and the rule twins of :mod:`engine.xai.differentiable` (built per
call, differentiable twice) are built here:

* each module ``replace`` returns a replacement for is swapped for it (a module used in
  several places keeps one replacement);
* every module on the path from the root to a replaced module is a *shallow copy*: a new
  object of the same class whose ``__dict__`` is the original's (``_parameters`` and
  ``_buffers`` are the original's own dict objects) except ``_modules``;
* every other module is the original object itself.

So no weight is copied, the model is never mutated and no hook is registered.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from engine.xai.errors import UnguidableModelError


@dataclass
class Twin:
    module: nn.Module
    """The twin's root (the model itself when nothing was replaced and the root is not
    always copied)."""
    copies: list[tuple[nn.Module, nn.Module]]
    """(original, copy) for every copied non-root module, to re-sync attributes."""
    replaced: list[nn.Module]
    """The replacement modules, in the order they were built."""


def unwrap(model: nn.Module) -> nn.Module:
    """The eager module behind ``model`` (``torch.compile``'s ``_orig_mod``)."""
    if isinstance(model, torch.jit.ScriptModule):
        raise UnguidableModelError(model, "TorchScript modules cannot be copied structurally")
    inner = getattr(model, "_orig_mod", None)
    return inner if isinstance(inner, nn.Module) else model


def build_twin(
    model: nn.Module,
    replace: Callable[[nn.Module], nn.Module | None],
    *,
    copy_root: bool = False,
) -> Twin:
    """The twin of ``model`` in which each module ``m`` with ``replace(m)`` not None is
    that replacement (the root itself is never replaced).

    ``copy_root``: the root is a shallow copy even when nothing below it was replaced (a
    cache of twins must not hold the model itself).
    """
    memo: dict[int, nn.Module] = {}
    copies: list[tuple[nn.Module, nn.Module]] = []
    replaced: list[nn.Module] = []

    def children_of(module: nn.Module) -> dict[str, nn.Module | None]:
        return {name: None if c is None else twin_of(c) for name, c in module._modules.items()}

    def twin_of(module: nn.Module) -> nn.Module:
        if id(module) in memo:
            return memo[id(module)]
        twin = replace(module)
        if twin is not None:
            replaced.append(twin)
        else:
            children = children_of(module)
            if all(children[name] is child for name, child in module._modules.items()):
                twin = module  # nothing replaced below: share the module itself
            else:
                twin = shallow_copy(module, children)
                copies.append((module, twin))
        memo[id(module)] = twin
        return twin

    children = children_of(model)
    unchanged = all(children[name] is child for name, child in model._modules.items())
    root = model if unchanged and not copy_root else shallow_copy(model, children)
    return Twin(root, copies, replaced)


def shallow_copy(module: nn.Module, children: dict[str, nn.Module | None]) -> nn.Module:
    """A new module of the same class sharing every attribute but ``_modules``.

    ``_parameters`` and ``_buffers`` are the original's dict objects, so tensors
    replaced there later (``.to(device)``) are seen by the copy too.
    """
    copy = object.__new__(type(module))
    copy.__dict__.update(module.__dict__)
    copy.__dict__["_modules"] = dict(children)
    return copy


def sync(original: nn.Module, copy: nn.Module) -> None:
    """Make ``copy``'s attributes (except ``_modules``) the original's current ones."""
    src, dst = original.__dict__, copy.__dict__
    if src.keys() != dst.keys():
        for key in dst.keys() - src.keys():
            del dst[key]
    for key, value in src.items():
        if key != "_modules" and dst.get(key) is not value:
            dst[key] = value
