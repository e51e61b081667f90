"""The queue: submitting jobs, their state transitions, inspection and housekeeping.

:class:`Queue` is the one place that knows the Redis commands behind each step of a
job's life (``engine.queue.keys`` names the keys). Producers use :meth:`Queue.enqueue`;
workers use :meth:`start`, :meth:`finish`, :meth:`release`, :meth:`dead_letter` and
:meth:`trim`; the CLI uses :meth:`job`, :meth:`cancel`, :meth:`results`, :meth:`info`.

Each state change of a job hash is one Lua script on that one key, so a cancellation
can never be overwritten by a worker finishing or starting the job, and a hostile
entry reusing another job's id cannot change that job (the hash remembers which
stream ``entry`` owns it). No script or transaction touches two keys (Redis Cluster).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import msgpack
import redis

from engine.config import QueueConfig
from engine.queue.errors import (
    InvalidJobError,
    JobNotCancellableError,
    NoSuchJobError,
    QueueFullError,
)
from engine.queue.job import Job, JobSpec, JobStatus, Mode, new_job_id
from engine.queue.keys import GROUP, Keys
from engine.queue.results import last_frame, read_results
from engine.queue.schema import SCHEMA_VERSION, decode_payload, encode_payload
from engine.redaction import redact, redact_url

log = logging.getLogger(__name__)

RELEASE_IDLE_MS = 30 * 24 * 3600 * 1000
"""Idle time given to a job a worker hands back, so any worker's next XAUTOCLAIM takes
it at once (it must stay below the Unix time in ms, or Redis ignores it)."""

SUBMIT_WINDOW_S = 300
"""A job hash lives this long on its own before its stream entry is added (seconds)."""

_START = """
-- ARGV: entry, worker, now, masked source, mode, live epoch, the frame it resumes from.
local status = redis.call('HGET', KEYS[1], 'status')
if status == 'done' or status == 'failed' or status == 'cancelled' then
  return {'skip', status}
end
local owner = redis.call('HGET', KEYS[1], 'entry')
if owner and owner ~= '' and owner ~= ARGV[1] then
  return {'duplicate', owner}
end
local previous = redis.call('HGET', KEYS[1], 'worker') or ''
local was = status or ''
local attempts = redis.call('HINCRBY', KEYS[1], 'attempts', 1)
-- A job still 'running' lost its worker. The loss counts against the job only when that
-- attempt recorded nothing: a job that advanced is not one that kills its workers.
local losses = tonumber(redis.call('HGET', KEYS[1], 'losses')) or 0
if was == 'running' then
  local before = tonumber(redis.call('HGET', KEYS[1], 'resumed_from')) or -1
  if tonumber(ARGV[7]) > before then losses = 0 else losses = losses + 1 end
  redis.call('HSET', KEYS[1], 'losses', losses)
end
redis.call('HSET', KEYS[1], 'status', 'running', 'worker', ARGV[2], 'updated', ARGV[3],
           'entry', ARGV[1], 'resumed_from', ARGV[7])
redis.call('HSETNX', KEYS[1], 'started', ARGV[3])
redis.call('HSETNX', KEYS[1], 'source', ARGV[4])
-- The mode the worker runs: the submitted one, or the worker's choice for a job submitted
-- without one (submit writes an empty mode), so the hash and the progress say the same.
local mode = redis.call('HGET', KEYS[1], 'mode')
if not mode or mode == '' then redis.call('HSET', KEYS[1], 'mode', ARGV[5]) end
local progress = redis.call('HGET', KEYS[1], 'progress') or ''
local err = redis.call('HGET', KEYS[1], 'error') or ''
local epoch = redis.call('HGET', KEYS[1], 'epoch') or ''
if epoch == '' and ARGV[6] ~= '' then
  redis.call('HSET', KEYS[1], 'epoch', ARGV[6])
  epoch = ARGV[6]
end
local failures = redis.call('HGET', KEYS[1], 'failures') or '0'
return {'run', tostring(attempts), previous, progress, err, epoch, was, tostring(losses),
        failures}
"""

_FINISH = """
local owner = redis.call('HGET', KEYS[1], 'entry')
if owner and owner ~= '' and owner ~= ARGV[6] then
  return 'foreign'
