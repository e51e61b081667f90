"""Which decoder reads a video file: PyAV, NVDEC (PyNvVideoCodec) or DALI.

``sources.decoder`` (:data:`~engine.sources.settings.DECODERS`) asks for one:

* ``pyav`` — FFmpeg on the CPU (:class:`~engine.sources.video.VideoFileSource`); frames
  in host memory. The CPU path, and the one that detects the most damage.
* ``nvdec`` — NVIDIA's hardware decoder through PyNvVideoCodec
  (:class:`~engine.sources.nvdec.NvdecVideoSource`): frames stay on the GPU.
* ``dali`` — DALI's video reader (:class:`~engine.sources.dali.DaliVideoSource`): on a
  GPU through NVDEC, or DALI's CPU decoder (VP8, VP9, MJPEG).
* ``auto`` — on a CUDA machine: NVDEC for the codecs :data:`AUTO_NVDEC_CODECS` when
  PyNvVideoCodec imports, else DALI for the codecs it decodes on a GPU when it is
  installed, else PyAV. Without CUDA: PyAV.

:func:`choose_decoder` is that rule alone (no import, no file), so it is tested on any
machine; :func:`open_video_file` applies it to a file. Each decoder's module is imported
only when chosen: PyAV is absent on some GPU machines, PyNvVideoCodec and DALI on most
CPU ones.
"""

from __future__ import annotations

import importlib.util
import os
from typing import TYPE_CHECKING

from engine.errors import SourceError
from engine.sources.settings import SourceSettings

if TYPE_CHECKING:
    from engine.sources.base import Source

AUTO_NVDEC_CODECS = frozenset({"h264", "hevc"})
"""Codecs (FFmpeg's names) ``auto`` sends to NVDEC through PyNvVideoCodec."""

DALI_GPU_CODECS = frozenset({"vp8", "vp9", "mjpeg", "h264", "hevc", "av1", "mpeg4"})
"""Codecs DALI decodes on a GPU (its CPU decoder: :data:`engine.sources.dali.CPU_CODECS`)."""


class NoDecoderError(SourceError):
    """No decoder for video files imports here (no PyAV, and no NVDEC on a GPU)."""

    def __init__(self, source: str) -> None:
        super().__init__(
            source,
            "no video decoder is installed here (PyAV does not import; NVDEC needs CUDA "
            "and PyNvVideoCodec)",
            "install av, or pynvvideocodec on a CUDA machine",
        )


def installed(module: str) -> bool:
    """Whether ``module`` (dotted) can be imported, without importing it."""
    try:
        return importlib.util.find_spec(module) is not None
    except (ModuleNotFoundError, ValueError):  # a missing parent package
        return False


def choose_decoder(
    asked: str, *, cuda: bool, codec: str | None, nvdec: bool, dali: bool, pyav: bool = True
) -> str:
    """The decoder ``asked`` (``sources.decoder``) resolves to: ``pyav``, ``nvdec`` or
    ``dali`` (see the module doc).

    ``codec``: the file's video codec (FFmpeg's name; None when not probed);
    ``nvdec``, ``dali``, ``pyav``: whether PyNvVideoCodec, DALI and PyAV are installed.
    An explicit choice is returned as asked: the source reports what it cannot do.
    ``auto`` without PyAV takes NVDEC for any codec it may decode (nothing else could).
    """
    if asked != "auto":
        return asked
    if not cuda:
        return "pyav"
    if nvdec and (codec in AUTO_NVDEC_CODECS or not pyav):
        return "nvdec"
    if dali and codec in DALI_GPU_CODECS:
        return "dali"
    return "pyav"


def open_video_file(
    path: str | os.PathLike[str], settings: SourceSettings, name: str | None = None
) -> Source:
    """A video file source with the decoder :func:`choose_decoder` picks for it."""
    asked = settings.decoder
    if asked == "auto":
        import torch

        nvdec, dali, pyav = installed("PyNvVideoCodec"), installed("nvidia.dali"), installed("av")
        cuda = torch.cuda.is_available()
        codec = None
        probe = None
        if cuda and pyav and (nvdec or dali):
            from engine.sources.video import VideoFileSource

            probe = VideoFileSource(path, settings, name=name)  # raises like PyAV's source
            codec = str(probe._stream.codec_context.name)
        asked = choose_decoder(asked, cuda=cuda, codec=codec, nvdec=nvdec, dali=dali, pyav=pyav)
        if probe is not None:
            if asked == "pyav":
                return probe
            probe.close()
    if asked == "nvdec":
        from engine.sources.nvdec import NvdecVideoSource

        return NvdecVideoSource(path, settings, name=name)
    if asked == "dali":
        from engine.sources.dali import DaliVideoSource

        return DaliVideoSource(path, settings, name=name)
    if not installed("av"):
        raise NoDecoderError(name if name is not None else os.fspath(path))
    from engine.sources.video import VideoFileSource

    return VideoFileSource(path, settings, name=name)
