"""APGD: Auto-PGD (Croce & Hein, "Reliable evaluation of adversarial robustness with an
ensemble of diverse parameter-free attacks", ICML 2020), L∞.

The paper's second white-box attack: ε = 16/255, 100 iterations, 5 restarts (its public
code ran 1 restart: ``n_restarts=1``). APGD is PGD with momentum 0.75 and a step size
that starts at 2ε and is halved, per sample, at checkpoints where progress stalled; a
halving also sends the sample back to the best point found so far.
"""

from __future__ import annotations

import math

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


def apgd_checkpoints(steps: int) -> list[int]:
    """The iterations after which APGD checks its progress (Croce & Hein, Sec. 3.2).

    The paper's w_j = ⌈p_j·N⌉, p_0 = 0, p_1 = 0.22, p_{j+1} = p_j + max(p_j − p_{j−1} −
    0.03, 0.06), in whole iterations as the authors' code counts them: a first window of
    ⌊0.22N⌋ iterations, each next one ⌊0.03N⌋ shorter, down to ⌊0.06N⌋ (all at least 1).
    At N = 100 both give 22, 41, 57, 70, 80, 87, 93, 99; at small N this checks more often
    (N = 20: 4, 7, 9, 10, 11, ..., 20 rather than 5, 9, 12, ...), and measurably fools more.
    """
    first, shrink, least = (max(int(f * steps), 1) for f in (0.22, 0.03, 0.06))
    checkpoints, w, h = [], 0, first
    while w + h <= steps:
        w += h
        checkpoints.append(w)
        h = max(h - shrink, least)
    return checkpoints


@register_attack
class APGD(Attack):
    """L∞ APGD. Arguments: ``eps`` (16/255), ``steps`` (100), ``n_restarts`` (5, the
    paper's; its code used 1), ``loss`` (``"ce"`` or ``"cw"``, the uncapped CW margin
    max_{j≠y} Z_j − Z_y), ``rho`` (0.75, condition 1's threshold), ``momentum`` (0.75),
    ``seed`` (random starts).

    Not DLR: DLR = −(Z_y − max_{j≠y} Z_j) / (Z_π1 − Z_π3) needs the third-largest logit
    Z_π3, which two-class detectors do not have; and the only scale two logits offer is
    the margin itself, whose ratio with the numerator is a constant ±1 with no gradient.
    The margin is DLR's numerator, so ``"cw"`` is the scale-dependent DLR for two
    classes. (With two classes CE = softplus(margin) grows with the margin: the two
    losses share their maximizers and gradient signs, and differ only by rounding.)

    A sample stops being attacked once misclassified; restarts (fresh uniform starts)
    attack the samples not yet fooled. The result is the last misclassified iterate, or
    for samples never fooled the point of highest loss over all restarts.

    >>> adv = APGD(detector, eps=16/255, steps=100, n_restarts=5)(images, labels)
    """

    name = "apgd"

    def __init__(
        self,
        model: nn.Module,
        eps: float = EPS_PAPER,
        steps: int = 100,
        n_restarts: int = 5,
        loss: str = "ce",
        rho: float = 0.75,
        momentum: float = 0.75,
        seed: int = 0,
    ) -> None:
        super().__init__(model, eps, seed)
        if steps < 1 or n_restarts < 1:
            raise AttackInputError(
                f"APGD: steps and n_restarts must be >= 1, got {steps}, {n_restarts}"
            )
        if loss not in ("ce", "cw"):
            raise AttackInputError(f"APGD: loss must be 'ce' or 'cw', got {loss!r}")
        self.steps, self.n_restarts, self.rho, self.momentum = steps, n_restarts, rho, momentum
        self.loss = cross_entropy_loss if loss == "ce" else margin_loss

    def perturb(self, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        adv = images.clone()
        fooled = torch.zeros(len(images), dtype=torch.bool, device=images.device)
        best = torch.full((len(images),), -math.inf, device=images.device)
        for _ in range(self.n_restarts):
            todo = torch.nonzero(~fooled).flatten()
            if len(todo) == 0:
                break
            x_adv, hit, x_max, f_max = self.single_run(images[todo], labels[todo])
            keep = ~hit & (f_max > best[todo])
            adv[todo[hit]], adv[todo[keep]] = x_adv[hit], x_max[keep]
            best[todo[keep]] = f_max[keep]
            fooled[todo[hit]] = True
        return adv

    def single_run(
        self, x: torch.Tensor, y: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """One run of Algorithm 1: (last fooling iterate, fooled, x_max, f_max)."""
        n, view = len(x), (-1, 1, 1, 1)
        eta = torch.full((n,), 2 * self.eps, device=x.device)
        x_k = self.project_linf(x + self.eps * self.uniform_like(x), x)
        g_k, f_k, hit = self._loss_grad(x_k, y)
        x_prev, x_adv, x_max, f_max, g_max = x_k, x_k, x_k, f_k, g_k
        increases = torch.zeros(n, device=x.device)
        halved_last = torch.ones(n, dtype=torch.bool, device=x.device)  # no cond. 2 at w_1
        f_max_last, w_last, checkpoints = f_max, 0, set(apgd_checkpoints(self.steps))
        for k in range(self.steps):
            a = 1.0 if k == 0 else self.momentum
            z = self.project_linf(x_k + eta.view(view) * g_k.sign(), x)
            x_new = self.project_linf(x_k + a * (z - x_k) + (1 - a) * (x_k - x_prev), x)
            g_new, f_new, wrong = self._loss_grad(x_new, y)
            x_adv, hit = torch.where(wrong.view(view), x_new, x_adv), hit | wrong
            increases += f_new > f_k
            better = (f_new > f_max).view(view)
            x_max, g_max = torch.where(better, x_new, x_max), torch.where(better, g_new, g_max)
            f_max = torch.maximum(f_new, f_max)
            x_prev, x_k, g_k, f_k = x_k, x_new, g_new, f_new
            if k + 1 in checkpoints:
                # condition 1, with <= as the authors' code (the paper prints <)
                stalled = increases <= self.rho * (k + 1 - w_last)
                halve = stalled | (~halved_last & (f_max <= f_max_last))  # condition 2
                eta = torch.where(halve, eta / 2, eta)
                back = halve.view(view)  # restart these from the best point
                x_k, g_k = torch.where(back, x_max, x_k), torch.where(back, g_max, g_k)
                f_k = torch.where(halve, f_max, f_k)
                halved_last, f_max_last, w_last = halve, f_max, k + 1
                increases.zero_()
        return x_adv, hit, x_max, f_max

    def _loss_grad(
        self, x: torch.Tensor, y: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        x = x.detach().requires_grad_(True)
        with torch.enable_grad():
            logits = self.logits(x)
            loss = self.loss(logits, y)
            (grad,) = torch.autograd.grad(loss.sum(), x, retain_graph=False)
        return grad.detach(), loss.detach(), logits.detach().argmax(1) != y
