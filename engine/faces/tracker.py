"""Boxes carried between face detections: ``faces.detect_every`` and a light IoU tracker.

With ``faces.detect_every = N`` the detector runs on every Nth frame of each stream
(frames 0, N, 2N, ... as the stream reaches the detection stage, after any sampling or
real-time dropping) and the frames between get their boxes from a :class:`BoxTracker`:
DeepStream's "interval + tracker" idea, kept light.

* At a detection, the new boxes are matched to the tracked ones greedily by IoU (best
  pair first, at least :data:`MATCH_IOU`). A matched face gets a velocity: how far each
  box edge moved per frame since its previous detection. An unmatched new face starts
  at rest; a tracked face the detector no longer finds is dropped (the detector is
  the authority, so no box outlives it by more than N - 1 frames).
* Between detections each face moves on at its velocity (constant-velocity
  extrapolation), clamped to the frame, with the score of its last detection.

``N = 1`` (the default) detects every frame: the tracker is not used at all.
"""

from __future__ import annotations

import torch
from torch import Tensor

MATCH_IOU = 0.3
"""Least IoU for a new detection to continue a tracked face."""


def box_iou(a: Tensor, b: Tensor) -> Tensor:
    """``(len(a), len(b))`` IoU of ``x1, y1, x2, y2`` boxes (extra columns ignored)."""
    a, b = a[:, :4].float(), b[:, :4].float()
    top_left = torch.maximum(a[:, None, :2], b[None, :, :2])
    bottom_right = torch.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = (bottom_right - top_left).clamp(min=0).prod(-1)
    area_a = (a[:, 2:] - a[:, :2]).clamp(min=0).prod(-1)
    area_b = (b[:, 2:] - b[:, :2]).clamp(min=0).prod(-1)
    union = area_a[:, None] + area_b[None, :] - inter
    return torch.where(union > 0, inter / union, torch.zeros_like(union))


def greedy_match(iou: Tensor, threshold: float = MATCH_IOU) -> list[tuple[int, int]]:
    """Pairs ``(row, column)`` of ``iou``, best first, each row and column used once."""
    pairs: list[tuple[int, int]] = []
    if iou.numel() == 0:
        return pairs
    iou = iou.clone()
    while True:
        best = int(iou.argmax())
        r, c = divmod(best, iou.shape[1])
        if float(iou[r, c]) < threshold:
            return pairs
        pairs.append((r, c))
        iou[r, :] = -1.0
        iou[:, c] = -1.0


class BoxTracker:
    """The faces of one stream between detections (see the module doc).

    Per frame, in order: :meth:`next_frame` says how many frames have passed since the
    last detection frame (0: detect this one), then :meth:`detected` (on a 0) or
    :meth:`predict` gives the frame's boxes. The schedule depends only on the count of
    frames, so a batch can ask for every frame's number first, detect the frames that
    need it at once, and then hand out the boxes in order.
    """

    def __init__(self, every: int) -> None:
        if every < 1:
            raise ValueError(f"detect_every must be >= 1, got {every}")
        self.every = every
        self._count = 0
        self._boxes = torch.zeros(0, 5)
        """(k, 5) the last detection's boxes."""
        self._velocity = torch.zeros(0, 4)
        """(k, 4) per-frame motion of each box edge."""

    def next_frame(self) -> int:
        """Frames since the last detection frame for the next frame (0: detect it)."""
        since = self._count % self.every
        self._count += 1
        return since

    def detected(self, boxes: Tensor) -> Tensor:
        """The detector's ``(k, 5)`` boxes for a detection frame; returns them."""
        boxes = boxes.reshape(-1, 5).float().cpu()
        velocity = torch.zeros(len(boxes), 4)
        if len(self._boxes) and len(boxes):
            for old, new in greedy_match(box_iou(self._boxes, boxes)):
                velocity[new] = (boxes[new, :4] - self._boxes[old, :4]) / self.every
        self._boxes, self._velocity = boxes, velocity
        return boxes

    def predict(self, since: int, height: int, width: int) -> Tensor:
        """The boxes ``since`` frames after the last detection, in a ``height`` ×
        ``width`` frame."""
        if not len(self._boxes):
            return self._boxes.clone()
        out = self._boxes.clone()
        out[:, :4] += self._velocity * since
        out[:, [0, 2]] = out[:, [0, 2]].clamp(0, width)
        out[:, [1, 3]] = out[:, [1, 3]].clamp(0, height)
        keep = (out[:, 2] > out[:, 0]) & (out[:, 3] > out[:, 1])
        return out[keep]
