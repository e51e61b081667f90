"""Stage ``detect``: per-frame detectors run ahead in the reader threads, each thread with
its own detector; batched ones run once per batch; boxes found ahead are not redone."""

from __future__ import annotations

import threading
from types import SimpleNamespace

import numpy as np
import torch

from engine.frames import Frame, FrameBatch
from engine.stages.detect import FaceDetection


class Stub:
    """A face detector that finds one face per image and says who called it."""

    def __init__(self, batched: bool = False) -> None:
        self.cfg = SimpleNamespace(batched=batched)
        self.calls: list[tuple[int, int]] = []  # (thread, images)

    def detect(self, images: torch.Tensor, sizes: torch.Tensor) -> list[torch.Tensor]:
        self.calls.append((threading.get_ident(), len(images)))
        return [torch.tensor([[0.0, 0.0, 4.0, 4.0, 0.9]]) for _ in range(len(images))]


def frames(n: int) -> list[Frame]:
    return [Frame("s", i, i / 25, np.zeros((8, 8, 3), np.uint8)) for i in range(n)]


def test_each_reader_thread_detects_ahead_with_its_own_detector():
    main, made = Stub(), []

    def factory() -> Stub:
        made.append(Stub())
        return made[-1]

    stage = FaceDetection(main, factory)
    out: dict[int, list[Frame]] = {}

    def read(k: int) -> None:
        out[k] = list(stage.ahead(frames(3)))

    threads = [threading.Thread(target=read, args=(k,)) for k in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(made) == 2 and not main.calls
    assert {made[0].calls[0][0], made[1].calls[0][0]} == {t.ident for t in threads}
    assert all(f.boxes is not None for fs in out.values() for f in fs)
    assert stage.ahead_ms > 0

    batch = FrameBatch.from_frames(out[0])
    frame_ids, boxes = stage.boxes(batch)
    assert not main.calls  # found ahead: not detected again
    assert frame_ids.tolist() == [0, 1, 2] and boxes.shape == (3, 5)


def test_frames_not_detected_ahead_are_detected_in_the_batch():
    main = Stub()
    stage = FaceDetection(main)
    ahead = list(stage.ahead(frames(1)))  # no factory: the shared detector, in turn
    batch = FrameBatch.from_frames([*ahead, *frames(2)])
    frame_ids, _ = stage.boxes(batch)
    assert [n for _, n in main.calls] == [1, 2]  # one ahead, then the two missing at once
    assert frame_ids.tolist() == [0, 1, 2]


def test_a_batched_detector_runs_once_per_batch_not_ahead():
    main = Stub(batched=True)
    stage = FaceDetection(main)
    passed = list(stage.ahead(frames(3)))
    assert all(f.boxes is None for f in passed) and not main.calls and stage.batched
    stage.boxes(FrameBatch.from_frames(passed))
    assert [n for _, n in main.calls] == [3]
