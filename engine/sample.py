"""``veritas sample``: a short clip made from a real face photo bundled with scikit-image.

The photo is ``skimage.data.astronaut()`` (512x512, a real, frontal face: NASA's
portrait of Eileen Collins, public domain). Each frame zooms and pans it a little, so
the face moves and changes scale as in real footage; the result is encoded with the
codec of the output's extension (H.264 for ``.mp4``).
"""

from __future__ import annotations

import math
from pathlib import Path

import cv2
import numpy as np

# Where the face is in the 512x512 photo (x1, y1, x2, y2), from the Haar detector.
FACE_BOX = (177, 66, 272, 161)


def sample_photo() -> np.ndarray:
    from skimage import data

    return np.ascontiguousarray(data.astronaut())


def sample_frames(n: int, size: int = 384, photo: np.ndarray | None = None) -> list[np.ndarray]:
    """``n`` frames (size x size RGB) panning and zooming over the photo's face."""
    photo = sample_photo() if photo is None else photo
    cx = (FACE_BOX[0] + FACE_BOX[2]) / 2
    cy = (FACE_BOX[1] + FACE_BOX[3]) / 2
    frames = []
    for i in range(n):
        t = i / max(1, n - 1)
        zoom = 1.0 + 0.25 * math.sin(math.pi * t)  # in and out again
        dx = 12 * math.sin(2 * math.pi * t)
        dy = 6 * math.cos(2 * math.pi * t)
        # Map the face centre (moved by dx, dy) to the frame's upper-middle, scaled by zoom.
        scale = zoom * size / photo.shape[0] * 1.4
        m = np.array(
            [[scale, 0, size / 2 - scale * (cx + dx)], [0, scale, size * 0.4 - scale * (cy + dy)]],
            dtype=np.float64,
        )
        frames.append(
            cv2.warpAffine(
                photo, m, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT
            )
        )
    return frames


def write_sample(
    path: str | Path, seconds: float = 2.0, fps: float = 25.0, size: int = 384
) -> Path:
    from engine.video import VideoWriter  # PyAV, only to write

    n = max(1, round(seconds * fps))
    # A keyframe every second: the clip can be streamed (RTSP, RTMP, HLS segments) and
    # joined mid-way.
    with VideoWriter(path, fps, keyframe_s=1.0) as writer:
        for frame in sample_frames(n, size):
            writer.write(frame)
    return Path(path)
