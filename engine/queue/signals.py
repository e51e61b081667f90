"""SIGTERM and SIGINT for a worker: the first asks for a graceful stop (jobs handed back,
results written), a second exits at once (jobs stay pending until reclaimed)."""

from __future__ import annotations

import logging
import os
import signal
from collections.abc import Callable

log = logging.getLogger(__name__)


def install_stop_signals(
    name: str, claim_idle_s: float, stop: Callable[[str], None], stopping: Callable[[], bool]
) -> None:
    """``stop(reason)`` on the first SIGTERM/SIGINT; ``os._exit(1)`` on a second one
    (``stopping()`` true: a stop was asked already). Main thread only."""

    def handler(signum: int, frame: object) -> None:
        signame = signal.Signals(signum).name
        if stopping():
            log.warning(
                "worker %s: second %s; exiting now, its jobs stay pending and are "
                "reclaimed after %.0f s",
                name,
                signame,
                claim_idle_s,
            )
            os._exit(1)
        stop(f"received {signame}")

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)
