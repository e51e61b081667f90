"""Reading a model's internal layers, for attacks that need more than its logits.

The Key Region Attack takes gradients with respect to convolutional feature maps, and
the universal perturbation maximizes their activations. Both name the layers by their
``named_modules`` names; :func:`conv_layers` picks defaults, and :func:`capture_outputs`
records what the named modules return during a forward pass, with its hooks removed
in ``finally``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager

import torch
from torch import nn

from training.attacks.base import AttackInputError


def conv_layers(model: nn.Module, count: int | None = None) -> list[str]:
    """Names of ``count`` ``nn.Conv2d`` modules of ``model`` evenly spaced from the first
    to the last in definition order (None: all of them)."""
    names = [name for name, m in model.named_modules() if isinstance(m, nn.Conv2d)]
    if not names:
        raise AttackInputError(
            f"{type(model).__name__} has no nn.Conv2d module; name the layers to read"
        )
    if count is None or count >= len(names):
        return names
    if count < 1:
        raise AttackInputError(f"the number of layers must be >= 1, got {count}")
    if count == 1:
        return [names[-1]]
    step = (len(names) - 1) / (count - 1)
    return [names[round(i * step)] for i in range(count)]


def resolve_layers(model: nn.Module, layers: Sequence[str] | int | None) -> list[str]:
    """``layers`` as module names: names are checked, an int or None goes to
    :func:`conv_layers`."""
    if layers is None or isinstance(layers, int):
        return conv_layers(model, layers)
    known = dict(model.named_modules())
    missing = [name for name in layers if name not in known]
    if missing or not layers:
        raise AttackInputError(
            f"no module named {missing or '(none given)'} in {type(model).__name__}; "
            "pass names from model.named_modules()"
        )
    return list(layers)


@contextmanager
def capture_outputs(model: nn.Module, names: Sequence[str]) -> Iterator[dict[str, torch.Tensor]]:
    """Within the block, each forward of ``model`` stores the output of every module in
    ``names`` under its name in the yielded dict (a module run twice keeps the last).

    The rest of the forward pass gets a copy of each captured output, so an in-place
    activation after a layer (``ReLU(inplace=True)``) does not overwrite what was
    captured, and gradients with respect to the captured tensors are well defined.
    """
    modules = dict(model.named_modules())
    outputs: dict[str, torch.Tensor] = {}

    def recorder(name: str) -> Callable[..., torch.Tensor]:
        def record(_module: nn.Module, _args: object, output: torch.Tensor) -> torch.Tensor:
            outputs[name] = output
            return output.clone()

        return record

    handles = [modules[name].register_forward_hook(recorder(name)) for name in names]
    try:
        yield outputs
    finally:
        for handle in handles:
            handle.remove()
