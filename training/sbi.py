"""Self-blended images: fakes made from a real face and a perturbed copy of itself.

Shiohara & Yamasaki, "Detecting Deepfakes with Self-Blended Images" (CVPR 2022). A
deepfake pastes a generated face into a target frame; its traces are the blending
boundary and the colour, sharpness and position mismatch between the pasted region and
the rest. SBI reproduces just those traces without any generator:

1. **source** = the image with its colour (per-channel shift, hue, saturation,
   brightness, contrast) and frequency content (blur by down/up-sampling, or sharpening)
   perturbed, and slightly rescaled and shifted around the face centre;
2. **mask** = a soft face region: an ellipse over the face box (SBI uses the landmark
   hull; we know the box), randomly sized and rotated, blurred by a random Gaussian and
   scaled by a blend ratio from {0.25, 0.5, 0.75, 1, 1, 1};
3. **fake** = source · mask + target · (1 − mask).

All randomness comes from the ``numpy.random.Generator`` passed in.
"""

from __future__ import annotations

import cv2
import numpy as np

BLEND_RATIOS = (0.25, 0.5, 0.75, 1.0, 1.0, 1.0)
"""The paper's blend ratios (1 twice as often)."""

Box = tuple[float, float, float, float]


def perturb_colour(
    image: np.ndarray, rng: np.random.Generator, strength: float = 1.0
) -> np.ndarray:
    """Random RGB shift, hue/saturation/value shift, brightness and contrast (uint8 RGB).

    ``strength`` scales every range (1: the ranges of SBI's source-target augmentation).
    """
    k = strength
    x = image.astype(np.float32)
    x += rng.uniform(-20 * k, 20 * k, size=3).astype(np.float32)
    hsv = cv2.cvtColor(np.clip(x, 0, 255).astype(np.uint8), cv2.COLOR_RGB2HSV).astype(np.float32)
    hsv[..., 0] = (hsv[..., 0] + rng.uniform(-10 * k, 10 * k)) % 180
    hsv[..., 1] = np.clip(hsv[..., 1] + rng.uniform(-30 * k, 30 * k), 0, 255)
    hsv[..., 2] = np.clip(hsv[..., 2] + rng.uniform(-20 * k, 20 * k), 0, 255)
    x = cv2.cvtColor(hsv.astype(np.uint8), cv2.COLOR_HSV2RGB).astype(np.float32)
    contrast = rng.uniform(1 - 0.2 * k, 1 + 0.2 * k)
    x = (x - x.mean()) * contrast + x.mean() + rng.uniform(-15 * k, 15 * k)
    return np.clip(x, 0, 255).astype(np.uint8)


def perturb_frequency(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Blur (down-sample and back up) or sharpen, at random."""
    h, w = image.shape[:2]
    if rng.random() < 0.5:
        f = rng.uniform(0.4, 0.8)
        small = cv2.resize(image, (max(1, round(w * f)), max(1, round(h * f))), cv2.INTER_AREA)
        return cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR)
    amount = rng.uniform(0.3, 1.0)
    blurred = cv2.GaussianBlur(image, (0, 0), 1.0).astype(np.float32)
    sharp = image.astype(np.float32) * (1 + amount) - blurred * amount
    return np.clip(sharp, 0, 255).astype(np.uint8)


def perturb_geometry(image: np.ndarray, box: Box, rng: np.random.Generator) -> np.ndarray:
    """Rescale by 0.95-1.05 and shift by up to 3% of the face size around the face centre."""
    x1, y1, x2, y2 = box
    cx, cy, side = (x1 + x2) / 2, (y1 + y2) / 2, max(x2 - x1, y2 - y1)
    m = cv2.getRotationMatrix2D((cx, cy), 0.0, rng.uniform(0.95, 1.05))
    m[:, 2] += rng.uniform(-0.03, 0.03, size=2) * side
    h, w = image.shape[:2]
    return cv2.warpAffine(image, m, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)


def face_mask(shape: tuple[int, int], box: Box, rng: np.random.Generator) -> np.ndarray:
    """Soft mask in [0, 1] (float32, H x W): a random blurred ellipse over the face."""
    x1, y1, x2, y2 = box
    w, h = x2 - x1, y2 - y1
    mask = np.zeros(shape, np.float32)
    centre = (round((x1 + x2) / 2), round(y1 + h * rng.uniform(0.5, 0.6)))
    axes = (max(1, round(w * rng.uniform(0.3, 0.45))), max(1, round(h * rng.uniform(0.38, 0.5))))
    cv2.ellipse(mask, centre, axes, rng.uniform(-12, 12), 0, 360, 1.0, thickness=-1)
    sigma = max(w, h) * rng.uniform(0.04, 0.12)
    mask = cv2.GaussianBlur(mask, (0, 0), sigma)
    return np.clip(mask / max(float(mask.max()), 1e-6), 0, 1)


def self_blend(
    image: np.ndarray,
    box: Box,
    rng: np.random.Generator,
    ratios: tuple[float, ...] = BLEND_RATIOS,
    strength: float = 1.0,
) -> tuple[np.ndarray, np.ndarray]:
    """A self-blended fake of ``image`` (uint8 RGB) whose face is in ``box``; and its mask.

    ``ratios``: the blend ratios to draw from; ``strength`` scales the colour
    perturbation (the defaults are the paper's).
    """
    colour = perturb_colour(image, rng, strength)
    source = perturb_geometry(perturb_frequency(colour, rng), box, rng)
    mask = face_mask(image.shape[:2], box, rng) * float(rng.choice(ratios))
    m = mask[..., None]
    fake = source.astype(np.float32) * m + image.astype(np.float32) * (1 - m)
    return np.clip(np.round(fake), 0, 255).astype(np.uint8), mask
