"""The frame path's Redis sink: each job's records to its results stream, with progress.

:class:`RedisResultsSink` is the queue worker's sink (``engine.framepath``), as the JSONL
file and the annotated video are ``veritas run``'s. For every analysed batch it writes
each job's records (``engine.queue.results``: one entry per frame, never twice) and the
job's progress in ONE Redis round trip, retried as a whole while Redis is unreachable
(a record already written is refused as a duplicate, so nothing is written twice and no
frame is skipped). The records' ``job`` and ``source`` are the frame path's: the job of
the stream and the source's displayed name; nothing is patched here.

A job whose record cannot be encoded (a NaN probability) or whose results key cannot be
written (``WRONGTYPE``: tampered with) is handed to ``fail``; the others go on.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

import redis

from engine.frames import FrameBatch
from engine.pipeline import BatchResult
from engine.queue.keys import Keys
from engine.queue.metrics import WorkerMetrics
from engine.queue.results import ResultsLostError, ResultWriter
from engine.queue.running import RunningJob
from engine.sinks import Sink

log = logging.getLogger(__name__)

T = TypeVar("T")


class RedisResultsSink(Sink):
    """Writes the records of the jobs in ``jobs`` (stream key -> job in hand).

    ``retry(call, doing)`` runs ``call`` until Redis answers (the worker's back-off);
    ``fail(job, reason, retry)`` ends a job whose results cannot be written;
    ``count_live(job)`` brings its drop and reconnect counts up to date before its
    progress is written; ``rewind(job, stored)`` hands back a job whose stream Redis
    lost frames of (it ends at ``stored``), so that it resumes from what is really there.
    """

    def __init__(
        self,
        client: redis.Redis,
        keys: Keys,
        writer: ResultWriter,
        jobs: Mapping[str, RunningJob],
        retry: Callable[[Callable[[], T], str], T],
        fail: Callable[..., None],
        count_live: Callable[[RunningJob], None],
        metrics: WorkerMetrics,
        rewind: Callable[[RunningJob, int], None],
    ) -> None:
        self.redis = client
        self.keys = keys
        self.writer = writer
        self.jobs = jobs
        self.retry = retry
        self.fail = fail
        self.count_live = count_live
        self.metrics = metrics
        self.rewind = rewind

    def write(self, result: BatchResult, batch: FrameBatch) -> None:
        records: dict[str, list[dict[str, Any]]] = {}
        for key, record in zip(batch.streams, result.records, strict=True):
            job = self.jobs.get(key)
            if job is None:
                continue  # stopped meanwhile
            try:
                d = record.to_dict()
            except ValueError as error:  # e.g. a NaN probability
                self.fail(job, f"frame {record.frame} gave an invalid record ({error})")
                records.pop(key, None)
                continue
            records.setdefault(key, []).append(d)
        records = {k: v for k, v in records.items() if k in self.jobs}
        if records:
            self.retry(lambda: self._write(records), "writing results")

    def _write(self, records: dict[str, list[dict[str, Any]]]) -> None:
        """Every job's records and progress in one round trip (retried as a whole)."""
        pipe = self.redis.pipeline(transaction=False)
        spans = []
        for key, recs in records.items():
            job = self.jobs.get(key)
            if job is None:  # failed on an earlier try of this write
                continue
            n = self.writer.add(pipe, job.spec.id, recs, job.stored)
            spans.append((job, recs, n))
            self.count_live(job)
            progress = {
                **job.progress(),
                "frames": job.frames_before + job.written + n,
                "last_frame": recs[-1]["frame"],
                "pts": recs[-1]["pts"],
            }
            pipe.hset(
                self.keys.job(job.spec.id),
                mapping={"progress": _json(progress), "updated": f"{time.time():.3f}"},
            )
        replies = pipe.execute(raise_on_error=False)
        i = 0
        for job, recs, n in spans:
            try:
                appended = ResultWriter.count(replies[i : i + n])
            except ResultsLostError as lost:
                i += n + 1
                self.rewind(job, lost.stored)
                continue
            except redis.ResponseError as error:  # e.g. WRONGTYPE: the key was tampered with
                self.fail(job, f"its results cannot be written ({error})", retry=False)
                i += n + 1
                continue
            i += n + 1
            written, duplicates = appended.written, appended.duplicates
            job.written += written
            job.duplicates += duplicates
            job.stored = appended.last
            job.last_frame, job.last_pts = recs[-1]["frame"], recs[-1]["pts"]
            if duplicates:
                self.metrics.duplicates.inc(duplicates)
                log.info(
                    "job %s: %d frames were already recorded",
                    job.spec.id,
                    duplicates,
                    extra={"job": job.spec.id},
                )
        for reply in replies:
            if isinstance(reply, Exception) and not isinstance(reply, redis.ResponseError):
                raise reply


def _json(value: dict[str, Any]) -> str:
    return json.dumps(value, separators=(",", ":"))
