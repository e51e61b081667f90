"""Stage ``adversarial``: Detect-ResNet50 on each checked face and its explanation map.

Its input (resized crops and maps, normalized) is built in one pass by
:func:`engine.xai.maps.detect_resnet_inputs` (a fused kernel on CUDA); the prepared maps
themselves (:func:`engine.xai.prepare_map`, what an annotated video draws) are computed
only when asked for.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from engine.config import PipelineConfig
from engine.xai import prepare_map
from engine.xai.maps import detect_resnet_inputs

ATTACKED = 1
"""Detect-ResNet50's "attacked" class index."""


class NormalizedPairs(nn.Module):
    """Detect-ResNet50 on its normalized inputs: ``forward(crops, maps)`` is
    ``model.forward_stacked(cat([crops, maps]))`` (both already normalized, as
    :func:`engine.xai.maps.detect_resnet_inputs` gives them). Two inputs, so a runtime
    can pad each to a batch bucket."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, crops: Tensor, maps: Tensor) -> Tensor:
        return self.model.forward_stacked(torch.cat([crops, maps]))


class AttackCheck:
    """``passes("adversarial")`` is the runtime's pass of :class:`NormalizedPairs`."""

    def __init__(
        self, passes: Callable[[str], nn.Module], settings: PipelineConfig, adversarial: nn.Module
    ) -> None:
        self.passes = passes
        self.settings = settings
        self.cfg = adversarial.cfg

    def run(
        self, crops: Tensor, attributions: Tensor, keep_maps: bool = True
    ) -> tuple[Tensor, Tensor | None]:
        """``(p_attacked, prepared maps or None)``."""
        s, cfg = self.settings, self.cfg
        stacked = detect_resnet_inputs(
            crops, attributions, s.xai_method, cfg.input_size, cfg.mean, cfg.std, s.map_quantile
        )
        logits = self.passes("adversarial")(*stacked.chunk(2))
        maps = None
        if keep_maps:
            maps = prepare_map(attributions, s.xai_method, cfg.input_size, s.map_quantile)
        return logits.float().softmax(dim=1)[:, ATTACKED], maps
