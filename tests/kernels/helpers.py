"""Shared inputs and tolerances of the kernel tests."""

from __future__ import annotations

import torch
from torch import Tensor

# Kernel vs reference, per output dtype. Both compute in float32 and round once to the
# output dtype: float32 differs by a few ulps (PyTorch's CPU build contracts some
# products into FMAs, the kernels do not); half types by at most one ulp of theirs.
TOLERANCE: dict[torch.dtype, dict[str, float]] = {
    torch.float32: {"rtol": 2e-6, "atol": 2e-6},
    torch.float16: {"rtol": 1e-3, "atol": 1e-3},
    torch.bfloat16: {"rtol": 8e-3, "atol": 8e-3},
}

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
UNIT = ((0.0, 0.0, 0.0), (1.0, 1.0, 1.0))
IMAGENET = (IMAGENET_MEAN, IMAGENET_STD)


def assert_close(out: Tensor, ref: Tensor) -> None:
    """``out`` equals ``ref`` within the tolerance of ``ref``'s dtype."""
    assert out.dtype == ref.dtype and out.shape == ref.shape and out.device == ref.device
    torch.testing.assert_close(out, ref, **TOLERANCE[ref.dtype])


def assert_levels_close(out: Tensor, ref: Tensor, std: float = 1.0) -> None:
    """Quantized maps (possibly normalized by ``std``): equal, but for rare one-level flips.

    A level is 1/255 (``1/255/std`` after normalization). Kernel and reference round the
    resized value differently by an ulp at most, which moves ``round(255 m)`` only when
    ``255 m`` is within ~1e-5 of a half-integer: rare, except on large flat areas.
    """
    assert out.shape == ref.shape and out.dtype == ref.dtype
    levels = (out.double() - ref.double()).abs() * 255 * std
    assert levels.max() <= 1.0 + 1e-3, f"maps differ by {levels.max():.3f} levels"
    flipped = (levels > 0.5).double().mean().item()
    assert flipped <= 0.01, f"{flipped:.2%} of the map values differ by a level"


def padded_frames(seed: int = 0) -> Tensor:
    """Two frames, 37x53 and 181x97, random uint8, zero-padded into one (2, 181, 97, 3)."""
    g = torch.Generator().manual_seed(seed)
    frames = torch.zeros(2, 181, 97, 3, dtype=torch.uint8)
    frames[0, :37, :53] = torch.randint(0, 256, (37, 53, 3), generator=g, dtype=torch.uint8)
    frames[1] = torch.randint(0, 256, (181, 97, 3), generator=g, dtype=torch.uint8)
    return frames


# Crop boxes (x1, y1, x2, y2) and their frames: the small frame's full height at its
# left edge and a box on its right edge; tiny boxes (1x1, 3x3: upscaled 10-64x); the big
# frame's bottom rows full width (97x97: downscaled); its top-left and bottom-right
# corners; a rectangle; a 29x29 box (no resize at S = 29).
BOXES = torch.tensor(
    [
        [0, 0, 37, 37],
        [40, 20, 53, 33],
        [50, 30, 53, 33],
        [10, 10, 11, 11],
        [0, 84, 97, 181],
        [0, 0, 23, 23],
        [60, 150, 97, 181],
        [20, 5, 40, 50],
        [30, 60, 59, 89],
    ]
)
FRAME_IDS = torch.tensor([0, 0, 0, 1, 1, 1, 1, 1, 1])


def heavy_tailed(n: int, c: int, h: int, w: int, seed: int = 0) -> Tensor:
    """Attributions with heavy tails, per-sample scales far apart, NaN, inf and zeros."""
    g = torch.Generator().manual_seed(seed)
    scales = torch.tensor([1e-6, 1.0, 300.0, 2.0][:n]).view(n, 1, 1, 1)
    a = torch.randn(n, c, h, w, generator=g) ** 3 * scales
    a[0, 0, 0, 0] = float("nan")
    if n > 1:
        a[1, -1, 2, 3] = float("inf")
        a[1, 0, 4, 4] = float("-inf")
    a[-1, :, : h // 4] = 0.0  # a flat band
    return a
