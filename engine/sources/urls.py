"""Telling a URL from a path, without importing any source (the queue commands use it)."""

from __future__ import annotations

import os
import re
from urllib.parse import unquote_to_bytes, urlsplit

_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.\-]*)://")


def url_scheme(spec: str) -> str | None:
    """``'rtsp'`` for ``'rtsp://host/x'``; None for paths (``C:\\x`` included)."""
    match = _SCHEME.match(spec)
    return match.group(1).lower() if match else None


def file_url_path(spec: str) -> str:
    """The local path of a ``file://`` URL; %-escapes are bytes, so a file name that is
    not UTF-8 can be named (``file:///data/caf%E9.mp4``)."""
    return os.fsdecode(unquote_to_bytes(urlsplit(spec).path))