end
local status = redis.call('HGET', KEYS[1], 'status')
if status ~= 'cancelled' or ARGV[1] == 'cancelled' then
  redis.call('HSET', KEYS[1], 'status', ARGV[1], 'error', ARGV[3], 'entry', ARGV[6])
  status = ARGV[1]
end
redis.call('HSET', KEYS[1], 'finished', ARGV[2], 'updated', ARGV[2])
if ARGV[4] ~= '' then redis.call('HSET', KEYS[1], 'progress', ARGV[4]) end
redis.call('HSETNX', KEYS[1], 'source', ARGV[7])
if ARGV[8] ~= '' then redis.call('HSET', KEYS[1], 'attempts', ARGV[8]) end
redis.call('EXPIRE', KEYS[1], ARGV[5])
return status
"""

_RELEASE = """
local owner = redis.call('HGET', KEYS[1], 'entry')
if owner and owner ~= '' and owner ~= ARGV[1] then return 'foreign' end
local status = redis.call('HGET', KEYS[1], 'status')
if status == 'cancelled' then return 'cancelled' end
redis.call('HSET', KEYS[1], 'status', 'queued', 'updated', ARGV[2])
if ARGV[3] ~= '' then redis.call('HSET', KEYS[1], 'error', ARGV[3]) end
if ARGV[4] ~= '' then redis.call('HSET', KEYS[1], 'progress', ARGV[4]) end
if ARGV[5] == '1' then redis.call('HINCRBY', KEYS[1], 'attempts', -1) end
if ARGV[6] ~= '' then redis.call('HSET', KEYS[1], 'failures', ARGV[6], 'losses', 0) end
return 'queued'
"""

_ADD_JOBS = """
-- KEYS[1]: the jobs stream. ARGV: group, max_queue_length, then one payload per job.
-- The room for every job is checked and all are added in one step, or none is.
local waiting = 0
for _, g in ipairs(redis.call('XINFO', 'GROUPS', KEYS[1])) do
  local info = {}
  for i = 1, #g, 2 do info[g[i]] = g[i + 1] end
  if info['name'] == ARGV[1] then
    local pending = tonumber(info['pending']) or 0
    local lag = tonumber(info['lag'])
    if not lag then lag = redis.call('XLEN', KEYS[1]) - pending end
    waiting = lag + pending
  end
