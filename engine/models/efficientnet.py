"""EfficientNetB4ST deepfake detector in the icpr2020dfdc layout.

Bonettini et al., "Video Face Manipulation Detection Through Ensemble of CNNs"
(ICPR 2020): an EfficientNet-B4 trained with a Siamese (triplet) strategy, then a
``BatchNorm1d(1792) -> Linear(1792, 1)`` head. 224x224 input, ImageNet mean/std, one
logit whose sigmoid is the probability of fake; :class:`SingleLogitClassifier` shows
it as two logits so attacks and XAI treat it like XceptionNet.

The backbone is timm's ``tf_efficientnet_b4`` (TF "same" padding, BN eps 1e-3, SiLU):
at 224 px it computes exactly what the lukemelas ``efficientnet_pytorch`` backbone of
the published weights computed when they were trained (that package's releases up to
0.6.3 padded every stride-2 convolution as TF-SAME does at even input sizes).
``veritas convert-weights --format icpr-effnetb4st`` renames the published keys
(``feat_ext.efficientnet._blocks.N...``) to timm's (``blocks.S.I...``).
"""

from __future__ import annotations

import timm
import torch
from torch import nn

from engine.models.classifier import SingleLogitClassifier
from engine.models.registry import IMAGENET_MEAN, IMAGENET_STD, ModelCfg, register_model


class SiameseTunedNet(nn.Module):
    """A pooled-feature backbone and the Siamese-tuning head (one fake logit)."""

    def __init__(self, backbone: nn.Module) -> None:
        super().__init__()
        self.backbone = backbone
        width = backbone.num_features
        self.head = nn.Sequential(nn.BatchNorm1d(width), nn.Linear(width, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(x))


_PUBLISHED = (
    "icpr2020dfdc 'EfficientNetB4ST_FFPP' / 'EfficientNetB4ST_DFDC' (plain state dict "
    "of fornet.EfficientNetB4ST)"
)


@register_model(
    ModelCfg(
        name="efficientnet_b4st",
        kind="deepfake",
        input_size=224,
        mean=IMAGENET_MEAN,
        std=IMAGENET_STD,
        weights_format="icpr-effnetb4st",
        published=_PUBLISHED,
    )
)
def efficientnet_b4st(**kwargs: object) -> SingleLogitClassifier:
    backbone = timm.create_model("tf_efficientnet_b4", pretrained=False, num_classes=0, **kwargs)
    return SingleLogitClassifier(SiameseTunedNet(backbone), IMAGENET_MEAN, IMAGENET_STD)


@register_model(
    ModelCfg(
        name="efficientnet_b4st_tiny",
        kind="deepfake",
        input_size=64,
        mean=IMAGENET_MEAN,
        std=IMAGENET_STD,
        weights_format="icpr-effnetb4st",
        tiny=True,
    )
)
def efficientnet_b4st_tiny(**kwargs: object) -> SingleLogitClassifier:
    """timm's ``test_efficientnet`` (SiLU, squeeze-excite, one block per stage) + the head."""
    backbone = timm.create_model("test_efficientnet", pretrained=False, num_classes=0, **kwargs)
    return SingleLogitClassifier(SiameseTunedNet(backbone), IMAGENET_MEAN, IMAGENET_STD)
