"""Video files decoded with NVIDIA DALI, and the choice between DALI and PyAV.

DALI's video reader (``fn.experimental.readers.video``) demuxes with FFmpeg and decodes:

* on a GPU (``device="gpu"``: NVDEC, DALI's "mixed" placement — compressed data in host
  memory, frames out in device memory): H.264, HEVC, AV1, MPEG-4, VP8, VP9, MJPEG. Frames
  stay on the GPU as uint8 torch tensors, so a batch never crosses to the host;
* on the CPU (``device="cpu"``, libavcodec): VP8, VP9 and MJPEG only (the CPU build
  refuses H.264/HEVC/MPEG-4 for licensing reasons). This is how CI tests the DALI path.

The stage graph is one reader producing sequences of ``SEQUENCE_LENGTH`` frames with
each frame's index and timestamp; DALI prefetches the next sequences in its own
threads while the engine runs the models. The last sequence is padded by DALI (index
−1), and the padding is dropped.

Before decoding, the file is probed with PyAV (container, codec, frame rate, declared
length, frame-size limit), so errors for unreadable files and oversized frames are the
same as :class:`~engine.sources.video.VideoFileSource`'s. Not detected here (PyAV's
source detects them): streams that end before their declared duration.

``sources.decoder = "dali"`` reads files with it (GPU when CUDA is available, else the
CPU decoder; an error for a codec it cannot decode); what ``auto`` picks is
:func:`engine.sources.decoders.choose_decoder`'s rule.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Generator
from functools import partial

import numpy as np
import torch

from engine.errors import CorruptStreamError, EmptySourceError, SourceError
from engine.sources.base import DecodedFrame, DecodingSource
from engine.sources.decoders import DALI_GPU_CODECS, installed
from engine.sources.settings import SourceSettings
from engine.sources.video import VideoFileSource

log = logging.getLogger(__name__)

CPU_CODECS = frozenset({"vp8", "vp9", "mjpeg"})
"""Codecs (FFmpeg names) DALI's CPU video decoder accepts."""

GPU_CODECS = DALI_GPU_CODECS
"""Codecs DALI decodes on a GPU (NVDEC)."""

SEQUENCE_LENGTH = 8
"""Frames per DALI sample: the reader decodes this many frames per step."""

PREFETCH = 2
"""Sequences DALI decodes ahead of the consumer."""


class DaliUnavailableError(SourceError):
    def __init__(self, source: str, reason: str) -> None:
        super().__init__(source, f"DALI cannot decode it: {reason}", 'set sources.decoder = "pyav"')


def dali_available() -> bool:
    """Whether the ``nvidia.dali`` package is installed (``nvidia-dali-cuda130``)."""
    return installed("nvidia.dali")


