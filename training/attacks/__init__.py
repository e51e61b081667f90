"""Adversarial attacks on the deepfake detectors, behind one base class and a registry.

``create_attack("pgd", model, eps=16/255)(images, labels)`` returns adversarial images
in [0, 1]; ``attack.run(images, labels)`` also gives per-sample success and queries.
The classes are here too, as in torchattacks: ``from training.attacks import PGD``.
Every module of this package is imported here, so an attack registers itself by
existing (``@register_attack`` on its class); a new one is also added to the imports
below (a test checks that every registered attack is).
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

from training.attacks.adaptive import AdaptiveAttack, DefendedPipeline  # noqa: E402
from training.attacks.apgd import APGD  # noqa: E402
from training.attacks.attaxai import AttaXAI, EvasiveAttaXAI  # noqa: E402
from training.attacks.bim import BIM  # noqa: E402
from training.attacks.cw import CW  # noqa: E402
from training.attacks.deepfool import DeepFool  # noqa: E402
from training.attacks.kra import KRA  # noqa: E402
from training.attacks.mifgsm import MIFGSM  # noqa: E402
from training.attacks.nes import NES  # noqa: E402
from training.attacks.pgd import PGD  # noqa: E402
from training.attacks.sinifgsm import SINIFGSM  # noqa: E402
from training.attacks.square import Square  # noqa: E402
from training.attacks.tifgsm import TIFGSM  # noqa: E402
from training.attacks.universal import UniversalPerturbation  # noqa: E402

__all__ = [
    "APGD",
    "BIM",
    "CW",
    "EPS_PAPER",
    "KRA",
    "MIFGSM",
    "NES",
    "PGD",
    "SINIFGSM",
    "TIFGSM",
    "AdaptiveAttack",
    "AttaXAI",
    "Attack",
    "AttackInputError",
    "AttackResult",
    "DeepFool",
    "DefendedPipeline",
    "EvasiveAttaXAI",
    "Square",
    "UniversalPerturbation",
    "UnknownAttackError",
    "attack_class",
    "create_attack",
    "cross_entropy_loss",
    "list_attacks",
    "margin_loss",
    "register_attack",
]
