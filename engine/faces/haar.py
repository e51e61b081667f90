"""OpenCV Haar-cascade face detector: the CPU default, with weights bundled in OpenCV.

Frames are converted to grey and, when larger than ``max_side``, downscaled before
detection (cascades cost grows with pixels; faces stay findable at 640 px), then the
boxes are scaled back. The cascade gives no score: every box scores 1.0.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import torch

from engine.errors import WeightsError
from engine.faces.base import (
    DetectionSettings,
    FaceDetector,
    FaceDetectorCfg,
    register_face_detector,
)

DEFAULT_CASCADE = "haarcascade_frontalface_default.xml"


class HaarFaceDetector(FaceDetector):
    weights_status = "trained"

    def __init__(
        self,
        weights: str | Path | None = None,
        settings: DetectionSettings | None = None,
        scale_factor: float = 1.1,
        min_neighbors: int = 5,
        max_side: int = 640,
    ) -> None:
        super().__init__(settings)
        path = str(weights) if weights else str(Path(cv2.data.haarcascades) / DEFAULT_CASCADE)
        self.cascade = cv2.CascadeClassifier(path)
        if self.cascade.empty():
            raise WeightsError(path, "is not a readable OpenCV Haar cascade", "give a cascade .xml")
        self.scale_factor = scale_factor
        self.min_neighbors = min_neighbors
        self.max_side = max_side

    def detect(self, frames: torch.Tensor, sizes: torch.Tensor) -> list[torch.Tensor]:
        out = []
        for image, (h, w) in zip(frames, sizes.tolist(), strict=True):
            out.append(self._finish(self._detect_one(image[:h, :w].cpu().numpy())))
        return out

    def _detect_one(self, rgb: np.ndarray) -> torch.Tensor:
        grey = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
        scale = min(1.0, self.max_side / max(grey.shape))
        if scale < 1.0:
            grey = cv2.resize(grey, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
        min_size = max(1, int(self.settings.min_face_size * scale))
        found = self.cascade.detectMultiScale(
            grey,
            scaleFactor=self.scale_factor,
            minNeighbors=self.min_neighbors,
            minSize=(min_size, min_size),
        )
        if len(found) == 0:
            return torch.zeros(0, 5)
        xywh = torch.as_tensor(np.asarray(found), dtype=torch.float32) / scale
        boxes = torch.cat([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]], dim=1)
        return torch.cat([boxes, torch.ones(len(boxes), 1)], dim=1)


@register_face_detector(FaceDetectorCfg(name="haar", published="OpenCV's bundled cascade"))
def haar(**kwargs: object) -> HaarFaceDetector:
    return HaarFaceDetector(**kwargs)  # type: ignore[arg-type]
