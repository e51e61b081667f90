"""Stage ``detect``: the faces of every frame of a batch.

Two kinds of face detector run here. A **per-frame** CPU detector (Haar) runs *ahead*,
in each stream's reader thread (:meth:`FaceDetection.ahead`, wrapped around every
stream by the frame path), so detection overlaps the model stages of the batches
before; the batch then carries the boxes and :meth:`FaceDetection.boxes` costs nothing
for those frames. A **batched** detector (RetinaFace) runs once per batch on the device,
in the analysis.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Callable, Iterable, Iterator

import torch
from torch import Tensor

from engine.faces import FaceDetector
from engine.frames import Frame, FrameBatch


class FaceDetection:
    """``detector``, and ``factory`` to make more like it: each reader thread then
    detects with its own (detectors such as OpenCV's cascades cannot be shared by
    threads); without a factory the threads take turns on ``detector``."""

    def __init__(
        self, detector: FaceDetector, factory: Callable[[], FaceDetector] | None = None
    ) -> None:
        self.detector = detector
        self._factory = factory
        self._lock = threading.Lock()  # one detection at a time on `detector`
        self._ahead_lock = threading.Lock()  # guards ahead_ms
        self._per_thread = threading.local()
        self.ahead_ms = 0.0
        """Time :meth:`ahead` spent detecting, in ms (reader threads; a counter)."""

    @property
    def batched(self) -> bool:
        """Whether the detector runs once per batch (on the device) or per frame (CPU)."""
        return bool(getattr(getattr(self.detector, "cfg", None), "batched", False))

    def ahead(self, frames: Iterable[Frame]) -> Iterator[Frame]:
        """``frames``, each with the boxes of a per-frame detector (in the calling reader
        thread); a batched detector is left to :meth:`boxes`: frames pass unchanged."""
        for frame in frames:
            if not self.batched:
                image = frame.image
                if not isinstance(image, Tensor):
                    image = torch.from_numpy(image)
                sizes = torch.tensor([[frame.height, frame.width]])
                start = time.perf_counter()
                own = self._own_detector()
                if own is None:
                    with self._lock:
                        (boxes,) = self.detector.detect(image[None], sizes)
                else:
                    (boxes,) = own.detect(image[None], sizes)
                with self._ahead_lock:
                    self.ahead_ms += (time.perf_counter() - start) * 1000
                frame = dataclasses.replace(frame, boxes=boxes)
            yield frame

    def boxes(self, batch: FrameBatch, images: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """All faces of the batch: ``(frame_ids (M,), boxes (M, 5))`` on the CPU.

        A batched detector gets ``images`` (the batch already on the device) when given;
        a per-frame detector reads the host copy, except for frames whose boxes were
        found ahead.
        """
        if self.batched:
            per_frame = self.detector.detect(
                batch.images if images is None else images, batch.sizes
            )
        else:
            per_frame = self._per_frame(batch)
        frame_ids = torch.cat([torch.full((len(b),), i) for i, b in enumerate(per_frame)])
        boxes = torch.cat(per_frame) if per_frame else torch.zeros(0, 5)
        return frame_ids.long(), boxes.reshape(-1, 5)

    def _own_detector(self) -> FaceDetector | None:
        """This thread's own detector (made once per thread), None without a factory."""
        if self._factory is None:
            return None
        detector = getattr(self._per_thread, "detector", None)
        if detector is None:
            detector = self._per_thread.detector = self._factory()
        return detector

    def _per_frame(self, batch: FrameBatch) -> list[Tensor]:
        found = list(batch.boxes) if batch.boxes else [None] * len(batch)
        missing = [i for i, boxes in enumerate(found) if boxes is None]
        if missing:
            idx = torch.tensor(missing)
            with self._lock:
                fresh = self.detector.detect(batch.images[idx], batch.sizes[idx])
            for i, boxes in zip(missing, fresh, strict=True):
                found[i] = boxes
        return found  # type: ignore[return-value]
