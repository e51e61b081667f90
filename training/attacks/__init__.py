"""Adversarial attacks on the deepfake detectors, behind one base class and a registry.

``create_attack("pgd", model, eps=16/255)(images, labels)`` returns adversarial images
in [0, 1]; ``attack.run(images, labels)`` also gives per-sample success and queries.
Every module of this package is imported here, so an attack registers itself by
existing (``@register_attack`` on its class).
"""

import importlib
import pkgutil

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

for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")

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
