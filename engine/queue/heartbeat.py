"""Keeping a worker's claims alive while it works (long jobs, live feeds).

A job's stream entry stays pending on the worker that took it until acknowledged;
other workers reclaim entries idle for ``claim_idle_s`` (XAUTOCLAIM). A :class:`Heartbeat`
thread resets the idle time of each of its worker's entries every ``heartbeat_s``
(``XCLAIM ... JUSTID`` to the same consumer, which does not count a delivery), so a
busy worker is never robbed. The check "is this entry still mine?" and the renewal
are one Lua script, so a heartbeat can never take back an entry another worker has
reclaimed meanwhile: it reports the entry lost instead, and the worker stops that job.

A worker whose main loop has stopped turning (``stall_timeout_s``: a hung decoder, a
deadlock) stops renewing, so its jobs go to healthy workers.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

import redis

from engine.queue.connection import REDIS_ERRORS
from engine.queue.keys import GROUP, Keys

log = logging.getLogger(__name__)

_TOUCH = """
local p = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[3], ARGV[3], 1)
if p[1] == nil or p[1][2] ~= ARGV[2] then return 0 end
redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], 0, ARGV[3], 'JUSTID')
return 1
"""


class Heartbeat:
    """Renews ``entries()`` for ``consumer`` every ``interval`` s in a daemon thread.

    ``on_lost(entry)`` is called (in the heartbeat thread) for an entry that is no
    longer pending on ``consumer``; ``healthy()`` False skips renewals. A beat holds
    ``lock`` (the worker's) from reading ``entries()`` to the reply, so once the worker
    has dropped an entry under that lock, no renewal of it is in flight.
    """

    def __init__(
        self,
        client: redis.Redis,
        keys: Keys,
        consumer: str,
        interval: float,
        entries: Callable[[], list[str]],
        on_lost: Callable[[str], None],
        healthy: Callable[[], bool] = lambda: True,
        lock: threading.Lock | None = None,
    ) -> None:
        self.redis = client
        self.keys = keys
        self.consumer = consumer
        self.interval = interval
        self.entries = entries
        self.on_lost = on_lost
        self.healthy = healthy
        self.beats = 0
        self._touch = client.register_script(_TOUCH)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="heartbeat", daemon=True)
        self._stalled = False
        self._lock = lock or threading.Lock()

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5.0)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.beat()
            except REDIS_ERRORS as error:
                log.warning("heartbeat: redis unavailable (%s); retrying", error)
            except Exception:  # never let the thread die: claims would lapse silently
                log.exception("heartbeat: unexpected error")

    def beat(self) -> None:
        """Renew every entry once (also called directly by tests)."""
        if not self.healthy():
            if not self._stalled:
                self._stalled = True
                log.error(
                    "heartbeat: worker %s is stalled; not renewing its claims so other "
                    "workers take its jobs",
                    self.consumer,
                )
            return
        self._stalled = False
        with self._lock:
            entries = self.entries()
            # One call per entry (a handful): cluster pipelines cannot run scripts.
            replies = [
                self._touch(keys=[self.keys.jobs], args=[GROUP, self.consumer, entry])
                for entry in entries
            ]
        for entry, mine in zip(entries, replies, strict=True):
            if not int(mine):
                self.on_lost(entry)
        self.beats += 1
