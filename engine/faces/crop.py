"""Face crops: enlarge a detector box, cut it out of the frame, resize it.

This is the single implementation of the crop used online (the engine) and offline
(``training/``'s dataset builder), so what Detect-ResNet50 is trained on is exactly
what it sees when serving.

The box rule follows the FaceForensics++ code path the paper's detectors were
trained with: a square of side ``floor(max(w, h) * scale)`` centred on the box,
moved inside the frame at the top/left and shrunk at the bottom/right edges.
Resizing is bilinear with antialiasing (as PIL's resize, which that code used):
:func:`resize_images`, from :mod:`kernels.resample`. The crop itself is
:func:`kernels.crop_resize.crop_resize_normalize`: a fused Triton kernel on CUDA, its
PyTorch reference elsewhere.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from kernels.crop_resize import crop_resize_normalize
from kernels.resample import resize_images

__all__ = ["DEFAULT_BOX_SCALE", "crop_faces", "enlarge_boxes", "resize_images"]

DEFAULT_BOX_SCALE = 1.3


def enlarge_boxes(boxes: torch.Tensor, height: int, width: int, scale: float) -> torch.Tensor:
    """Square integer crop boxes ``(k, 4)`` (x1, y1, x2, y2) for detector boxes ``(k, >=4)``."""
    if boxes.numel() == 0:
        return torch.zeros(0, 4, dtype=torch.long)
    b = boxes[:, :4].double()
    side = (torch.maximum(b[:, 2] - b[:, 0], b[:, 3] - b[:, 1]) * scale).floor().long().clamp(min=1)
    cx = ((b[:, 0] + b[:, 2]) / 2).floor().long()
    cy = ((b[:, 1] + b[:, 3]) / 2).floor().long()
    x1 = (cx - side // 2).clamp(0, width - 1)
    y1 = (cy - side // 2).clamp(0, height - 1)
    side = torch.minimum(torch.minimum(side, width - x1), height - y1).clamp(min=1)
    return torch.stack([x1, y1, x1 + side, y1 + side], dim=1)


def crop_faces(
    frames: torch.Tensor,
    crop_boxes: torch.Tensor,
    frame_ids: torch.Tensor,
    size: int,
    *,
    mean: Sequence[float] = (0.0, 0.0, 0.0),
    std: Sequence[float] = (1.0, 1.0, 1.0),
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """Cut ``crop_boxes`` (from :func:`enlarge_boxes`) out of uint8 NHWC ``frames``.

    Returns ``(k, 3, size, size)`` of ``dtype`` (float32 by default) on the frames'
    device: the crops in [0, 1], or ``(crop - mean) / std`` when a detector's ``mean``
    and ``std`` are given (its normalized input, e.g. for a compiled runtime that takes
    it directly).

    On CUDA frames this is one fused Triton launch for all faces; elsewhere the plain
    PyTorch reference (:mod:`kernels.crop_resize`; ``VERITAS_KERNELS`` overrides).
    """
    return crop_resize_normalize(frames, crop_boxes, frame_ids, size, mean, std, dtype)
