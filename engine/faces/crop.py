"""Face crops: enlarge a detector box, cut it out of the frame, resize it.

This is the single implementation of the crop used online (the engine) and offline
(``training/``'s dataset builder), so what Detect-ResNet50 is trained on is exactly
what it sees when serving.

The box rule follows the FaceForensics++ code path the paper's detectors were
trained with: a square of side ``floor(max(w, h) * scale)`` centred on the box,
moved inside the frame at the top/left and shrunk at the bottom/right edges.
Resizing is bilinear with antialiasing (as PIL's resize, which that code used).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

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


def resize_images(images: torch.Tensor, size: int) -> torch.Tensor:
    """Resize float NCHW images to ``size`` x ``size`` (bilinear, antialiased)."""
    if images.shape[-2:] == (size, size):
        return images
    return F.interpolate(
        images, size=(size, size), mode="bilinear", antialias=True, align_corners=False
    )


def crop_faces(
    frames: torch.Tensor, crop_boxes: torch.Tensor, frame_ids: torch.Tensor, size: int
) -> torch.Tensor:
    """Cut ``crop_boxes`` (from :func:`enlarge_boxes`) out of uint8 NHWC ``frames``.

    Returns float32 ``(k, 3, size, size)`` in [0, 1] on the frames' device.
    """
    if crop_boxes.numel() == 0:
        return torch.zeros(0, 3, size, size, device=frames.device)
    crops = []
    for (x1, y1, x2, y2), fid in zip(crop_boxes.tolist(), frame_ids.tolist(), strict=True):
        patch = frames[fid, y1:y2, x1:x2].permute(2, 0, 1).unsqueeze(0).float()
        crops.append(resize_images(patch, size))
    return (torch.cat(crops) / 255.0).clamp_(0.0, 1.0)
