"""Frame records (schema 1) and the run summary (verdict order, majority vote per video)."""

from __future__ import annotations

import json

import msgpack
import pytest

from engine.records import (
    SCHEMA_VERSION,
    FaceResult,
    FrameRecord,
    RecordError,
    Verdict,
    validate_record,
    worst,
)
from engine.summary import RunSummary


def face(verdict: str, p_fake: float = 0.1, p_attacked: float | None = 0.2) -> FaceResult:
    return FaceResult((1.0, 2.0, 30.0, 40.0), p_fake, p_attacked, Verdict(verdict))


def record(source: str, frame: int, *verdicts: str) -> FrameRecord:
    return FrameRecord(
        "job-1",
        source,
        frame,
        frame / 25,
        tuple(face(v) for v in verdicts),
        "untrained",
        {"detect": 1.234},
    )


def test_worst_face_wins_in_documented_order():
    assert worst([]) is Verdict.NO_FACE
    assert worst([Verdict.REAL, Verdict.FAKE]) is Verdict.FAKE
    assert worst([Verdict.FAKE, Verdict.ATTACKED, Verdict.REAL]) is Verdict.ATTACKED
    assert worst([Verdict.REAL]) is Verdict.REAL


def test_record_has_every_schema_field_and_validates():
    d = record("a.mp4", 3, "real", "fake").to_dict()
    assert set(d) == {
        "schema",
        "job",
        "source",
        "frame",
        "pts",
        "faces",
        "verdict",
        "weights",
        "timings_ms",
        "arrived",
    }
    assert d["schema"] == SCHEMA_VERSION and d["verdict"] == "fake"
    assert d["arrived"] is None  # unknown: made without a decoder
    assert set(d["faces"][0]) == {"box", "p_fake", "p_attacked", "verdict"}
    assert validate_record(json.loads(record("a.mp4", 3, "real").to_json()))
    assert validate_record(msgpack.unpackb(record("a", 0).to_msgpack()))["verdict"] == "no_face"


def test_unchecked_face_has_null_p_attacked():
    r = FrameRecord("j", "s", 0, 0.0, (face("fake", 0.9, None),), "trained")
    d = json.loads(r.to_json())
    assert d["faces"][0]["p_attacked"] is None
    validate_record(d)


@pytest.mark.parametrize(
    "change,message",
    [
        ({"schema": 2}, "schema"),
        ({"verdict": "real"}, "worst face"),
        ({"weights": "maybe"}, "weights"),
        ({"frame": -1}, "frame"),
    ],
)
def test_validation_rejects_broken_records(change, message):
    d = {**record("a", 1, "fake").to_dict(), **change}
    with pytest.raises(RecordError, match=message):
        validate_record(d)


def test_probabilities_are_clamped_and_nan_refused():
    assert FaceResult((0, 0, 1, 1), 1.0000001, None, Verdict.FAKE).to_dict()["p_fake"] == 1.0
    with pytest.raises(ValueError, match="NaN"):
        FaceResult((0, 0, 1, 1), float("nan"), None, Verdict.FAKE).to_dict()


def test_summary_counts_and_majority_per_video():
    s = RunSummary()
    for i, v in enumerate(["fake", "fake", "real", None, None, None]):
        s.add(record("a.mp4", i, *([v] if v else [])))
    for i, v in enumerate(["real", "attacked"]):  # tie: the more severe verdict wins
        s.add(record("b.mp4", i, v))
    s.add(record("c.mp4", 0))
    s.fail("d.mp4", "broken")
    s.finish()
    d = s.to_dict()
    assert d["frames"] == 9 and d["faces"] == 5
    assert d["verdicts"] == {"no_face": 4, "real": 2, "fake": 2, "attacked": 1}
    assert d["sources"]["a.mp4"]["verdict"] == "fake"  # no-face frames do not vote
    assert d["sources"]["b.mp4"]["verdict"] == "attacked"
    assert d["sources"]["c.mp4"]["verdict"] == "no_face"
    assert s.failed == ["d.mp4"]
    text = s.format()
    assert "FAILED: broken" in text and "frames 9" in text
