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

import re

import timm
import torch
from torch import nn

from engine.models.classifier import SingleLogitClassifier
from engine.models.registry import IMAGENET_MEAN, IMAGENET_STD, ModelCfg, register_model
from engine.models.weights import strip_prefixes


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


# --- the published checkpoint (veritas convert-weights --format icpr-effnetb4st) -------


def _timm_name(key: str, stage_of: list[tuple[int, int]], depthwise_only: set[int]) -> str:
    """lukemelas ``efficientnet_pytorch`` name → timm EfficientNet name."""
    top = {
        "_conv_stem.": "conv_stem.",
        "_bn0.": "bn1.",
        "_conv_head.": "conv_head.",
        "_bn1.": "bn2.",
    }
    for old, new in top.items():
        if key.startswith(old):
            return new + key[len(old) :]
    m = re.match(r"_blocks\.(\d+)\.(\w+)\.(.+)$", key)
    if not m:
        raise KeyError(key)
    n, layer, rest = int(m.group(1)), m.group(2), m.group(3)
    if n >= len(stage_of):
        raise KeyError(key)
    stage, idx = stage_of[n]
    if n in depthwise_only:  # depthwise-separable block (no expansion)
        names = {
            "_depthwise_conv": "conv_dw",
            "_bn1": "bn1",
            "_se_reduce": "se.conv_reduce",
            "_se_expand": "se.conv_expand",
            "_project_conv": "conv_pw",
            "_bn2": "bn2",
        }
    else:
        names = {
            "_expand_conv": "conv_pw",
            "_bn0": "bn1",
            "_depthwise_conv": "conv_dw",
            "_bn1": "bn2",
            "_se_reduce": "se.conv_reduce",
            "_se_expand": "se.conv_expand",
            "_project_conv": "conv_pwl",
            "_bn2": "bn3",
        }
    if layer not in names:
        raise KeyError(key)
    return f"blocks.{stage}.{idx}.{names[layer]}.{rest}"


def from_icpr(state: dict[str, torch.Tensor], target: nn.Module) -> dict[str, torch.Tensor]:
    """icpr2020dfdc ``EfficientNetB4ST`` names (lukemelas ``efficientnet_pytorch``
    backbone) -> this module's (timm backbone) names."""
    state = strip_prefixes(state, "module.", "model.")
    backbone = target.net.backbone
    stage_of = [(s, i) for s, stage in enumerate(backbone.blocks) for i in range(len(stage))]
    blocks = {
        int(m.group(1))
        for k in state
        if (m := re.match(r"feat_ext\.efficientnet\._blocks\.(\d+)\.", k))
    }
    expanding = {
        int(m.group(1))
        for k in state
        if (m := re.match(r"feat_ext\.efficientnet\._blocks\.(\d+)\._expand_conv", k))
    }
    out = {}
    for k, v in state.items():
        if k.startswith("feat_ext.efficientnet."):
            name = k[len("feat_ext.efficientnet.") :]
            try:
                out["net.backbone." + _timm_name(name, stage_of, blocks - expanding)] = v
            except KeyError:
                out[k] = v  # reported as unexpected by the checks
        elif k.startswith("feat_ext.classifier."):
            continue  # EfficientNetB4's own head: saved, but unused by the ST forward
        elif k.startswith("classifier."):
            out["net.head." + k[len("classifier.") :]] = v
        else:
            out[k] = v
    return out
