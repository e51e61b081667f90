"""Live broadcast feeds through PyAV (FFmpeg): RTSP, RTMP, SRT, UDP, TCP, HTTP(S), HLS.

SRT is received by a system ``ffmpeg`` process as the protocol bridge (the PyAV wheel
has no libsrt; :mod:`engine.sources.bridge`), then demuxed and decoded here like the
other feeds.

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
one connection ``pts`` follows the feed's timestamps; across a gap, a timestamp wrap
(RTMP's 32-bit milliseconds, MPEG-TS's 33-bit 90 kHz clock) or a publisher restarted
behind a live server, or a silence the server stamps over contiguously, it is
re-anchored at the wall-clock time since ``epoch`` (the wall time of pts 0, kept by
the job), so times never go backwards, never leap ahead of or fall behind real time,
and gaps show (:class:`FeedClock`). Frames the feed's timeline skipped
are counted by cause in :attr:`LiveFeedSource.lost`. A feed cannot be rewound: a
resumed job continues from *now*, and what was broadcast meanwhile is not analysed.

**Finite streams over the network.** A stream whose container declares a duration
(an MP4 over HTTP, an HLS playlist with ``#EXT-X-ENDLIST``) is a file, not a feed: its
end is the end of the source, it is numbered from 0 like a file, and a reconnection
after a drop skips the frames already delivered. Live streams (MPEG-TS over TCP/UDP,
RTSP, RTMP, live HLS) declare none.

**Decoding.** PyAV demuxes every feed; its packets are decoded by PyAV, or by NVDEC
on a GPU (``sources.decoder = "nvdec"``, or ``auto`` on a CUDA machine where
PyNvVideoCodec imports, for H.264/HEVC): the packets go to NVDEC as Annex B
(:mod:`engine.sources.packets`) and the frames come out as CUDA tensors. The decoder is
chosen per connection (:attr:`LiveFeedSource.decoder` says which); under ``auto`` NVDEC
that does not start falls back to PyAV.

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
from collections.abc import Callable, Generator, Iterable, Iterator
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

import av
import av.error
import numpy as np
import torch
from av.packet import Packet
from av.video.frame import VideoFrame

from engine.errors import NotAVideoError, SourceError
from engine.redaction import redact, redact_url
from engine.sources.base import DecodedFrame, DecodingSource
from engine.sources.bridge import BRIDGED_SCHEMES, BridgeUnavailableError, FFmpegBridge
from engine.sources.decoders import choose_decoder, installed
from engine.sources.ffmpeg import check_declared_size, decode_packet, ffmpeg_reason, limit_options
from engine.sources.registry import register_scheme
from engine.sources.settings import SourceSettings

if TYPE_CHECKING:
    from engine.config import QueueConfig

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


class _BridgeEnded(Exception):
    """The bridge process ended before its stream could be opened (a reconnect reason)."""


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
    ffmpeg: str = "ffmpeg"
    """The FFmpeg executable that bridges ``srt://`` feeds (see engine.sources.bridge)."""
    max_clock_lead_s: float = 30.0
    """A feed timestamp further than this ahead of the wall time is a discontinuity (a
    timestamp wrap, a restarted encoder) and is re-anchored (see :class:`FeedClock`).
    Above the burst a live HLS reader reads ahead of real time (its first segments)."""
    stall_s: float = 1.5
    """A wait this long for the next frame while the feed's timestamps advance by
    less (a server that keeps the connection and re-stamps contiguously while its
    publisher is away) is a stall: the clock is re-anchored at the last frame plus the
    wait and the frames of the silence are counted. Not for live HLS, whose reader waits for each
    segment; 0: off."""


