"""Adversarial attacks on the deepfake detectors, behind one base class and a registry.

``create_attack("pgd", model, eps=16/255)(images, labels)`` returns adversarial images
in [0, 1]; ``attack.run(images, labels)`` also gives per-sample success and queries.
"""

from training.attacks import pgd  # noqa: F401  (registration)
from training.attacks.base import (
    EPS_PAPER,
    Attack,
    AttackInputError,
    AttackResult,
    UnknownAttackError,
    attack_class,
    create_attack,
    cross_entropy_loss,
    list_attacks,
    margin_loss,
    register_attack,
)

__all__ = [
    "EPS_PAPER",
    "Attack",
    "AttackInputError",
    "AttackResult",
    "UnknownAttackError",
    "attack_class",
    "create_attack",
    "cross_entropy_loss",
    "list_attacks",
    "margin_loss",
    "register_attack",
]
