"""What the face detectors keep of their raw detections (config section ``[faces]``).

Apart from the detectors so that ``engine.config`` (and with it the queue commands) can
read a configuration without importing torch.
"""

from __future__ import annotations

from dataclasses import dataclass

from engine.errors import ConfigError


@dataclass(frozen=True)
class DetectionSettings:
    score_threshold: float = 0.5
    """Drop detections scoring below this (detectors without scores report 1.0)."""
    min_face_size: int = 24
    """Drop faces whose shorter side is below this many pixels."""
    max_faces: int = 8
    """Keep at most this many faces per frame (highest scores first)."""
    detect_every: int = 1
    """Run the detector on every Nth frame of each stream; the frames between get the
    boxes carried by an IoU tracker (``engine.faces.tracker``). 1: every frame."""

    def __post_init__(self) -> None:
        for key, value, low, high in (
            ("faces.score_threshold", self.score_threshold, 0.0, 1.0),
            ("faces.min_face_size", self.min_face_size, 1, 100_000),
            ("faces.max_faces", self.max_faces, 1, 1024),
            ("faces.detect_every", self.detect_every, 1, 1000),
        ):
            if not low <= value <= high:
                raise ConfigError(key, value, f"a value from {low} to {high}")
        if not isinstance(self.detect_every, int) or isinstance(self.detect_every, bool):
            raise ConfigError("faces.detect_every", self.detect_every, "an integer from 1 to 1000")
