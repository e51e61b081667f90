"""SI-NI-FGSM: Nesterov and Scale-Invariant FGSM (Lin et al., "Nesterov Accelerated
Gradient and Scale Invariance for Adversarial Attacks", ICLR 2020), L∞, on MI-FGSM.

Each step takes the gradient at the Nesterov look-ahead x + α·μ·g, averaged over m
scaled copies S_i(x) = x / 2^i, i = 0..m−1 (all copies in one batch). Lin's settings:
ε = 16/255, T = 10, α = ε/T, μ = 1, m = 5. ``m=1`` is NI-FGSM. The comparative study's
"SIM".
"""

from __future__ import annotations

import torch
from torch import nn

from training.attacks.base import EPS_PAPER, AttackInputError, register_attack
from training.attacks.mifgsm import MIFGSM


@register_attack
class SINIFGSM(MIFGSM):
    """L∞ SI-NI-FGSM. Arguments: ``eps`` (16/255), ``steps`` (10), ``alpha`` (ε/steps),
    ``decay`` (μ = 1.0), ``m`` (5 scale copies; 1 gives NI-FGSM), ``loss`` (``"ce"``),
    ``seed`` (unused). Each step costs m queries per sample.

    >>> adv = SINIFGSM(detector, eps=16/255, steps=10, m=5)(images, labels)
    """

    name = "sinifgsm"

    def __init__(
        self,
        model: nn.Module,
        eps: float = EPS_PAPER,
        steps: int = 10,
        alpha: float | None = None,
        decay: float = 1.0,
        m: int = 5,
        loss: str = "ce",
        seed: int = 0,
    ) -> None:
        super().__init__(model, eps, steps, alpha, decay, loss, seed)
        if m < 1:
            raise AttackInputError(f"SINIFGSM: m must be >= 1, got {m}")
        self.m = m

    def step_gradient(
        self, adv: torch.Tensor, labels: torch.Tensor, momentum: torch.Tensor
    ) -> torch.Tensor:
        nes = (adv + self.alpha * self.decay * momentum).detach().requires_grad_(True)
        with torch.enable_grad():
            copies = torch.cat([nes / 2**i for i in range(self.m)])
            loss = self.loss(self.logits(copies), labels.repeat(self.m))
            (grad,) = torch.autograd.grad(loss.sum(), nes, retain_graph=False)
        self.queries += self.m - 1  # `logits` counted one of the m copies
        return grad.detach() / self.m
