"""Face detectors: the interface, and a registry of implementations.

A face detector takes a batch of frames (uint8, NHWC, RGB, padded to the largest
frame of the batch, with each frame's true ``(height, width)`` in ``sizes``) and
returns, per frame, a float tensor ``(k, 5)`` of boxes ``x1, y1, x2, y2, score`` in
that frame's pixel coordinates, best first, at most ``max_faces`` of them.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from engine.errors import UnknownModelError
from engine.faces.settings import DetectionSettings
from engine.registry import Registry


@dataclass(frozen=True)
class FaceDetectorCfg:
    name: str
    weights_format: str | None = None
    """``veritas convert-weights --format`` for its published checkpoint, if any."""
    published: str = ""
    batched: bool = False
    """True: one network pass per batch, on any device. False: per frame, on the CPU."""
    tiny: bool = False


class FaceDetector(ABC):
    cfg: FaceDetectorCfg
    weights_status: str = "untrained"
    device: torch.device = torch.device("cpu")

    def __init__(self, settings: DetectionSettings | None = None) -> None:
        self.settings = settings or DetectionSettings()

    @abstractmethod
    def detect(self, frames: torch.Tensor, sizes: torch.Tensor) -> list[torch.Tensor]:
        """Boxes per frame: a list of ``(k, 5)`` float32 CPU tensors."""

    def to(self, device: torch.device | str) -> FaceDetector:
        self.device = torch.device(device)
        return self

    def with_runtime(self, settings: Any) -> FaceDetector:
        """This detector as it runs under ``settings`` (a ``RuntimeConfig``: precision,
        memory format, compilation); a detector without a network of its own (OpenCV's
        cascades) is returned as it is. The pipeline calls it once."""
        return self

    def warm(self, frame_sizes: Sequence[tuple[int, int]]) -> int:
        """Build what runs per frame size (a compiled network) for frames of these
        ``(height, width)`` before the first batch; how many network input sizes were
        built (0: nothing is built per size, as for OpenCV's cascades or eager networks)."""
        return 0

    def _finish(self, boxes: torch.Tensor) -> torch.Tensor:
        """Apply the settings' score, size and count limits to ``(k, 5)`` boxes."""
        s = self.settings
        if boxes.numel() == 0:
            return boxes.reshape(0, 5).float()
        w = boxes[:, 2] - boxes[:, 0]
        h = boxes[:, 3] - boxes[:, 1]
        keep = (boxes[:, 4] >= s.score_threshold) & (torch.minimum(w, h) >= s.min_face_size)
        boxes = boxes[keep]
        order = boxes[:, 4].argsort(descending=True)[: s.max_faces]
        return boxes[order].float().cpu()


Factory = Callable[..., FaceDetector]
FACE_DETECTORS: Registry[str, tuple[Factory, FaceDetectorCfg]] = Registry(
    "face detector",
    unknown=lambda name, known: UnknownModelError(name, "face detector", known),
    providers=("engine.faces.haar", "engine.faces.retinaface"),
)
"""Face detector name -> (factory, config); the bundled detectors come with their modules."""


def register_face_detector(cfg: FaceDetectorCfg) -> Callable[[Factory], Factory]:
    def wrap(factory: Factory) -> Factory:
        FACE_DETECTORS.add(cfg.name, (factory, cfg))
        return factory

    return wrap


def list_face_detectors(pattern: str = "*") -> list[str]:
    return sorted(FACE_DETECTORS.keys(pattern))


def face_detector_cfg(name: str) -> FaceDetectorCfg:
    return FACE_DETECTORS.get(name)[1]


def create_face_detector(
    name: str,
    weights: str | Path | None = None,
    settings: DetectionSettings | None = None,
    device: torch.device | str = "cpu",
    **kwargs: object,
) -> FaceDetector:
    cfg = face_detector_cfg(name)
    factory, _ = FACE_DETECTORS.get(name)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)  # an untrained network is the same in every run
        detector = factory(weights=weights, settings=settings, **kwargs)
    detector.cfg = cfg
    return detector.to(device)
