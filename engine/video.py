"""Video encoding through PyAV: the annotated output, the sample clip, test media.

:class:`VideoWriter` takes uint8 RGB frames and encodes them with the codec that
fits the file's extension (H.264 for ``.mp4``/``.mkv``/``.ts``, VP9 for ``.webm``),
at a fixed frame rate; ``lossless=True`` writes FFV1 in RGB (``bgr0``), which decodes to
the very pixels written (a Matroska ``.mkv`` file: what an adversarial perturbation
needs to survive storage). Frames whose size differs from the first are resized to it;
odd sizes are padded to even (4:2:0 chroma needs even dimensions).
"""

from __future__ import annotations

import logging
from fractions import Fraction
from pathlib import Path
from types import TracebackType

import av
import cv2
import numpy as np

log = logging.getLogger(__name__)

CODEC_BY_SUFFIX = {
    ".mp4": "libx264",
    ".mkv": "libx264",
    ".mov": "libx264",
    ".ts": "libx264",
    ".webm": "libvpx-vp9",
    ".avi": "mpeg4",
}


class VideoWriter:
    def __init__(
        self,
        path: str | Path,
        fps: float,
        codec: str | None = None,
        crf: int = 23,
        options: dict[str, str] | None = None,
        lossless: bool = False,
        keyframe_s: float | None = None,
    ) -> None:
        self.path = Path(path)
        self.lossless = lossless
        self.keyframe_s = keyframe_s
        """A keyframe at least this often (seconds); None: the codec's default (x264: one
        in 250 frames, 10 s at 25 fps, too sparse for a stream a player joins mid-way)."""
        if lossless:
            codec = "ffv1"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.fps = Fraction(fps).limit_denominator(1001)
        self.codec = codec or CODEC_BY_SUFFIX.get(self.path.suffix.lower(), "libx264")
        self.options = {"crf": str(crf)} if self.codec in ("libx264", "libx265") else {}
        if self.codec == "libx264":
            self.options["preset"] = "veryfast"
        if self.codec == "libvpx-vp9":
            self.options.update(
                {"crf": str(crf + 8), "b:v": "0", "deadline": "realtime", "cpu-used": "8"}
            )
        self.options.update(options or {})
        self._container: av.container.OutputContainer | None = None
        self._stream: av.video.stream.VideoStream | None = None
        self.size: tuple[int, int] | None = None  # (width, height) of the output
        self.frames = 0

    def _open(self, width: int, height: int) -> None:
        self.size = (width + width % 2, height + height % 2)
        self._container = av.open(str(self.path), mode="w")
        stream = self._container.add_stream(self.codec, rate=self.fps, options=self.options)
        stream.width, stream.height = self.size
        stream.pix_fmt = "bgr0" if self.lossless else "yuv420p"
        if self.keyframe_s:
            stream.codec_context.gop_size = max(1, round(float(self.fps) * self.keyframe_s))
        self._stream = stream

    def write(self, rgb: np.ndarray) -> None:
        """Encode one uint8 RGB (H, W, 3) frame."""
        if self._container is None:
            self._open(rgb.shape[1], rgb.shape[0])
        assert self.size is not None and self._stream is not None and self._container is not None
        w, h = self.size
        if rgb.shape[:2] != (h, w):
            if abs(rgb.shape[0] - h) <= 1 and abs(rgb.shape[1] - w) <= 1:
                rgb = np.pad(
                    rgb, ((0, h - rgb.shape[0]), (0, w - rgb.shape[1]), (0, 0)), mode="edge"
                )
            else:
                rgb = cv2.resize(rgb, (w, h), interpolation=cv2.INTER_AREA)
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")
        if self.lossless:
            frame = frame.reformat(format="bgr0")
        frame.pts = self.frames
        frame.time_base = 1 / self.fps
        for packet in self._stream.encode(frame):
            self._container.mux(packet)
        self.frames += 1

    def close(self) -> None:
        if self._container is None:
            return
        try:
            assert self._stream is not None
            for packet in self._stream.encode(None):
                self._container.mux(packet)
        finally:
            self._container.close()
            self._container = None

    def __enter__(self) -> VideoWriter:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
