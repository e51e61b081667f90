"""What the face detectors keep of their raw detections (config section ``[faces]``).

Apart from the detectors so that ``engine.config`` (and with it the queue commands) can
read a configuration without importing torch.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from engine.errors import ConfigError

_SIZE = re.compile(r"([1-9][0-9]{0,4})x([1-9][0-9]{0,4})")
MAX_WARM_SIZES = 8


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
    warm_frame_sizes: tuple[str, ...] = ("1920x1080",)
    """Frame sizes ``"WIDTHxHEIGHT"`` a compiled batched detector (RetinaFace under
    ``runtime.backend = "compile"``) is built for at start-up (``Pipeline.warm_start``),
    so that no batch of these sizes waits for a compilation. Frames that reach the
    network at one size share a graph: with RetinaFace's ``max_side`` 1024 every 16:9
    frame of 1024 pixels wide or more (720p, 1080p, 4K) does. ``[]``: build at the
    first batch."""

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
        sizes = self.warm_frame_sizes
        expected = f'at most {MAX_WARM_SIZES} sizes "WIDTHxHEIGHT", e.g. ["1920x1080"]'
        if not isinstance(sizes, list | tuple) or len(sizes) > MAX_WARM_SIZES:
            raise ConfigError("faces.warm_frame_sizes", sizes, expected)
        for size in sizes:
            if not isinstance(size, str) or not _SIZE.fullmatch(size):
                raise ConfigError("faces.warm_frame_sizes", size, expected)
        object.__setattr__(self, "warm_frame_sizes", tuple(sizes))

    @property
    def warm_sizes(self) -> list[tuple[int, int]]:
        """:attr:`warm_frame_sizes` as ``(height, width)`` pairs."""
        out = []
        for size in self.warm_frame_sizes:
            width, height = map(int, size.split("x"))
            out.append((height, width))
        return out
