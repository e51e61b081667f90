"""A small trained classifier for attack tests, trained in seconds on bundled real data.

``skimage.data.lfw_subset()`` holds 100 face and 100 non-face 25x25 grey crops. A
three-layer CNN learns to tell them apart (label 1 = face, standing in for "fake"),
inside the engine's NormalizedClassifier wrapper so it takes [0, 1] images and
normalizes itself, as every attack expects.
"""

from __future__ import annotations

import os

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from engine.models import NormalizedClassifier

SIZE = 32

SEED = int(os.environ.get("VERITAS_TEST_SEED", "0"))
"""Seed of the small models' training. Another CPU trains other weights from the same
seed (other kernels round differently), so the attack tests must pass for any seed:
``VERITAS_TEST_SEED=3 pytest tests/training`` checks a test against another outcome."""


def lfw_images() -> tuple[torch.Tensor, torch.Tensor]:
    from skimage import data

    grey = torch.from_numpy(data.lfw_subset()).float()  # (200, 25, 25) in [0, 1]
    images = (
        F.interpolate(grey[:, None], size=(SIZE, SIZE), mode="bilinear", align_corners=False)
        .clamp(0, 1)
        .repeat(1, 3, 1, 1)
    )
    labels = torch.cat([torch.ones(100), torch.zeros(100)]).long()  # faces first
    return images, labels


class SmallCNN(nn.Module):
    def __init__(self, act: type[nn.Module] = nn.ReLU) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 16, 3, padding=1),
            act(),
            nn.MaxPool2d(2),
            nn.Conv2d(16, 32, 3, padding=1),
            act(),
            nn.MaxPool2d(2),
            nn.Conv2d(32, 32, 3, padding=1),
            act(),
            nn.AdaptiveAvgPool2d(1),
        )
        self.fc = nn.Linear(32, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.features(x).flatten(1))


def train_small_classifier(act: type[nn.Module] = nn.ReLU, seed: int = 0) -> nn.Module:
    """Train on one thread: multi-threaded CPU kernels sum in a different order, so the
    weights (and how robust the model is) would otherwise depend on the machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return _train(act, seed)
    finally:
        torch.set_num_threads(threads)


def _train(act: type[nn.Module], seed: int) -> nn.Module:
    images, labels = lfw_images()
    torch.manual_seed(seed)
    model = NormalizedClassifier(SmallCNN(act), mean=(0.5,) * 3, std=(0.25,) * 3)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    g = torch.Generator().manual_seed(seed)
    for _ in range(200):
        idx = torch.randint(0, len(images), (32,), generator=g)
        loss = F.cross_entropy(model(images[idx]), labels[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    opt.zero_grad(set_to_none=True)
    return model.eval()


@pytest.fixture(scope="session")
def small_model() -> nn.Module:
    """A trained ReLU CNN (NormalizedClassifier), > 90% accurate on its data."""
    return train_small_classifier(seed=SEED)


@pytest.fixture(scope="session")
def small_silu_model() -> nn.Module:
    """The same with SiLU activations (like EfficientNet)."""
    return train_small_classifier(nn.SiLU, seed=SEED)


@pytest.fixture(scope="session")
def clean_batch(small_model: nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
    """16 images the small model classifies correctly (8 faces, 8 non-faces), with labels."""
    images, labels = lfw_images()
    with torch.no_grad():
        right = small_model(images).argmax(1) == labels
    faces = torch.nonzero(right & (labels == 1)).flatten()[:8]
    others = torch.nonzero(right & (labels == 0)).flatten()[:8]
    idx = torch.cat([faces, others])
    return images[idx].clone(), labels[idx].clone()
