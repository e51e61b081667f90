"""Job payloads: msgpack maps with a ``schema`` version, checked field by field.

Schema version 1 (the ``payload`` field of a ``veritas:jobs`` entry)::

    {"schema": 1, "id": "5f0c...", "source": "/data/clip.mp4",      # required
     "mode": "realtime" | "lossless", "fps": 5.0, "every": 1,        # optional
     "max_duration_s": 3600.0, "submitted": 1763700000.0}            # optional

A payload is refused, with a reason naming the field, when it is over
``queue.max_payload_bytes`` (checked before decoding), is not msgpack, is not a map,
has another schema version, lacks a required field, has an unknown field, or has a
field of the wrong type or out of range. Nothing in a payload is ever executed or
unpickled: msgpack yields plain maps, lists, strings and numbers, and extension types
are refused.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Any

import msgpack

from engine.queue.errors import InvalidJobError
from engine.queue.job import JobSpec, Mode
from engine.sources.settings import MAX_FPS, MIN_FPS, is_sampling_rate

SCHEMA_VERSION = 1

JOB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}$")
"""Job ids: 1 to 64 characters, letters, digits, ``_ . -``, not starting with a symbol."""

MAX_SOURCE_CHARS = 4096
"""Longest source path or URL."""

MAX_EVERY = 1_000_000

MAX_JOB_DURATION_S = 366 * 86400.0
"""Longest ``max_duration_s`` a job may ask for; without the field a job has no limit of
its own (the worker's ``queue.max_job_duration_s`` still holds)."""

FIELDS: dict[str, str] = {
    "schema": "an integer",
    "id": "a string",
    "source": "a string",
    "mode": "a string",
    "fps": "a number or nil",
    "every": "an integer",
    "max_duration_s": "a number or nil",
    "submitted": "a number",
}
"""Every field of schema 1 and its msgpack type."""

REQUIRED = ("schema", "id", "source")


def encode_payload(spec: JobSpec) -> bytes:
    """The msgpack payload of ``spec`` (only the fields that are set)."""
    payload: dict[str, Any] = {"schema": SCHEMA_VERSION, "id": spec.id, "source": spec.source}
    if spec.mode is not None:
        payload["mode"] = spec.mode.value
    for name in ("fps", "every", "max_duration_s", "submitted"):
        value = getattr(spec, name)
        if value is not None:
            payload[name] = value
    return msgpack.packb(payload, use_bin_type=True)


def decode_payload(data: object, max_bytes: int) -> JobSpec:
    """The :class:`JobSpec` in ``data`` (an entry's ``payload`` bytes), or InvalidJobError."""
    if data is None:
        raise InvalidJobError("the stream entry has no 'payload' field")
    if not isinstance(data, bytes | bytearray):
        raise InvalidJobError(f"the payload must be bytes, got {type(data).__name__}")
    if len(data) > max_bytes:
        raise InvalidJobError(
            f"the payload is {len(data)} bytes, over the limit of {max_bytes} "
            "(queue.max_payload_bytes)"
        )
    try:
        obj = msgpack.unpackb(
            bytes(data), raw=False, strict_map_key=True, ext_hook=_refuse_extension
        )
    except InvalidJobError:
        raise
    except Exception as error:  # malformed bytes, too deep, bad UTF-8, trailing data
        raise InvalidJobError(
            f"the payload is not valid msgpack ({type(error).__name__}: {str(error)[:80]})"
        ) from None
    if not isinstance(obj, Mapping):
        raise InvalidJobError(f"the payload must be a msgpack map, got {_kind(obj)}")
    return validate_payload(obj)


def validate_payload(obj: Mapping[str, Any]) -> JobSpec:
    """Check a decoded payload map against schema 1; see the module doc."""
    raw_id = obj.get("id")
    job_id = raw_id if isinstance(raw_id, str) and JOB_ID.match(raw_id) else None
    if "schema" not in obj:
        raise InvalidJobError("missing field 'schema' (the payload's schema version)", job_id)
    schema = obj["schema"]
    if not _is_int(schema):
        raise InvalidJobError(f"field 'schema' must be an integer, got {_kind(schema)}", job_id)
    if schema != SCHEMA_VERSION:
        raise InvalidJobError(
            f"unsupported schema version {schema} (this worker reads version "
            f"{SCHEMA_VERSION}; upgrade the worker or submit with a matching veritas)",
            job_id,
        )
    unknown = sorted(str(k)[:40] for k in obj if k not in FIELDS)
    if unknown:
        raise InvalidJobError(
            f"unknown field {', '.join(repr(u) for u in unknown[:3])} "
            f"(schema {SCHEMA_VERSION} has {', '.join(FIELDS)})",
            job_id,
        )
    for name in REQUIRED:
        if name not in obj:
            raise InvalidJobError(f"missing field {name!r}", job_id)
    if not isinstance(raw_id, str):
        raise InvalidJobError(f"field 'id' must be a string, got {_kind(raw_id)}")
    if job_id is None:
        raise InvalidJobError(
            f"field 'id' = {raw_id[:80]!r} is not a job id (1 to 64 letters, digits, '_', '.', '-')"
        )
    source = obj["source"]
    if not isinstance(source, str):
        raise InvalidJobError(f"field 'source' must be a string, got {_kind(source)}", job_id)
    if not source or len(source) > MAX_SOURCE_CHARS:
        raise InvalidJobError(
            f"field 'source' must have 1 to {MAX_SOURCE_CHARS} characters, got {len(source)}",
            job_id,
        )
    if any(ord(c) < 32 or ord(c) == 127 for c in source):
        raise InvalidJobError("field 'source' holds control characters", job_id)
    mode = obj.get("mode")
    if mode is not None:
        if not isinstance(mode, str):
            raise InvalidJobError(f"field 'mode' must be a string, got {_kind(mode)}", job_id)
        if mode not in {m.value for m in Mode}:
            raise InvalidJobError(
                f"field 'mode' = {mode[:40]!r} is not one of realtime, lossless", job_id
            )
    fps = _optional_number(obj, "fps", job_id, positive=True)
    if fps is not None and not is_sampling_rate(fps):
        raise InvalidJobError(f"field 'fps' = {fps!r} must be from {MIN_FPS} to {MAX_FPS}", job_id)
    every = obj.get("every")
    if every is not None:
        if not _is_int(every):
            raise InvalidJobError(f"field 'every' must be an integer, got {_kind(every)}", job_id)
        if not 1 <= every <= MAX_EVERY:
            raise InvalidJobError(f"field 'every' = {every} must be from 1 to {MAX_EVERY}", job_id)
    if fps is not None and every not in (None, 1):
        raise InvalidJobError("fields 'fps' and 'every' exclude each other", job_id)
    max_duration = _optional_number(obj, "max_duration_s", job_id, positive=True)
    if max_duration is not None and max_duration > MAX_JOB_DURATION_S:
        raise InvalidJobError(
            f"field 'max_duration_s' = {max_duration!r} must be at most {MAX_JOB_DURATION_S:.0f} "
            "(a year; leave it out for no limit)",
            job_id,
        )
    submitted = _optional_number(obj, "submitted", job_id, positive=False)
    return JobSpec(
        id=job_id,
        source=source,
        mode=Mode(mode) if mode is not None else None,
        fps=fps,
        every=every,
        max_duration_s=max_duration,
        submitted=submitted,
    )


def _optional_number(
    obj: Mapping[str, Any], name: str, job_id: str | None, positive: bool
) -> float | None:
    value = obj.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidJobError(f"field {name!r} must be a number, got {_kind(value)}", job_id)
    if not math.isfinite(value) or (positive and value <= 0) or value < 0:
        bound = "> 0" if positive else ">= 0"
        raise InvalidJobError(f"field {name!r} = {value!r} must be a finite number {bound}", job_id)
    return float(value)


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _kind(value: object) -> str:
    names = {dict: "a map", list: "a list", str: "a string", bytes: "binary", bool: "a boolean"}
    if value is None:
        return "nil"
    for t, name in names.items():
        if isinstance(value, t):
            return name
    return "an integer" if isinstance(value, int) else type(value).__name__


def _refuse_extension(code: int, data: bytes) -> object:
    raise InvalidJobError(f"the payload holds a msgpack extension type ({code}); none is allowed")
