"""C&W L2 (Carlini & Wagner, "Towards Evaluating the Robustness of Neural Networks",
IEEE S&P 2017): the minimum-L2 attack.

Minimizes ‖x' − x‖²₂ + c·max(Z_y − max_{j≠y} Z_j, −κ) over w with x' = (tanh(w) + 1)/2,
so x' stays in [0, 1] without clipping; Adam on w; a per-sample binary search over c
(×10 until a first success, then bisection). It keeps, per sample, the smallest-L2
misclassified x' seen (margin ≥ κ); a sample never fooled comes back unchanged.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from training.attacks.base import Attack, AttackInputError, margin_loss, register_attack


@register_attack
class CW(Attack):
    """C&W L2, untargeted. Arguments: ``c`` (1.0, the initial constant; the paper starts
    at 1e-3 with 9 binary steps of up to 10,000 iterations), ``kappa`` (0, the required
    margin), ``steps`` (100 Adam steps per binary step), ``binary_steps`` (5), ``lr``
    (0.01, the paper's), ``eps`` (inf: unbounded; a finite value projects x' into that
    L∞ ball inside the objective), ``seed`` (unused). Steps and binary steps are far below
    the paper's to be affordable on a detector; c = 1 suits logits of a few units.

    >>> adv = CW(detector, c=1.0, steps=100, binary_steps=5)(images, labels)
    """

    name = "cw"
    norm = "unbounded"

    def __init__(
        self,
        model: nn.Module,
        eps: float = math.inf,
        c: float = 1.0,
        kappa: float = 0.0,
        steps: int = 100,
        binary_steps: int = 5,
        lr: float = 0.01,
        seed: int = 0,
    ) -> None:
        super().__init__(model, eps, seed)
        if steps < 1 or binary_steps < 1 or c <= 0:
            raise AttackInputError(
                f"CW: steps, binary_steps and c must be positive, got {steps}, {binary_steps}, {c}"
            )
        self.c, self.kappa, self.steps, self.binary_steps, self.lr = (
            c,
            kappa,
            steps,
            binary_steps,
            lr,
        )

    def perturb(self, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        n, x = len(images), images
        w0 = torch.atanh((2 * x - 1).clamp(-1 + 1e-6, 1 - 1e-6))
        c = torch.full((n,), self.c, device=x.device)
        lower, upper = torch.zeros_like(c), torch.full_like(c, math.inf)
        best, best_l2 = x.clone(), torch.full_like(c, math.inf)
        for _ in range(self.binary_steps):
            w = w0.clone().requires_grad_(True)
            opt = torch.optim.Adam([w], lr=self.lr)
            found = torch.zeros(n, dtype=torch.bool, device=x.device)
            for _ in range(self.steps):
                with torch.enable_grad():
                    adv = self._box(w, x)
                    logits = self.logits(adv)
                    l2 = (adv - x).flatten(1).pow(2).sum(1)
                    margin = margin_loss(logits, labels)
                    loss = (l2 + c * (-margin).clamp(min=-self.kappa)).sum()
                    (w.grad,) = torch.autograd.grad(loss, w, retain_graph=False)
                opt.step()
                with torch.no_grad():
                    wrong = (logits.argmax(1) != labels) & (margin >= self.kappa)
                    better = wrong & (l2 < best_l2)
                    best_l2 = torch.where(better, l2.detach(), best_l2)
                    best[better] = adv.detach()[better]
                    found |= wrong
            upper = torch.where(found, torch.minimum(upper, c), upper)
            lower = torch.where(found, lower, torch.maximum(lower, c))
            c = torch.where(upper < math.inf, (lower + upper) / 2, c * 10)
        return best

    def _box(self, w: torch.Tensor, images: torch.Tensor) -> torch.Tensor:
        adv = (torch.tanh(w) + 1) / 2
        return adv if math.isinf(self.eps) else self.project_linf(adv, images)
