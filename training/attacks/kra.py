"""KRA: Key Region Attack (Liao, Li, Wang, Kong, Zhu, Lyu, Yin, Song, Wu, "Imperceptible
Adversarial Examples for Fake Image Detection", ICIP 2021), a sparse white-box attack.

Multi-layer key-region selection (the paper's Alg. 1): for each chosen layer l, the
gradient of the detector's output (the true class's logit) with respect to the layer's
feature map, summed over channels, G_l = Σ_j ∂f(x)/∂h_l^j, is normalized to [0, 1]
per sample, upsampled to the image size, and thresholded at t; the final mask M is the
OR over layers. The attack (Alg. 2) perturbs only masked pixels with PGD steps and,
per sample, lowers t by δ (down to t_min) after every round that did not flip the
detector, so the mask grows only as much as needed.

Settings: t = 0.8, t_min = 0.1, δ = 0.1 are the paper's. The inner attack is PGD with
the CW margin (kappa 0), ``steps`` per round. The paper bounds no norm; here every
pixel stays within ε = 16/255 in L∞ (``norm = "Linf"``), and pixels outside the mask are
exactly unchanged. :meth:`KRA.run` also reports each sample's mask, L0 (changed
pixels) and L2 norm, the paper's perceptibility measures.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, fields
from functools import partial

import torch
import torch.nn.functional as F
from torch import nn

from training.attacks.base import (
    EPS_PAPER,
    Attack,
    AttackInputError,
    AttackResult,
    margin_loss,
    register_attack,
)
from training.attacks.layers import capture_outputs, resolve_layers


@dataclass
class KRAResult(AttackResult):
    mask: torch.Tensor
    """(N, 1, H, W) bool: the key region each sample was last attacked in."""
    l0: torch.Tensor
    """(N,) pixels changed in any channel (divide by H·W for the paper's P_L0)."""
    l2: torch.Tensor
    """(N,) L2 norm of the perturbation over all channels."""


@register_attack
class KRA(Attack):
    """Key Region Attack with PGD inside. Arguments: ``eps`` (L∞ bound on masked
    pixels, 16/255), ``threshold`` (t, 0.8), ``min_threshold`` (t_min, 0.1),
    ``threshold_step`` (δ, 0.1), ``rounds`` (thresholds tried; None: down to t_min,
    8 with the defaults), ``steps`` (PGD steps per round, 10), ``alpha`` (step size;
    2.5·eps/steps), ``layers`` (module names, or how many ``nn.Conv2d`` layers to
    take evenly from the first to the last; 4), ``seed``.

    >>> result = KRA(detector).run(images, labels)
    >>> result.l0 / (images.shape[2] * images.shape[3])   # fraction of pixels changed
    """

    name = "kra"
    norm = "Linf"

    def __init__(
        self,
        model: nn.Module,
        eps: float = EPS_PAPER,
        threshold: float = 0.8,
        min_threshold: float = 0.1,
        threshold_step: float = 0.1,
        rounds: int | None = None,
        steps: int = 10,
        alpha: float | None = None,
        layers: Sequence[str] | int | None = 4,
        seed: int = 0,
    ) -> None:
        super().__init__(model, eps, seed)
        if not 0 <= min_threshold <= threshold < 1 or threshold_step <= 0:
            raise AttackInputError(
                "KRA: need 0 <= min_threshold <= threshold < 1 and threshold_step > 0, got "
                f"{min_threshold}, {threshold}, {threshold_step}"
            )
        if steps < 1 or (rounds is not None and rounds < 1):
            raise AttackInputError(f"KRA: steps and rounds must be >= 1, got {steps}, {rounds}")
        self.threshold, self.min_threshold, self.threshold_step = (
            threshold,
            min_threshold,
            threshold_step,
        )
        levels = math.ceil((threshold - min_threshold) / threshold_step - 1e-9) + 1
        self.rounds = rounds if rounds is not None else levels
        self.steps = steps
        self.alpha = alpha if alpha is not None else 2.5 * eps / steps
        self.layers = layers
        self.loss = partial(margin_loss, kappa=0.0)
        self.last_mask: torch.Tensor | None = None

    def run(self, images: torch.Tensor, labels: torch.Tensor) -> KRAResult:
        result = super().run(images, labels)
        delta = (result.adv - images).detach()
        assert self.last_mask is not None  # set by perturb
        return KRAResult(
            **{f.name: getattr(result, f.name) for f in fields(AttackResult)},
            mask=self.last_mask.cpu(),
            l0=(delta.abs().amax(dim=1) > 0).flatten(1).sum(dim=1).cpu(),
            l2=delta.flatten(1).norm(dim=1).cpu(),
        )

    def perturb(self, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        heat = self.heatmaps(images, labels)  # (N, L, H, W) in [0, 1]
        threshold = torch.full((len(images),), self.threshold, device=images.device)
        adv = images.clone()
        self.last_mask = torch.zeros_like(images[:, :1], dtype=torch.bool)
        todo = torch.arange(len(images), device=images.device)
        for _ in range(self.rounds):
            x, y = images[todo], labels[todo]
            mask = (heat[todo] > threshold[todo].view(-1, 1, 1, 1)).any(dim=1, keepdim=True)
            self.last_mask[todo] = mask
            cur = adv[todo]
            for _ in range(self.steps):
                grad, _ = self.gradient(cur, y, self.loss)
                cur = self.project_linf(cur + self.alpha * grad.sign() * mask, x)
            adv[todo] = cur
            with torch.no_grad():
                fooled = self.logits(cur).argmax(dim=1) != y
            todo = todo[~fooled]
            if len(todo) == 0:
                break
            threshold[todo] = (threshold[todo] - self.threshold_step).clamp(min=self.min_threshold)
        return adv

    def heatmaps(self, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Per-layer key-region heat maps ``(N, L, H, W)``, each normalized to [0, 1]."""
        names = resolve_layers(self.model, self.layers)
        x = images.detach().requires_grad_(True)
        with torch.enable_grad(), capture_outputs(self.model, names) as outputs:
            score = self.logits(x).gather(1, labels[:, None]).sum()
            feats = [outputs[name] for name in names]
            grads = torch.autograd.grad(score, feats, allow_unused=True)
        maps = []
        for name, grad in zip(names, grads, strict=True):
            if grad is None or grad.dim() != 4:
                raise AttackInputError(
                    f"KRA: layer {name!r} does not give a spatial feature map that "
                    "the output depends on; choose convolutional layers"
                )
            g = grad.sum(dim=1, keepdim=True)  # G_l: channels summed
            low = g.amin(dim=(2, 3), keepdim=True)
            high = g.amax(dim=(2, 3), keepdim=True)
            g = (g - low) / (high - low).clamp_min(1e-12)
            maps.append(
                F.interpolate(g, size=images.shape[2:], mode="bilinear", align_corners=False)
            )
        return torch.cat(maps, dim=1).detach()
