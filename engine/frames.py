"""Frames and frame batches: what sources produce and the pipeline consumes.

A :class:`Frame` is one decoded picture (uint8 RGB, HWC) with its source, its index in
that source's stream and its presentation time. A :class:`FrameBatch` stacks frames
(possibly from several sources and of several sizes) into one uint8 NHWC tensor,
zero-padded at the bottom/right to the largest frame, with each frame's true size.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

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
    indices: list[int]
    pts: list[float]
    boxes: list[torch.Tensor | None] = field(default_factory=list)
    """Per frame: the boxes found ahead (``Frame.boxes``), or None."""

    def __len__(self) -> int:
        return len(self.sources)

    @classmethod
    def from_frames(cls, frames: list[Frame], pin_memory: bool = False) -> FrameBatch:
        if not frames:
            raise ValueError("a FrameBatch needs at least one frame")
        h = max(f.height for f in frames)
        w = max(f.width for f in frames)
        # Frames decoded on a GPU are batched there (device-to-device copies).
        first = frames[0].image
        device = first.device if isinstance(first, torch.Tensor) else torch.device("cpu")
        pin = pin_memory and device.type == "cpu"
        images = torch.zeros(len(frames), h, w, 3, dtype=torch.uint8, device=device, pin_memory=pin)
        for i, f in enumerate(frames):
            image = f.image
            if not isinstance(image, torch.Tensor):
                image = torch.from_numpy(np.ascontiguousarray(image))
            images[i, : f.height, : f.width] = image
        sizes = torch.tensor([[f.height, f.width] for f in frames], dtype=torch.long)
        return cls(
            images=images,
            sizes=sizes,
            sources=[f.source for f in frames],
            indices=[f.index for f in frames],
            pts=[f.pts for f in frames],
            boxes=[f.boxes for f in frames],
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
