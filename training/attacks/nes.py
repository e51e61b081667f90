"""NES: gradient estimation with Natural Evolution Strategies, L∞ (Ilyas, Engstrom,
Athalye, Lin, "Black-box Adversarial Attacks with Limited Queries and Information",
ICML 2018; the core paper cites it through Qiu et al. 2021).

A score-based black-box attack: the gradient of the CW margin is estimated from logits
alone, with antithetic Gaussian samples (Ilyas et al., Alg. 1)::

    g ≈ 1 / (n σ) · Σ_{i ≤ n/2} (L(x + σ u_i) − L(x − σ u_i)) · u_i,   u_i ~ N(0, I)

and followed with PGD sign steps projected onto the ε-ball. The core paper's settings
are the defaults: ε = 16/255, step 1/255, 100 iterations, 5 restarts (its public code ran
no restarts: ``n_restarts=1``); n = 50 samples per estimate and σ = 0.001 are Ilyas et
al.'s. A sample stops being queried once misclassified.

Two options, off by default: ``momentum`` averages the estimates over iterations (Ilyas
et al.'s code has it), and ``tile`` draws one search value per tile x tile block (the
tiling prior of Ilyas et al. 2019, "Prior Convictions"), which trades resolution for a
much better estimate per query on small budgets.
"""

from __future__ import annotations

import torch
from torch import nn

from training.attacks.base import EPS_PAPER, AttackInputError, margin_loss, register_attack
from training.attacks.blackbox import ScoreBasedAttack


@register_attack
class NES(ScoreBasedAttack):
    """L∞ NES. Arguments: ``eps`` (16/255), ``steps`` (100 per restart), ``alpha`` (step
    size, 1/255), ``n_restarts`` (5), ``n_samples`` (50 model queries per gradient
    estimate, even: 25 antithetic pairs), ``sigma`` (0.001, the search distribution's
    std in [0, 1] pixel units), ``momentum`` (0), ``tile`` (1), ``chunk`` (rows per model
    call), ``seed``.

    Queries per sample: 1 (the clean check) + per iteration ``n_samples`` + 1 (the new
    iterate's check), at most ``1 + n_restarts * steps * (n_samples + 1)``. The first
    restart starts at the clean image (as Ilyas et al.), later ones uniformly in the
    ε-ball. The result is the first misclassified iterate, or for samples never fooled
    the last iterate of the restart that ended with the highest margin.

    >>> adv = NES(detector, eps=16/255, steps=100, n_restarts=5)(images, labels)
    """

    name = "nes"

    def __init__(
        self,
        model: nn.Module,
        eps: float = EPS_PAPER,
        steps: int = 100,
        alpha: float = 1 / 255,
        n_restarts: int = 5,
        n_samples: int = 50,
        sigma: float = 0.001,
        momentum: float = 0.0,
        tile: int = 1,
        chunk: int | None = None,
        seed: int = 0,
    ) -> None:
        super().__init__(model, eps, seed, chunk)
        if steps < 1 or n_restarts < 1:
            raise AttackInputError(
                f"NES: steps and n_restarts must be >= 1, got {steps}, {n_restarts}"
            )
        if n_samples < 2 or n_samples % 2:
            raise AttackInputError(
                f"NES: n_samples must be even and >= 2 (antithetic pairs), got {n_samples}"
            )
        if sigma <= 0 or tile < 1 or not 0 <= momentum < 1:
            raise AttackInputError(
                f"NES: need sigma > 0, tile >= 1, 0 <= momentum < 1; got {sigma}, {tile}, "
                f"{momentum}"
            )
        self.steps, self.alpha, self.n_restarts = steps, alpha, n_restarts
        self.n_samples, self.sigma, self.momentum, self.tile = n_samples, sigma, momentum, tile

    def max_queries(self) -> int:
        """The most queries one sample can spend."""
        return 1 + self.n_restarts * self.steps * (self.n_samples + 1)

    def perturb(self, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        n = len(images)
        everyone = torch.arange(n, device=images.device)
        adv = images.clone()
        best = margin_loss(self.query(images, everyone), labels)
        todo = everyone[best <= 0]
        for restart in range(self.n_restarts):
            if len(todo) == 0:
                break
            x, y, idx = images[todo], labels[todo], todo
            cur = x if restart == 0 else self.project_linf(x + self.eps * self.uniform_like(x), x)
            velocity = torch.zeros_like(x)
            for _ in range(self.steps):
                grad = self.estimate_gradient(cur, y, idx)
                velocity = self.momentum * velocity + (1 - self.momentum) * grad
                cur = self.project_linf(cur + self.alpha * velocity.sign(), x)
                m = margin_loss(self.query(cur, idx), y)
                fooled = m > 0
                if fooled.any():
                    adv[idx[fooled]] = cur[fooled]
                    best[idx[fooled]] = m[fooled]
                    keep = ~fooled
                    x, y, idx, cur, m = x[keep], y[keep], idx[keep], cur[keep], m[keep]
                    velocity = velocity[keep]
                if len(idx) == 0:
                    break
            else:
                better = m > best[idx]  # never fooled: keep the restart that got closest
                adv[idx[better]] = cur[better]
                best[idx[better]] = m[better]
            todo = idx
        return adv

    def estimate_gradient(
        self, x: torch.Tensor, labels: torch.Tensor, owners: torch.Tensor
    ) -> torch.Tensor:
        """NES estimate of ∇ margin at ``x``, from ``n_samples`` queries per sample."""
        half = self.n_samples // 2
        u = self.search_directions(x, half, self.tile)  # (half, N, C, H, W)
        probes = torch.cat([x + self.sigma * u, x - self.sigma * u]).flatten(0, 1)
        logits = self.query(probes, owners.repeat(2 * half))
        losses = margin_loss(logits, labels.repeat(2 * half)).view(2, half, len(x))
        weights = (losses[0] - losses[1]).view(half, len(x), 1, 1, 1)
        return (weights * u).sum(0) / (self.n_samples * self.sigma)
