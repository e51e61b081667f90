"""Live broadcast feeds through PyAV (FFmpeg): RTSP, RTMP, SRT, UDP, TCP, HTTP(S), HLS.

``rtsp://``, ``rtsps://``, ``rtmp://``, ``rtmps://``, ``srt://``, ``udp://``, ``tcp://``,
``http://`` and ``https://`` URLs (an ``.m3u8`` playlist is HLS) open a
:class:`LiveFeedSource`. Opening never blocks: the connection is made when reading
starts, in the reader thread.

**Reconnection.** A feed that drops (the sender closes the connection, nothing arrives
for ``read_timeout_s``, a network or decoder error) is reopened after a back-off that
starts at ``reconnect_min_s`` and doubles up to ``reconnect_max_s``; a frame resets it.
When no frame has arrived for ``give_up_s`` (counting from the start, or from the last
frame) the source fails with :class:`FeedUnavailableError`.

**Frame numbers and times.** ``index`` keeps counting across reconnections (from
``start_index``, so a job resumed on another worker continues its numbering). Within
one connection ``pts`` follows the feed's timestamps; across a gap it jumps to the
wall-clock time since ``epoch`` (the wall time of pts 0, kept by the job), so times
never go backwards and gaps show. A feed cannot be rewound: a resumed job continues
from *now*, and what was broadcast meanwhile is not analysed.

**Finite streams over the network.** A stream whose container declares a duration
(an MP4 over HTTP, an HLS playlist with ``#EXT-X-ENDLIST``) is a file, not a feed: its
end is the end of the source, it is numbered from 0 like a file, and a reconnection
after a drop skips the frames already delivered. Live streams (MPEG-TS over TCP/UDP,
RTSP, RTMP, live HLS) declare none.

**Credentials** in a URL (``rtsp://user:pass@cam``, ``?passphrase=``, RTMP stream keys)
never leave this module: the source's ``name`` (copied into frames, records and
errors) is :func:`redact_url` of the URL, and every error message is redacted.
"""

from __future__ import annotations

import errno
import logging
import math
import socket
import threading
import time
from collections.abc import Generator
from dataclasses import dataclass
from functools import partial
from urllib.parse import urlsplit

import av
import av.error
import numpy as np
from av.video.frame import VideoFrame

from engine.errors import NotAVideoError, SourceError
from engine.redaction import redact, redact_url
from engine.sources.base import DecodedFrame, DecodingSource
from engine.sources.ffmpeg import check_declared_size, decode_packet, ffmpeg_reason, limit_options
from engine.sources.registry import register_scheme
from engine.sources.settings import SourceSettings

log = logging.getLogger(__name__)

SCHEMES = ("rtsp", "rtsps", "rtmp", "rtmps", "srt", "udp", "tcp", "http", "https")
"""URL schemes read as live feeds."""

FALLBACK_FPS = 25.0
"""Frame rate assumed for frames without timestamps when the feed declares none."""

COMMON_OPTIONS = {"analyzeduration": "2000000", "probesize": "2000000"}
"""FFmpeg options for every feed: probe at most 2 s / 2 MB before the first frame."""

SCHEME_OPTIONS: dict[str, dict[str, str]] = {
    "rtsp": {"rtsp_transport": "tcp"},
    "rtsps": {"rtsp_transport": "tcp"},
    "udp": {"overrun_nonfatal": "1", "buffer_size": "8388608"},
}
"""Per-scheme FFmpeg options: RTSP interleaved over TCP (no UDP loss, passes NAT);
UDP with an 8 MB socket buffer that survives a burst without aborting."""


class FeedUnavailableError(SourceError):
    """No frame arrived from a feed for ``give_up_s`` (down, unreachable, or not video)."""

    def __init__(self, source: str, seconds: float, detail: str, frames: int) -> None:
        self.seconds, self.frames = seconds, frames
        what = "no frame from the feed" if frames == 0 else "the feed stopped sending frames"
        super().__init__(
            source,
            f"{what} for {seconds:.1f} s ({redact(detail)})",
            "check that the feed is up and reachable from the worker",
        )


class FeedRefusedError(SourceError):
    """The feed's server answered, but not with a stream this worker can follow (an HTTP
    client error, a redirect to another protocol, a reply that is not media): trying
    again would get the same answer, so the job fails at once."""

    def __init__(self, source: str, detail: str) -> None:
        super().__init__(
            source,
            f"the server's answer is not a video stream ({redact(detail)})",
            "check the URL: it must name a stream the server serves",
        )


class FeedNotSupportedError(SourceError):
    """This FFmpeg build cannot read the URL's protocol (e.g. no SRT library)."""

    def __init__(self, source: str, detail: str) -> None:
        super().__init__(
            source,
            f"this worker's FFmpeg cannot read it ({redact(detail)})",
            "use a protocol the worker's PyAV build supports, or rebuild PyAV with it",
        )


