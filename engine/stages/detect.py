"""Stage ``detect``: the faces of every frame of a batch.

Two kinds of face detector run here. A **per-frame** CPU detector (Haar) runs *ahead*,
in each stream's reader thread (:meth:`FaceDetection.ahead`, wrapped around every
stream by the frame path), so detection overlaps the model stages of the batches
before; the batch then carries the boxes and :meth:`FaceDetection.boxes` costs nothing
for those frames. A **batched** detector (RetinaFace) runs once per batch on the device,
in the analysis.

With ``faces.detect_every = N > 1`` either kind detects every Nth frame of each stream
only; a :class:`~engine.faces.tracker.BoxTracker` per stream carries the boxes to the
frames between (one per reader thread ahead; one per stream key in a batch, dropped by
:meth:`FaceDetection.forget` when the stream ends).
"""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Callable, Iterable, Iterator

import torch
from torch import Tensor

from engine.faces import FaceDetector
from engine.faces.tracker import BoxTracker
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
        settings = getattr(detector, "settings", None)
        self.every = int(getattr(settings, "detect_every", 1))
        """``faces.detect_every``: detect every Nth frame of a stream, track between."""
        self._trackers: dict[str, BoxTracker] = {}
        """Batched detection with ``every > 1``: the tracker of each stream key."""

    @property
    def batched(self) -> bool:
        """Whether the detector runs once per batch (on the device) or per frame (CPU)."""
        return bool(getattr(getattr(self.detector, "cfg", None), "batched", False))

    def ahead(self, frames: Iterable[Frame]) -> Iterator[Frame]:
        """``frames``, each with the boxes of a per-frame detector (in the calling reader
        thread); a batched detector is left to :meth:`boxes`: frames pass unchanged."""
        tracker = BoxTracker(self.every) if self.every > 1 else None
        for frame in frames:
            if not self.batched:
                since = tracker.next_frame() if tracker is not None else 0
                if since:
                    boxes = tracker.predict(since, frame.height, frame.width)  # type: ignore[union-attr]
                else:
                    boxes = self._detect_one(frame)
                    if tracker is not None:
                        tracker.detected(boxes)
                frame = dataclasses.replace(frame, boxes=boxes)
            yield frame

    def _detect_one(self, frame: Frame) -> Tensor:
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
        return boxes

    def warm(self) -> int:
        """Build a batched detector for the frame sizes of ``faces.warm_frame_sizes``
        (:meth:`engine.faces.FaceDetector.warm`); how many input sizes it built. Per-frame
        detectors build nothing per size."""
        if not self.batched:
            return 0
        settings = getattr(self.detector, "settings", None)
        with self._lock:
            return self.detector.warm(getattr(settings, "warm_sizes", []))

    def forget(self, stream: str) -> None:
        """Drop the tracker of stream ``stream`` (it ended)."""
        self._trackers.pop(stream, None)

    def boxes(self, batch: FrameBatch, images: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """All faces of the batch: ``(frame_ids (M,), boxes (M, 5))`` on the CPU.

        A batched detector gets ``images`` (the batch already on the device) when given;
        a per-frame detector reads the host copy, except for frames whose boxes were
        found ahead.
        """
        if self.batched and self.every > 1:
            per_frame = self._tracked(batch, batch.images if images is None else images)
        elif self.batched:
            per_frame = self.detector.detect(
                batch.images if images is None else images, batch.sizes
            )
        else:
            per_frame = self._per_frame(batch)
        frame_ids = torch.cat([torch.full((len(b),), i) for i, b in enumerate(per_frame)])
        boxes = torch.cat(per_frame) if per_frame else torch.zeros(0, 5)
        return frame_ids.long(), boxes.reshape(-1, 5)

    def _tracked(self, batch: FrameBatch, images: Tensor) -> list[Tensor]:
        """Batched detection on the frames due for it; the others from their stream's
        tracker, in order (a stream's frames are in order within a batch)."""
        trackers = [self._trackers.setdefault(k, BoxTracker(self.every)) for k in batch.streams]
        since = [t.next_frame() for t in trackers]
        due = [i for i, n in enumerate(since) if n == 0]
        found: dict[int, Tensor] = {}
        if due:
            idx = torch.tensor(due)
            rows = images[idx.to(images.device)] if len(due) < len(batch) else images
            detected = self.detector.detect(rows, batch.sizes[idx])
            found = dict(zip(due, detected, strict=True))
        out = []
        for i, (tracker, n) in enumerate(zip(trackers, since, strict=True)):
            h, w = batch.sizes[i].tolist()
            out.append(tracker.detected(found[i]) if n == 0 else tracker.predict(n, h, w))
        return out

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
