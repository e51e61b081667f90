"""The Redis key layout (``DESIGN.md``, "Redis keys"); the prefix is ``queue.prefix``.

=============================  ======  ====================================================
key                            type    holds
=============================  ======  ====================================================
``veritas:jobs``               stream  one entry per submitted job: ``payload`` (msgpack);
                                       consumer group :data:`GROUP`
``veritas:job:<id>``           hash    the job's state: status, source, attempts, error,
                                       progress (JSON), worker, entry, times
``veritas:results:<id>``       stream  one entry per analysed frame, entry ID
                                       ``<frame>-1``, field ``payload`` (a msgpack frame
                                       record)
``veritas:dead``               stream  jobs that failed for good: ``payload`` (msgpack: job,
                                       reason, attempts, the original job payload)
``veritas:events``             stream  verdict events (engine.events): ``payload``
                                       (msgpack), ``job``; ``events.max_len`` kept
=============================  ======  ====================================================

**Redis Cluster.** No command, transaction or script touches two keys, so every key
may live in any hash slot and the layout works on a cluster as it is. With the prefix
``{veritas}:`` all keys of a queue share one slot (one shard), which keeps a queue's
memory and traffic together.
"""

from __future__ import annotations

GROUP = "veritas-workers"
"""The one consumer group of the jobs stream (fixed by the design)."""


class Keys:
    """Names of a queue's keys under ``prefix``."""

    def __init__(self, prefix: str = "veritas:") -> None:
        self.prefix = prefix
        self.jobs = f"{prefix}jobs"
        self.dead = f"{prefix}dead"
        self.events = f"{prefix}events"

    def job(self, job_id: str) -> str:
        return f"{self.prefix}job:{job_id}"

    def results(self, job_id: str) -> str:
        return f"{self.prefix}results:{job_id}"

    def __repr__(self) -> str:
        return f"Keys({self.prefix!r})"
