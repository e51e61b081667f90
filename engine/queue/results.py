"""A job's results stream: exactly one record per frame, in frame order.

Each frame record goes to ``veritas:results:<job>`` with the explicit entry ID
``<frame>-1``, appended by one script that skips frames the stream already holds, so a
frame that is analysed twice (a reclaimed job redoing the frames its dead worker
analysed but could not report, or a retried write) is not duplicated, and records stay
in frame order. The same script refuses to append when the stream ends before the last
frame the writer saw stored: Redis restarted from older data (an AOF with
``appendfsync everysec`` loses up to a second) and appending would leave a hole. A
worker that takes over a job resumes after :func:`last_frame`, so it rarely redoes
anything.

**Size policy.** Each write trims the stream to ``queue.results_max_len`` entries,
oldest first (exactly; a reader following a live job must keep up). When a job
ends, its results and its hash expire after ``queue.results_ttl_s``.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import msgpack
import redis

from engine.queue.keys import Keys


def entry_id(frame: int) -> str:
    """The results-stream ID of frame ``frame``."""
    return f"{frame}-1"


def frame_of(entry: bytes | str) -> int:
    """The frame index of a results-stream ID."""
    text = entry.decode() if isinstance(entry, bytes) else entry
    return int(text.split("-", 1)[0])


_APPEND = """
-- KEYS[1]: a job's results stream. ARGV: the last frame its writer knows is stored (-1:
-- none), the stream's max length, then a frame number and a payload per record.
local top = redis.call('XREVRANGE', KEYS[1], '+', '-', 'COUNT', 1)
local last = -1
if #top > 0 then last = tonumber(string.match(top[1][1], '^%d+')) end
if last < tonumber(ARGV[1]) then return {'lost', last} end
local written = 0
for i = 3, #ARGV, 2 do
  local frame = tonumber(ARGV[i])
  if frame > last then
    redis.call('XADD', KEYS[1], 'MAXLEN', ARGV[2], ARGV[i] .. '-1', 'payload', ARGV[i + 1])
    last = frame
    written = written + 1
  end
end
return {'ok', written, (#ARGV - 2) / 2 - written, last}
"""


class ResultsLostError(Exception):
    """Redis no longer holds frames it acknowledged (it restarted from older data)."""

    def __init__(self, stored: int) -> None:
        self.stored = stored
        """The stream's last frame (-1: the stream is empty or gone)."""
        super().__init__(f"the results stream ends at frame {stored}: Redis lost writes")


@dataclass(frozen=True)
class Appended:
    written: int
    duplicates: int
    last: int
    """The stream's last frame after the write."""


class ResultWriter:
    """Appends a job's frame records in one step that first checks nothing was lost.

    Each call is one script on the job's results stream (one key: fine on a cluster):
    if the stream's last frame is behind ``stored`` (the last frame this writer saw
    stored), Redis lost acknowledged writes and nothing is appended (``ResultsLostError``
    from :meth:`count`): writing on would leave a hole. Records of frames already in the
    stream are skipped as duplicates.
    """

    def __init__(self, keys: Keys, max_len: int) -> None:
        self.keys = keys
        self.max_len = max_len

    def add(
        self,
        pipe: redis.client.Pipeline,
        job_id: str,
        records: list[Mapping[str, Any]],
        stored: int = -1,
    ) -> int:
        """Queue ``records`` (frame order) on ``pipe``; returns how many replies it adds."""
        args: list[Any] = [stored, self.max_len]
        for record in records:
            args += [int(record["frame"]), msgpack.packb(dict(record), use_bin_type=True)]
        # EVAL, not EVALSHA: cluster pipelines refuse EVALSHA; Redis caches the script.
        pipe.execute_command("EVAL", _APPEND, 1, self.keys.results(job_id), *args)
        return 1

    @staticmethod
    def count(replies: list[Any]) -> Appended:
        """What the write of :meth:`add` did; raises ResultsLostError or Redis's error."""
        (reply,) = replies
        if isinstance(reply, Exception):
            raise reply
        outcome = reply[0].decode() if isinstance(reply[0], bytes) else reply[0]
        if outcome == "lost":
            raise ResultsLostError(int(reply[1]))
        return Appended(int(reply[1]), int(reply[2]), int(reply[3]))


def last_frame(client: redis.Redis, keys: Keys, job_id: str) -> tuple[int, float] | None:
    """``(frame, pts)`` of the last recorded frame of ``job_id``, None when none is."""
    top = client.xrevrange(keys.results(job_id), count=1)
    if not top:
        return None
    entry, fields = top[0]
    pts = 0.0
    try:
        pts = float(msgpack.unpackb(fields[b"payload"], raw=False).get("pts", 0.0))
    except Exception:  # pts is only a hint for live feeds
        pass
    return frame_of(entry), pts


def read_results(
    client: redis.Redis,
    keys: Keys,
    job_id: str,
    start_frame: int = 0,
    follow: bool = False,
    done: Any = None,
    block_s: float = 1.0,
    chunk: int = 500,
) -> Iterator[dict[str, Any]]:
    """The records of ``job_id`` from frame ``start_frame`` on, in frame order.

    With ``follow``, waits for new records until ``done()`` returns True (the job
    ended) and every record has been read.
    """
    key = keys.results(job_id)
    cursor = f"{start_frame}-0"  # exclusive: frame start_frame is entry ``<n>-1``
    while True:
        entries = client.xrange(key, min=f"({cursor}", count=chunk)
        for entry, fields in entries:
            cursor = entry.decode()
            yield msgpack.unpackb(fields[b"payload"], raw=False)
        if len(entries) == chunk:
            continue
        if not follow:
            return
        if done is not None and done():
            # Records written just before the job ended are read by one more pass.
            if not client.xrange(key, min=f"({cursor}", count=1):
                return
            continue
        reply = client.xread({key: cursor}, block=int(block_s * 1000), count=chunk) or []
        for _, new in reply:
            for entry, fields in new:
                cursor = entry.decode()
                yield msgpack.unpackb(fields[b"payload"], raw=False)
