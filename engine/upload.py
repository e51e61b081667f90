"""Host frames to the GPU in their reader thread, overlapped with the analysis.

On a CUDA pipeline the frame path wraps each stream's frames (after the per-frame face
detection ahead, which reads them on the host) with :class:`FrameUploader`: each frame
decoded on the host (PyAV) is copied into page-locked memory (PyTorch's caching host
allocator: its blocks are reused once their copy has completed) and sent to the device
with ``non_blocking`` on the uploader's own CUDA stream, recording an event
(:attr:`~engine.frames.Frame.ready`). The copy runs while the models compute the
batches before; when the frame is batched, the compute stream waits for that event on
the device (``FrameBatch.from_frames``), so no thread waits for the copy. Frames that
are already on the device (NVDEC, DALI) pass as they are; so does every frame on a CPU
pipeline.

Device memory: each buffered frame is held on the device (``queue_depth`` frames per
stream, 6 MB for 1080p: 100 streams × 16 frames ≈ 10 GB).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Iterator

import numpy as np
import torch

from engine.frames import Frame


class FrameUploader:
    """Sends host frames to ``device`` on a side stream (one uploader per reader thread)."""

    def __init__(self, device: torch.device) -> None:
        self.device = torch.device(device)
        self.stream = torch.cuda.Stream(self.device) if self.device.type == "cuda" else None

    @property
    def active(self) -> bool:
        """Whether frames are moved at all (a CUDA device)."""
        return self.stream is not None

    def __call__(self, frames: Iterable[Frame]) -> Iterator[Frame]:
        for frame in frames:
            yield self.upload(frame)

    def upload(self, frame: Frame) -> Frame:
        """``frame`` with its image on the device (a no-op off CUDA, or already there)."""
        image = frame.image
        if self.stream is None or (isinstance(image, torch.Tensor) and image.is_cuda):
            return frame
        host = (
            image
            if isinstance(image, torch.Tensor)
            else torch.from_numpy(np.ascontiguousarray(image))
        )
        host = host.pin_memory()
        with torch.cuda.stream(self.stream):
            on_device = host.to(self.device, non_blocking=True)
            ready = torch.cuda.Event()
            ready.record(self.stream)
        return dataclasses.replace(frame, image=on_device, ready=ready)
