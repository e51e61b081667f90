"""A job's results stream: exactly one record per frame, in frame order.

Each frame record goes to ``veritas:results:<job>`` with the explicit entry ID
``<frame>-1``. Redis refuses an ``XADD`` whose ID is not greater than the stream's
last one, so a frame that is analysed twice (a reclaimed job redoing the frames its
dead worker analysed but could not report, or a retried write) is refused, not
duplicated; and records stay in frame order. A worker that takes over a job resumes
after :func:`last_frame`, so it rarely redoes anything.

**Size policy.** Each write trims the stream to ``queue.results_max_len`` entries,
oldest first (exactly; a reader following a live job must keep up). When a job
ends, its results and its hash expire after ``queue.results_ttl_s``.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

import msgpack
import redis

from engine.queue.keys import Keys

DUPLICATE_REPLY = "equal or smaller than the target stream top item"
"""Part of Redis's reply to an XADD whose ID is not past the stream's top entry."""


def entry_id(frame: int) -> str:
    """The results-stream ID of frame ``frame``."""
    return f"{frame}-1"


def frame_of(entry: bytes | str) -> int:
    """The frame index of a results-stream ID."""
    text = entry.decode() if isinstance(entry, bytes) else entry
    return int(text.split("-", 1)[0])


class ResultWriter:
    """Queues frame records on a pipeline and counts what Redis accepted or refused."""

    def __init__(self, keys: Keys, max_len: int) -> None:
        self.keys = keys
        self.max_len = max_len

    def add(
        self, pipe: redis.client.Pipeline, job_id: str, records: list[Mapping[str, Any]]
    ) -> int:
        """Queue ``records`` (frame order) on ``pipe``; returns how many commands were queued."""
        key = self.keys.results(job_id)
        for record in records:
            pipe.xadd(
                key,
                {"payload": msgpack.packb(dict(record), use_bin_type=True)},
                id=entry_id(record["frame"]),
                maxlen=self.max_len,
                approximate=False,
            )
        return len(records)

    @staticmethod
    def count(replies: list[Any]) -> tuple[int, int]:
        """``(written, duplicates)`` among XADD ``replies``; raises any other error."""
        written = duplicates = 0
        for reply in replies:
            if isinstance(reply, redis.ResponseError):
                if DUPLICATE_REPLY in str(reply):
                    duplicates += 1
                    continue
                raise reply
            if isinstance(reply, Exception):
                raise reply
            written += 1
        return written, duplicates


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
