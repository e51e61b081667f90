"""Registry of the engine's neural networks, with their weights metadata as data.

Every architecture is registered under a name together with a :class:`ModelCfg` that
says what input it takes (size, mean, std), what it outputs, and in which published
layout its checkpoints come (the ``convert-weights --format`` that reads them). Tests
parametrize over :func:`list_models`, so a new entry is tested without a new test.

    >>> from engine.models import create_model, list_models
    >>> list_models("xception*")
    ['xception', 'xception_tiny']
    >>> model = create_model("xception_tiny")      # random init: weights_status == "untrained"
"""

from __future__ import annotations

import fnmatch
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import torch
from torch import nn

from engine.errors import UnknownModelError
from engine.registry import Registry

log = logging.getLogger(__name__)

ModelKind = Literal["deepfake", "adversarial"]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class ModelCfg:
    """What a registered network takes and gives, and where its weights come from.

    Models take float images in [0, 1], NCHW, at ``input_size``; they normalize with
    ``mean``/``std`` inside, so attacks and XAI work in pixel space. Deepfake detectors
    return two logits, index :attr:`fake_index` = fake; Detect-ResNet50 returns two
    logits, index 1 = attacked.
    """

    name: str
    kind: ModelKind
    input_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    weights_format: str | None = None
    """The ``veritas convert-weights --format`` that turns the published checkpoint
    into this architecture's safetensors file (None: no published checkpoint)."""
    published: str = ""
    """Where the published checkpoint comes from (a description; nothing is downloaded)."""
    fake_index: int = 1
    tiny: bool = False
    """A scaled-down variant with the same structure, for tests and CPU smoke runs."""
    extra: dict[str, object] = field(default_factory=dict)


Factory = Callable[..., nn.Module]
MODELS: Registry[str, tuple[Factory, ModelCfg]] = Registry("model")
"""Model name -> (factory, config)."""


def register_model(cfg: ModelCfg) -> Callable[[Factory], Factory]:
    """Register ``factory(**kwargs) -> nn.Module`` under ``cfg.name``."""

    def wrap(factory: Factory) -> Factory:
        MODELS.add(cfg.name, (factory, cfg))
        return factory

    return wrap


def list_models(pattern: str = "*", kind: ModelKind | None = None) -> list[str]:
    """Names of registered models matching a shell-style ``pattern`` (and ``kind``)."""
    return sorted(
        name
        for name, (_, cfg) in MODELS.items()
        if fnmatch.fnmatch(name, pattern) and (kind is None or cfg.kind == kind)
    )


def model_cfg(name: str, kind: ModelKind | None = None) -> ModelCfg:
    entry = MODELS.find(name)
    if entry is None or (kind is not None and entry[1].kind != kind):
        raise UnknownModelError(name, kind or "model", list_models(kind=kind))
    return entry[1]


def create_model(
    name: str,
    weights: str | Path | None = None,
    kind: ModelKind | None = None,
    seed: int = 0,
    **kwargs: object,
) -> nn.Module:
    """Build a registered model in eval mode, loading ``weights`` (safetensors) if given.

    The returned module has ``cfg`` (its :class:`ModelCfg`) and ``weights_status``:
    ``"trained"`` when a complete weights file was loaded, else ``"untrained"``.
    Random initialization uses ``seed`` (without touching the global RNG), so an
    untrained model is the same in every run and every process.
    """
    cfg = model_cfg(name, kind)
    factory, _ = MODELS.get(name)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = factory(**kwargs)
    model.cfg = cfg
    model.weights_status = "untrained"
    if weights:
        from engine.models.weights import load_weights

        load_weights(model, weights)
    return model.eval()