@dataclass(frozen=True)
class LiveSettings:
    """Connection behaviour of live feeds (``[queue] live_*`` keys for workers)."""

    open_timeout_s: float = 10.0
    """Give up one connection attempt after this long."""
    read_timeout_s: float = 5.0
    """Drop the connection when nothing arrives for this long."""
    reconnect_min_s: float = 0.5
    """First wait before reconnecting; doubles per failed attempt."""
    reconnect_max_s: float = 10.0
    """Longest wait between attempts."""
    give_up_s: float = 120.0
    """Fail with FeedUnavailableError after this long without a frame."""
    first_frame_s: float = 30.0
    """Until the first frame arrives, fail after this long instead (at most give_up_s):
    a feed that never worked holds its worker's slot for no longer than this."""


class LiveFeedSource(DecodingSource):
    """A network feed, reconnected when it drops; see the module doc.

    ``start_index`` numbers the first frame of a live feed (a finite stream is numbered
    from 0 and skips the frames before ``start_index``); ``epoch`` is the wall time
    (``time.time()``) of pts 0 (default: the first frame's arrival); setting ``stop``
    ends the source at the next frame, back-off or read timeout.
    """

    def __init__(
        self,
        url: str,
        settings: SourceSettings | None = None,
        live: LiveSettings | None = None,
        *,
        start_index: int = 0,
        epoch: float | None = None,
        stop: threading.Event | None = None,
    ) -> None:
        super().__init__(redact_url(url), settings or SourceSettings())
        self._url = url
        self.live = live or LiveSettings()
        self.start_index = start_index
        self.epoch = epoch
        self.stop_event = stop or threading.Event()
        self.scheme = urlsplit(url).scheme.lower()
        self.connections = 0
        """Successful connections so far (the first one included)."""
        self.reconnects = 0
        """Times the feed dropped and a new connection was attempted."""
        self.finite: bool | None = None
        """Whether the stream declared a duration (decided at the first connection)."""

    def _options(self) -> dict[str, str]:
        return {
            **COMMON_OPTIONS,
            **SCHEME_OPTIONS.get(self.scheme, {}),
            **limit_options(self.settings),
        }

    def _open(self) -> av.container.InputContainer:
        s = self.live
        return av.open(
            self._url,
            mode="r",
            options=self._options(),
            timeout=(s.open_timeout_s, s.read_timeout_s),
            metadata_errors="replace",
        )

    def _decode(self) -> Generator[DecodedFrame, None, None]:
        s = self.live
        index = self.start_index - 1  # the last index handed out
        delivered = 0
        last_pts: float | None = None
        last_frame_at = time.monotonic()  # the give-up clock
        backoff = s.reconnect_min_s
        while not self.stop_event.is_set():
            container = None
            reason = "connection closed"
            try:
                container = self._open()
                stream = _video_stream(container, self.name)
                check_declared_size(stream, self.name, self.settings)
                self.connections += 1
                if self.finite is None:
                    self.finite = bool(container.duration and container.duration > 0)
                rate = stream.average_rate or stream.guessed_rate
                self.nominal_fps = float(rate) if rate else None
                period = 1.0 / (self.nominal_fps or FALLBACK_FPS)
                log.info(
                    "%s: connected (%s%s)",
                    self.name,
                    container.format.name,
                    ", finite" if self.finite else "",
                )
                clock = _ConnectionClock(period)
                n = -1  # frames decoded on this connection
                for packet in container.demux(stream):
                    for frame in decode_packet(packet, self.name, self.settings):
                        n += 1
                        t = frame.time
                        if t is not None and not math.isfinite(t):
                            t = None
                        if self.finite:  # numbered and timed like a file
                            i = n
                            pts = clock.file_pts(t, n)
                            if i <= index:  # delivered before (a reconnection, a resume)
                                continue
                        else:
                            i = index + 1
                            if n == 0:
                                clock.start(self._connection_offset(last_pts, period), t)
                            pts = clock.live_pts(t, last_pts)
                        index, last_pts = i, pts
                        delivered += 1
                        last_frame_at = time.monotonic()
                        backoff = s.reconnect_min_s
                        yield DecodedFrame(
                            i, pts, frame.width, frame.height, partial(_to_rgb, frame)
                        )
                        if self.stop_event.is_set():
                            return
                if self.finite:
                    if n < 0:
                        raise NotAVideoError(self.name, "the stream holds no video frames")
                    log.info("%s: end of stream after %d frames", self.name, delivered)
                    return
                reason = "the feed ended the stream"
            except av.error.ProtocolNotFoundError as error:
                raise FeedNotSupportedError(self.name, _detail(error)) from error
            except av.error.ExitError:
                reason = (
                    f"nothing received for {s.read_timeout_s:g} s"
                    if container is not None
                    else self._silent_open_reason()
                )
            except av.error.FFmpegError as error:
                if delivered == 0 and _is_refusal(error, self.scheme):
                    raise FeedRefusedError(self.name, _detail(error)) from error
                reason = _detail(error)
            finally:
                if container is not None:
                    container.close()
            silent = time.monotonic() - last_frame_at
            limit = s.give_up_s if delivered else min(s.first_frame_s, s.give_up_s)
            if silent >= limit:
                raise FeedUnavailableError(self.name, silent, reason, delivered)
            wait = min(backoff, limit - silent)
            log.warning(
                "%s: %s; reconnecting in %.1f s (no frame for %.1f s, giving up at %.0f s)",
                self.name,
                redact(reason),
                wait,
                silent,
                limit,
            )
            self.reconnects += 1
            if self.stop_event.wait(wait):
                return
            backoff = min(backoff * 2, s.reconnect_max_s)

    def _silent_open_reason(self) -> str:
        """Why opening timed out: no connection, or a server that accepted and said nothing
        (told apart by a plain TCP connection for the TCP-based schemes)."""
        s = self.live
        parts = urlsplit(self._url)
        port = parts.port or DEFAULT_PORTS.get(self.scheme)
        if parts.hostname is None or port is None or self.scheme in ("udp", "srt"):
            return f"nothing received within {s.open_timeout_s:g} s"
        try:
            socket.create_connection((parts.hostname, port), timeout=s.open_timeout_s).close()
        except OSError as error:
            return f"could not connect within {s.open_timeout_s:g} s ({error.strerror or error})"
        return f"connected, but no stream header arrived within {s.open_timeout_s:g} s"

    def _connection_offset(self, last_pts: float | None, period: float) -> float:
        """pts of the first frame of a new connection: after the last, at wall time."""
        if self.finite:
            return 0.0
        now = time.time()
        if self.epoch is None:
            self.epoch = now
        wall = now - self.epoch
        return wall if last_pts is None else max(last_pts + period, wall)

    def _release(self) -> None:
        self.stop_event.set()


