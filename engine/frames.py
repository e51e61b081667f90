"""Frames and frame batches: what sources produce and the pipeline consumes.

A :class:`Frame` is one decoded picture (uint8 RGB, HWC) with its source, its index in
that source's stream and its presentation time. ``source`` is the name shown to people
(records, logs; never a secret); the stream key that the frame path keys its streams by
(unique per stream being read, opaque: a worker's key names the job's attempt) is apart,
on the batch: :attr:`FrameBatch.streams`. A :class:`FrameBatch` stacks frames
(possibly from several sources and of several sizes) into one uint8 NHWC tensor,
zero-padded at the bottom/right to the largest frame, with each frame's true size.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch


@dataclass(frozen=True)
class Frame:
    source: str
    index: int
    """Index of the frame in its source's decoded stream (before sampling)."""
    pts: float
    """Presentation time in seconds from the start of the source."""
    image: np.ndarray = field(repr=False)
    """uint8 RGB, shape (height, width, 3); a uint8 torch tensor of that shape when a
    decoder leaves frames on a GPU (DALI, ``engine.sources.dali``)."""
    boxes: torch.Tensor | None = field(default=None, repr=False)
    """Face boxes ``(k, 5)`` when a detector already ran on this frame (in the reader
    thread: ``Pipeline.detect_ahead``); None when not detected yet."""
    arrived: float | None = None
    """Wall-clock time (``time.time()``) the frame came out of its decoder: for a live
    feed, when it arrived. Real-time mode drops by its age; records carry it."""
    ready: Any = field(default=None, repr=False, compare=False)
    """A ``torch.cuda.Event`` that completes when a device ``image`` is written (its
    upload on a side stream, :mod:`engine.upload`); None: ready now."""

    @property
    def height(self) -> int:
        return int(self.image.shape[0])

    @property
    def width(self) -> int:
        return int(self.image.shape[1])


@dataclass
class FrameBatch:
    images: torch.Tensor
    """uint8 (N, H, W, 3), zero-padded to the largest frame of the batch."""
    sizes: torch.Tensor
    """int64 (N, 2): each frame's true (height, width)."""
    sources: list[str]
    """Per frame: its source's displayed name (``Frame.source``)."""
    indices: list[int]
    pts: list[float]
    boxes: list[torch.Tensor | None] = field(default_factory=list)
    """Per frame: the boxes found ahead (``Frame.boxes``), or None."""
    streams: list[str] = field(default_factory=list)
    """Per frame: the key of the stream it came from (the muxer's source key); the
    displayed names when the batch was made without keys."""
    arrived: list[float | None] = field(default_factory=list)
    """Per frame: ``Frame.arrived`` (empty when the batch was made without)."""

    def __len__(self) -> int:
        return len(self.sources)

    def __post_init__(self) -> None:
        if not self.streams:
            self.streams = list(self.sources)
        if len(self.streams) != len(self.sources):
            raise ValueError(f"{len(self.streams)} stream keys for {len(self.sources)} frames")

    @classmethod
    def from_frames(
        cls, frames: list[Frame], pin_memory: bool = False, streams: list[str] | None = None
    ) -> FrameBatch:
        """Stack ``frames``; ``streams`` gives each frame's stream key (default: its source)."""
        if not frames:
            raise ValueError("a FrameBatch needs at least one frame")
        h = max(f.height for f in frames)
        w = max(f.width for f in frames)
        # Frames already on a GPU (decoded there, or uploaded ahead by their reader
        # thread) are batched there: device-to-device copies on the current stream, after
        # each frame's own upload (no host wait).
        first = frames[0].image
        device = first.device if isinstance(first, torch.Tensor) else torch.device("cpu")
        pin = pin_memory and device.type == "cpu"
        images = torch.empty(len(frames), h, w, 3, dtype=torch.uint8, device=device, pin_memory=pin)
        stream = torch.cuda.current_stream(device) if device.type == "cuda" else None
        for i, f in enumerate(frames):
            image = f.image
            if not isinstance(image, torch.Tensor):
                image = torch.from_numpy(np.ascontiguousarray(image))
            elif stream is not None:
                if f.ready is not None:
                    stream.wait_event(f.ready)
                image.record_stream(stream)  # its memory is not reused before this copy
            images[i, : f.height, : f.width] = image
            # Zero padding only where this frame does not reach (none when sizes agree).
            images[i, f.height :] = 0
            images[i, : f.height, f.width :] = 0
        sizes = torch.tensor([[f.height, f.width] for f in frames], dtype=torch.long)
        return cls(
            images=images,
            sizes=sizes,
            sources=[f.source for f in frames],
            indices=[f.index for f in frames],
            pts=[f.pts for f in frames],
            boxes=[f.boxes for f in frames],
            streams=list(streams) if streams is not None else [f.source for f in frames],
            arrived=[f.arrived for f in frames],
        )

    def rows_of(self, stream: str) -> list[int]:
        """Indices in this batch of the frames of stream ``stream``."""
        return [i for i, s in enumerate(self.streams) if s == stream]

    def subset(self, rows: list[int]) -> FrameBatch:
        """The frames ``rows`` of this batch as a batch of their own (same device)."""
        h = int(self.sizes[rows, 0].max())
        w = int(self.sizes[rows, 1].max())
        return FrameBatch(
            images=self.images[rows, :h, :w].contiguous(),
            sizes=self.sizes[rows].clone(),
            sources=[self.sources[i] for i in rows],
            indices=[self.indices[i] for i in rows],
            pts=[self.pts[i] for i in rows],
            boxes=[self.boxes[i] for i in rows] if self.boxes else [],
            streams=[self.streams[i] for i in rows],
            arrived=[self.arrived[i] for i in rows] if self.arrived else [],
        )

    def frame(self, i: int) -> np.ndarray:
        """The i-th frame, unpadded, as a uint8 HWC numpy array (on the CPU)."""
        h, w = self.sizes[i].tolist()
        return self.images[i, :h, :w].cpu().numpy()


def batched(frames: Iterable[Frame], batch_size: int) -> Iterator[FrameBatch]:
    """Group consecutive frames into batches of at most ``batch_size``."""
    pending: list[Frame] = []
    for frame in frames:
        pending.append(frame)
        if len(pending) == batch_size:
            yield FrameBatch.from_frames(pending)
            pending = []
    if pending:
        yield FrameBatch.from_frames(pending)
