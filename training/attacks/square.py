"""Square Attack (Andriushchenko, Croce, Flammarion, Hein, "Square Attack: a
query-efficient black-box adversarial attack via random search", ECCV 2020), L∞.

A score-based black-box attack by random search: start from vertical stripes of ±ε,
then repeatedly overwrite one random square window of the perturbation with ±ε (one sign
per channel) and keep the change if the margin loss improved. The window's area is a
fraction p of the image, halved on the paper's piecewise-constant schedule
(:func:`square_fraction`), rescaled to the query budget as in the authors' code.

The core paper's settings are the defaults: ε = 16/255, 5000 queries, p_init = 0.8 (its
"sampling-distribution parameter"; its public code ran 10,000 queries). Each sample
draws its own window position (the authors' reference code; AutoAttack and
torchattacks share one position per batch) and stops being queried once misclassified.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from training.attacks.base import (
    EPS_PAPER,
    AttackInputError,
    cross_entropy_loss,
    margin_loss,
    register_attack,
)
from training.attacks.blackbox import ScoreBasedAttack

_HALVINGS = (10, 50, 200, 500, 1000, 2000, 4000, 6000, 8000)
"""Iterations (of a 10,000-query run) after which p is halved (Andriushchenko et al.)."""

_RESAMPLE_TRIES = 10
"""Redraws of the window's signs when they would not change the current best image."""


def square_fraction(p_init: float, iteration: int, n_queries: int) -> float:
    """The fraction of pixels in the window at ``iteration`` of an ``n_queries`` run.

    The authors' ``p_selection``: the iteration is rescaled to a 10,000-query run, then
    p = p_init / 2**k where k counts the thresholds in :data:`_HALVINGS` it has passed.
    """
    it = int(iteration / n_queries * 10000)
    return p_init / 2 ** sum(it > t for t in _HALVINGS)


def square_side(p: float, height: int, width: int) -> int:
    """Side of a square window covering a fraction ``p`` of the image, in [1, side − 1]."""
    side = round(math.sqrt(p * height * width))
    return max(1, min(side, min(height, width) - 1))


@register_attack
class Square(ScoreBasedAttack):
    """L∞ Square Attack. Arguments: ``eps`` (16/255), ``n_queries`` (5000 per sample,
    including the initialization's), ``p_init`` (0.8), ``loss`` (``"margin"``, the CW
    margin, or ``"ce"``), ``chunk`` (rows per model call), ``seed``.

    >>> adv = Square(detector, eps=16/255, n_queries=5000, p_init=0.8)(images, labels)
    """

    name = "square"

    def __init__(
        self,
        model: nn.Module,
        eps: float = EPS_PAPER,
        n_queries: int = 5000,
        p_init: float = 0.8,
        loss: str = "margin",
        chunk: int | None = None,
        seed: int = 0,
    ) -> None:
        super().__init__(model, eps, seed, chunk)
        if n_queries < 1:
            raise AttackInputError(f"Square: n_queries must be >= 1, got {n_queries}")
        if not 0 < p_init <= 1:
            raise AttackInputError(f"Square: p_init must be in (0, 1], got {p_init}")
        if loss not in ("margin", "ce"):
            raise AttackInputError(f"Square: loss must be 'margin' or 'ce', got {loss!r}")
        self.n_queries, self.p_init = n_queries, p_init
        self.loss = margin_loss if loss == "margin" else cross_entropy_loss

    def perturb(self, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        n, c, h, w = images.shape
        everyone = torch.arange(n, device=images.device)
        stripes = self.random_signs(images.new_empty(n, c, 1, w))  # vertical stripes
        best = (images + self.eps * stripes).clamp(0.0, 1.0)
        logits = self.query(best, everyone)
        best_loss, best_margin = self.loss(logits, labels), margin_loss(logits, labels)
        for iteration in range(self.n_queries - 1):
            idx = torch.nonzero(best_margin <= 0).flatten()
            if len(idx) == 0:
                break
            x, x_best = images[idx], best[idx]
            side = square_side(square_fraction(self.p_init, iteration, self.n_queries), h, w)
            window = self.random_window(len(idx), side, h, w, images.device)
            candidate = self.propose(x, x_best, window)
            logits = self.query(candidate, idx)
            loss, margin = self.loss(logits, labels[idx]), margin_loss(logits, labels[idx])
            better = (loss > best_loss[idx]) | (margin > 0)
            best[idx[better]] = candidate[better]
            best_loss[idx[better]] = loss[better]
            best_margin[idx[better]] = margin[better]
        return best

    def propose(self, x: torch.Tensor, x_best: torch.Tensor, window: torch.Tensor) -> torch.Tensor:
        """``x_best`` with the ``window`` set to x ± ε (one sign per channel and sample).

        Signs that would leave ``x_best`` unchanged are redrawn, as in the authors' code.
        """
        candidate = x_best
        redraw = torch.ones(len(x), dtype=torch.bool, device=x.device)
        for _ in range(_RESAMPLE_TRIES):
            signs = self.random_signs(x.new_empty(int(redraw.sum()), x.shape[1], 1, 1))
            rows = torch.nonzero(redraw).flatten()
            new = torch.where(
                window[rows], (x[rows] + self.eps * signs).clamp(0.0, 1.0), x_best[rows]
            )
            candidate = candidate.clone()
            candidate[rows] = new
            redraw[rows] = (new == x_best[rows]).flatten(1).all(1)
            if not redraw.any():
                break
        return candidate

    def random_window(
        self, count: int, side: int, height: int, width: int, device: torch.device
    ) -> torch.Tensor:
        """(count, 1, H, W) masks of a ``side``-square at a random position per sample."""
        top = torch.randint(
            0, height - side + 1, (count, 1), generator=self.generator, device=device
        )
        left = torch.randint(
            0, width - side + 1, (count, 1), generator=self.generator, device=device
        )
        rows = torch.arange(height, device=device)
        cols = torch.arange(width, device=device)
        in_rows = (rows >= top) & (rows < top + side)
        in_cols = (cols >= left) & (cols < left + side)
        return (in_rows[:, :, None] & in_cols[:, None, :]).unsqueeze(1)

    def random_signs(self, like: torch.Tensor) -> torch.Tensor:
        return torch.where(self.uniform_like(like) >= 0, 1.0, -1.0).to(like.dtype)
