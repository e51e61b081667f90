"""DeepFool (Moosavi-Dezfooli, Fawzi & Frossard, "DeepFool: a simple and accurate method
to fool deep neural networks", CVPR 2016): the minimum-L2 attack by linearization.

At each iterate the classifier is linearized and the sample moves to the nearest
linearized boundary: for the classes k ≠ y, f'_k = Z_k − Z_y and w'_k = ∇f'_k; the
step is r = (|f'_l| / ‖w'_l‖ + 1e-4)·w'_l / ‖w'_l‖ for l = argmin_k |f'_k| / ‖w'_k‖. The steps
add up to r_tot and x' = Clip(x + (1 + overshoot)·r_tot) until x' is misclassified.
Batched: every iterate attacks all not-yet-fooled samples at once, with one backward
pass per other class (one for a two-class detector) giving every sample's gradient.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from training.attacks.base import Attack, AttackInputError, register_attack


@register_attack
class DeepFool(Attack):
    """DeepFool, untargeted. Arguments: ``steps`` (50, the paper's max_iter),
    ``overshoot`` (0.02), ``eps`` (inf: unbounded, the paper's; a finite value clips every
    iterate into the L∞ ball, as when comparing at ε ≤ 16/255, giving up minimality),
    ``seed`` (unused: DeepFool is deterministic).

    >>> adv = DeepFool(detector, steps=50, overshoot=0.02)(images, labels)
    """

    name = "deepfool"
    norm = "unbounded"

    def __init__(
        self,
        model: nn.Module,
        eps: float = math.inf,
        steps: int = 50,
        overshoot: float = 0.02,
        seed: int = 0,
    ) -> None:
        super().__init__(model, eps, seed)
        if steps < 1 or overshoot < 0:
            raise AttackInputError(
                f"DeepFool: need steps >= 1, overshoot >= 0; got {steps}, {overshoot}"
            )
        self.steps, self.overshoot = steps, overshoot

    def perturb(self, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        adv, r_tot = images.clone(), torch.zeros_like(images)
        active = torch.ones(len(images), dtype=torch.bool, device=images.device)
        for _ in range(self.steps):
            idx = torch.nonzero(active).flatten()
            if len(idx) == 0:
                break
            still, f, w = self._linearize(adv[idx], labels[idx])  # f: (n, K-1), w: (n, K-1, ...)
            norms = w.flatten(2).norm(dim=2).clamp_min(1e-12)
            dist = f.abs() / norms  # distance to each linearized boundary
            near = dist.argmin(1)
            pick = torch.arange(len(idx), device=images.device)
            scale = (dist[pick, near] + 1e-4) / norms[pick, near]
            r = scale.view(-1, 1, 1, 1) * w[pick, near]
            r_tot[idx] += torch.where(still.view(-1, 1, 1, 1), r, torch.zeros_like(r))
            active[idx] = still
            adv = images + (1 + self.overshoot) * r_tot
            adv = adv.clamp(0, 1) if math.isinf(self.eps) else self.project_linf(adv, images)
        return adv

    def _linearize(
        self, x: torch.Tensor, y: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Whether x is still classified y; f'_k = Z_k − Z_y for the K−1 classes k ≠ y of
        each sample; and their gradients."""
        x = x.detach().requires_grad_(True)
        with torch.enable_grad():
            logits = self.logits(x)
            k = logits.shape[1]
            others = torch.arange(k - 1, device=x.device)[None].expand(len(x), -1)
            others = others + (others >= y[:, None]).long()
            f = logits.gather(1, others) - logits.gather(1, y[:, None])
            grads = [
                torch.autograd.grad(f[:, j].sum(), x, retain_graph=j < k - 2)[0]
                for j in range(k - 1)
            ]
        return logits.detach().argmax(1) == y, f.detach(), torch.stack(grads, 1)
