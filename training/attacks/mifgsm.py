"""MI-FGSM: Momentum Iterative FGSM (Dong et al., "Boosting Adversarial Attacks with
Momentum", CVPR 2018), L∞.

``g ← μ·g + ∇/‖∇‖₁``, ``x ← Clip_{x,ε}(x + α·sign(g))`` from the clean image, with
Dong's ε = 16/255, T = 10 iterations, α = ε/T and μ = 1. The gradient step is the
method :meth:`MIFGSM.step_gradient`, which TI-FGSM and SI-NI-FGSM override.
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
class MIFGSM(Attack):
    """L∞ MI-FGSM. Arguments: ``eps`` (16/255), ``steps`` (10), ``alpha`` (None: ε/steps,
    so the last step can reach the boundary), ``decay`` (μ = 1.0; 0 gives I-FGSM),
    ``loss`` (``"ce"`` as in the paper, or ``"cw"`` margin capped at 0), ``seed`` (unused).

    The gradient is L1-normalized per sample before it is accumulated; we divide by the
    mean |∇| (= ‖∇‖₁ / D for D pixels), which only rescales every term by the same
    constant, so the signs, and the attack, are the paper's.

    >>> adv = MIFGSM(detector, eps=16/255, steps=10, decay=1.0)(images, labels)
    """

    name = "mifgsm"

    def __init__(
        self,
        model: nn.Module,
        eps: float = EPS_PAPER,
        steps: int = 10,
        alpha: float | None = None,
        decay: float = 1.0,
        loss: str = "ce",
        seed: int = 0,
    ) -> None:
        super().__init__(model, eps, seed)
        name = type(self).__name__
        if steps < 1:
            raise AttackInputError(f"{name}: steps must be >= 1, got {steps}")
        if loss not in ("ce", "cw"):
            raise AttackInputError(f"{name}: loss must be 'ce' or 'cw', got {loss!r}")
        self.steps, self.decay = steps, decay
        self.alpha = alpha if alpha is not None else eps / steps
        self.loss = cross_entropy_loss if loss == "ce" else partial(margin_loss, kappa=0.0)

    def perturb(self, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        adv = images.clone()
        momentum = torch.zeros_like(images)
        for _ in range(self.steps):
            grad = self.step_gradient(adv, labels, momentum)
            l1 = grad.abs().mean(dim=(1, 2, 3), keepdim=True).clamp_min(1e-12)
            momentum = self.decay * momentum + grad / l1
            adv = self.project_linf(adv + self.alpha * momentum.sign(), images)
        return adv

    def step_gradient(
        self, adv: torch.Tensor, labels: torch.Tensor, momentum: torch.Tensor
    ) -> torch.Tensor:
        """The gradient accumulated at ``adv``: here the plain loss gradient."""
        return self.gradient(adv, labels, self.loss)[0]
