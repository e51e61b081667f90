"""Settings of the frame sources: sampling rate, decoding threads and input limits.

The settings live in the ``[sources]`` table of the engine's configuration; the keys of
:class:`SourceSettings` are named ``sources.<field>`` in error messages.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from engine.errors import ConfigError

DEFAULT_MAX_FRAME_PIXELS = 3840 * 2160
"""Frames above 4K UHD are refused: decoding and detection cost grow with the area."""

DEFAULT_MAX_DURATION_S = 6 * 3600.0
"""A file longer than six hours is most likely a mistake (or a never-ending stream)."""

DEFAULT_IMAGE_FOLDER_FPS = 25.0
"""Frame rate given to a folder of images: image ``i`` gets ``pts = i / fps``."""

MIN_FPS, MAX_FPS = 0.001, 1000.0
"""Sampling rates (``sources.fps``, a job's ``fps``, ``image_folder_fps``) lie in this
range: one frame in 1000 s to 1000 frames a second. Outside it a period of ``1/fps``
underflows or overflows the sampler's arithmetic (``5e-324`` or ``1e308``)."""

DECODERS = ("auto", "pyav", "nvdec", "dali")
"""Video-file decoders (``engine.sources.decoders``): ``auto`` is NVDEC (PyNvVideoCodec)
for H.264/HEVC on a CUDA machine where it imports, else DALI where installed and the codec
is one it decodes on a GPU, else PyAV."""


@dataclass(frozen=True)
class SourceSettings:
    """How sources decode and sample frames, and the limits they enforce.

    ``fps`` and ``every`` are two ways of sampling; use one: ``fps`` keeps frames at a
    target rate by timestamp (robust to variable frame rate), ``every`` keeps every Nth
    decoded frame by index.
    """

    fps: float | None = None
    """Target sampling rate in frames per second; None keeps every frame."""
    every: int = 1
    """Keep every Nth decoded frame (indices 0, N, 2N, ...); 1 keeps every frame."""
    max_frame_pixels: int = DEFAULT_MAX_FRAME_PIXELS
    """Refuse frames with more pixels (FrameTooLargeError), checked before decoding."""
    max_duration_s: float = DEFAULT_MAX_DURATION_S
    """Stop with SourceTooLongError at the first frame whose pts exceeds this."""
    image_folder_fps: float = DEFAULT_IMAGE_FOLDER_FPS
    """Frame rate of image folders (pts of image ``i`` is ``i / image_folder_fps``)."""
    decode_threads: int = 0
    """FFmpeg decoding threads per video; 0 lets FFmpeg choose."""
    decoder: str = "auto"
    """Video files: ``auto``, ``pyav``, ``nvdec`` or ``dali`` (see :data:`DECODERS`)."""

    def __post_init__(self) -> None:
        if self.fps is not None and not is_sampling_rate(self.fps):
            raise ConfigError(
                "sources.fps", self.fps, f"frames per second from {MIN_FPS} to {MAX_FPS}, or None"
            )
        if not _int_at_least(self.every, 1):
            raise ConfigError("sources.every", self.every, "an integer >= 1")
        if self.fps is not None and self.every != 1:
            raise ConfigError(
                "sources.every",
                self.every,
                "1 when sources.fps is set (sample by rate or by count, not both)",
            )
        if not _int_at_least(self.max_frame_pixels, 1):
            raise ConfigError(
                "sources.max_frame_pixels", self.max_frame_pixels, "a positive integer"
            )
        if not _positive_number(self.max_duration_s, allow_inf=True):
            raise ConfigError(
                "sources.max_duration_s", self.max_duration_s, "a positive number of seconds"
            )
        if not is_sampling_rate(self.image_folder_fps):
            raise ConfigError(
                "sources.image_folder_fps",
                self.image_folder_fps,
                f"frames per second from {MIN_FPS} to {MAX_FPS}",
            )
        if not _int_at_least(self.decode_threads, 0):
            raise ConfigError(
                "sources.decode_threads", self.decode_threads, "an integer >= 0 (0 = auto)"
            )
        if self.decoder not in DECODERS:
            raise ConfigError("sources.decoder", self.decoder, " or ".join(DECODERS))


def is_sampling_rate(value: object) -> bool:
    """``value`` is a number of frames per second from :data:`MIN_FPS` to :data:`MAX_FPS`."""
    return _positive_number(value) and MIN_FPS <= value <= MAX_FPS  # type: ignore[operator]


def _positive_number(value: object, allow_inf: bool = False) -> bool:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return False
    if math.isnan(value) or (math.isinf(value) and not allow_inf):
        return False
    return value > 0


def _int_at_least(value: object, minimum: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= minimum
