"""Credentials never leave the process in clear: URLs and texts with their secrets masked.

Used by every log line (:mod:`engine.logs`), every error a queue command prints and
every source name a record or a job hash carries. Light: no torch, no PyAV.
"""

from __future__ import annotations

import re

_SENSITIVE_QUERY = re.compile(
    r"(?i)([?&;](?:password|passwd|pass|pwd|passphrase|secret|token|key|auth|"
    r"access_token|sig|signature|streamid)=)[^&;#\s'\"]*"
)
_URL_IN_TEXT = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*://[^\s'\"<>]+")


def redact_url(url: str) -> str:
    """``url`` with its credentials masked: user info, secret query values, RTMP keys.

    >>> redact_url("rtsp://admin:hunter2@10.0.0.5/stream?token=abc")
    'rtsp://admin:***@10.0.0.5/stream?token=***'
    """
    match = re.match(r"^([A-Za-z][A-Za-z0-9+.\-]*)://([^/?#]*)(.*)$", url, re.S)
    if not match:
        return _SENSITIVE_QUERY.sub(r"\1***", url)
    scheme, authority, rest = match.groups()
    if "@" in authority:
        userinfo, host = authority.rsplit("@", 1)
        user, sep, _ = userinfo.partition(":")
        authority = f"{user}:***@{host}" if sep else f"***@{host}"
    if scheme.lower() in ("rtmp", "rtmps"):
        # rtmp://host/app/STREAM-KEY: the stream name is the publishing secret.
        path, query = re.match(r"^([^?#]*)(.*)$", rest, re.S).groups()  # type: ignore[union-attr]
        parts = path.split("/")
        if len(parts) > 2 and any(parts[2:]):
            path = "/".join([*parts[:2], "***"])
        rest = path + query
    rest = _SENSITIVE_QUERY.sub(r"\1***", rest)
    return f"{scheme}://{authority}{rest}"


def redact(text: str) -> str:
    """``text`` with every URL in it passed through :func:`redact_url`."""
    return _URL_IN_TEXT.sub(lambda m: redact_url(m.group(0)), text)