def live_settings(q: QueueConfig) -> LiveSettings:
    """Live-feed settings from ``[queue] live_*`` (workers and ``veritas run``)."""
    return LiveSettings(
        open_timeout_s=q.live_open_timeout_s,
        read_timeout_s=q.live_read_timeout_s,
        reconnect_min_s=q.live_reconnect_min_s,
        reconnect_max_s=q.live_reconnect_max_s,
        give_up_s=q.live_give_up_s,
        first_frame_s=q.live_first_frame_s,
        max_clock_lead_s=q.live_max_clock_lead_s,
        stall_s=q.live_stall_s,
    )


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
        self.clock = FeedClock(1.0 / FALLBACK_FPS, self.live.max_clock_lead_s, self.live.stall_s)
        """The feed's times and its lost frames by cause (live streams only)."""
        self.decoder = "pyav"
        """The decoder of the current connection: ``pyav`` or ``nvdec``
        (``sources.decoder``; ``dali`` reads files only, so feeds take PyAV)."""
        self._bridge: FFmpegBridge | None = None

    def _options(self) -> dict[str, str]:
        return {
            **COMMON_OPTIONS,
            **SCHEME_OPTIONS.get(self.scheme, {}),
            **limit_options(self.settings),
        }

    def _open(self) -> av.container.InputContainer:
        s = self.live
        if self.scheme in BRIDGED_SCHEMES:
            return self._open_bridged()
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
                # A live HLS reader waits for each segment: not a stall.
                self.clock.connect(period, stalls="hls" not in container.format.name)
                origin: float | None = None  # a finite stream's first timestamp
                n = -1  # frames decoded on this connection
                waiting_since = time.monotonic()  # not counting time the consumer held us
                pictures = self._decoder_for(stream)
                for packet in container.demux(stream):
                    for t, width, height, to_rgb in pictures(packet):
                        n += 1
                        if t is not None and not math.isfinite(t):
                            t = None
                        if self.finite:  # numbered and timed like a file
                            if origin is None:
                                origin = t
                            i, pts = n, file_pts(t, n, origin, period)
                            if i <= index:  # delivered before (a reconnection, a resume)
                                continue
                        else:
                            waited = time.monotonic() - waiting_since
                            i, pts = index + 1, self.clock.pts(t, self._wall(), waited)
                        index = i
                        delivered += 1
                        last_frame_at = time.monotonic()
                        backoff = s.reconnect_min_s
                        yield DecodedFrame(i, pts, width, height, to_rgb)
                        waiting_since = time.monotonic()
                        if self.stop_event.is_set():
                            return
                if self.finite:
                    if n < 0:
                        raise NotAVideoError(self.name, "the stream holds no video frames")
                    log.info("%s: end of stream after %d frames", self.name, delivered)
                    return
                reason = "the feed ended the stream"
            except _BridgeEnded as ended:
                reason = str(ended)
            except av.error.ProtocolNotFoundError as error:
                raise FeedNotSupportedError(self.name, _detail(error)) from error
            except av.error.ExitError:
                reason = (
                    f"nothing received for {s.read_timeout_s:g} s"
                    if container is not None
                    else self._silent_open_reason()
                )
            except av.error.FFmpegError as error:
                bridged = self.scheme in BRIDGED_SCHEMES  # a refusal would be FFmpeg's
                if delivered == 0 and not bridged and _is_refusal(error, self.scheme):
                    raise FeedRefusedError(self.name, _detail(error)) from error
                reason = _detail(error)
            finally:
                if container is not None:
                    container.close()
                bridge_reason = self._close_bridge()
                if bridge_reason and reason in ("connection closed", "the feed ended the stream"):
                    reason = bridge_reason
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

    def _decoder_for(self, stream: av.VideoStream) -> Pictures:
        """This connection's decoder: NVDEC when ``sources.decoder`` asks for it, or
        ``auto`` picks it (CUDA, PyNvVideoCodec, H.264/HEVC), else PyAV. Under ``auto`` a
        failure to start NVDEC falls back to PyAV, saying why; asked for, it fails."""
        codec = str(stream.codec_context.name)
        asked = "pyav" if self.settings.decoder == "dali" else self.settings.decoder  # files only
        chosen = choose_decoder(
            asked,
            cuda=torch.cuda.is_available(),
            codec=codec,
            nvdec=installed("PyNvVideoCodec"),
            dali=False,
        )
        if chosen == "nvdec":
            try:
                pictures = nvdec_pictures(self.name, stream)
            except Exception as error:
                if asked == "nvdec":
                    raise
                log.warning("%s: NVDEC did not start (%s); decoding with PyAV", self.name, error)
            else:
                self.decoder = "nvdec"
                return pictures
        self.decoder = "pyav"
        return partial(pyav_pictures, name=self.name, settings=self.settings)

    def _open_bridged(self) -> av.container.InputContainer:
        """The feed through an FFmpeg process (:mod:`engine.sources.bridge`)."""
        s = self.live
        try:
            self._bridge = FFmpegBridge(
                self._url, s.open_timeout_s, s.read_timeout_s, self.stop_event, s.ffmpeg
            )
        except BridgeUnavailableError as error:
            raise FeedNotSupportedError(self.name, str(error)) from error
        try:
            return av.open(
                self._bridge,
                mode="r",
                format="mpegts",
                options={**COMMON_OPTIONS, **limit_options(self.settings)},
                metadata_errors="replace",
            )
        except av.error.FFmpegError as error:
            reason = self._bridge.reason or _detail(error)
            self._close_bridge()
            raise _BridgeEnded(reason) from error

    def _close_bridge(self) -> str | None:
        """Stop the bridge of the last connection, if any; its reason for ending."""
        bridge, self._bridge = self._bridge, None
        if bridge is None:
            return None
        bridge.close()
        return bridge.reason

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

    def _wall(self) -> float:
        """Seconds since the epoch (the wall time of pts 0: the first frame's arrival
        unless the job gave one)."""
        now = time.time()
        if self.epoch is None:
            self.epoch = now
        return now - self.epoch

    @property
    def lost(self) -> dict[str, int]:
        """Frames the feed's timeline skipped so far, by cause (see :class:`FeedClock`)."""
        return dict(self.clock.lost)

    @property
    def discontinuities(self) -> int:
        """Timestamp discontinuities re-anchored so far (wraps, publisher restarts)."""
        return self.clock.discontinuities

    def _release(self) -> None:
        self.stop_event.set()


