"""Structured logs for workers: ``key=value`` lines or JSON lines, never a credential.

Fields passed with ``extra={...}`` (``job``, ``worker``, ``frames``, ...) become keys
of the line::

    ts=2026-11-21T01:25:51.355Z level=info logger=engine.queue.worker msg="job 5f0c done"
    job=5f0c frames=120      (one line)

Every line, and every exception text, goes through :func:`~engine.sources.live.redact`,
which masks passwords in URLs (``redis://:***@host``), secret query values and RTMP
stream keys, whatever code logged them.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Any

from engine.sources.live import redact

LOG_FORMATS = ("text", "json")

_STANDARD = set(logging.makeLogRecord({}).__dict__) | {"message", "asctime", "taskName"}


def _fields(record: logging.LogRecord) -> dict[str, Any]:
    return {k: v for k, v in record.__dict__.items() if k not in _STANDARD}


def _timestamp(record: logging.LogRecord) -> str:
    ms = int(record.msecs)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{ms:03d}Z"


class KeyValueFormatter(logging.Formatter):
    """``ts=... level=... logger=... msg="..." key=value ...`` (logfmt)."""

    def format(self, record: logging.LogRecord) -> str:
        parts = {
            "ts": _timestamp(record),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
            **_fields(record),
        }
        if record.exc_info:
            parts["exc"] = self.formatException(record.exc_info)
        return redact(" ".join(f"{k}={_logfmt(v)}" for k, v in parts.items()))


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts, level, logger, msg, the extra fields, exc."""

    def format(self, record: logging.LogRecord) -> str:
        parts: dict[str, Any] = {
            "ts": _timestamp(record),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
            **_fields(record),
        }
        if record.exc_info:
            parts["exc"] = self.formatException(record.exc_info)
        return redact(json.dumps(parts, default=str, ensure_ascii=False))


def _logfmt(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    if text == "" or any(c in text for c in ' ="\n\t'):
        return json.dumps(text, ensure_ascii=False)
    return text


def configure_logging(fmt: str = "text", level: int = logging.INFO) -> None:
    """Send every log record to stderr in ``fmt`` (``text`` or ``json``) at ``level``."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else KeyValueFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
