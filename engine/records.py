"""Frame records: the one result schema, written as JSONL lines or msgpack maps.

Schema version 1 (``DESIGN.md``, "Frame record")::

    {"schema": 1, "job": "run-...", "source": "clip.mp4", "frame": 12, "pts": 0.48,
     "faces": [{"box": [x1, y1, x2, y2], "p_fake": 0.03, "p_attacked": 0.91,
                "verdict": "attacked"}],
     "verdict": "attacked", "weights": "untrained",
     "timings_ms": {"detect": 3.1, "crop": 0.4, "classify": 20.5, "xai": 31.0,
                    "adversarial": 18.2, "total": 73.2},
     "arrived": 1796630400.125}

``p_attacked`` is null for faces that were not checked (those called fake). The frame
verdict is the worst of its faces' (``attacked`` > ``fake`` > ``real``), or
``no_face``. ``timings_ms`` are the batch's stage times divided by its frame count. ``arrived`` is
the wall-clock time (Unix seconds) the frame left its decoder (for a live feed, its
arrival), or null; records written before it existed have no such key.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

import msgpack

SCHEMA_VERSION = 1


class Verdict(StrEnum):
    NO_FACE = "no_face"
    REAL = "real"
    FAKE = "fake"
    ATTACKED = "attacked"

    @property
    def severity(self) -> int:
        return _SEVERITY[self]


_SEVERITY = {Verdict.NO_FACE: 0, Verdict.REAL: 1, Verdict.FAKE: 2, Verdict.ATTACKED: 3}


def worst(verdicts: Iterable[Verdict]) -> Verdict:
    """The frame verdict: the most severe face verdict, ``no_face`` for none."""
    return max(verdicts, key=lambda v: v.severity, default=Verdict.NO_FACE)


@dataclass(frozen=True)
class FaceResult:
    box: tuple[float, float, float, float]
    p_fake: float
    p_attacked: float | None
    verdict: Verdict

    def to_dict(self) -> dict[str, Any]:
        return {
            "box": [round(float(v), 1) for v in self.box],
            "p_fake": _prob(self.p_fake),
            "p_attacked": None if self.p_attacked is None else _prob(self.p_attacked),
            "verdict": self.verdict.value,
        }


@dataclass(frozen=True)
class FrameRecord:
    job: str
    source: str
    frame: int
    pts: float
    faces: tuple[FaceResult, ...]
    weights: str
    timings_ms: Mapping[str, float] = field(default_factory=dict)
    arrived: float | None = None
    """Wall-clock time (Unix seconds) the frame came out of its decoder (a live frame's
    arrival); None when unknown."""

    @property
    def verdict(self) -> Verdict:
        return worst(f.verdict for f in self.faces)

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema": SCHEMA_VERSION,
            "job": self.job,
            "source": self.source,
            "frame": self.frame,
            "pts": round(self.pts, 4),
            "faces": [f.to_dict() for f in self.faces],
            "verdict": self.verdict.value,
            "weights": self.weights,
            "timings_ms": {k: round(v, 2) for k, v in self.timings_ms.items()},
            "arrived": None if self.arrived is None else round(self.arrived, 3),
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), separators=(",", ":"), allow_nan=False)

    def to_msgpack(self) -> bytes:
        return msgpack.packb(self.to_dict(), use_bin_type=True)


class RecordError(ValueError):
    """A serialized record does not follow the schema."""


def validate_record(d: Mapping[str, Any]) -> Mapping[str, Any]:
    """Check a decoded record (JSON or msgpack) against schema 1; return it unchanged."""

    def need(cond: bool, what: str) -> None:
        if not cond:
            raise RecordError(f"frame record: {what}: {dict(d)!r:.200}")

    need(d.get("schema") == SCHEMA_VERSION, f"schema must be {SCHEMA_VERSION}")
    need(isinstance(d.get("job"), str), "job must be a string")
    need(isinstance(d.get("source"), str), "source must be a string")
    need(isinstance(d.get("frame"), int) and d["frame"] >= 0, "frame must be an index >= 0")
    need(isinstance(d.get("pts"), int | float), "pts must be a number")
    need(d.get("weights") in ("trained", "untrained"), "weights must be trained or untrained")
    need(isinstance(d.get("timings_ms"), Mapping), "timings_ms must be a map")
    arrived = d.get("arrived")
    need(arrived is None or isinstance(arrived, int | float), "arrived must be null or a time")
    faces = d.get("faces")
    need(isinstance(faces, list), "faces must be a list")
    verdicts = []
    for face in faces:
        need(isinstance(face, Mapping), "each face must be a map")
        box = face.get("box")
        need(isinstance(box, list) and len(box) == 4, "box must be [x1, y1, x2, y2]")
        need(_is_prob(face.get("p_fake")), "p_fake must be in [0, 1]")
        need(
            face.get("p_attacked") is None or _is_prob(face["p_attacked"]),
            "p_attacked must be null or in [0, 1]",
        )
        need(face.get("verdict") in ("real", "fake", "attacked"), "face verdict is unknown")
        verdicts.append(Verdict(face["verdict"]))
    need(d.get("verdict") == worst(verdicts).value, "frame verdict must be the worst face's")
    return d


def _prob(p: float) -> float:
    p = float(p)
    if math.isnan(p):
        raise ValueError("probability is NaN")
    return round(min(max(p, 0.0), 1.0), 6)


def _is_prob(p: object) -> bool:
    return isinstance(p, int | float) and not isinstance(p, bool) and 0.0 <= p <= 1.0
