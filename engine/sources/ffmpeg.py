"""The frame-size limit inside FFmpeg, shared by the PyAV sources (files and live feeds).

Checking a stream's declared size is not enough: ``av.open`` runs FFmpeg's stream
probe, which *decodes* a first picture when the container declares no size (an image
renamed ``.mp4``, raw streams), and a stream may grow its resolution mid-way. A 656 KB
PNG declaring 15000x15000 took a process to 1.4 GB inside ``av.open`` before any check
of ours could run. libavcodec's ``max_pixels`` option makes the decoder itself refuse a
picture over the limit before allocating it; it is given to the probe (``av.open``
options, which FFmpeg applies to the decoders it opens while probing) and to the
decoder that decodes the frames.

FFmpeg checks ``max_pixels`` against the picture's width rounded up to its SIMD stride
alignment (up to 64 pixels, machine-dependent), so the decoder's limit is the frame
limit plus :data:`ALIGNMENT_SLACK_PIXELS`: a guard against bombs that never refuses a
frame within the limit (up to 16384 rows), while the exact limit stays the per-frame
check of :class:`~engine.sources.base.DecodingSource`, which knows the frame's size.

When the decoder refuses a picture, its error says nothing of why: PNG answers
``EINVAL`` and forgets the size, H.264 answers "invalid data" with the new size in its
context. Both become a :class:`FrameTooLargeError` (of unknown size for the first).
"""

from __future__ import annotations

from collections.abc import Iterator

import av
import av.error
from av.packet import Packet
from av.video.frame import VideoFrame
from av.video.stream import VideoStream

from engine.errors import FrameTooLargeError
from engine.sources.settings import SourceSettings

ALIGNMENT_SLACK_PIXELS = 64 * 16384
"""Added to the decoder's ``max_pixels``: 64 columns of stride alignment, 16384 rows."""


def limit_options(settings: SourceSettings) -> dict[str, str]:
    """FFmpeg options that make the probe's decoders refuse pictures over the limit."""
    return {"max_pixels": str(settings.max_frame_pixels + ALIGNMENT_SLACK_PIXELS)}


def check_declared_size(stream: VideoStream, name: str, settings: SourceSettings) -> None:
    """Refuse a stream whose declared size is over the limit, and limit its decoder.

    Call before the first decode (the decoder is opened then, with these options).
    """
    context = stream.codec_context
    width, height = context.width, context.height
    if width > 0 and height > 0 and width * height > settings.max_frame_pixels:
        raise FrameTooLargeError(name, width, height, settings.max_frame_pixels)
    context.options = {**context.options, **limit_options(settings)}


def decode_packet(packet: Packet, name: str, settings: SourceSettings) -> Iterator[VideoFrame]:
    """``packet.decode()`` on a limited decoder, its refusals as FrameTooLargeError."""
    try:
        frames = packet.decode()
    except av.error.FFmpegError as error:
        limit = settings.max_frame_pixels
        context = packet.stream.codec_context
        width, height = context.width, context.height
        if width * height > limit:
            raise FrameTooLargeError(name, width, height, limit) from error
        if isinstance(error, av.error.ArgumentError):
            raise FrameTooLargeError(name, None, None, limit) from error
        raise
    yield from frames  # type: ignore[misc]


def ffmpeg_reason(error: av.error.FFmpegError) -> str:
    """FFmpeg's one-line reason (``Invalid data found when processing input``)."""
    return str(getattr(error, "strerror", None) or error).splitlines()[0]
