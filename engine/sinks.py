"""Where results go: a JSONL file, an annotated video (and, in ``engine.queue``, Redis).

A sink receives each analysed batch with its frames. :class:`JsonlSink` writes one
line per frame record and flushes it at once, so a crash loses at most the frame in
flight. :class:`AnnotatedVideoSink` draws each face's box and verdict, and the XAI
heat map over the faces that were checked, into a video per source.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import IO, Protocol

import cv2
import numpy as np
import torch

from engine.frames import FrameBatch
from engine.pipeline import BatchResult
from engine.records import Verdict
from engine.video import VideoWriter

log = logging.getLogger(__name__)


class Sink(Protocol):
    def write(self, result: BatchResult, batch: FrameBatch) -> None: ...

    def close(self) -> None: ...


class JsonlSink:
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


def annotate_frame(
    rgb: np.ndarray,
    result: BatchResult,
    batch_index: int,
    fake_threshold: float,
    attacked_threshold: float,
    signed_maps: bool,
) -> np.ndarray:
    """A copy of frame ``batch_index`` with boxes, labels and heat maps drawn."""
    out = rgb.copy()
    faces = result.faces
    for i in (faces.frame_ids == batch_index).nonzero().flatten().tolist():
        verdict = faces.verdict(i, fake_threshold, attacked_threshold)
        x1, y1, x2, y2 = faces.crop_boxes[i].tolist()
        checked = not torch.isnan(faces.p_attacked[i])
        if checked and faces.maps is not None and x2 > x1 and y2 > y1:
            heat = cv2.resize(heat_map(faces.maps[i], signed_maps), (x2 - x1, y2 - y1))
            colour = cv2.cvtColor(cv2.applyColorMap(heat, cv2.COLORMAP_JET), cv2.COLOR_BGR2RGB)
            region = out[y1:y2, x1:x2]
            region[:] = (region * (1 - HEAT_ALPHA) + colour * HEAT_ALPHA).astype(np.uint8)
        bx1, by1, bx2, by2 = (round(v) for v in faces.boxes[i, :4].tolist())
        c = COLOURS[verdict]
        cv2.rectangle(out, (bx1, by1), (bx2, by2), c, 2)
        label = f"{verdict.value} fake={faces.p_fake[i]:.2f}"
        if checked:
            label += f" att={faces.p_attacked[i]:.2f}"
        cv2.putText(
            out, label, (bx1, max(12, by1 - 6)), cv2.FONT_HERSHEY_SIMPLEX, 0.45, c, 1, cv2.LINE_AA
        )
    return out


class AnnotatedVideoSink:
    """Annotated video per source: ``OUT.mp4`` for one source, ``OUT-<n>.mp4`` for several."""

    def __init__(
        self,
        path: str | Path,
        sources: list[str],
        fps: dict[str, float],
        fake_threshold: float,
        attacked_threshold: float,
        signed_maps: bool,
    ) -> None:
        self.path = Path(path)
        self.sources = sources
        self.fps = fps
        self.thresholds = (fake_threshold, attacked_threshold)
        self.signed_maps = signed_maps
        self._writers: dict[str, VideoWriter] = {}

    def path_for(self, source: str) -> Path:
        if len(self.sources) == 1:
            return self.path
        n = self.sources.index(source)
        return self.path.with_name(f"{self.path.stem}-{n}{self.path.suffix}")

    def write(self, result: BatchResult, batch: FrameBatch) -> None:
        for k, source in enumerate(batch.sources):
            writer = self._writers.get(source)
            if writer is None:
                writer = VideoWriter(self.path_for(source), self.fps.get(source) or 25.0)
                self._writers[source] = writer
            writer.write(
                annotate_frame(batch.frame(k), result, k, *self.thresholds, self.signed_maps)
            )

    def close(self) -> None:
        for writer in self._writers.values():
            writer.close()
