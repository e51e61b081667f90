"""XceptionNet deepfake detector in the FaceForensics++ layout.

Chollet, "Xception: Deep Learning with Depthwise Separable Convolutions" (CVPR 2017),
as trained by Rössler et al. for FaceForensics++ and used by Hussain et al. (2020) and
the XAI-detection paper: 299x299 input, mean = std = 0.5, two logits, index 1 = fake.

The module names follow the layout of the published FF++ checkpoint (the Cadene
``pretrainedmodels`` Xception inside FF++'s ``TransferModel``): ``conv1``, ``bn1``,
``conv2``, ``bn2``, ``block1`` .. ``block12`` (each ``skip``, ``skipbn``, ``rep``),
``conv3``, ``bn3``, ``conv4``, ``bn4`` and the classifier ``last_linear``, so
``veritas convert-weights --format ffpp-xception`` only strips the wrapper's prefix.
Activations are registered modules (one per use), never functional calls, so Guided
Backprop can reach every one of them.

A channel and depth scale-down (``xception_tiny``) keeps the structure for tests.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import torch
from torch import nn

from engine.models.classifier import NormalizedClassifier
from engine.models.registry import ModelCfg, register_model
from engine.models.weights import strip_prefixes

# Channels of: stem conv1, stem conv2, entry blocks 1-3, exit block, conv3, conv4.
FULL_CHANNELS = (32, 64, 128, 256, 728, 1024, 1536, 2048)
TINY_CHANNELS = (8, 16, 24, 32, 48, 64, 96, 128)


class SeparableConv2d(nn.Module):
    """Depthwise ``conv1`` then pointwise 1x1 ``pointwise`` (no bias, as published)."""

    def __init__(self, cin: int, cout: int, kernel: int = 3, stride: int = 1, padding: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cin, kernel, stride, padding, groups=cin, bias=False)
        self.pointwise = nn.Conv2d(cin, cout, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pointwise(self.conv1(x))


class Block(nn.Module):
    """``reps`` x (ReLU, SeparableConv, BN), optional max-pool, plus a (1x1 conv) shortcut.

    The order of layers in ``rep`` is what fixes the published key indices
    (``block1.rep.0.conv1.weight`` ...): keep it.
    """

    def __init__(
        self, cin: int, cout: int, reps: int, stride: int, start_with_relu: bool, grow_first: bool
    ) -> None:
        super().__init__()
        if cout != cin or stride != 1:
            self.skip: nn.Module | None = nn.Conv2d(cin, cout, 1, stride=stride, bias=False)
            self.skipbn: nn.Module | None = nn.BatchNorm2d(cout)
        else:
            self.skip = self.skipbn = None
        layers: list[nn.Module] = []
        width = cin
        if grow_first:
            layers += [nn.ReLU(), SeparableConv2d(cin, cout), nn.BatchNorm2d(cout)]
            width = cout
        for _ in range(reps - 1):
            layers += [nn.ReLU(), SeparableConv2d(width, width), nn.BatchNorm2d(width)]
        if not grow_first:
            layers += [nn.ReLU(), SeparableConv2d(cin, cout), nn.BatchNorm2d(cout)]
        if not start_with_relu:
            layers = layers[1:]
        if stride != 1:
            layers.append(nn.MaxPool2d(3, stride, 1))
        self.rep = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x if self.skip is None else self.skipbn(self.skip(x))
        return self.rep(x) + shortcut


class Xception(nn.Module):
    """Xception with the Cadene/FF++ module names; ``forward`` returns logits."""

    def __init__(
        self,
        num_classes: int = 2,
        channels: Sequence[int] = FULL_CHANNELS,
        middle_blocks: int = 8,
    ) -> None:
        super().__init__()
        c_stem1, c_stem2, c1, c2, c3, c_exit, c_conv3, c_conv4 = channels
        self.conv1 = nn.Conv2d(3, c_stem1, 3, 2, 0, bias=False)
        self.bn1 = nn.BatchNorm2d(c_stem1)
        self.act1 = nn.ReLU()
        self.conv2 = nn.Conv2d(c_stem1, c_stem2, 3, bias=False)
        self.bn2 = nn.BatchNorm2d(c_stem2)
        self.act2 = nn.ReLU()
        blocks = [
            Block(c_stem2, c1, 2, 2, start_with_relu=False, grow_first=True),
            Block(c1, c2, 2, 2, start_with_relu=True, grow_first=True),
            Block(c2, c3, 2, 2, start_with_relu=True, grow_first=True),
            *[Block(c3, c3, 3, 1, True, True) for _ in range(middle_blocks)],
            Block(c3, c_exit, 2, 2, start_with_relu=True, grow_first=False),
        ]
        self.num_blocks = len(blocks)
        for i, block in enumerate(blocks, start=1):
            self.add_module(f"block{i}", block)
        self.conv3 = SeparableConv2d(c_exit, c_conv3)
        self.bn3 = nn.BatchNorm2d(c_conv3)
        self.act3 = nn.ReLU()
        self.conv4 = SeparableConv2d(c_conv3, c_conv4)
        self.bn4 = nn.BatchNorm2d(c_conv4)
        self.act4 = nn.ReLU()
        self.last_linear = nn.Linear(c_conv4, num_classes)
        self.num_features = c_conv4

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act1(self.bn1(self.conv1(x)))
        x = self.act2(self.bn2(self.conv2(x)))
        for i in range(1, self.num_blocks + 1):
            x = getattr(self, f"block{i}")(x)
        x = self.act3(self.bn3(self.conv3(x)))
        return self.act4(self.bn4(self.conv4(x)))

    def forward_head(self, x: torch.Tensor) -> torch.Tensor:
        return self.last_linear(x.mean(dim=(2, 3)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


_PUBLISHED = (
    "FaceForensics++ 'faceforensics++_models_subset/full/xception/full_c23.p' "
    "(pickled TransferModel, also used by Hussain et al. 2020)"
)


@register_model(
    ModelCfg(
        name="xception",
        kind="deepfake",
        input_size=299,
        mean=(0.5,) * 3,
        std=(0.5,) * 3,
        weights_format="ffpp-xception",
        published=_PUBLISHED,
    )
)
def xception(**kwargs: object) -> NormalizedClassifier:
    return NormalizedClassifier(Xception(**kwargs), mean=(0.5,) * 3, std=(0.5,) * 3)  # type: ignore[arg-type]


@register_model(
    ModelCfg(
        name="xception_tiny",
        kind="deepfake",
        input_size=64,
        mean=(0.5,) * 3,
        std=(0.5,) * 3,
        weights_format="ffpp-xception",
        tiny=True,
    )
)
def xception_tiny(**kwargs: object) -> NormalizedClassifier:
    net = Xception(channels=TINY_CHANNELS, middle_blocks=1, **kwargs)  # type: ignore[arg-type]
    return NormalizedClassifier(net, mean=(0.5,) * 3, std=(0.5,) * 3)


# --- the published checkpoint (veritas convert-weights --format ffpp-xception) ---------


def from_ffpp(state: dict[str, torch.Tensor], target: nn.Module) -> dict[str, torch.Tensor]:
    """FaceForensics++ ``full_c23.p`` (``model.*``; head Linear or Sequential(Dropout,
    Linear)) or timm ``legacy_xception`` names (head ``fc``) -> this module's names."""
    state = strip_prefixes(state, "module.model.", "model.", "module.")
    out = {}
    for k, v in state.items():
        k = re.sub(r"^last_linear\.1\.", "last_linear.", k)  # Sequential(Dropout, Linear)
        k = re.sub(r"^fc\.", "last_linear.", k)  # timm legacy_xception
        out["net." + k] = v
    return out
