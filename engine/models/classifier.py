"""The wrapper every detector runs in: normalization inside, two logits out.

Attacks (``training.attacks``) and XAI (``engine.xai``) work on float images in
[0, 1]; the wrapper applies the network's own mean/std, so gradients and
perturbation budgets are in pixel space. Every classifier returns two logits so that
attacks and XAI treat all detectors alike.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn


class NormalizedClassifier(nn.Module):
    """``net((x - mean) / std)`` for ``x`` in [0, 1]; ``net`` returns two logits."""

    def __init__(self, net: nn.Module, mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        self.net = net
        # Not persistent: the preprocessing is metadata of the architecture, not weights.
        self.register_buffer("mean", torch.tensor(mean).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, -1, 1, 1), persistent=False)

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std

    def logits(self, out: torch.Tensor) -> torch.Tensor:
        return out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.logits(self.net(self.normalize(x)))


class SingleLogitClassifier(NormalizedClassifier):
    """A network with one fake logit ``z`` (p_fake = sigmoid(z)) shown as two logits.

    The logits are ``(-z/2, z/2)``: their softmax is exactly ``(1 - sigmoid(z),
    sigmoid(z))``, and both have a non-zero gradient, so an XAI map of the "real"
    logit is as informative as one of the "fake" logit (a zero real logit would give
    all-zero maps) and the CW margin ``Z_real - Z_fake`` equals ``-z``.
    """

    def logits(self, out: torch.Tensor) -> torch.Tensor:
        z = out.reshape(out.shape[0], -1)[:, :1]
        return torch.cat([-z / 2, z / 2], dim=1)
