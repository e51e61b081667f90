"""The eager runtime: the networks run as plain PyTorch modules (the reference)."""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

from engine.runtime.base import Runtime, TorchPass, register_runtime


@register_runtime
class EagerRuntime(Runtime):
    """PyTorch eager, any batch size; autocast and channels-last when configured."""

    name = "eager"

    def forward_pass(self, model: nn.Module, example: Sequence[Tensor], label: str) -> nn.Module:
        return TorchPass(self.prepare(model), self.settings, grad=False)
