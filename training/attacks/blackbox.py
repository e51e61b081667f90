"""The base of score-based black-box attacks: logits only, queries counted per sample.

A score-based attacker sees the detector's logits and nothing else: no gradients, no
weights. :class:`ScoreBasedAttack` gives its subclasses one way to ask the model,
:meth:`ScoreBasedAttack.query`, which runs without autograd and charges each row of
the batch to the sample it belongs to. Attacks stop querying a sample once it is
fooled, so samples spend different budgets; :attr:`AttackResult.queries` then holds
each sample's own count instead of the number of batched calls.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from training.attacks.base import EPS_PAPER, Attack, AttackInputError, AttackResult


class ScoreBasedAttack(Attack):
    """An :class:`Attack` that reads only logits, through :meth:`query`.

    ``chunk`` caps the rows of one model call (None: a whole query batch at once),
    for large detectors whose populations do not fit in memory.
    """

    def __init__(
        self,
        model: nn.Module,
        eps: float = EPS_PAPER,
        seed: int = 0,
        chunk: int | None = None,
    ) -> None:
        super().__init__(model, eps, seed)
        if chunk is not None and chunk < 1:
            raise AttackInputError(f"{type(self).__name__}: chunk must be >= 1, got {chunk}")
        self.chunk = chunk
        self.sample_queries = torch.zeros(0, dtype=torch.long)

    def run(self, images: torch.Tensor, labels: torch.Tensor) -> AttackResult:
        self.sample_queries = torch.zeros(len(images), dtype=torch.long)
        result = super().run(images, labels)
        result.queries = self.sample_queries.clone()
        return result

    def query(self, x: torch.Tensor, owners: torch.Tensor) -> torch.Tensor:
        """Logits of the rows of ``x``; row i is one query of sample ``owners[i]``."""
        with torch.no_grad():
            parts = x.split(self.chunk or max(len(x), 1))
            logits = torch.cat([self.logits(part) for part in parts])
        self.sample_queries.index_add_(0, owners.cpu(), torch.ones(len(owners), dtype=torch.long))
        return logits

    def search_directions(
        self, x: torch.Tensor, count: int, tile: int = 1, latin: bool = False
    ) -> torch.Tensor:
        """``count`` standard normal directions per sample of ``x``: ``(count, *x.shape)``.

        ``tile > 1`` draws one value per ``tile x tile`` block (a lower-dimensional
        search, the tiling prior of Ilyas et al. 2019). ``latin=True`` draws a Latin
        hypercube: per coordinate, the ``count`` values fall one in each of ``count``
        equiprobable strata of N(0, 1), in random order.
        """
        n, c, h, w = x.shape
        shape = (count, n, c, -(-h // tile), -(-w // tile))
        if latin:
            order = torch.rand(shape, generator=self.generator, device=x.device).argsort(dim=0)
            jitter = torch.rand(shape, generator=self.generator, device=x.device)
            u = ((order + jitter) / count).clamp(1e-6, 1 - 1e-6)
            z = (math.sqrt(2) * torch.erfinv(2 * u - 1)).to(x.dtype)
        else:
            z = torch.randn(shape, generator=self.generator, device=x.device, dtype=x.dtype)
        if tile > 1:
            z = z.repeat_interleave(tile, dim=3).repeat_interleave(tile, dim=4)[..., :h, :w]
        return z
