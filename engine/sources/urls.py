"""Telling a URL from a path, without importing any source (the queue commands use it)."""

from __future__ import annotations

import re

_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.\-]*)://")


def url_scheme(spec: str) -> str | None:
    """``'rtsp'`` for ``'rtsp://host/x'``; None for paths (``C:\\x`` included)."""
    match = _SCHEME.match(spec)
    return match.group(1).lower() if match else None