class FeedClock:
    """Frame times of a live feed across its connections, and the frames it lost.

    On one connection ``pts`` follows the feed's timestamps from an offset. The feed's
    clock is not trusted past what wall time allows: a frame cannot be from the future,
    so a timestamp more than ``max_lead_s`` ahead of the wall time since ``epoch``
    (a 32-bit millisecond RTMP wrap, a 33-bit MPEG-TS wrap, an encoder restarted with
    another clock) or behind the last frame (a publisher restarted from 0) is a
    *discontinuity*: the clock is re-anchored at the wall time (never before the last
    frame plus one period), so ``pts`` stays monotonic and true.

    Every frame the feed's timeline skipped is counted in :attr:`lost`, by cause:
    ``feed_gap`` (timestamps skipped frames on one connection: live HLS segments that
    left the playlist before they were read, lost packets), ``stall`` (the wall time of
    a discontinuity: the publisher went away behind a server that kept the connection)
    and ``reconnect`` (the wall time between connections); those two are frames at the
    feed's rate over the time no frame arrived.

    A *stall* is also seen where the timestamps do not skip: when the reader waited
    more than ``stall_s`` for a frame whose timestamp advanced by less than the wait
    (nginx-rtmp keeps its players connected while the publisher is away and stamps the
    publisher's next frames right after the last ones), the clock is re-anchored at the
    last frame plus the wait, so ``pts`` does not fall behind real time and the silence
    is counted. The wait excludes the time the consumer held the reader (lossless
    mode's back-pressure); ``connect(stalls=False)`` turns it off (live HLS).
    """

    CAUSES = ("feed_gap", "stall", "reconnect")

    def __init__(self, period: float, max_lead_s: float, stall_s: float = 0.0) -> None:
        self.period = period
        self.max_lead_s = max_lead_s
        self.stall_s = stall_s
        self.stalls = True
        """Whether a long wait with contiguous timestamps is a stall (not live HLS)."""
        self.last: float | None = None
        """The last pts handed out."""
        self.lost = dict.fromkeys(self.CAUSES, 0)
        self.discontinuities = 0
        self._offset = 0.0
        self._origin: float | None = None  # the feed time at ``_offset``
        self._ahead = (0.0, 0.0)  # how far a stall put the clock ahead of the feed, until
        self._last_wall: float | None = None  # the wall time of the last frame
        self._new_connection = True

    def connect(self, period: float, stalls: bool = True) -> None:
        """A new connection: its first frame is placed at the wall time."""
        self.period = period
        self.stalls = stalls
        self._ahead = (0.0, 0.0)
        self._new_connection = True

    def pts(self, t: float | None, wall: float, waited: float | None = None) -> float:
        """The pts of a frame with feed time ``t`` (None: none) arriving ``wall`` seconds
        after the epoch, after the reader ``waited`` that long for it (None: unknown)."""
        last, last_wall = self.last, self._last_wall
        self._last_wall = wall
        if self._new_connection:
            self._new_connection = False
            pts = self._resumed(last, last_wall, wall)
            if last is not None:
                self.lost["reconnect"] += self._frames_between(last, pts)
            self._anchor(pts, t)
        elif t is None:
            pts = (last or 0.0) + self.period
        elif self._origin is None:  # the first frames of this connection had no times
            pts = (last or 0.0) + self.period
            self._anchor(pts, t)
        else:
            pts = self._offset + (t - self._origin)
            if (last is not None and pts <= last) or pts > wall + self.max_lead_s:
                self.discontinuities += 1
                pts = self._resumed(last, last_wall, wall)
                if last is not None:
                    self.lost["stall"] += self._frames_between(last, pts)
                self._anchor(pts, t)
            elif last is not None and self._stalled(pts - last, waited):
                assert waited is not None
                self.discontinuities += 1
                self._ahead = (last + waited - pts, wall + waited)
                pts = last + waited
                self.lost["stall"] += self._frames_between(last, pts)
                self._anchor(pts, t)
            elif last is not None:
                pts = self._absorbed(last, pts, wall)
                self.lost["feed_gap"] += self._frames_between(last, pts)
        self.last = pts
        return pts

    def _absorbed(self, last: float, pts: float, wall: float) -> float:
        """``pts`` less the part of its skip a stall already put on the clock: a server
        may send one stale frame after the silence, then frames stamped with its clock
        that skip the silence (GStreamer's RTSP server). Counted once, as the stall."""
        shift, until = self._ahead
        skip = pts - last - self.period
        if shift <= 0 or skip < self.period / 2 or wall > until:
            return pts
        taken = min(shift, skip)
        self._ahead = (shift - taken, until)
        self._offset -= taken
        return pts - taken

    def _stalled(self, advance: float, waited: float | None) -> bool:
        """The reader waited over ``stall_s`` and the timestamps advanced less than that
        wait by over ``stall_s`` (a frame late by less is network jitter)."""
        if not self.stalls or not self.stall_s or waited is None:
            return False
        return waited > self.stall_s and waited - advance > self.stall_s

    def _resumed(self, last: float | None, last_wall: float | None, wall: float) -> float:
        """pts after a gap: the last frame's plus the wall time that went by (at least
        one period), so the gap shows at its true length; the first frame: the wall."""
        if last is None or last_wall is None:
            return wall
        return last + max(self.period, wall - last_wall)

    def _anchor(self, pts: float, t: float | None) -> None:
        self._offset, self._origin = pts, t

    def _frames_between(self, a: float, b: float) -> int:
        """Frames a feed at this rate would have sent strictly between times a and b."""
        return max(0, round((b - a) / self.period) - 1)


