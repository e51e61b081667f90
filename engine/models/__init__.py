"""Networks of the engine: deepfake detectors and Detect-ResNet50, in one registry."""

from engine.models import detect_resnet, efficientnet, xception  # noqa: F401  (registration)
from engine.models.classifier import NormalizedClassifier, SingleLogitClassifier
from engine.models.registry import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    ModelCfg,
    create_model,
    list_models,
    model_cfg,
    register_model,
)

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "ModelCfg",
    "NormalizedClassifier",
    "SingleLogitClassifier",
    "create_model",
    "list_models",
    "model_cfg",
    "register_model",
]
