"""The adaptive white-box attacker: PGD through the whole defended pipeline, L∞.

Veritas checks every face its deepfake detector g calls real with Detect-ResNet50 d,
which looks at the face and at the XAI map of g. An attacker who knows this attacks
both at once (the threat the core paper leaves open: "attackers targeting our
detector itself"): PGD on

    L(x) = min(M_g(x), κ) + w · min(M_d(x), κ),

the CW margins of g towards "real" (M_g = Z_real − Z_fake for a fake) and of d towards
"not attacked" (M_d = Z_clean − Z_attacked on the crop and its map), with ε = 16/255,
κ = 0 (stop pushing a margin once it is won) and w = 1. M_d depends on x through the
crop and through the map h'(x) of g, so its gradient needs the derivative of the map
itself: the map is :func:`engine.xai.differentiable.attribute_differentiable` then
:func:`~engine.xai.differentiable.prepare_map_differentiable` (double backpropagation;
values equal the engine's maps). On ReLU detectors the exact derivative of a gradient
map is zero almost everywhere, so by default the map's second order follows softplus
with β = 10 (``smooth_beta``; its values are unchanged, see that module).

The pipeline is wrapped as one classifier of crops, :class:`DefendedPipeline`, whose
logits are ``(s/2, −s/2)`` with s = min(M_g, M_d): index 0 = "passes as real" (g says
real AND d says not attacked), index 1 = "caught" (fake, or attacked). So for a fake
face (label 1) the attack succeeds exactly when the whole pipeline lets it through.
:class:`AdaptiveAttack` is not in the attack registry: it takes two models.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from engine.faces.crop import resize_images
from engine.xai import DEFAULT_QUANTILE
from engine.xai.differentiable import attribute_differentiable, prepare_map_differentiable
from training.attacks.base import EPS_PAPER, Attack, AttackInputError, AttackResult, margin_loss

REAL, FAKE = 0, 1
CLEAN, ATTACKED = 0, 1


class DefendedPipeline(nn.Module):
    """Deepfake detector + XAI map + Detect-ResNet50 as one differentiable classifier.

    ``forward(crops)`` gives ``(pass, caught)`` logits (module docstring); :meth:`parts`
    gives the two models' own logits. Crops are [0, 1] images at the detector's input
    size; d sees them resized to ``map_size`` (d's ``cfg.input_size``, else the crops'
    size) with the map of g's "real" logit, prepared as the online pipeline does.
    """

    def __init__(
        self,
        detector: nn.Module,
        detect_resnet: nn.Module,
        method: str = "guided_backprop",
        map_size: int | None = None,
        quantile: float = DEFAULT_QUANTILE,
        smooth_beta: float | None = 10.0,
        **xai_options: Any,
    ) -> None:
        super().__init__()
        self.detector, self.detect_resnet = detector, detect_resnet
        self.method, self.quantile, self.smooth_beta = method, quantile, smooth_beta
        cfg = getattr(detect_resnet, "cfg", None)
        self.map_size = map_size or getattr(cfg, "input_size", None)
        self.xai_options = xai_options

    def maps(self, crops: torch.Tensor) -> torch.Tensor:
        """The XAI maps d sees, differentiable with respect to ``crops``."""
        a = attribute_differentiable(
            self.detector,
            crops,
            REAL,
            self.method,
            smooth_beta=self.smooth_beta,
            **self.xai_options,
        )
        size = self.map_size or crops.shape[-1]
        return prepare_map_differentiable(a, self.method, size, self.quantile)

    def parts(self, crops: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(g's logits, d's logits)``, differentiable through the map."""
        maps = self.maps(crops)
        return self.detector(crops), self.detect_resnet(resize_images(crops, maps.shape[-1]), maps)

    def forward(self, crops: torch.Tensor) -> torch.Tensor:
        g, d = self.parts(crops)
        s = torch.minimum(g[:, REAL] - g[:, FAKE], d[:, CLEAN] - d[:, ATTACKED])
        return torch.stack([s / 2, -s / 2], dim=1)


class AdaptiveAttack(Attack):
    """PGD on the defended pipeline. Arguments: ``detector`` (g), ``detect_resnet`` (d),
    ``method`` (the pipeline's XAI method, ``"guided_backprop"``), ``eps`` (16/255),
    ``steps`` (100), ``alpha`` (2.5·eps/steps), ``weight`` (w of d's margin, 1),
    ``kappa`` (0), ``smooth_beta`` (10; None: the exact second order), ``map_size``,
    ``random_start`` (False), ``seed``; further keywords go to the XAI method
    (e.g. ``n_steps`` for integrated gradients — keep it small).

    ``labels`` are the detector's (1 = fake); ``run(...).success`` is True where the
    pipeline lets the face through (g says real AND d says not attacked).

    >>> attack = AdaptiveAttack(detector, detect_resnet, "guided_backprop")
    >>> adv = attack(fake_crops, torch.ones(len(fake_crops), dtype=torch.long))
    """

    name = "adaptive"

    def __init__(
        self,
        detector: nn.Module,
        detect_resnet: nn.Module,
        method: str = "guided_backprop",
        eps: float = EPS_PAPER,
        steps: int = 100,
        alpha: float | None = None,
        weight: float = 1.0,
        kappa: float = 0.0,
        smooth_beta: float | None = 10.0,
        map_size: int | None = None,
        random_start: bool = False,
        seed: int = 0,
        **xai_options: Any,
    ) -> None:
        pipeline = DefendedPipeline(
            detector, detect_resnet, method, map_size, smooth_beta=smooth_beta, **xai_options
        )
        super().__init__(pipeline, eps, seed)
        if steps < 1 or weight < 0:
            raise AttackInputError(
                f"AdaptiveAttack: need steps >= 1 and weight >= 0, got {steps}, {weight}"
            )
        self.pipeline = pipeline
        self.steps, self.weight, self.kappa = steps, weight, kappa
        self.alpha = alpha if alpha is not None else 2.5 * eps / steps
        self.random_start = random_start

    def run(self, images: torch.Tensor, labels: torch.Tensor) -> AttackResult:
        modes = [(m, m.training) for m in self.pipeline.modules()]
        try:
            return super().run(images, labels)
        finally:  # each model back in its own mode (the wrapper has no mode of its own)
            for module, training in modes:
                module.training = training

    def loss(self, x: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Per-sample ``min(M_g, κ) + w·min(M_d, κ)`` (to maximize)."""
        g, d = self.pipeline.parts(x)
        self.queries += 1
        m_g = margin_loss(g, labels).clamp(max=self.kappa)
        m_d = (d[:, CLEAN] - d[:, ATTACKED]).clamp(max=self.kappa)
        return m_g + self.weight * m_d

    def perturb(self, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        adv = images.clone()
        if self.random_start:
            adv = self.project_linf(images + self.eps * self.uniform_like(images), images)
        for _ in range(self.steps):
            x = adv.detach().requires_grad_(True)
            with torch.enable_grad():
                (grad,) = torch.autograd.grad(self.loss(x, labels).sum(), x)
            adv = self.project_linf(adv + self.alpha * grad.sign(), images)
        return adv
