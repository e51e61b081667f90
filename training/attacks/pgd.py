"""PGD: Projected Gradient Descent (Madry et al., "Towards Deep Learning Models
Resistant to Adversarial Attacks", ICLR 2018), L∞.

The paper's attack for training Detect-ResNet50: ε = 16/255, 100 iterations, the
Carlini-Wagner margin loss (``margin_loss`` with kappa = 0: stop pushing once the
detector says "real"). Its public code used cross-entropy and no random start; both
are options (``loss="ce"``, ``random_start``).
"""

from __future__ import annotations

from functools import partial

import torch
from torch import nn

from training.attacks.base import (
    EPS_PAPER,
    Attack,
    AttackInputError,
    cross_entropy_loss,
    margin_loss,
    register_attack,
)


@register_attack
class PGD(Attack):
    """L∞ PGD. Arguments: ``eps`` (16/255), ``steps`` (100), ``alpha`` (step size;
    default 2.5·eps/steps, Madry's rule), ``loss`` (``"cw"`` margin or ``"ce"``),
    ``kappa`` (margin cap for ``"cw"``, 0), ``random_start`` (False), ``seed``.

    >>> adv = PGD(detector, eps=16/255, steps=100)(images, labels)
    """

    name = "pgd"

    def __init__(
        self,
        model: nn.Module,
        eps: float = EPS_PAPER,
        steps: int = 100,
        alpha: float | None = None,
        loss: str = "cw",
        kappa: float = 0.0,
        random_start: bool = False,
        seed: int = 0,
    ) -> None:
        super().__init__(model, eps, seed)
        if steps < 1:
            raise AttackInputError(f"PGD: steps must be >= 1, got {steps}")
        if loss not in ("cw", "ce"):
            raise AttackInputError(f"PGD: loss must be 'cw' or 'ce', got {loss!r}")
        self.steps = steps
        self.alpha = alpha if alpha is not None else 2.5 * eps / steps
        self.loss = partial(margin_loss, kappa=kappa) if loss == "cw" else cross_entropy_loss
        self.random_start = random_start

    def perturb(self, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        adv = images.clone()
        if self.random_start:
            adv = self.project_linf(images + self.eps * self.uniform_like(images), images)
        for _ in range(self.steps):
            grad, _ = self.gradient(adv, labels, self.loss)
            adv = self.project_linf(adv + self.alpha * grad.sign(), images)
        return adv
