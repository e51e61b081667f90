"""The base of every attack: images in [0, 1], a model that normalizes inside.

``Attack(model, eps=..., ...)(images, labels) -> adversarial images`` (``DESIGN.md``).
``labels`` are the true classes; attacks are untargeted, so on the two-class deepfake
detectors they push fakes (label 1) to "real" — the paper's threat. ``run`` returns
an :class:`AttackResult` with per-sample success and the number of model queries.

The base class owns what every attack needs and none should repeat: checking inputs,
putting the model in eval mode (and restoring its mode in ``finally``), a seeded
random generator on the images' device, projection onto the ε-ball and [0, 1], and
the losses. A subclass overrides :meth:`Attack.perturb` only.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from engine.errors import VeritasError
from engine.registry import Registry

EPS_PAPER = 16 / 255
"""The paper's L∞ budget for every attack."""


class AttackInputError(VeritasError, ValueError):
    """Images or labels an attack cannot take."""


class UnknownAttackError(VeritasError, KeyError):
    def __init__(self, name: str) -> None:
        super().__init__(f"unknown attack {name!r}: choose one of {', '.join(list_attacks())}")


@dataclass
class AttackResult:
    adv: torch.Tensor
    """Adversarial images, same shape as the input, in [0, 1]."""
    success: torch.Tensor
    """(N,) bool: the model no longer predicts the true label."""
    queries: torch.Tensor
    """(N,) model forward passes spent per sample (gradient steps count one each)."""


class Attack(ABC):
    """Untargeted evasion attack on a classifier of [0, 1] images.

    Arguments shared by every attack: ``eps`` (the budget in the attack's norm; 16/255
    for L∞ attacks as in the paper), ``seed`` (all randomness comes from a generator
    seeded with it, so a run is repeatable).
    """

    name: ClassVar[str]
    norm: ClassVar[str] = "Linf"
    """``Linf``, ``L2``, ``L0`` or ``unbounded`` (minimum-norm attacks like C&W, DeepFool)."""

    def __init__(self, model: nn.Module, eps: float = EPS_PAPER, seed: int = 0) -> None:
        if eps < 0:
            raise AttackInputError(f"{type(self).__name__}: eps must be >= 0, got {eps}")
        self.model = model
        self.eps = eps
        self.seed = seed
        self.queries = 0  # incremented by `logits`
        self.generator: torch.Generator | None = None

    # --- the one method a subclass writes -------------------------------------------------

    @abstractmethod
    def perturb(self, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Adversarial images for ``images`` (N, C, H, W in [0, 1]) of true ``labels``."""

    # --- calling ----------------------------------------------------------------------------

    def __call__(self, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return self.run(images, labels).adv

    def run(self, images: torch.Tensor, labels: torch.Tensor) -> AttackResult:
        images, labels = self._check(images, labels)
        was_training = self.model.training
        self.model.eval()
        self.queries = 0
        self.generator = torch.Generator(device=images.device).manual_seed(self.seed)
        try:
            adv = self.perturb(images, labels).detach().clamp(0.0, 1.0)
            with torch.no_grad():
                success = self.model(adv).argmax(dim=1) != labels
        finally:
            self.model.train(was_training)
        queries = torch.full((len(images),), self.queries, dtype=torch.long)
        return AttackResult(adv=adv, success=success.cpu(), queries=queries)

    def _check(
        self, images: torch.Tensor, labels: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        name = type(self).__name__
        if images.dim() != 4 or not images.is_floating_point():
            raise AttackInputError(
                f"{name}: images must be float (N, C, H, W), got "
                f"{images.dtype} {tuple(images.shape)}"
            )
        if images.numel() and (images.min() < 0 or images.max() > 1):
            raise AttackInputError(
                f"{name}: images must be in [0, 1] (the model normalizes "
                "inside), got values outside"
            )
        labels = torch.as_tensor(labels, device=images.device).long().reshape(-1)
        if labels.numel() == 1 and len(images) > 1:
            labels = labels.expand(len(images))
        if len(labels) != len(images):
            raise AttackInputError(f"{name}: {len(labels)} labels for {len(images)} images")
        return images.detach(), labels

    # --- helpers for subclasses ---------------------------------------------------------------

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """The model's logits, counting one query per sample."""
        self.queries += 1
        return self.model(x)

    def gradient(
        self, x: torch.Tensor, labels: torch.Tensor, loss: Callable[..., torch.Tensor]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(∇_x Σ loss, per-sample loss)`` for ``loss(logits, labels) -> (N,)``."""
        x = x.detach().requires_grad_(True)
        with torch.enable_grad():
            per_sample = loss(self.logits(x), labels)
            (grad,) = torch.autograd.grad(per_sample.sum(), x, retain_graph=False)
        return grad.detach(), per_sample.detach()

    def project_linf(self, adv: torch.Tensor, images: torch.Tensor) -> torch.Tensor:
        """Clip ``adv`` into the L∞ ball of radius eps around ``images`` and into [0, 1]."""
        return torch.min(torch.max(adv, images - self.eps), images + self.eps).clamp(0.0, 1.0)

    def uniform_like(self, x: torch.Tensor, low: float = -1.0, high: float = 1.0) -> torch.Tensor:
        u = torch.rand(x.shape, generator=self.generator, device=x.device, dtype=x.dtype)
        return u * (high - low) + low

    def normal_like(self, x: torch.Tensor) -> torch.Tensor:
        return torch.randn(x.shape, generator=self.generator, device=x.device, dtype=x.dtype)


# --- losses (to be MAXIMIZED by untargeted attacks; shape (N,)) ---------------------------------


def cross_entropy_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(logits, labels, reduction="none")


def margin_loss(
    logits: torch.Tensor, labels: torch.Tensor, kappa: float = float("inf")
) -> torch.Tensor:
    """Carlini-Wagner margin: ``max_{j≠y} Z_j − Z_y``, capped at ``kappa``.

    The paper writes PGD's objective as L = max(Z_real − Z_fake, 0), "minimized to
    maximize the score of the target label Real". Its stated intent (push the fake
    logit below the real one, stop once it is) is ``min(margin, kappa)`` with kappa = 0
    maximized, which is what PGD does here by default; the sign as printed would
    raise the fake logit instead.
    """
    true = logits.gather(1, labels[:, None]).squeeze(1)
    others = logits.clone()
    others.scatter_(1, labels[:, None], float("-inf"))
    return (others.max(dim=1).values - true).clamp(max=kappa)


# --- registry -----------------------------------------------------------------------------------

ATTACKS: Registry[str, type[Attack]] = Registry(
    "attack", unknown=lambda name, known: UnknownAttackError(name)
)
"""Attack name -> its class."""


def register_attack(cls: type[Attack]) -> type[Attack]:
    return ATTACKS.add(cls.name, cls)


def list_attacks(pattern: str = "*") -> list[str]:
    return sorted(ATTACKS.keys(pattern))


def attack_class(name: str) -> type[Attack]:
    return ATTACKS.get(name)


def create_attack(name: str, model: nn.Module, **kwargs: object) -> Attack:
    return attack_class(name)(model, **kwargs)  # type: ignore[arg-type]
