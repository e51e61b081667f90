"""Stages ``classify`` and ``xai``: p_fake of every face, and the explanation map of the
faces the detector calls real (the faces Detect-ResNet50 then checks).

:class:`ClassifyThenExplain` runs them apart: a no-grad classification, then
``engine.xai.attribute`` of the chosen faces (every method, Integrated Gradients
included). :class:`FusedClassifyExplain` shares one forward for the one-backward
methods (``engine.xai.rules``): a forward of the gradient pass over all faces keeps its
graph, then one backward of the sum of the chosen faces' "real" logits gives each face's
input gradient (faces are independent in eval mode). The pipeline picks the fused one
when its runtime and method allow (``Pipeline.fused``).

Both take the networks' passes from ``passes(name)`` (``classify``, ``gradient``: built
once by the runtime, ``Pipeline.network_pass``) and read ``settings`` at each call.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from engine.config import PipelineConfig
from engine.stages.timing import StageTimer
from engine.xai import attribute
from engine.xai.rules import from_gradient

REAL, FAKE = 0, 1
"""The deepfake detectors' class indices."""


class ClassifyThenExplain:
    def __init__(
        self, passes: Callable[[str], nn.Module], settings: PipelineConfig, device: torch.device
    ) -> None:
        self.passes = passes
        self.settings = settings
        self.device = device

    def classify(self, crops: Tensor) -> Tensor:
        """p_fake per crop (a no-grad forward of the runtime's classification pass)."""
        logits = self.passes("classify")(crops)
        return logits.float().softmax(dim=1)[:, FAKE]

    def explain(self, crops: Tensor) -> Tensor:
        """Attribution of the detector's "real" logit for each crop (``engine.xai``)."""
        s = self.settings
        options: dict[str, object] = {}
        if s.xai_method == "integrated_gradients":
            options = {
                "n_steps": s.ig_steps,
                "internal_batch_size": s.ig_internal_batch_size or None,
            }
        if s.xai_method == "guided_backprop":
            # The gradient pass already runs through the guided twin: plain gradient of it.
            return attribute(self.passes("gradient"), crops, REAL, "saliency", abs=False)
        return attribute(self.passes("gradient"), crops, REAL, s.xai_method, **options)

    def run(
        self, crops: Tensor, explain: Tensor | None = None, timer: StageTimer | None = None
    ) -> tuple[Tensor, Tensor, Tensor | None]:
        """``(p_fake on the CPU, indices of the faces explained, their attributions or
        None)``; ``explain`` picks the faces (indices), by default those called real."""
        timer = timer or StageTimer(self.device)
        attributions: Tensor | None = None
        with timer("classify"):
            p_fake = self.classify(crops).cpu() if len(crops) else torch.zeros(0)
        which = self.to_explain(p_fake, explain)
        with timer("xai"):
            if len(which):
                attributions = self.explain(crops[which.to(self.device)])
        return p_fake, which, attributions

    def to_explain(self, p_fake: Tensor, explain: Tensor | None) -> Tensor:
        if explain is not None:
            return explain.flatten().long().cpu()
        return (p_fake < self.settings.fake_threshold).nonzero().flatten()


class FusedClassifyExplain(ClassifyThenExplain):
    """Classification and a one-backward explanation from ONE forward (module doc)."""

    def run(
        self, crops: Tensor, explain: Tensor | None = None, timer: StageTimer | None = None
    ) -> tuple[Tensor, Tensor, Tensor | None]:
        timer = timer or StageTimer(self.device)
        attributions: Tensor | None = None
        with timer("classify"):
            x, logits = self._forward_with_grad(crops)
            p_fake = _p_fake(logits, len(crops))
        which = self.to_explain(p_fake, explain)
        with timer("xai"):
            if len(which) and logits is not None:
                attributions = self._backward(crops, x, logits, which)
        del x, logits  # frees the forward's graph
        return p_fake, which, attributions

    def _forward_with_grad(self, crops: Tensor) -> tuple[Tensor, Tensor | None]:
        """``(leaf input, logits with their graph)``; logits None for no crops."""
        x = crops.detach().requires_grad_(True)
        if len(crops) == 0:
            return x, None
        with torch.enable_grad():
            return x, self.passes("gradient")(x)

    def _backward(self, crops: Tensor, x: Tensor, logits: Tensor, chosen: Tensor) -> Tensor:
        """Attributions of the faces ``chosen`` from the kept graph."""
        idx = chosen.to(logits.device)
        (grad,) = torch.autograd.grad(logits[idx, REAL].sum(), x)
        return from_gradient(self.settings.xai_method, crops[idx].detach(), grad[idx])


def _p_fake(logits: Tensor | None, n: int) -> Tensor:
    """p_fake on the CPU from the detector's logits (one device->host copy)."""
    if logits is None:
        return torch.zeros(n)
    return logits.detach().float().softmax(dim=1)[:, FAKE].cpu()
