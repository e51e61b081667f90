"""BIM: the Basic Iterative Method, or iterative FGSM (Kurakin, Goodfellow & Bengio,
"Adversarial examples in the physical world", ICLR workshop 2017 / arXiv 2016), L∞.

PGD's step without a random start: ``x ← Clip_{x,ε}(x + α·sign(∇ CE))`` from the clean
image, with Kurakin's α = 1/255 and min(ε·255 + 4, 1.25·ε·255) iterations (20 at
ε = 16/255). One of the comparative study's white-box attacks.
"""

from __future__ import annotations

import math

from torch import nn

from training.attacks.base import EPS_PAPER, register_attack
from training.attacks.pgd import PGD


def kurakin_steps(eps: float) -> int:
    """Kurakin et al.'s iteration count min(ε + 4, 1.25·ε), ε in 0..255 units, rounded up."""
    return max(1, math.ceil(min(eps * 255 + 4, 1.25 * eps * 255) - 1e-6))


@register_attack
class BIM(PGD):
    """L∞ BIM. Arguments: ``eps`` (16/255), ``steps`` (None: ``kurakin_steps(eps)``, 20 at
    16/255), ``alpha`` (1/255, Kurakin's one grey level), ``loss`` (``"ce"`` as in the
    paper, or ``"cw"`` margin capped at 0), ``seed`` (unused: BIM is deterministic).

    >>> adv = BIM(detector, eps=16/255)(images, labels)  # 20 steps of 1/255
    """

    name = "bim"

    def __init__(
        self,
        model: nn.Module,
        eps: float = EPS_PAPER,
        steps: int | None = None,
        alpha: float = 1 / 255,
        loss: str = "ce",
        seed: int = 0,
    ) -> None:
        steps = kurakin_steps(eps) if steps is None else steps
        super().__init__(model, eps, steps, alpha, loss, kappa=0.0, random_start=False, seed=seed)
