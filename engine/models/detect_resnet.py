"""Detect-ResNet50: is a face's "real" verdict forced by an adversarial attack?

Pinhasov et al., "Detecting Adversarial Attacks in Deepfake Detectors Using XAI"
(2024), section 3.5 and figure 4: ONE ResNet50 backbone embeds both the face crop
and its XAI map (``engine.xai.prepare_map``); the two 2048-d embeddings are
concatenated and classified by ``Linear(4096, 512) -> ReLU -> Linear(512, 2)``.
Index 1 = attacked. Inputs are [0, 1] images at 224x224; ImageNet normalization
happens inside.

The backbone is torchvision's ResNet50 with ``fc`` removed, so torchvision and timm
ResNet50 checkpoints (same key names) load into ``backbone.*``.
"""

from __future__ import annotations

import torch
from torch import nn
from torchvision.models.resnet import Bottleneck, ResNet

from engine.models.registry import IMAGENET_MEAN, IMAGENET_STD, ModelCfg, register_model
from engine.models.weights import strip_prefixes


class DetectResNet50(nn.Module):
    def __init__(self, backbone: ResNet, hidden: int = 512, num_classes: int = 2) -> None:
        super().__init__()
        embed_dim = backbone.fc.in_features
        backbone.fc = nn.Identity()
        self.backbone = backbone
        self.head = nn.Sequential(
            nn.Linear(2 * embed_dim, hidden), nn.ReLU(), nn.Linear(hidden, num_classes)
        )
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        """Backbone embedding ``(N, 2048)`` of [0, 1] images."""
        return self.backbone((images - self.mean) / self.std)

    def forward(self, crops: torch.Tensor, maps: torch.Tensor) -> torch.Tensor:
        if crops.shape != maps.shape:
            raise ValueError(f"crops {tuple(crops.shape)} and maps {tuple(maps.shape)} differ")
        # One backbone pass over crops and maps together, in training as in eval: the
        # batch statistics BatchNorm trains with and the running statistics it evaluates
        # with are both those of the mixed batch (training.finetune, "BatchNorm").
        e_crop, e_map = self.embed(torch.cat([crops, maps])).chunk(2)
        return self.head(torch.cat([e_crop, e_map], dim=1))

    def forward_stacked(self, stacked: torch.Tensor) -> torch.Tensor:
        """Logits ``(M, 2)`` from the pre-normalized input ``(2M, 3, S, S)``.

        ``stacked`` is ``cat([crops, maps])`` already normalized with :attr:`mean` and
        :attr:`std`, as ``engine.xai.maps.detect_resnet_inputs`` builds it in one fused
        pass; the result equals ``forward(crops, maps)``.
        """
        if stacked.dim() != 4 or stacked.shape[0] % 2 or stacked.shape[1] != 3:
            raise ValueError(
                f"stacked input {tuple(stacked.shape)} is not (2M, 3, S, S): build it with "
                "engine.xai.maps.detect_resnet_inputs(crops, attributions, ...)"
            )
        e_crop, e_map = self.backbone(stacked).chunk(2)
        return self.head(torch.cat([e_crop, e_map], dim=1))


_PUBLISHED = (
    "backbone: torchvision 'resnet50' ImageNet weights (IMAGENET1K_V1/V2 .pth) or timm "
    "'resnet50' (model.safetensors); head: trained with 'python -m training.finetune'"
)


@register_model(
    ModelCfg(
        name="detect_resnet50",
        kind="adversarial",
        input_size=224,
        mean=IMAGENET_MEAN,
        std=IMAGENET_STD,
        weights_format="resnet50",
        published=_PUBLISHED,
    )
)
def detect_resnet50(**kwargs: object) -> DetectResNet50:
    return DetectResNet50(ResNet(Bottleneck, [3, 4, 6, 3]), **kwargs)  # type: ignore[arg-type]


@register_model(
    ModelCfg(
        name="detect_resnet50_tiny",
        kind="adversarial",
        input_size=64,
        mean=IMAGENET_MEAN,
        std=IMAGENET_STD,
        weights_format="resnet50",
        tiny=True,
    )
)
def detect_resnet50_tiny(**kwargs: object) -> DetectResNet50:
    """Same structure and embedding size with one bottleneck per stage."""
    return DetectResNet50(ResNet(Bottleneck, [1, 1, 1, 1]), **kwargs)  # type: ignore[arg-type]


# --- the published checkpoint (veritas convert-weights --format resnet50) --------------


def from_resnet50(state: dict[str, torch.Tensor], target: nn.Module) -> dict[str, torch.Tensor]:
    """torchvision / timm ``resnet50`` names -> this module's backbone (``fc`` dropped:
    the head stays untrained)."""
    state = strip_prefixes(state, "module.", "model.", "backbone.")
    return {"backbone." + k: v for k, v in state.items() if not k.startswith("fc.")}