class _ConnectionClock:
    """Frame times on one connection: the feed's timestamps, from an offset."""

    def __init__(self, period: float) -> None:
        self.period = period
        self.offset = 0.0
        self.origin: float | None = None  # feed time at ``offset``
        self._first = False

    def file_pts(self, t: float | None, n: int) -> float:
        if self.origin is None:
            self.origin = t if t is not None else 0.0
        return t - self.origin if t is not None else n * self.period

    def start(self, offset: float, t: float | None) -> None:
        self.offset, self.origin = offset, t
        self._first = True

    def live_pts(self, t: float | None, last_pts: float | None) -> float:
        if self._first:
            self._first = False
            return self.offset
        expected = (last_pts or 0.0) + self.period
        if t is None:
            return expected
        if self.origin is None:  # the first frames had no timestamps
            self.origin = t - (expected - self.offset)
            return expected
        pts = self.offset + (t - self.origin)
        if last_pts is not None and pts < last_pts:  # the feed's clock was reset
            self.offset, self.origin = expected, t
            return expected
        return pts


def _video_stream(container: av.container.InputContainer, name: str) -> av.VideoStream:
    streams = [s for s in container.streams.video if s.codec_context is not None]
    if not streams:
        kinds = ", ".join(s.type for s in container.streams) or "no streams"
        raise NotAVideoError(name, f"no video stream; it holds: {kinds}")
    stream = streams[0]
    stream.thread_type = "AUTO"
    return stream


def _to_rgb(frame: VideoFrame) -> np.ndarray:
    return np.ascontiguousarray(frame.to_ndarray(format="rgb24"))


DEFAULT_PORTS = {"http": 80, "https": 443, "rtsp": 554, "rtsps": 322, "rtmp": 1935, "rtmps": 443}

_REFUSALS = (av.error.HTTPClientError, av.error.InvalidDataError, av.error.ArgumentError)
"""Answers of a server that a retry would get again, when no frame has come yet: an HTTP
4xx, a reply that is not media, a redirect FFmpeg will not follow (EINVAL: file:// and
other protocols are refused)."""


def _is_refusal(error: av.error.FFmpegError, scheme: str) -> bool:
    if isinstance(error, _REFUSALS):
        return True
    if scheme in ("http", "https"):
        # End of file before a status line: not an HTTP server (Redis, say); EIO: the
        # answer is a page, not media.
        eof = isinstance(error, av.error.EOFError)
        return eof or (isinstance(error, OSError) and error.errno == errno.EIO)
    return False


def _detail(error: av.error.FFmpegError) -> str:
    return redact(ffmpeg_reason(error))


@register_scheme(*SCHEMES)
def open_live(spec: str, settings: SourceSettings) -> LiveFeedSource:
    """The opener :func:`engine.sources.open_source` uses for live URLs."""
    return LiveFeedSource(spec, settings)
