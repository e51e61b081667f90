"""Verdict events: start, update and end of a verdict that persists on a stream."""

from __future__ import annotations

import pytest

from engine.errors import ConfigError
from engine.events import EventSettings, EventTracker
from engine.records import FaceResult, FrameRecord, Verdict

FPS = 25


def record(i: int, verdict: str, p: float = 0.9, source: str = "cam") -> FrameRecord:
    faces: tuple[FaceResult, ...] = ()
    if verdict != "no_face":
        p_fake = p if verdict == "fake" else 0.1
        p_att = None if verdict == "fake" else (p if verdict == "attacked" else 0.1)
        faces = (FaceResult((10, 10, 50, 50), p_fake, p_att, Verdict(verdict)),)
    return FrameRecord("job", source, i, i / FPS, faces, "trained", arrived=1000.0 + i / FPS)


def feed(tracker: EventTracker, verdicts: list[str], start: int = 0, p=None) -> list[dict]:
    events = []
    for n, v in enumerate(verdicts):
        i = start + n
        events += tracker.add("cam", record(i, v, p(i) if p else 0.9))
    return events


def test_a_persisting_fake_starts_an_event_and_ends_it_with_span_counts_and_peak() -> None:
    tracker = EventTracker(EventSettings(window_s=1.0, min_frames=5, ratio=0.5, update_s=60))
    verdicts = ["real"] * 50 + ["fake"] * 75 + ["real"] * 50
    events = feed(tracker, verdicts, p=lambda i: 0.6 + 0.3 * (i == 100))
    assert [e["event"] for e in events] == ["start", "end"]
    start, end = events
    assert start["id"] == end["id"] and start["verdict"] == "fake" and start["source"] == "cam"
    assert start["start_pts"] == pytest.approx(50 / FPS)  # the first fake frame, not the 5th
    assert end["start_pts"] == pytest.approx(50 / FPS)
    assert end["end_pts"] == pytest.approx(124 / FPS)  # the last fake frame
    assert end["start_time"] == pytest.approx(1000 + 50 / FPS)
    assert end["counts"]["fake"] == 75
    assert end["peak"]["frame"] == 100 and end["peak"]["p"] == pytest.approx(0.9)


def test_blips_shorter_than_the_threshold_make_no_event() -> None:
    tracker = EventTracker(EventSettings(window_s=1.0, min_frames=5, ratio=0.5))
    verdicts = (["real"] * 20 + ["fake"] * 3) * 10  # 3 fake frames in 23: never persists
    assert feed(tracker, verdicts) == []


def test_a_long_event_sends_updates_and_the_stream_end_ends_it() -> None:
    tracker = EventTracker(EventSettings(window_s=1.0, min_frames=5, ratio=0.5, update_s=2.0))
    events = feed(tracker, ["attacked"] * 250)  # 10 s
    kinds = [e["event"] for e in events]
    assert kinds[0] == "start" and kinds.count("update") == 4 and "end" not in kinds
    (end,) = tracker.end("cam")
    assert end["event"] == "end" and end["counts"]["attacked"] == 250
    assert tracker.end("cam") == []


def test_fake_and_attacked_are_separate_events() -> None:
    tracker = EventTracker(EventSettings(window_s=1.0, min_frames=5, ratio=0.4))
    events = feed(tracker, ["fake", "attacked"] * 50 + ["real"] * 50)
    starts = {e["verdict"] for e in events if e["event"] == "start"}
    ends = {e["verdict"] for e in events if e["event"] == "end"}
    assert starts == ends == {"fake", "attacked"}


@pytest.mark.parametrize(
    "kwargs", [{"window_s": 0}, {"min_frames": 0}, {"ratio": 0}, {"ratio": 1.5}, {"update_s": 0}]
)
def test_settings_refuse_values_that_make_no_sense(kwargs: dict) -> None:
    with pytest.raises(ConfigError, match=r"events\."):
        EventSettings(**kwargs)


def test_a_thumbnail_shows_the_face_crop_beside_its_map() -> None:
    import base64

    import cv2
    import numpy as np
    import torch

    from engine.events import face_thumbnail
    from engine.frames import Frame, FrameBatch
    from engine.pipeline import BatchResult, FaceBatch

    image = np.zeros((64, 64, 3), np.uint8)
    image[8:40, 16:48] = (200, 30, 30)  # the face region: red
    batch = FrameBatch.from_frames([Frame("cam", 0, 0.0, image)])
    maps = torch.zeros(2, 3, 8, 8)
    maps[1] = 1.0  # the second face's map: full attribution
    faces = FaceBatch(
        frame_ids=torch.tensor([0, 0]),
        boxes=torch.tensor([[0, 0, 8, 8, 1.0], [16, 8, 48, 40, 1.0]]),
        crop_boxes=torch.tensor([[0, 0, 8, 8], [16, 8, 48, 40]]),
        p_fake=torch.tensor([0.1, 0.1]),
        p_attacked=torch.tensor([float("nan"), 0.9]),
        maps=maps,
        signed_maps=False,
    )
    result = BatchResult([], faces, {})
    jpeg = base64.b64decode(face_thumbnail(batch, result, 0, 1))
    thumb = cv2.cvtColor(cv2.imdecode(np.frombuffer(jpeg, np.uint8), 1), cv2.COLOR_BGR2RGB)
    assert thumb.shape == (96, 192, 3)
    face, heat = thumb[:, :96].astype(int), thumb[:, 96:].astype(int)
    assert face[..., 0].mean() > 150 and face[..., 1].mean() < 80  # the red crop
    # Full attribution in the JET colour map is dark red, unlike a zero map's dark blue.
    assert heat[..., 0].mean() > heat[..., 2].mean() + 50
