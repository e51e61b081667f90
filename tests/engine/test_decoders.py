"""Choosing a video decoder, NVDEC's colour conversion, and what NVDEC says where it
cannot run (this CPU machine: PyNvVideoCodec's decoding itself runs in ``pytest -m cuda``
and in the GPU check)."""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np
import pytest
import torch

from engine.errors import ConfigError
from engine.sources import SourceSettings, VideoFileSource, open_source
from engine.sources.decoders import choose_decoder, installed
from engine.sources.nvdec import NvdecUnavailableError, NvdecVideoSource, nv12_to_rgb
from engine.stages.timing import StageTimer
from tests.media import encode_video, face_frames

NVDEC_HERE = installed("PyNvVideoCodec") and torch.cuda.is_available()


@pytest.fixture(scope="module")
def h264(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("nvdec") / "face.mp4"
    return encode_video(path, face_frames(6, size=96), fps=25)


@pytest.mark.parametrize(
    ("asked", "cuda", "codec", "nvdec", "dali", "pyav", "chosen"),
    [
        ("auto", False, "h264", True, True, True, "pyav"),  # no GPU: the CPU path
        ("auto", True, "h264", True, True, True, "nvdec"),
        ("auto", True, "hevc", True, False, True, "nvdec"),
        ("auto", True, "vp9", True, True, True, "dali"),  # NVDEC's auto codecs: H.264/HEVC
        ("auto", True, "vp9", True, False, True, "pyav"),
        ("auto", True, "h264", False, True, True, "dali"),
        ("auto", True, "h264", False, False, True, "pyav"),
        ("auto", True, None, True, False, False, "nvdec"),  # no PyAV: nothing else could
        ("pyav", True, "h264", True, True, True, "pyav"),
        ("nvdec", False, "h264", False, False, True, "nvdec"),  # asked: it says why not
        ("dali", True, "h264", True, True, True, "dali"),
    ],
)
def test_auto_picks_nvdec_then_dali_then_pyav(asked, cuda, codec, nvdec, dali, pyav, chosen):
    got = choose_decoder(asked, cuda=cuda, codec=codec, nvdec=nvdec, dali=dali, pyav=pyav)
    assert got == chosen


def test_the_decoder_setting_takes_nvdec_and_refuses_others() -> None:
    assert SourceSettings(decoder="nvdec").decoder == "nvdec"
    with pytest.raises(ConfigError, match="nvdec"):
        SourceSettings(decoder="cuvid")


def test_auto_on_this_cpu_machine_reads_files_with_pyav(h264: Path) -> None:
    with open_source(str(h264), SourceSettings(decoder="auto")) as source:
        assert type(source) is VideoFileSource and source.decoder == "pyav"


@pytest.mark.skipif(NVDEC_HERE, reason="NVDEC can decode here: pytest -m cuda tests it")
def test_nvdec_where_it_cannot_run_says_why_and_what_to_set(h264: Path) -> None:
    with pytest.raises(NvdecUnavailableError) as error:
        open_source(str(h264), SourceSettings(decoder="nvdec"))
    text = str(error.value)
    assert str(h264) in text and 'sources.decoder = "pyav"' in text
    assert "PyNvVideoCodec" in text or "CUDA" in text
    with pytest.raises(NvdecUnavailableError):
        NvdecVideoSource(h264, device="cpu")


def test_nv12_to_rgb_gives_pyavs_rgb_for_the_same_decoded_picture(h264: Path) -> None:
    # NVDEC decodes H.264 to the same NV12 as libavcodec (decoding is bit-exact by the
    # standard); what remains is the conversion, compared here with PyAV's rgb24.
    with av.open(str(h264)) as container:
        checked = 0
        for frame in container.decode(video=0):
            nv12 = torch.from_numpy(frame.to_ndarray(format="nv12"))
            want = frame.to_ndarray(format="rgb24").astype(np.int16)
            got = nv12_to_rgb(nv12, frame.height, frame.width)
            assert got.dtype == torch.uint8 and got.shape == (frame.height, frame.width, 3)
            diff = np.abs(got.numpy().astype(np.int16) - want)
            # swscale's fixed-point arithmetic rounds differently: a level or two.
            assert diff.max() <= 4 and diff.mean() < 2.0
            checked += 1
    assert checked == 6


def test_nv12_to_rgb_keeps_colours_apart() -> None:
    # Flat NV12 pictures of known colours (BT.601 limited range): red, green, blue, grey.
    height, width = 4, 6
    for (y, u, v), rgb in [
        ((81, 90, 240), (255, 0, 0)),
        ((145, 54, 34), (0, 255, 0)),
        ((41, 240, 110), (0, 0, 255)),
        ((126, 128, 128), (128, 128, 128)),
    ]:
        nv12 = torch.empty(height * 3 // 2, width, dtype=torch.uint8)
        nv12[:height] = y
        nv12[height:].view(height // 2, width // 2, 2)[:] = torch.tensor([u, v])
        out = nv12_to_rgb(nv12, height, width)
        assert (out.int() - torch.tensor(rgb)).abs().max() <= 2, (y, u, v, out[0, 0])


def test_nv12_to_rgb_refuses_a_picture_of_the_wrong_shape() -> None:
    with pytest.raises(ValueError, match="NV12"):
        nv12_to_rgb(torch.zeros(4, 6, dtype=torch.uint8), 4, 6)


def test_stage_timer_adds_up_a_stage_entered_twice() -> None:
    import time

    timer = StageTimer(torch.device("cpu"))
    for _ in range(2):
        with timer("a"):
            time.sleep(0.01)
    with timer("b"):
        pass
    assert set(timer.ms) == {"a", "b"}
    assert timer.ms["a"] >= 20 and timer.ms["b"] < timer.ms["a"]


def test_frames_stay_where_they_are_on_a_cpu_pipeline() -> None:
    from engine.frames import Frame
    from engine.upload import FrameUploader

    uploader = FrameUploader(torch.device("cpu"))
    frame = Frame("s", 0, 0.0, np.zeros((4, 4, 3), np.uint8))
    assert not uploader.active and next(iter(uploader([frame]))) is frame


# --- live feeds: PyAV's packets as NVDEC takes them -------------------------------------


def decode_annexb(path: Path) -> tuple[list[np.ndarray], list[float | None], bytes]:
    """Decode ``path`` the way a live feed feeds NVDEC: PyAV demuxes, :class:`AnnexB`
    rewrites, and a decoder that knows nothing of the container (no extradata: all it
    has is the Annex B bytes, as NVDEC's parser) decodes."""
    from engine.sources.packets import AnnexB

    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        annexb = AnnexB(stream)
        raw = av.CodecContext.create(annexb.codec, "r")
        pictures, times, first = [], [], b""
        for packet in container.demux(stream):
            for data, pts in annexb(packet):
                first = first or data
                out = av.Packet(data)
                out.pts = pts
                for frame in raw.decode(out):
                    pictures.append(frame.to_ndarray(format="rgb24"))
                    times.append(None if frame.pts is None else frame.pts * annexb.time_base)
        for frame in raw.decode(None):
            pictures.append(frame.to_ndarray(format="rgb24"))
            times.append(None if frame.pts is None else frame.pts * annexb.time_base)
    return pictures, times, first


@pytest.mark.parametrize("suffix", [".mp4", ".ts"], ids=["length-prefixed (MP4)", "Annex B (TS)"])
def test_packets_rewritten_to_annex_b_decode_to_the_files_own_frames(tmp_path, suffix):
    path = encode_video(tmp_path / f"clip{suffix}", face_frames(8, size=64), fps=25)
    with av.open(str(path)) as container:
        want = [(f.to_ndarray(format="rgb24"), f.time) for f in container.decode(video=0)]
    pictures, times, first = decode_annexb(path)
    assert first[:4] == b"\x00\x00\x00\x01" or first[:3] == b"\x00\x00\x01"
    assert len(pictures) == len(want) == 8
    for got, (ref, _) in zip(pictures, want, strict=True):
        assert np.array_equal(got, ref)
    assert times == pytest.approx([t for _, t in want])


@pytest.mark.skipif(NVDEC_HERE, reason="NVDEC can decode here: pytest -m cuda tests it")
def test_a_live_feed_decodes_with_pyav_where_nvdec_cannot_run(h264: Path) -> None:
    from engine.sources.live import LiveFeedSource, nvdec_pictures

    feed = LiveFeedSource("rtsp://127.0.0.1:1/never", SourceSettings(decoder="auto"))
    with av.open(str(h264)) as container:
        stream = container.streams.video[0]
        pictures = feed._decoder_for(stream)  # auto: NVDEC cannot run here, PyAV does
        assert feed.decoder == "pyav"
        packet = next(p for p in container.demux(stream) if p.size)
        assert all(len(p) == 4 for p in pictures(packet))
        with pytest.raises(NvdecUnavailableError):
            nvdec_pictures(feed.name, stream)
        asked = LiveFeedSource("rtsp://127.0.0.1:1/x", SourceSettings(decoder="nvdec"))
        with pytest.raises(NvdecUnavailableError):  # asked for: no fallback
            asked._decoder_for(stream)


def test_without_any_video_decoder_a_file_is_refused_saying_what_to_install(h264, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "av", None)  # as on a machine without PyAV
    from engine.sources.decoders import NoDecoderError, open_video_file

    with pytest.raises(NoDecoderError, match="install av"):
        open_video_file(h264, SourceSettings(decoder="pyav"))
