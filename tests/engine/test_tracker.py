"""``faces.detect_every``: detection on every Nth frame of each stream, boxes carried
between by the IoU tracker (``engine.faces.tracker``), ahead and batched."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from engine.errors import ConfigError
from engine.faces import FaceDetector
from engine.faces.base import FaceDetectorCfg
from engine.faces.settings import DetectionSettings
from engine.faces.tracker import BoxTracker, box_iou, greedy_match
from engine.frames import Frame, FrameBatch
from engine.stages.detect import FaceDetection
from tests.conftest import tiny_config

H, W = 120, 160


def moving_box(t: int, x0: float = 10.0, speed: float = 2.0) -> list[float]:
    """A face moving right at ``speed`` px per frame."""
    return [x0 + speed * t, 20.0, x0 + speed * t + 40.0, 60.0, 0.9]


class FrameNumberDetector(FaceDetector):
    """A detector that reads the frame number written in pixel (0, 0) and returns the
    moving face of that frame; it records which frame numbers it was asked about."""

    def __init__(self, settings: DetectionSettings, batched: bool) -> None:
        super().__init__(settings)
        self.cfg = FaceDetectorCfg("frame-number", batched=batched)
        self.asked: list[int] = []

    def detect(self, frames: torch.Tensor, sizes: torch.Tensor) -> list[torch.Tensor]:
        out = []
        for image in frames:
            t = int(image[0, 0, 0])
            self.asked.append(t)
            out.append(torch.tensor([moving_box(t)]))
        return out


def frame(t: int, source: str = "s") -> Frame:
    image = np.zeros((H, W, 3), np.uint8)
    image[0, 0, 0] = t
    return Frame(source, t, t / 25, image)


def test_between_detections_a_face_moves_on_at_its_measured_speed() -> None:
    tracker = BoxTracker(3)
    boxes = []
    for t in range(8):
        since = tracker.next_frame()
        if since == 0:
            boxes.append(tracker.detected(torch.tensor([moving_box(t)])))
        else:
            boxes.append(tracker.predict(since, H, W))
    # Frames 1, 2: no speed known yet (first detection): the box stays.
    assert torch.equal(boxes[1], boxes[0]) and torch.equal(boxes[2], boxes[0])
    # After the second detection (frame 3) the speed is known: frames 4, 5 are exact.
    for t in (4, 5, 7):
        assert torch.allclose(boxes[t], torch.tensor([moving_box(t)])), t


def test_a_face_the_detector_loses_is_dropped_and_a_new_one_starts_at_rest() -> None:
    tracker = BoxTracker(2)
    tracker.next_frame()
    tracker.detected(torch.tensor([moving_box(0)]))
    tracker.next_frame()
    tracker.next_frame()
    far = [120.0, 70.0, 150.0, 110.0, 0.8]
    tracker.detected(torch.tensor([far]))  # the first face is gone, another appeared
    since = tracker.next_frame()
    assert torch.equal(tracker.predict(since, H, W), torch.tensor([far]))


def test_carried_boxes_stay_in_the_frame_and_vanish_once_outside() -> None:
    tracker = BoxTracker(10)
    tracker.next_frame()
    tracker.detected(torch.tensor([[100.0, 20.0, 140.0, 60.0, 0.9]]))
    for _ in range(9):
        tracker.next_frame()
    tracker.detected(torch.tensor([[118.0, 20.0, 158.0, 60.0, 0.9]]))  # 1.8 px/frame right
    assert tracker.predict(5, H, W)[0, 2] == W  # clamped at the right edge
    assert len(tracker.predict(100, H, W)) == 0  # wholly outside: no box


def test_iou_and_matching_pair_the_closest_boxes_first() -> None:
    a = torch.tensor([[0.0, 0, 10, 10], [20, 20, 30, 30]])
    b = torch.tensor([[21.0, 21, 31, 31], [1, 1, 11, 11], [100, 100, 110, 110]])
    iou = box_iou(a, b)
    assert iou.shape == (2, 3) and iou[0, 2] == 0
    assert sorted(greedy_match(iou)) == [(0, 1), (1, 0)]


@pytest.mark.parametrize("every", [1, 3])
def test_ahead_detects_every_nth_frame_and_carries_boxes_between(every: int) -> None:
    detector = FrameNumberDetector(DetectionSettings(detect_every=every), batched=False)
    stage = FaceDetection(detector)
    frames = list(stage.ahead(frame(t) for t in range(8)))
    assert detector.asked == list(range(0, 8, every))
    for t in (0, 3, 6):  # detection frames: the detector's boxes
        assert torch.equal(frames[t].boxes, torch.tensor([moving_box(t)]))
    if every == 1:
        assert all(torch.equal(f.boxes, torch.tensor([moving_box(f.index)])) for f in frames)
    else:
        assert torch.allclose(frames[7].boxes, torch.tensor([moving_box(7)]))  # speed known


def test_batched_detection_asks_only_for_due_frames_per_stream_across_batches() -> None:
    detector = FrameNumberDetector(DetectionSettings(detect_every=2), batched=True)
    stage = FaceDetection(detector)
    a = [frame(t, "a") for t in range(6)]
    b = [frame(t + 50, "b") for t in range(6)]  # another stream, its own numbers
    interleaved = [f for pair in zip(a, b, strict=True) for f in pair]
    got: list[torch.Tensor] = []
    for start in (0, 4, 8):  # three batches of four frames
        batch = FrameBatch.from_frames(interleaved[start : start + 4])
        frame_ids, boxes = stage.boxes(batch)
        got += [boxes[frame_ids == i] for i in range(len(batch))]
    assert detector.asked == [0, 50, 2, 52, 4, 54]
    by_stream = {"a": got[0::2], "b": got[1::2]}
    assert torch.allclose(by_stream["a"][5], torch.tensor([moving_box(5)]))
    assert torch.allclose(by_stream["b"][3], torch.tensor([moving_box(53)]))
    # A stream that ended and comes back under its key starts over: detected first.
    stage.boxes(FrameBatch.from_frames([frame(20, "a")]))  # its 7th frame: due
    stage.forget("a")
    stage.boxes(FrameBatch.from_frames([frame(21, "a")]))  # its 8th: not due, but new
    assert detector.asked[-2:] == [20, 21]


def test_detect_every_is_validated_and_reaches_the_detectors() -> None:
    for bad in (0, 2.5, True, 1001):
        with pytest.raises(ConfigError, match=r"faces\.detect_every"):
            DetectionSettings(detect_every=bad)  # type: ignore[arg-type]
    from engine.pipeline import Pipeline

    pipeline = Pipeline.from_config(tiny_config("faces.detect_every=4"))
    assert pipeline.faces.every == 4


def test_veritas_run_with_detect_every_keeps_a_face_on_every_frame(face_clip, tmp_path) -> None:
    import json

    from engine.runner import run_local

    out = tmp_path / "records.jsonl"
    summary = run_local([str(face_clip)], tiny_config("faces.detect_every=3"), out=out)
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert summary.frames == len(records) == 12
    assert all(r["faces"] for r in records), [len(r["faces"]) for r in records]
