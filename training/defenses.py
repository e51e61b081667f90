"""Input-transformation defenses: baselines to compare Detect-ResNet50 with.

From "Attacks and defenses for deepfake detection: a comparative study" (2025), section
on image preprocessing: the face crop is transformed before the deepfake detector sees
it, hoping to wash out the adversarial perturbation.

``median3``    median filter, 3x3 (OpenCV ``medianBlur``)
``gaussian3``  Gaussian filter, 3x3, σ = 0.8 (OpenCV's σ for a 3x3 kernel)
``average3``   mean filter, 3x3 (OpenCV ``blur``)
``jpeg70``, ``jpeg80``, ``jpeg90``   JPEG compression at quality 70, 80, 90 (OpenCV,
               4:2:0 chroma subsampling), decoded again

Each takes and returns uint8 crops ``(N, 3, H, W)`` (RGB); borders are reflected
(OpenCV's default).
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

import cv2
import numpy as np
import torch

from engine.registry import Registry
from training.errors import BadOptionError

Transform = Callable[[np.ndarray], np.ndarray]
"""uint8 RGB (H, W, 3) -> uint8 RGB (H, W, 3)."""

DEFENSES: Registry[str, tuple[Transform, str]] = Registry(
    "defense",
    unknown=lambda name, known: BadOptionError("--defenses", name, ", ".join(known)),
)
"""Defense name -> (transform, title for tables)."""


def register_defense(name: str, title: str) -> Callable[[Transform], Transform]:
    def wrap(fn: Transform) -> Transform:
        DEFENSES.add(name, (fn, title))
        return fn

    return wrap


def list_defenses(pattern: str = "*") -> list[str]:
    return DEFENSES.keys(pattern)


def defense_title(name: str) -> str:
    return DEFENSES.get(name)[1]


def apply_defense(name: str, crops: torch.Tensor) -> torch.Tensor:
    """Apply defense ``name`` to uint8 crops ``(N, 3, H, W)``."""
    fn = DEFENSES.get(name)[0]
    if crops.dtype != torch.uint8 or crops.dim() != 4 or crops.shape[1] != 3:
        raise ValueError(
            f"defenses take uint8 (N, 3, H, W) crops, got {crops.dtype} {tuple(crops.shape)}"
        )
    images = crops.permute(0, 2, 3, 1).cpu().numpy()
    out = np.stack([fn(np.ascontiguousarray(im)) for im in images]) if len(images) else images
    return torch.from_numpy(out).permute(0, 3, 1, 2).contiguous()


@register_defense("median3", "median 3×3")
def median3(image: np.ndarray) -> np.ndarray:
    return cv2.medianBlur(image, 3)


@register_defense("gaussian3", "Gaussian 3×3")
def gaussian3(image: np.ndarray) -> np.ndarray:
    return cv2.GaussianBlur(image, (3, 3), 0)


@register_defense("average3", "average 3×3")
def average3(image: np.ndarray) -> np.ndarray:
    return cv2.blur(image, (3, 3))


def jpeg(image: np.ndarray, quality: int) -> np.ndarray:
    ok, data = cv2.imencode(
        ".jpg", cv2.cvtColor(image, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, quality]
    )
    if not ok:  # pragma: no cover  (OpenCV encodes any uint8 image)
        raise RuntimeError("JPEG encoding failed")
    return cv2.cvtColor(cv2.imdecode(data, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)


for _q in (70, 80, 90):
    register_defense(f"jpeg{_q}", f"JPEG q{_q}")(partial(jpeg, quality=_q))