end
if waiting + #ARGV - 2 > tonumber(ARGV[2]) then return {'full', waiting} end
local entries = {'ok'}
for i = 3, #ARGV do
  entries[#entries + 1] = redis.call('XADD', KEYS[1], '*', 'payload', ARGV[i])
end
return entries
"""

_ENTERED = """
-- KEYS[1]: a job hash created by submit; ARGV[1]: its stream entry. Keep the hash for
-- good unless a worker has already finished the job (which set its own expiry).
redis.call('HSETNX', KEYS[1], 'entry', ARGV[1])
local status = redis.call('HGET', KEYS[1], 'status')
if status == 'queued' or status == 'running' then redis.call('PERSIST', KEYS[1]) end
return 1
"""

_CANCEL = """
local status = redis.call('HGET', KEYS[1], 'status')
if not status then return {'missing', ''} end
if status == 'queued' or status == 'running' then
  redis.call('HSET', KEYS[1], 'status', 'cancelled', 'finished', ARGV[1], 'updated', ARGV[1])
  return {'cancelled', status}
end
return {'terminal', status}
"""

_DELETE_IDLE_CONSUMER = """
local consumers = redis.call('XINFO', 'CONSUMERS', KEYS[1], ARGV[1])
for _, c in ipairs(consumers) do
  local info = {}
  for i = 1, #c, 2 do info[c[i]] = c[i + 1] end
  if info['name'] == ARGV[2] then
    if tonumber(info['pending']) == 0 and tonumber(info['idle']) >= tonumber(ARGV[3]) then
      return redis.call('XGROUP', 'DELCONSUMER', KEYS[1], ARGV[1], ARGV[2])
    end
    return -1
  end
end
return -1
"""


@dataclass(frozen=True)
class Started:
    """What :meth:`Queue.start` found: whether to run the entry, and the job's history."""

    action: str
    """``run``; ``skip`` (the job already ended); ``duplicate`` (another entry owns it)."""
    status: str = ""
    attempts: int = 0
    previous_worker: str = ""
    progress: Mapping[str, Any] | None = None
    error: str = ""
    epoch: float | None = None
    was: str = ""
    """The status before: ``running`` means its last worker died or went silent."""
    resume_from: int = 0
    """The first frame not recorded yet: where this attempt starts."""
    losses: int = 0
    """Workers lost in a row (stopped without reporting) in attempts that recorded no frame."""
    failures: int = 0
    """Failures of the job itself reported by its workers (``max_attempts`` bounds them)."""


class Queue:
    """A Veritas job queue on a Redis connection (see ``engine.queue.keys``)."""

    def __init__(self, client: redis.Redis, config: QueueConfig | None = None) -> None:
        self.redis = client
        self.config = config or QueueConfig()
        self.keys = Keys(self.config.prefix)
        self._scripts = {
            name: client.register_script(text)
            for name, text in (
                ("start", _START),
                ("finish", _FINISH),
                ("release", _RELEASE),
                ("add_jobs", _ADD_JOBS),
                ("entered", _ENTERED),
                ("cancel", _CANCEL),
                ("delete_idle_consumer", _DELETE_IDLE_CONSUMER),
            )
        }

    # --- producers ----------------------------------------------------------------------

    def ensure_group(self) -> None:
        """Create the jobs stream and its consumer group if missing (idempotent)."""
        try:
            self.redis.xgroup_create(self.keys.jobs, GROUP, id="0", mkstream=True)
        except redis.ResponseError as error:
            if "BUSYGROUP" not in str(error):
                raise

    def enqueue(
        self,
        source: str,
        *,
        mode: Mode | str | None = None,
        fps: float | None = None,
        every: int | None = None,
        max_duration_s: float | None = None,
        job_id: str | None = None,
    ) -> str:
        """Submit a job analysing ``source``; returns its id.

        Raises QueueFullError when ``max_queue_length`` jobs are waiting or running,
        InvalidJobError when an option is malformed or ``job_id`` is taken.
        """
        options = {"mode": mode, "fps": fps, "every": every, "max_duration_s": max_duration_s}
        return self.enqueue_many([source], job_ids=[job_id], **options)[0]  # type: ignore[arg-type]

    def enqueue_many(
        self,
        sources: list[str],
        *,
        mode: Mode | str | None = None,
        fps: float | None = None,
        every: int | None = None,
        max_duration_s: float | None = None,
        job_ids: list[str | None] | None = None,
    ) -> list[str]:
        """Submit one job per source, all or none; returns their ids in order.

        Every job is validated before any is written, and one Redis script checks the
        room for all of them (``max_queue_length``) and the ids, then adds them: a refusal
        (QueueFullError, InvalidJobError) enqueues nothing, and no reader ever sees part
        of the submit.
        """
        ids = job_ids or [None] * len(sources)
        if len(ids) != len(sources):
            raise ValueError("one job id (or None) per source")
        submitted = time.time()
        specs = [
            JobSpec(
                id=job_id or new_job_id(),
                source=_utf8(source),
                mode=Mode(mode) if isinstance(mode, str) else mode,
                fps=fps,
                every=every,
                max_duration_s=max_duration_s,
                submitted=submitted,
            )
            for source, job_id in zip(sources, ids, strict=True)
        ]
        if len({spec.id for spec in specs}) != len(specs):
            raise InvalidJobError("the same job id is given twice")
        payloads = [encode_payload(spec) for spec in specs]
        for payload in payloads:
            decode_payload(payload, self.config.max_payload_bytes)  # what workers will check
        self.ensure_group()
        created: list[str] = []  # job hashes, removed again when the submit is refused
        try:
            now = _now()
            for spec in specs:
                key = self.keys.job(spec.id)
                if not self.redis.hsetnx(key, "status", JobStatus.QUEUED.value):
                    raise InvalidJobError(f"job id {spec.id!r} is already taken", spec.id)
                created.append(key)
                self.redis.hset(
                    key,
                    mapping={
                        "source": redact_url(spec.source),
                        "attempts": 0,
                        "submitted": now,
                        "updated": now,
                        "mode": spec.mode.value if spec.mode else "",
                    },
                )
                # A submit that dies before its jobs are in the stream leaves no hash.
                self.redis.expire(key, SUBMIT_WINDOW_S)
            args = [GROUP, self.config.max_queue_length, *payloads]
            outcome, *entries = self._scripts["add_jobs"](keys=[self.keys.jobs], args=args)
            if outcome == b"full":
                raise QueueFullError(int(entries[0]), self.config.max_queue_length, len(specs))
        except BaseException:
            try:
                for key in created:  # one key per command: the layout works on a cluster
                    self.redis.delete(key)
            except redis.RedisError:
                pass  # Redis went away: the hashes expire after SUBMIT_WINDOW_S
            raise
        for spec, entry in zip(specs, entries, strict=True):
            self._scripts["entered"](keys=[self.keys.job(spec.id)], args=[entry])
            log.info("job %s submitted", spec.id, extra={"job": spec.id, "entry": entry.decode()})
        return [spec.id for spec in specs]

    def backlog(self) -> int:
        """Jobs waiting (not yet delivered) plus jobs delivered and not acknowledged."""
        group = self.group()
        if group is None:
            return int(self.redis.xlen(self.keys.jobs))
        lag = group.get("lag")
        if lag is None:  # Redis cannot tell after deletions: count conservatively
            lag = int(self.redis.xlen(self.keys.jobs)) - int(group.get("pending") or 0)
        return int(lag) + int(group.get("pending") or 0)

    # --- inspection ---------------------------------------------------------------------

    def job(self, job_id: str) -> Job:
        fields = self.redis.hgetall(self.keys.job(job_id))
        if not fields:
            raise NoSuchJobError(job_id)
        return Job.from_hash(job_id, fields)

    def results(
        self, job_id: str, start_frame: int = 0, follow: bool = False, block_s: float = 1.0
    ) -> Iterator[dict[str, Any]]:
        """The frame records of ``job_id``; ``follow`` waits for more until the job ends."""
        if not follow and not self.redis.exists(self.keys.job(job_id), self.keys.results(job_id)):
            raise NoSuchJobError(job_id)
        if follow:
            self.job(job_id)  # raises NoSuchJobError

        def ended() -> bool:
            status = self.redis.hget(self.keys.job(job_id), "status")
            return status is None or JobStatus(status.decode()).terminal

        return read_results(
            self.redis, self.keys, job_id, start_frame, follow, done=ended, block_s=block_s
        )

    def events(
        self, job_id: str | None = None, follow: bool = False, block_s: float = 1.0
    ) -> Iterator[dict[str, Any]]:
        """Verdict events (``veritas:events``), of ``job_id`` only when given; ``follow``
        waits for more until that job ends (without a job: until interrupted)."""
        if job_id is not None and follow:
            self.job(job_id)  # raises NoSuchJobError
        last: bytes | str = "0-0"
        while True:
            block = int(block_s * 1000) if follow else None
            reply = self.redis.xread({self.keys.events: last}, count=500, block=block)
            got = False
            for _, entries in reply or []:
                for entry_id, fields in entries:
                    last, got = entry_id, True
                    if job_id is not None and fields.get(b"job", b"").decode() != job_id:
                        continue
                    yield msgpack.unpackb(fields[b"payload"], raw=False)
            if got:
                continue
            if not follow:
                return
            if job_id is not None:
                status = self.redis.hget(self.keys.job(job_id), "status")
                if status is None or JobStatus(status.decode()).terminal:
                    return

    def last_frame(self, job_id: str) -> tuple[int, float] | None:
        return last_frame(self.redis, self.keys, job_id)

    def info(self) -> dict[str, Any]:
        """The queue at a glance: stream length, lag, pending, consumers, dead entries."""
        group = self.group() or {}
        consumers = []
        if group:
            for c in self.redis.xinfo_consumers(self.keys.jobs, GROUP):
                consumers.append(
                    {
                        "name": _text(c["name"]),
                        "pending": int(c["pending"]),
                        "idle_s": int(c["idle"]) / 1000,
                    }
                )
        return {
            "jobs_stream": self.keys.jobs,
            "length": int(self.redis.xlen(self.keys.jobs)),
            "lag": group.get("lag"),
            "pending": int(group.get("pending") or 0),
            "backlog": self.backlog(),
            "consumers": consumers,
            "dead": int(self.redis.xlen(self.keys.dead)),
        }

    def dead_letters(self, count: int = 100) -> list[dict[str, Any]]:
        """The newest ``count`` dead-letter entries, newest first."""
        out = []
        for entry, fields in self.redis.xrevrange(self.keys.dead, count=count):
            record = msgpack.unpackb(fields[b"payload"], raw=False)
            record["dead_entry"] = entry.decode()
            out.append(record)
        return out

    # --- control ------------------------------------------------------------------------

    def cancel(self, job_id: str) -> str:
        """Cancel a queued or running job; returns its status before. A running job's
        worker stops it within about a second."""
        outcome, status = (
            _text(x) for x in self._scripts["cancel"](keys=[self.keys.job(job_id)], args=[_now()])
        )
        if outcome == "missing":
            raise NoSuchJobError(job_id)
        if outcome == "terminal":
            raise JobNotCancellableError(job_id, status)
        log.info("job %s cancelled (was %s)", job_id, status, extra={"job": job_id})
        return status

    # --- workers ------------------------------------------------------------------------

    def start(self, spec: JobSpec, entry: str, worker: str, mode: Mode, live: bool) -> Started:
        """Mark ``spec`` running on ``worker`` and count the attempt (one atomic step).

        The attempt resumes after the last recorded frame; a loss of the previous worker
        is counted (``Started.losses``) only when that attempt recorded no frame.
        """
        last = self.last_frame(spec.id)
        resume_from = last[0] + 1 if last else 0
        reply = [
            _text(x)
            for x in self._scripts["start"](
                keys=[self.keys.job(spec.id)],
                args=[
                    entry,
                    worker,
                    _now(),
                    redact_url(spec.source),
                    mode.value,
                    _now() if live else "",
                    resume_from,
                ],
            )
        ]
        if reply[0] != "run":
            return Started(reply[0], status=reply[1])
        _, attempts, previous, progress, error, epoch, was, losses, failures = reply
        try:
            history = json.loads(progress) if progress else {}
        except ValueError:
            history = {}
        return Started(
            "run",
            status=JobStatus.RUNNING.value,
            attempts=int(attempts),
            previous_worker=previous,
            progress=history if isinstance(history, dict) else {},
            error=error,
            epoch=float(epoch) if epoch else None,
            was=was,
            resume_from=resume_from,
            losses=int(losses),
            failures=int(failures or 0),
        )

    def finish(
        self,
        job_id: str,
        entry: str,
        status: JobStatus,
        error: str = "",
        progress: Mapping[str, Any] | None = None,
        source: str = "",
        attempts: int | None = None,
    ) -> str:
        """End a job (done, failed or cancelled), set its expiry, acknowledge its entry.

        A job cancelled meanwhile stays cancelled; returns the final status.
        """
        ttl = max(1, round(self.config.results_ttl_s))
        final = _text(
            self._scripts["finish"](
                keys=[self.keys.job(job_id)],
                args=[
                    status.value,
                    _now(),
                    redact(error),
                    json.dumps(progress) if progress else "",
                    ttl,
                    entry,
                    redact_url(source),
                    "" if attempts is None else attempts,
                ],
            )
        )
        if final != "foreign":
            self.redis.expire(self.keys.results(job_id), ttl)
        self.ack(entry)
        return final

    def release(
        self,
        job_id: str,
        entry: str,
        consumer: str,
        error: str = "",
        progress: Mapping[str, Any] | None = None,
        handback: bool = False,
        failures: int | None = None,
    ) -> str:
        """Give a job back to the queue for any worker to take at once.

        ``handback`` (a graceful stop) does not count the attempt; ``failures`` (a retry
        after a failure of the job) is its new count of failures. Returns ``queued``,
        or ``cancelled`` (then the entry is acknowledged instead), or ``foreign``.
        """
        outcome = _text(
            self._scripts["release"](
                keys=[self.keys.job(job_id)],
                args=[
                    entry,
                    _now(),
                    redact(error),
                    json.dumps(progress) if progress else "",
                    "1" if handback else "",
                    "" if failures is None else failures,
                ],
            )
        )
        if outcome == "cancelled":
            self.finish(job_id, entry, JobStatus.CANCELLED, progress=progress)
            return outcome
        # Make the entry look long idle: the next XAUTOCLAIM of any worker takes it.
        self.redis.xclaim(
            self.keys.jobs, GROUP, consumer, 0, [entry], idle=RELEASE_IDLE_MS, justid=True
        )
        return outcome

    def dead_letter(
        self,
        entry: str,
        reason: str,
        attempts: int,
        worker: str,
        job_id: str | None = None,
        payload: bytes | None = None,
        progress: Mapping[str, Any] | None = None,
        source: str = "",
    ) -> None:
        """Move a job that failed for good to the dead stream, fail it, acknowledge it."""
        reason = redact(reason)
        keep = payload is not None and len(payload) <= self.config.max_payload_bytes
        record = {
            "schema": SCHEMA_VERSION,
            "job": job_id or "",
            "entry": entry,
            "reason": reason,
            "attempts": attempts,
            "worker": worker,
            "failed_at": time.time(),
            "job_payload": payload if keep else None,
            "payload_bytes": len(payload) if payload is not None else 0,
        }
        self.redis.xadd(
            self.keys.dead,
            {"payload": msgpack.packb(record, use_bin_type=True)},
            maxlen=self.config.dead_max_len,
            approximate=True,
        )
        if job_id:
            self.finish(job_id, entry, JobStatus.FAILED, reason, progress, source, attempts)
        else:
            self.ack(entry)

    def ack(self, entry: str) -> None:
        self.redis.xack(self.keys.jobs, GROUP, entry)

    def close(self, job_id: str, entry: str) -> None:
        """Acknowledge an entry of a job that had already ended (a late or repeated
        delivery): its keys get their expiry, nothing else changes."""
        ttl = max(1, round(self.config.results_ttl_s))
        self.redis.expire(self.keys.job(job_id), ttl)
        self.redis.expire(self.keys.results(job_id), ttl)
        self.ack(entry)

    def trim(self) -> int:
        """Delete acknowledged entries from the head of the jobs stream; never one that
        is pending or not yet delivered to every group. Returns how many went."""
        groups = self.redis.xinfo_groups(self.keys.jobs)
        if not groups:
            return 0
        bounds = []
        for g in groups:
            name = _text(g["name"])
            summary = self.redis.xpending(self.keys.jobs, name)
            if summary and summary.get("pending"):
                bounds.append(_parse_id(summary["min"]))
            else:
                ms, seq = _parse_id(g["last-delivered-id"])
                bounds.append((ms, seq + 1))
        ms, seq = min(bounds)
        return int(self.redis.xtrim(self.keys.jobs, minid=f"{ms}-{seq}", approximate=False))

    def leave(self, name: str) -> None:
        """Consumer ``name`` leaves the group if it holds nothing (a worker's last act);
        never raises: with entries left or Redis gone, others clean up later."""
        try:
            if self.delete_idle_consumer(name, 0):
                log.debug("worker %s: left the consumer group", name)
        except Exception:
            pass

    def delete_idle_consumer(self, name: str, min_idle_s: float) -> bool:
        """Remove consumer ``name`` if it has no pending entry and is idle that long."""
        return (
            int(
                self._scripts["delete_idle_consumer"](
                    keys=[self.keys.jobs], args=[GROUP, name, int(min_idle_s * 1000)]
                )
            )
            >= 0
        )

    def consumers(self) -> list[dict[str, Any]]:
        try:
            return [
                {"name": _text(c["name"]), "pending": int(c["pending"]), "idle_ms": int(c["idle"])}
                for c in self.redis.xinfo_consumers(self.keys.jobs, GROUP)
            ]
        except redis.ResponseError:
            return []

    def group(self) -> dict[str, Any] | None:
        """``XINFO GROUPS`` of the workers' group (lag, pending, ...); None if missing."""
        try:
            groups = self.redis.xinfo_groups(self.keys.jobs)
        except redis.ResponseError:  # no such stream yet
            return None
        for g in groups:
            if _text(g["name"]) == GROUP:
                return g
        return None


def _now() -> str:
    return f"{time.time():.3f}"


def _utf8(source: str) -> str:
    """``source``, or InvalidJobError when it is not UTF-8 text (the wire format's)."""
    try:
        source.encode("utf-8")
    except UnicodeEncodeError:  # bytes a path decoder kept as surrogates (PEP 383)
        shown = source.encode("utf-8", "backslashreplace").decode("ascii", "replace")[:200]
        raise InvalidJobError(
            f"the source {shown} is not UTF-8 text: rename the file, or pass it as a "
            "file:// URL with its bytes %-encoded"
        ) from None
    return source


def _text(value: Any) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def _parse_id(value: bytes | str) -> tuple[int, int]:
    ms, _, seq = _text(value).partition("-")
    return int(ms), int(seq or 0)
