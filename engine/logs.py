"""The one log set-up of every command: ``veritas``, the workers, bench and ``training/``.

Three formats (``--log-format``):

``plain``  ``veritas: warning: message`` — for people at a terminal (``veritas run``, the
           training mains; the program name is the command's)
``text``   logfmt ``key=value`` lines — for workers and log collectors
``json``   one JSON object per line

Fields passed with ``extra={...}`` (``job``, ``worker``, ``frames``, ...) become keys of
the ``text`` and ``json`` lines::

    ts=2026-11-21T01:25:51.355Z level=info logger=engine.queue.worker msg="job 5f0c done"
    job=5f0c frames=120      (one line)

Every line, and every exception text, goes through :func:`~engine.redaction.redact`,
which masks passwords in URLs (``redis://:***@host``), secret query values and RTMP
stream keys, whatever code logged them.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Any

from engine.redaction import redact

LOG_FORMATS = ("plain", "text", "json")

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


class PlainFormatter(logging.Formatter):
    """``prog: level: message`` (and the traceback, when there is one)."""

    def __init__(self, prog: str = "veritas") -> None:
        super().__init__()
        self.prog = prog

    def format(self, record: logging.LogRecord) -> str:
        line = f"{self.prog}: {record.levelname.lower()}: {record.getMessage()}"
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return redact(line)


def verbosity(verbose: int) -> int:
    """The level of ``-v`` flags counted: none → WARNING, ``-v`` → INFO, ``-vv`` → DEBUG."""
    return logging.DEBUG if verbose > 1 else logging.INFO if verbose else logging.WARNING


def setup_logging(
    fmt: str = "plain",
    level: int = logging.WARNING,
    *,
    prog: str = "veritas",
    logger: str = "",
) -> None:
    """Send the records of ``logger`` (default: all) to stderr in ``fmt`` at ``level``.

    Calling it again replaces the handler it installed (never a second copy of each line).
    A named ``logger`` (``"training"``) stops propagating, so no root handler repeats it.
    """
    if fmt not in LOG_FORMATS:
        raise ValueError(f"log format {fmt!r}: choose one of {', '.join(LOG_FORMATS)}")
    formatter = {
        "plain": PlainFormatter(prog),
        "text": KeyValueFormatter(),
        "json": JsonFormatter(),
    }
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(formatter[fmt])
    target = logging.getLogger(logger)
    target.handlers[:] = [handler]
    target.setLevel(level)
    if logger:
        target.propagate = False