def file_pts(t: float | None, n: int, origin: float | None, period: float) -> float:
    """pts of the ``n``-th frame of a finite stream whose first timestamp is ``origin``."""
    if t is None or origin is None:
        return n * period
    return t - origin


def _video_stream(container: av.container.InputContainer, name: str) -> av.VideoStream:
    streams = [s for s in container.streams.video if s.codec_context is not None]
    if not streams:
        kinds = ", ".join(s.type for s in container.streams) or "no streams"
        raise NotAVideoError(name, f"no video stream; it holds: {kinds}")
    stream = streams[0]
    stream.thread_type = "AUTO"
    return stream


Picture = tuple[float | None, int, int, Callable[[], object]]
"""A decoded picture: (seconds or None, width, height, to_rgb)."""
Pictures = Callable[[Packet], Iterable[Picture]]
"""A connection's decoder: a demuxed packet -> the pictures it completes."""


def pyav_pictures(packet: Packet, name: str, settings: SourceSettings) -> Iterator[Picture]:
    """PyAV's (FFmpeg's) decoding of ``packet``."""
    for frame in decode_packet(packet, name, settings):
        yield frame.time, frame.width, frame.height, partial(_to_rgb, frame)


def nvdec_pictures(name: str, stream: av.VideoStream) -> Pictures:
    """NVDEC's decoding of ``stream``'s packets, as Annex B (``engine.sources.packets``);
    the demuxer's end-of-stream packet flushes it."""
    from engine.sources.nvdec import NvdecPictures, NvdecUnavailableError
    from engine.sources.packets import AnnexB

    try:
        annexb = AnnexB(stream)
    except ValueError as error:
        raise NvdecUnavailableError(name, str(error)) from error
    decoder = NvdecPictures(name, annexb.codec, annexb.time_base)

    def pictures(packet: Packet) -> Iterator[Picture]:
        if packet.size == 0:
            yield from decoder.flush()
            return
        for data, pts in annexb(packet):
            yield from decoder.decode(data, pts)

    return pictures


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
