"""Where results go: a JSONL file, an annotated video (and, in ``engine.queue``, Redis).

A :class:`Sink` is the last stage of the frame path (:mod:`engine.framepath`): it hears
of each stream when it starts and when it ends, and receives every analysed batch with
its frames. A sink declares what it needs from the analysis (:attr:`Sink.keeps_maps`),
so neither the caller nor the pipeline has to know which sinks are attached.

:class:`JsonlSink` writes one line per frame record and flushes it at once, so a crash
loses at most the frame in flight. :class:`AnnotatedVideoSink` draws each face's box and
verdict, and the XAI heat map over the faces that were checked, into a video per stream.
``engine.queue.results_sink.RedisResultsSink`` writes each job's records to Redis.
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import IO, TYPE_CHECKING

import cv2
import numpy as np
import torch

from engine.frames import FrameBatch
from engine.pipeline import BatchResult
from engine.records import Verdict

if TYPE_CHECKING:
    from engine.batching import SourceEnded
    from engine.framepath import Stream
    from engine.video import VideoWriter  # PyAV: imported when a video is written

log = logging.getLogger(__name__)


class Sink:
    """Where analysed batches go. Subclasses override what they use; all are no-ops here."""

    keeps_maps: bool = False
    """True when :meth:`write` draws or stores the XAI maps (the pipeline keeps them)."""

    def stream_started(self, stream: Stream) -> None:
        """``stream`` joined the frame path (before any of its frames is written)."""

    def write(self, result: BatchResult, batch: FrameBatch) -> None:
        """One analysed batch: ``result.records[k]`` is frame ``k`` of ``batch``."""

    def stream_ended(self, ended: SourceEnded) -> None:
        """A stream delivered its last frame (``ended.error`` says why, if it failed)."""

    def close(self) -> None:
        """The frame path is closing: flush and release what the sink holds."""


class JsonlSink(Sink):
    """One JSON frame record per line, flushed per record; ``"-"`` is standard output."""

    def __init__(self, path: str | Path, append: bool = False) -> None:
        self._owned = str(path) != "-"
        if self._owned:
            self.path = Path(path)
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._file: IO[str] = self.path.open("a" if append else "w", encoding="utf-8")
        else:
            self._file = sys.stdout

    def write(self, result: BatchResult, batch: FrameBatch) -> None:
        for record in result.records:
            self._file.write(record.to_json() + "\n")
            self._file.flush()

    def write_line(self, line: dict) -> None:
        """Another kind of line (a verdict event) in the same file, flushed at once."""
        self._file.write(json.dumps(line, separators=(",", ":"), allow_nan=False) + "\n")
        self._file.flush()

    def close(self) -> None:
        if self._owned:
            self._file.close()


# Colours (RGB) per verdict, for boxes and labels.
COLOURS = {
    Verdict.REAL: (40, 200, 40),
    Verdict.FAKE: (230, 30, 30),
    Verdict.ATTACKED: (255, 150, 0),
}
HEAT_ALPHA = 0.45


def heat_map(prepared_map: torch.Tensor, signed: bool) -> np.ndarray:
    """A (S, S) uint8 intensity from a prepared (3, S, S) XAI map in [0, 1]."""
    m = prepared_map.float()
    strength = (m - 0.5).abs().amax(dim=0) * 2 if signed else m.amax(dim=0)
    return (strength.clamp(0, 1) * 255).round().to(torch.uint8).numpy()


def annotate_frame(rgb: np.ndarray, result: BatchResult, batch_index: int) -> np.ndarray:
    """A copy of frame ``batch_index`` with boxes, verdicts and heat maps drawn.

    The verdicts are the records' (the pipeline's thresholds); the faces of a frame are
    in the same order in ``result.faces`` and in its record."""
    out = rgb.copy()
    faces = result.faces
    rows = (faces.frame_ids == batch_index).nonzero().flatten().tolist()
    for i, face in zip(rows, result.records[batch_index].faces, strict=True):
        x1, y1, x2, y2 = faces.crop_boxes[i].tolist()
        checked = face.p_attacked is not None
        if checked and faces.maps is not None and x2 > x1 and y2 > y1:
            heat = cv2.resize(heat_map(faces.maps[i], faces.signed_maps), (x2 - x1, y2 - y1))
            colour = cv2.cvtColor(cv2.applyColorMap(heat, cv2.COLORMAP_JET), cv2.COLOR_BGR2RGB)
            region = out[y1:y2, x1:x2]
            region[:] = (region * (1 - HEAT_ALPHA) + colour * HEAT_ALPHA).astype(np.uint8)
        bx1, by1, bx2, by2 = (round(v) for v in faces.boxes[i, :4].tolist())
        c = COLOURS[face.verdict]
        cv2.rectangle(out, (bx1, by1), (bx2, by2), c, 2)
        label = f"{face.verdict.value} fake={face.p_fake:.2f}"
        if checked:
            label += f" att={face.p_attacked:.2f}"
        cv2.putText(
            out, label, (bx1, max(12, by1 - 6)), cv2.FONT_HERSHEY_SIMPLEX, 0.45, c, 1, cv2.LINE_AA
        )
    return out


class AnnotatedVideoSink(Sink):
    """Annotated video per stream: ``OUT.mp4`` for one stream, ``OUT-<n>.mp4`` for several
    (``n`` in the order the streams started; how many there are is read when the first
    video opens, so start every stream before the first batch, as ``veritas run`` does)."""

    keeps_maps = True

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._streams: dict[str, tuple[int, float]] = {}
        """stream key -> (start order, analysed frame rate)."""
        self._several: bool | None = None
        self._writers: dict[str, VideoWriter] = {}

    def stream_started(self, stream: Stream) -> None:
        self._streams.setdefault(stream.key, (len(self._streams), stream.fps or 25.0))

    def path_for(self, stream: str) -> Path:
        if self._several is None:
            self._several = len(self._streams) > 1
        if not self._several:
            return self.path
        n = self._streams[stream][0]
        return self.path.with_name(f"{self.path.stem}-{n}{self.path.suffix}")

    def write(self, result: BatchResult, batch: FrameBatch) -> None:
        for k, stream in enumerate(batch.streams):
            writer = self._writers.get(stream)
            if writer is None:
                from engine.video import VideoWriter

                self.stream_started_if_unknown(stream)
                writer = VideoWriter(self.path_for(stream), self._streams[stream][1])
                self._writers[stream] = writer
            writer.write(annotate_frame(batch.frame(k), result, k))

    def stream_ended(self, ended: SourceEnded) -> None:
        writer = self._writers.pop(ended.source, None)
        if writer is not None:
            writer.close()  # the stream's video is whole as soon as the stream ends

    def stream_started_if_unknown(self, stream: str) -> None:
        if stream not in self._streams:  # a batch made outside the frame path
            self._streams[stream] = (len(self._streams), 25.0)

    def close(self) -> None:
        for writer in self._writers.values():
            writer.close()
