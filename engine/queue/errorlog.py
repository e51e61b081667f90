"""Unexpected errors in a long-running loop, logged without flooding the log.

A bug that fires on every turn of the worker loop would otherwise write a traceback a
second forever. :class:`RepeatingErrors` logs an error with its traceback the first
time, then the same error (same type, message and place) at most once per ``every_s``,
saying how many times it happened meanwhile. A different error is logged at once.
"""

from __future__ import annotations

import logging
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass

REPEAT_LOG_INTERVAL_S = 60.0
"""Least time between two log lines of the same repeating error."""


@dataclass
class _Seen:
    logged_at: float
    since: int = 0
    """Times it happened since it was last logged."""


class RepeatingErrors:
    def __init__(
        self,
        logger: logging.Logger,
        every_s: float = REPEAT_LOG_INTERVAL_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.logger = logger
        self.every_s = every_s
        self.clock = clock
        self._seen: dict[tuple[str, str, str], _Seen] = {}

    @staticmethod
    def _key(error: BaseException) -> tuple[str, str, str]:
        frames = traceback.extract_tb(error.__traceback__)
        where = f"{frames[-1].filename}:{frames[-1].lineno}" if frames else ""
        return type(error).__qualname__, str(error), where

    def report(self, error: BaseException, what: str) -> bool:
        """Log ``error`` (``what``: a sentence saying what failed) unless it repeats too
        soon; True when a line was written."""
        key, now = self._key(error), self.clock()
        seen = self._seen.get(key)
        if seen is None:
            self._seen[key] = _Seen(now)
            self.logger.error("%s: %r", what, error, exc_info=error)
            return True
        seen.since += 1
        if now - seen.logged_at < self.every_s:
            return False
        self.logger.error(
            "%s: %r (again; %d times in the last %.0f s)",
            what,
            error,
            seen.since,
            now - seen.logged_at,
        )
        seen.logged_at, seen.since = now, 0
        return True
