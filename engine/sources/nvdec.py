"""Video files decoded by NVDEC through NVIDIA's PyNvVideoCodec; frames stay on the GPU.

PyNvVideoCodec's demuxer (FFmpeg inside the wheel; it turns MP4/MKV/FLV H.264 and HEVC
into Annex B itself) feeds its decoder packet by packet; the decoder reorders and gives
each picture in NV12 in device memory, with the pts of the packet it came from (in the
stream's time base). :func:`kernels.nv12.nv12_to_rgb` (one Triton launch) turns it into
a uint8 RGB ``(H, W, 3)`` CUDA tensor, a new tensor, so the decoder may reuse its surface
at the next packet. Each source
decodes and converts on a CUDA stream of its own (overlapping the analysis), and the
stream its frames are used on waits for that work on the device. The
conversion is BT.601 limited range with each chroma sample covering its 2×2 block:
what PyAV's ``rgb24`` conversion (swscale) gives for the same picture, so the two
decoders hand the models the same frames (tested on the CPU against PyAV's, to within
the rounding of swscale's fixed-point arithmetic; the kernel equals its PyTorch
reference bit for bit under Triton's interpreter).

What PyNvVideoCodec does not expose, this source does not check: it reads no declared
duration (a truncated file just ends), and a corrupt packet is whatever the decoder
reports. Use ``sources.decoder = "pyav"`` where that matters.

``pts`` start at 0 (the first frame's timestamp subtracted); packets without one (raw
``.h264`` streams) are placed ``1 / fps`` after the previous frame.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Generator
from functools import partial
from typing import Any

import torch
from torch import Tensor

from engine.errors import CorruptStreamError, EmptySourceError, NotAVideoError, SourceError
from engine.sources.base import DecodedFrame, DecodingSource
from engine.sources.settings import SourceSettings
from kernels.nv12 import nv12_to_rgb  # the fused kernel on CUDA tensors

log = logging.getLogger(__name__)

CODECS = {"h264": "H264", "hevc": "HEVC", "av1": "AV1", "vp9": "VP9", "vp8": "VP8"}
"""FFmpeg's codec name -> PyNvVideoCodec's ``cudaVideoCodec`` member, for the codecs this
source decodes (8-bit 4:2:0, NV12 out)."""

NO_PTS = -(2**63)
"""The timestamp of a packet without one (FFmpeg's ``AV_NOPTS_VALUE``)."""

FALLBACK_FPS = 25.0


class NvdecUnavailableError(SourceError):
    def __init__(self, source: str, reason: str) -> None:
        super().__init__(
            source, f"NVDEC cannot decode it: {reason}", 'set sources.decoder = "pyav" or "auto"'
        )


def _module() -> Any:
    import PyNvVideoCodec  # type: ignore[import-not-found]

    return PyNvVideoCodec


class NvdecVideoSource(DecodingSource):
    """A video file decoded by NVDEC (see the module doc).

    Raises :class:`NvdecUnavailableError` (PyNvVideoCodec not installed, no CUDA, a codec
    it does not take), :class:`NotAVideoError` (its demuxer cannot open the file) and
    :class:`FrameTooLargeError` (the stream declares frames over the limit), all before
    decoding.
    """

    decoder = "nvdec"

    def __init__(
        self,
        path: str | os.PathLike[str],
        settings: SourceSettings | None = None,
        name: str | None = None,
        device: str | torch.device = "cuda",
    ) -> None:
        super().__init__(name if name is not None else str(path), settings or SourceSettings())
        self.path = os.fspath(path)
        self.device = torch.device(device)
        try:
            nvc = _module()
        except ImportError as error:
            raise NvdecUnavailableError(
                self.name, f"PyNvVideoCodec does not import ({error})"
            ) from error
        if self.device.type != "cuda" or not torch.cuda.is_available():
            raise NvdecUnavailableError(self.name, "it needs a CUDA GPU")
        self._nvc = nvc
        errors = _errors(nvc)
        try:
            self._demuxer = nvc.CreateDemuxer(filename=self.path)
        except errors as error:
            raise NotAVideoError(self.name, str(error)[:200]) from error
        codec = self._demuxer.GetNvCodecId()
        names = {getattr(nvc.cudaVideoCodec, member): ours for ours, member in CODECS.items()}
        self.codec = names.get(codec)
        if self.codec is None or self._demuxer.BitDepth() != 8:
            raise NvdecUnavailableError(
                self.name,
                f"codec {codec} at {self._demuxer.BitDepth()} bits (this source takes "
                f"{', '.join(CODECS)} at 8 bits)",
            )
        self.width, self.height = int(self._demuxer.Width()), int(self._demuxer.Height())
        self._check_size(self.width, self.height)
        rate = float(self._demuxer.FrameRate() or 0.0)
        self.nominal_fps = rate if rate > 0 else None
        self._time_base = self._demuxer.GetTimebaseNum() / self._demuxer.GetTimebaseDen()
        log.info(
            "%s: NVDEC %s %dx%d, %s fps",
            self.name,
            self.codec,
            self.width,
            self.height,
            f"{rate:.3f}" if rate else "unknown",
        )

    def _decode(self) -> Generator[DecodedFrame, None, None]:
        nvc = self._nvc
        stream = self._stream = torch.cuda.Stream(self.device)
        index = -1
        origin: float | None = None
        previous = 0.0
        step = 1.0 / (self.nominal_fps or FALLBACK_FPS)
        try:
            decoder = nvc.CreateDecoder(
                gpuid=self.device.index or 0,
                codec=self._demuxer.GetNvCodecId(),
                cudacontext=0,  # the device's primary context: torch's
                cudastream=stream.cuda_stream,
                usedevicememory=True,
                outputColorType=nvc.OutputColorType.NATIVE,
            )
            for packet in self._demuxer:  # its last packet is empty: it flushes the decoder
                for picture in decoder.Decode(packet):
                    index += 1
                    stamp = int(picture.timestamp)
                    if stamp == NO_PTS:
                        pts = previous + step if index else 0.0
                    else:
                        seconds = stamp * self._time_base
                        origin = seconds if origin is None else origin
                        pts = seconds - origin
                    previous = pts
                    yield DecodedFrame(
                        index, pts, self.width, self.height, partial(self._rgb, picture)
                    )
        except _errors(nvc) as error:
            detail = str(error).strip()[:200]
            if index < 0:
                raise EmptySourceError(self.name, f"no decodable video frame ({detail})") from error
            raise CorruptStreamError(self.name, index, detail) from error
        if index < 0:
            raise EmptySourceError(self.name, "the video stream holds no frames")

    def _rgb(self, picture: Any) -> Tensor:
        return _nv12_rgb(picture, self.height, self.width, self._stream)

    def _release(self) -> None:
        self._demuxer = None


class NvdecPictures:
    """NVDEC fed with Annex B packets from another demuxer (a live feed's PyAV demuxing,
    :class:`engine.sources.packets.AnnexB`).

    :meth:`decode` takes one packet's bytes and pts (in ``time_base`` units) and returns
    the pictures it completed, in display order: ``(seconds or None, width, height,
    to_rgb)``, ``to_rgb()`` giving the uint8 RGB CUDA tensor (call it before the next
    :meth:`decode`: the decoder reuses its surfaces). :meth:`flush` returns the pictures
    still inside the decoder at the end of a stream.
    """

    def __init__(
        self,
        source: str,
        codec: str,
        time_base: float | None,
        device: str | torch.device = "cuda",
    ) -> None:
        self.name = source
        self.device = torch.device(device)
        try:
            nvc = _module()
        except ImportError as error:
            raise NvdecUnavailableError(
                source, f"PyNvVideoCodec does not import ({error})"
            ) from error
        if self.device.type != "cuda" or not torch.cuda.is_available():
            raise NvdecUnavailableError(source, "it needs a CUDA GPU")
        if codec not in CODECS:
            raise NvdecUnavailableError(
                source, f"codec {codec} (this decoder takes {', '.join(CODECS)})"
            )
        self._nvc = nvc
        self.time_base = time_base
        self._stream = torch.cuda.Stream(self.device)
        self._decoder = nvc.CreateDecoder(
            gpuid=self.device.index or 0,
            codec=getattr(nvc.cudaVideoCodec, CODECS[codec]),
            cudacontext=0,
            cudastream=self._stream.cuda_stream,
            usedevicememory=True,
            outputColorType=nvc.OutputColorType.NATIVE,
        )

    def decode(self, data: bytes, pts: int | None) -> list[tuple[float | None, int, int, Any]]:
        import numpy as np

        buffer = np.frombuffer(data, dtype=np.uint8)  # alive until Decode returns
        packet = self._nvc.PacketData()
        packet.bsl_data = buffer.ctypes.data
        packet.bsl = buffer.size
        packet.pts = NO_PTS if pts is None else int(pts)
        return self._pictures(self._decoder.Decode(packet))

    def flush(self) -> list[tuple[float | None, int, int, Any]]:
        return self._pictures(self._decoder.Decode(self._nvc.PacketData()))  # bsl 0: end

    def _pictures(self, decoded: list[Any]) -> list[tuple[float | None, int, int, Any]]:
        out = []
        width, height = int(self._decoder.GetWidth()), int(self._decoder.GetHeight())
        for picture in decoded:
            stamp = int(picture.timestamp)
            seconds = None if stamp == NO_PTS or self.time_base is None else stamp * self.time_base
            rgb = partial(_nv12_rgb, picture, height, width, self._stream)
            out.append((seconds, width, height, rgb))
        return out


def _nv12_rgb(picture: Any, height: int, width: int, stream: torch.cuda.Stream) -> Tensor:
    """A decoded picture as a new RGB tensor (the decoder reuses its surfaces).

    Decoding and conversion run on the source's own stream, so they overlap the models'
    work; DLPack makes that stream wait for the decode. The calling thread's current
    stream (the one the frame's later users run on) then waits for the conversion on
    the device: no host wait, and no user can read the frame before it is written.
    ``record_stream`` keeps the allocator from handing the frame's memory to the next
    conversion on the source's stream while the using stream may still read it.
    """
    with torch.cuda.stream(stream):
        rgb = nv12_to_rgb(torch.from_dlpack(picture), height, width)
    user = torch.cuda.current_stream(stream.device)
    user.wait_stream(stream)
    rgb.record_stream(user)
    return rgb


def _errors(nvc: Any) -> tuple[type[BaseException], ...]:
    """PyNvVideoCodec's exception types (``PyNvVCException*``), and RuntimeError."""
    found = [v for k, v in vars(nvc).items() if k.startswith("PyNvVCException")]
    return (*[e for e in found if isinstance(e, type)], RuntimeError)