class DaliVideoSource(DecodingSource):
    """A video file decoded by DALI (see the module doc).

    Args:
        path: the file.
        settings: sampling and limits (``decoder`` is not consulted here).
        name: the input as the user gave it (default: ``path``).
        device: ``"auto"`` (the GPU when CUDA is available), ``"cpu"`` or ``"cuda[:N]"``.

    Raises:
        NotAVideoError, FrameTooLargeError: as :class:`VideoFileSource` (PyAV probe).
        DaliUnavailableError: DALI is not installed, or cannot decode the codec there.
    """

    decoder = "dali"

    def __init__(
        self,
        path: str | os.PathLike[str],
        settings: SourceSettings | None = None,
        name: str | None = None,
        device: str | torch.device = "auto",
    ) -> None:
        settings = settings or SourceSettings()
        super().__init__(name if name is not None else str(path), settings)
        self.path = os.fspath(path)
        probe = VideoFileSource(path, settings, name=self.name)
        try:
            self.codec = _codec(probe)
            self.nominal_fps = probe.nominal_fps
            self._extent = probe._declared_extent()
        finally:
            probe.close()
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        self.device = torch.device(device)
        placement = "gpu" if self.device.type == "cuda" else "cpu"
        if not dali_available():
            raise DaliUnavailableError(self.name, "nvidia-dali-cuda130 is not installed")
        supported = GPU_CODECS if placement == "gpu" else CPU_CODECS
        if self.codec not in supported:
            raise DaliUnavailableError(
                self.name,
                f"its codec {self.codec} needs a GPU (the CPU decoder takes "
                f"{', '.join(sorted(CPU_CODECS))})",
            )
        self.placement = placement
        log.info("%s: DALI %s decoder, %s", self.name, placement, self.codec)

    def _declared_extent(self) -> tuple[int | None, float | None]:
        return self._extent

    def _graph(self):  # -> nvidia.dali.Pipeline; imported lazily (DALI is optional)
        from nvidia.dali import fn, pipeline_def

        @pipeline_def(
            batch_size=1,
            num_threads=max(1, self.settings.decode_threads or 2),
            device_id=(self.device.index or 0) if self.placement == "gpu" else None,
            prefetch_queue_depth=PREFETCH,
        )
        def graph():  # type: ignore[no-untyped-def]
            video, index, pts = fn.experimental.readers.video(
                device=self.placement,
                filenames=[self.path],
                sequence_length=SEQUENCE_LENGTH,
                enable_frame_num="sequence",
                enable_timestamps=True,
                pad_mode="constant",
                name="reader",
            )
            return video, index, pts

        return graph()

    def _decode(self) -> Generator[DecodedFrame, None, None]:
        index = -1
        origin: float | None = None
        try:
            graph = self._graph()
            graph.build()
            sequences = graph.epoch_size("reader")
            for _ in range(sequences):
                video, indices, stamps = graph.run()
                frames = self._sequence(video)
                for j, (i, t) in enumerate(zip(_host(indices), _host(stamps), strict=True)):
                    if i < 0:  # padding of the last sequence
                        continue
                    index = int(i)
                    origin = t if origin is None else origin
                    height, width = frames.shape[1:3]
                    yield DecodedFrame(
                        index, t - origin, int(width), int(height), partial(_frame, frames, j)
                    )
        except RuntimeError as error:  # DALI reports decoding failures as RuntimeError
            detail = str(error).strip().splitlines()[-1][:200]
            if index < 0:
                raise EmptySourceError(self.name, f"no decodable video frame ({detail})") from error
            raise CorruptStreamError(self.name, index, detail) from error
        if index < 0:
            raise EmptySourceError(self.name, "the video stream holds no frames")

    def _sequence(self, video: object) -> np.ndarray | torch.Tensor:
        """One DALI sequence ``(F, H, W, 3)``: numpy on the CPU, a CUDA tensor on a GPU."""
        if self.placement == "cpu":
            # A copy: DALI reuses its output buffers for the sequences it prefetches.
            return np.array(video.as_array()[0], copy=True)  # type: ignore[attr-defined]
        from nvidia.dali.plugin.pytorch import feed_ndarray

        tensor = video.as_tensor()  # type: ignore[attr-defined]
        out = torch.empty(tensor.shape(), dtype=torch.uint8, device=self.device)
        feed_ndarray(tensor, out, cuda_stream=torch.cuda.current_stream(self.device).cuda_stream)
        return out[0]


def _host(outputs: object) -> list:
    """The first sample of a DALI output as a list: a GPU placement gives device
    ``TensorListGPU`` outputs, copied to the host first (``as_cpu``)."""
    as_cpu = getattr(outputs, "as_cpu", None)
    host = as_cpu() if callable(as_cpu) else outputs
    return np.asarray(host[0]).tolist()  # type: ignore[index]


def _frame(frames: np.ndarray | torch.Tensor, j: int) -> np.ndarray | torch.Tensor:
    return frames[j]  # a contiguous view of the sequence's own copy


def _codec(probe: VideoFileSource) -> str:
    """FFmpeg's name of the probed file's video codec (``h264``, ``vp9``, ...)."""
    return str(probe._stream.codec_context.name)
