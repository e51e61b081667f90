"""Compressed video packets from PyAV's demuxer, as a hardware decoder takes them.

A live feed keeps PyAV's demuxing (its protocols, reconnection, timeouts and real-time
handling, :mod:`engine.sources.live`) and may hand the compressed packets to NVDEC
(:class:`engine.sources.nvdec.NvdecPictures`). NVDEC's parser reads H.264 and HEVC as
Annex B (start codes before each NAL unit, parameter sets in band). RTSP, MPEG-TS (SRT,
HLS) and raw streams carry that already; FLV (RTMP) and MP4 carry length-prefixed NAL
units with the parameter sets in the codec's extradata. :class:`AnnexB` runs FFmpeg's
``h264_mp4toannexb`` / ``hevc_mp4toannexb`` filter, which rewrites the latter and lets
Annex B through unchanged.
"""

from __future__ import annotations

import av
from av.packet import Packet
from av.video.stream import VideoStream

ANNEXB_FILTERS = {"h264": "h264_mp4toannexb", "hevc": "hevc_mp4toannexb"}
"""FFmpeg codec name -> the bitstream filter that gives Annex B."""


class AnnexB:
    """``packet -> [(data, pts)]`` for one stream: Annex B bytes and the packet's pts (in
    ``time_base`` units, None when it has none)."""

    def __init__(self, stream: VideoStream) -> None:
        self.codec = str(stream.codec_context.name)
        if self.codec not in ANNEXB_FILTERS:
            raise ValueError(
                f"no Annex B filter for {self.codec} (takes {', '.join(ANNEXB_FILTERS)})"
            )
        self._filter = av.BitStreamFilterContext(ANNEXB_FILTERS[self.codec], stream)
        self.time_base = float(stream.time_base) if stream.time_base else None

    def __call__(self, packet: Packet) -> list[tuple[bytes, int | None]]:
        if packet.size == 0:  # the demuxer's end-of-stream packet: nothing to send
            return []
        return [(bytes(p), p.pts) for p in self._filter.filter(packet) if p.size]
