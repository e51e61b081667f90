"""``veritas serve``'s worker pool: N worker processes on this machine, kept running.

Each worker is ``python -m engine.cli worker ...`` in its own session (a terminal's
Ctrl-C reaches only the pool, which then stops every worker once, gracefully). The
Redis URL reaches the workers through ``$VERITAS_REDIS_URL``, not their command line.
A worker that exits with an error is restarted after a back-off that doubles from
:data:`RESTART_MIN_S` to :data:`RESTART_MAX_S`; one that exits cleanly (burst mode) is
not. On SIGTERM or SIGINT the pool sends SIGTERM to every worker, waits up to
``grace_s`` for them to hand their jobs back, kills the ones left, and returns 0.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from engine.queue.connection import REDIS_URL_ENV
from engine.queue.server import die_with_parent

log = logging.getLogger(__name__)

RESTART_MIN_S = 1.0
"""First wait before restarting a worker that crashed."""

RESTART_MAX_S = 60.0
"""Longest wait before restarting a worker that keeps crashing."""

STABLE_S = 60.0
"""A worker that ran this long before crashing restarts after the shortest wait."""

DEFAULT_GRACE_S = 30.0
"""How long stopping workers get to hand their jobs back before they are killed."""


@dataclass
class _Slot:
    index: int
    process: subprocess.Popen[bytes] | None = None
    started: float = 0.0
    backoff: float = RESTART_MIN_S
    restart_at: float | None = None
    done: bool = False
    restarts: int = field(default=0)


class WorkerPool:
    """Runs ``size`` workers with ``worker_args`` (the arguments after ``worker``)."""

    def __init__(
        self,
        size: int,
        redis_url: str,
        worker_args: Sequence[str] | Sequence[Sequence[str]],
        grace_s: float = DEFAULT_GRACE_S,
    ) -> None:
        self.size = size
        self.redis_url = redis_url
        self.worker_args = worker_args
        self.grace_s = grace_s
        self.slots = [_Slot(i) for i in range(size)]
        self._stop: str | None = None

    def _args(self, index: int) -> list[str]:
        args = self.worker_args
        if args and not isinstance(args[0], str):
            return list(args[index])  # type: ignore[arg-type]
        return list(args)  # type: ignore[arg-type]

    def _spawn(self, slot: _Slot) -> None:
        env = dict(os.environ, **{REDIS_URL_ENV: self.redis_url})
        slot.process = subprocess.Popen(
            [sys.executable, "-m", "engine.cli", "worker", *self._args(slot.index)],
            env=env,
            start_new_session=True,
            preexec_fn=die_with_parent,
        )
        slot.started = time.monotonic()
        slot.restart_at = None
        log.info("pool: worker %d started (pid %d)", slot.index, slot.process.pid)

    def stop(self, reason: str) -> None:
        self._stop = self._stop or reason

    def run(self, install_signals: bool = True) -> int:
        """Run until a signal (or every worker finished cleanly); returns 0."""
        if install_signals:
            for sig in (signal.SIGTERM, signal.SIGINT):
                signal.signal(sig, lambda s, f: self.stop(f"received {signal.Signals(s).name}"))
        try:
            for slot in self.slots:
                self._spawn(slot)
            while not self._stop:
                self._watch()
                if all(s.done for s in self.slots):
                    self.stop("every worker finished")
                    break
                time.sleep(0.2)
            log.info("pool: stopping (%s)", self._stop)
        finally:
            self._stop_all()
        return 0

    def _watch(self) -> None:
        now = time.monotonic()
        for slot in self.slots:
            if slot.done:
                continue
            if slot.process is None:
                if slot.restart_at is not None and now >= slot.restart_at:
                    self._spawn(slot)
                continue
            code = slot.process.poll()
            if code is None:
                continue
            if code == 0:
                log.info("pool: worker %d finished", slot.index)
                slot.done, slot.process = True, None
                continue
            ran = now - slot.started
            slot.backoff = (
                RESTART_MIN_S if ran >= STABLE_S else min(slot.backoff * 2, RESTART_MAX_S)
            )
            slot.restart_at = now + slot.backoff
            slot.process = None
            slot.restarts += 1
            log.warning(
                "pool: worker %d exited with status %d after %.0f s; restarting in "
                "%.0f s (its jobs are reclaimed by the others)",
                slot.index,
                code,
                ran,
                slot.backoff,
            )

    def _stop_all(self) -> None:
        running = [s.process for s in self.slots if s.process and s.process.poll() is None]
        for p in running:
            p.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + self.grace_s
        for p in running:
            try:
                p.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log.warning(
                    "pool: worker pid %d did not stop within %.0f s; killing it",
                    p.pid,
                    self.grace_s,
                )
                p.kill()
                p.wait()
