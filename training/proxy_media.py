"""Media for the proxy run: real face "videos" from scikit-image's photos, and SBI fakes.

No data set can be downloaded here, so the proxy run makes its own, from the face
photos scikit-image bundles: ``astronaut()`` and the 100 faces of ``lfw_subset()``
(25x25 grey, upscaled). Each face is an *identity*; an identity gives a real clip (the
photo moving a little, with a per-clip flip, colour cast and brightness) and a fake
clip (the same frames, each self-blended, :mod:`training.sbi`). Clips are H.264 files in the
plain layout (``real/<id>.mp4``, ``fake/<id>.mp4``), so the dataset builder reads them
exactly as it reads a user's videos; a real clip and its fake share a name, hence a
split group.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np

from training.sbi import BLEND_RATIOS, Box, self_blend

FRAME = 112
"""Frame side in pixels; faces are about 64 px (the tiny detectors' input size)."""
FACE = 64
ASTRONAUT_FACE = (177, 66, 272, 161)
"""Face box (x1, y1, x2, y2) in ``skimage.data.astronaut()``."""


@dataclass(frozen=True)
class Identity:
    name: str
    image: np.ndarray
    """uint8 RGB, FRAME x FRAME."""
    box: Box


def identities() -> list[Identity]:
    """The astronaut and the 100 LFW faces, each as a FRAME x FRAME frame with its face box."""
    from skimage import data

    out = []
    a = data.astronaut()
    x1, y1, x2, y2 = ASTRONAUT_FACE
    cx, cy, side = (x1 + x2) / 2, (y1 + y2) / 2, (x2 - x1) * FRAME / FACE
    left, top = round(cx - side / 2), round(cy - side / 2)
    region = a[top : top + round(side), left : left + round(side)]
    face = cv2.resize(region, (FRAME, FRAME), interpolation=cv2.INTER_AREA)
    pad = (FRAME - FACE) / 2
    out.append(Identity("astronaut", face, (pad, pad, pad + FACE, pad + FACE)))
    pad_i = (FRAME - FACE) // 2
    for i, grey in enumerate(data.lfw_subset()[:100]):
        g = cv2.resize((grey * 255).astype(np.uint8), (FACE, FACE), interpolation=cv2.INTER_CUBIC)
        g = np.pad(g, pad_i, mode="edge")
        box = (float(pad_i), float(pad_i), float(pad_i + FACE), float(pad_i + FACE))
        out.append(Identity(f"lfw{i:03d}", np.repeat(g[..., None], 3, axis=2), box))
    return out


def clip_frames(
    identity: Identity, n: int, rng: np.random.Generator
) -> tuple[list[np.ndarray], list[Box]]:
    """``n`` frames of ``identity`` (gentle motion, a per-clip look) and each frame's face box."""
    image, box = identity.image, identity.box
    if rng.random() < 0.5:
        image = image[:, ::-1].copy()
        box = (FRAME - box[2], box[1], FRAME - box[0], box[3])
    gain = rng.uniform(0.9, 1.1, size=3).astype(np.float32)
    offset = np.float32(rng.uniform(-12, 12))
    look = np.clip(image.astype(np.float32) * gain + offset, 0, 255).astype(np.uint8)
    phase, amp = rng.uniform(0, 2 * np.pi), rng.uniform(1.0, 3.0)
    frames, boxes = [], []
    for k in range(n):
        t = phase + 2 * np.pi * k / max(n, 1)
        m = cv2.getRotationMatrix2D((FRAME / 2, FRAME / 2), 0.0, 1 + 0.02 * np.sin(t))
        m[:, 2] += (amp * np.cos(t), amp * np.sin(t))
        frames.append(cv2.warpAffine(look, m, (FRAME, FRAME), borderMode=cv2.BORDER_REPLICATE))
        corners = np.array([[box[0], box[1], 1], [box[2], box[3], 1]], np.float32) @ m.T
        boxes.append((*corners[0].tolist(), *corners[1].tolist()))
    return frames, boxes


def write_clip(path: Path, frames: Sequence[np.ndarray], fps: int = 25) -> Path:
    """H.264 (crf 18, yuv420p) ``.mp4`` of uint8 RGB frames."""
    path.parent.mkdir(parents=True, exist_ok=True)
    h, w = frames[0].shape[:2]
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        stream.time_base = Fraction(1, fps)
        stream.options = {"crf": "18", "preset": "ultrafast"}
        for i, f in enumerate(frames):
            vf = av.VideoFrame.from_ndarray(np.ascontiguousarray(f), format="rgb24")
            vf.pts = i
            container.mux(stream.encode(vf))
        container.mux(stream.encode(None))
    return path


def write_clips(
    folder: Path,
    people: Sequence[Identity],
    frames: int,
    seed: int,
    ratios: tuple[float, ...] = BLEND_RATIOS,
    strength: float = 1.0,
) -> list[Path]:
    """``folder/real/<name>.mp4`` and ``folder/fake/<name>.mp4`` for each identity.

    The fake clip is the real clip with every frame self-blended, as a deepfake of a
    video keeps the target video's motion and look.
    """
    written = []
    for k, person in enumerate(people):
        rng = np.random.default_rng([seed, k])
        real, boxes = clip_frames(person, frames, rng)
        fake = [
            self_blend(f, b, rng, ratios, strength)[0] for f, b in zip(real, boxes, strict=True)
        ]
        written.append(write_clip(folder / "real" / f"{person.name}.mp4", real))
        written.append(write_clip(folder / "fake" / f"{person.name}.mp4", fake))
    return written
