"""Verdict events to a webhook: JSON POSTs from a thread, retried, through a bounded queue.

:class:`WebhookSender` never blocks the frame path: :meth:`send` puts the event in a
queue of at most ``queue_size`` events (when full, the oldest is dropped and counted)
and a thread POSTs each one, in order, as ``application/json``. A connection error, a
timeout or a 5xx/429 answer is retried after a back-off (0.5 s doubling to 8 s) up to
``retries`` times; a 2xx is delivered; any other answer (a 4xx: the receiver refuses
it) is given up at once. Counts: :attr:`delivered`, :attr:`dropped`, :attr:`failed`.
:meth:`close` sends what is queued for at most ``drain_s`` seconds.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import urllib.error
import urllib.request
from collections import deque
from typing import Any
from urllib.parse import urlsplit

from engine.redaction import redact_url

log = logging.getLogger(__name__)

BACKOFF_MIN_S, BACKOFF_MAX_S = 0.5, 8.0


class WebhookSender:
    def __init__(
        self,
        url: str,
        queue_size: int = 100,
        retries: int = 5,
        timeout_s: float = 5.0,
    ) -> None:
        if urlsplit(url).scheme not in ("http", "https"):
            raise ValueError(f"a webhook URL must be http(s)://, got {redact_url(url)!r}")
        self.url, self.name = url, redact_url(url)
        self.retries, self.timeout_s = retries, timeout_s
        self._queue: deque[dict[str, Any]] = deque()
        self._size = queue_size
        self._cond = threading.Condition()
        self._closing = False
        self._deadline: float | None = None
        self.delivered = self.dropped = self.failed = 0
        self._thread = threading.Thread(target=self._run, name="veritas-webhook", daemon=True)
        self._thread.start()

    def send(self, event: dict[str, Any]) -> None:
        """Queue ``event`` (never blocks; the oldest queued event goes when full)."""
        with self._cond:
            if len(self._queue) >= self._size:
                self._queue.popleft()
                self.dropped += 1
            self._queue.append(event)
            self._cond.notify_all()

    def close(self, drain_s: float = 5.0) -> None:
        """Send what is queued for at most ``drain_s`` seconds, then stop."""
        with self._cond:
            self._closing = True
            self._deadline = time.monotonic() + drain_s
            self._cond.notify_all()
        self._thread.join(drain_s + self.timeout_s + 1)
        left = len(self._queue)
        if left:
            self.dropped += left
            log.warning("webhook %s: %d events not sent before closing", self.name, left)

    def _expired(self) -> bool:
        return self._deadline is not None and time.monotonic() >= self._deadline

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._queue and not self._closing:
                    self._cond.wait()
                if not self._queue or self._expired():
                    return
                event = self._queue[0]
            outcome = self._deliver(event)
            with self._cond:
                if self._queue and self._queue[0] is event:
                    self._queue.popleft()
                if outcome:
                    self.delivered += 1
                else:
                    self.failed += 1

    def _deliver(self, event: dict[str, Any]) -> bool:
        body = json.dumps(event, separators=(",", ":")).encode()
        wait = BACKOFF_MIN_S
        for attempt in range(self.retries + 1):
            try:
                request = urllib.request.Request(
                    self.url, body, {"Content-Type": "application/json"}, method="POST"
                )
                with urllib.request.urlopen(request, timeout=self.timeout_s) as reply:
                    if 200 <= reply.status < 300:
                        return True
                    reason = f"HTTP {reply.status}"
            except urllib.error.HTTPError as error:
                if error.code < 500 and error.code != 429:
                    log.warning("webhook %s: refused (HTTP %d); not retried", self.name, error.code)
                    return False
                reason = f"HTTP {error.code}"
            except (urllib.error.URLError, OSError) as error:
                reason = str(getattr(error, "reason", error))
            if attempt == self.retries or self._expired():
                break
            log.info("webhook %s: %s; retrying in %.1f s", self.name, reason, wait)
            time.sleep(wait)
            wait = min(wait * 2, BACKOFF_MAX_S)
        log.warning("webhook %s: giving up on an event after %s", self.name, reason)
        return False
