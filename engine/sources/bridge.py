"""An FFmpeg process as the protocol bridge for feeds PyAV's own FFmpeg cannot read.

The PyAV wheel's FFmpeg has no libsrt, so ``srt://`` feeds are received by a system
``ffmpeg`` (Debian's is built with libsrt) that copies the video stream, undecoded, to
MPEG-TS on a pipe; PyAV demuxes and decodes that pipe like any feed, so reconnection,
the feed clock and real-time dropping are the same as for the other protocols. The SRT
options (``mode`` caller or listener, ``latency``, ``passphrase`` / ``pbkeylen``,
``streamid``, ...) stay in the URL's query, where FFmpeg's SRT protocol reads them.

The bridge is bounded like a connection: it is stopped when nothing arrives on the pipe
for the open timeout (before the first bytes) or the read timeout (after), when the
source stops, and when the connection is closed. Its stderr is kept (the last lines)
to say why it ended. Note: the URL, passphrase included, is on the ``ffmpeg`` command
line, which other users of the worker's host can read in the process list unless
``/proc`` is mounted with ``hidepid``.
"""

from __future__ import annotations

import io
import os
import select
import shutil
import subprocess
import threading
import time
from collections import deque
from urllib.parse import parse_qsl, urlsplit

from engine.redaction import redact

BRIDGED_SCHEMES = ("srt",)
"""URL schemes read through the bridge."""

CHUNK = 1 << 16

PROBE_S = 2.0
"""The bridge probes its input this long at most before its first output bytes (the
codec parameters a copy needs); the first bytes may take the open timeout plus this."""


class BridgeUnavailableError(RuntimeError):
    """No ``ffmpeg`` executable to bridge with."""


def ffmpeg_command(url: str, ffmpeg: str, open_timeout_s: float) -> list[str]:
    """The bridge's command line: ``url``'s first video stream, copied to MPEG-TS on
    stdout. A caller's connection attempt is bounded by ``open_timeout_s`` unless the
    URL sets ``connect_timeout``."""
    query = dict(parse_qsl(urlsplit(url).query))
    if query.get("mode", "caller") == "caller" and "connect_timeout" not in query:
        sep = "&" if urlsplit(url).query else "?"
        url = f"{url}{sep}connect_timeout={int(open_timeout_s * 1000)}"
    return [
        ffmpeg,
        "-nostdin",
        "-hide_banner",
        "-loglevel",
        "error",
        "-analyzeduration",
        str(int(PROBE_S * 1_000_000)),
        "-probesize",
        "2000000",
        "-i",
        url,
        "-map",
        "0:v:0",
        "-c",
        "copy",
        "-f",
        "mpegts",
        "-flush_packets",
        "1",
        "pipe:1",
    ]


def find_ffmpeg(name: str = "ffmpeg") -> str:
    path = shutil.which(name)
    if path is None:
        raise BridgeUnavailableError(
            f"no {name!r} executable on PATH to receive this protocol "
            "(install FFmpeg built with libsrt, e.g. Debian's 'ffmpeg' package)"
        )
    return path


class FFmpegBridge(io.RawIOBase):
    """A running bridge: a readable, unseekable stream of MPEG-TS bytes (give it to
    ``av.open``). ``read`` returns end of file when the process ends, nothing arrives
    in time, or ``stop`` is set; :attr:`reason` then says which."""

    def __init__(
        self,
        url: str,
        open_timeout_s: float,
        read_timeout_s: float,
        stop: threading.Event,
        ffmpeg: str = "ffmpeg",
    ) -> None:
        super().__init__()
        self.open_timeout_s, self.read_timeout_s, self.stop = open_timeout_s, read_timeout_s, stop
        self.process = subprocess.Popen(
            ffmpeg_command(url, find_ffmpeg(ffmpeg), open_timeout_s),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        assert self.process.stdout is not None and self.process.stderr is not None
        self._fd = self.process.stdout.fileno()
        self._stderr: deque[str] = deque(maxlen=5)
        self._stderr_thread = threading.Thread(
            target=self._drain_stderr, name="veritas-bridge-stderr", daemon=True
        )
        self._stderr_thread.start()
        self.received = 0
        """Bytes received so far."""
        self.reason: str | None = None
        """Why the stream ended (None while it runs)."""

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        if self.reason is not None:
            return 0
        limit = self.read_timeout_s if self.received else self.open_timeout_s + PROBE_S + 1
        deadline = time.monotonic() + limit
        while True:
            if self.stop.is_set():
                return self._end("stopped")
            left = deadline - time.monotonic()
            if left <= 0:
                what = "nothing received" if self.received else "no stream"
                return self._end(f"{what} for {limit:g} s")
            ready, _, _ = select.select([self._fd], [], [], min(left, 0.2))
            if ready:
                break
        data = os.read(self._fd, min(len(buffer), CHUNK))
        if not data:
            self.process.wait(2.0)
            return self._end(self._exit_reason())
        buffer[: len(data)] = data
        self.received += len(data)
        return len(data)

    def _exit_reason(self) -> str:
        self._stderr_thread.join(1.0)
        said = "; ".join(line for line in self._stderr if line) or "no message"
        return f"the ffmpeg bridge exited with {self.process.returncode} ({redact(said)})"

    def _end(self, reason: str) -> int:
        self.reason = reason
        self._terminate()
        return 0

    def _drain_stderr(self) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:
            self._stderr.append(line.decode("utf-8", "replace").strip()[:300])

    def _terminate(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(2.0)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(2.0)

    def close(self) -> None:
        if not self.closed:
            self._terminate()
            if self.process.stdout:
                self.process.stdout.close()
        super().close()
