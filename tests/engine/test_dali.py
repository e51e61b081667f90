"""DALI decoding (``engine.sources.dali``) on the CPU: VP9 files, as CI tests the DALI path.

DALI's CPU decoder takes VP8/VP9/MJPEG; H.264/HEVC need its GPU ("mixed") decoder, which
no test machine has, so that path is unverified here. Frames are compared with PyAV's
(the same libavcodec decode; RGB conversion differs by a little rounding).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from engine.errors import NotAVideoError
from engine.sources import SourceSettings, VideoFileSource, open_source
from engine.sources import dali as dali_module
from engine.sources.dali import SEQUENCE_LENGTH, DaliUnavailableError, DaliVideoSource
from tests.conftest import tiny_config
from tests.media import encode_video, face_frames, mean_abs_error

pytest.importorskip("nvidia.dali", reason="nvidia-dali-cuda130 is not installed")

FRAMES = SEQUENCE_LENGTH + 5  # a padded last sequence


@pytest.fixture(scope="module")
def vp9_clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("dali") / "face.webm"
    return encode_video(path, face_frames(FRAMES, size=128), fps=25)


@pytest.fixture(scope="module")
def h264_clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("dali") / "face.mp4"
    return encode_video(path, face_frames(4, size=64), fps=25)


def read(source) -> list:
    with source:
        return list(source)


def test_dali_frames_equal_pyav_frames_with_the_same_indices_and_times(vp9_clip):
    dali = read(DaliVideoSource(vp9_clip, device="cpu"))
    pyav = read(VideoFileSource(vp9_clip))
    assert [f.index for f in dali] == [f.index for f in pyav] == list(range(FRAMES))
    np.testing.assert_allclose([f.pts for f in dali], [f.pts for f in pyav], atol=1e-3)
    for a, b in zip(dali, pyav, strict=True):
        assert a.image.shape == b.image.shape == (128, 128, 3) and a.image.dtype == np.uint8
        assert mean_abs_error(a.image, b.image) < 3.0  # decode tolerance (YUV->RGB rounding)
    original = face_frames(FRAMES, size=128)
    assert max(mean_abs_error(f.image, o) for f, o in zip(dali, original, strict=True)) < 6.0


def test_the_decoder_setting_chooses_the_source(vp9_clip, monkeypatch):
    assert isinstance(open_source(str(vp9_clip), SourceSettings(decoder="dali")), DaliVideoSource)
    assert isinstance(open_source(str(vp9_clip), SourceSettings(decoder="pyav")), VideoFileSource)
    # auto: DALI only on a CUDA machine (none here), so PyAV with its corruption checks.
    monkeypatch.setattr(dali_module.torch.cuda, "is_available", lambda: False)
    assert type(open_source(str(vp9_clip), SourceSettings())) is VideoFileSource


def test_sampling_and_limits_apply_to_dali_frames(vp9_clip):
    source = open_source(str(vp9_clip), SourceSettings(decoder="dali", every=3))
    assert source.estimated_frames == -(-FRAMES // 3)
    assert [f.index for f in read(source)] == list(range(0, FRAMES, 3))
    with pytest.raises(Exception, match="over the limit"):
        open_source(str(vp9_clip), SourceSettings(decoder="dali", max_frame_pixels=100))


def test_h264_on_the_cpu_decoder_is_refused_with_what_to_do(h264_clip):
    with pytest.raises(DaliUnavailableError) as e:
        DaliVideoSource(h264_clip, device="cpu")
    assert "h264 needs a GPU" in str(e.value) and 'sources.decoder = "pyav"' in str(e.value)


def test_missing_dali_or_a_non_video_is_reported(vp9_clip, tmp_path, monkeypatch):
    text = tmp_path / "notes.mp4"
    text.write_text("not a video")
    with pytest.raises(NotAVideoError):
        open_source(str(text), SourceSettings(decoder="dali"))
    monkeypatch.setattr(dali_module, "dali_available", lambda: False)
    with pytest.raises(DaliUnavailableError, match="not installed"):
        open_source(str(vp9_clip), SourceSettings(decoder="dali"))


def test_veritas_run_analyses_every_dali_frame(vp9_clip):
    from engine.runner import run_local

    config = tiny_config('sources.decoder="dali"')
    summary = run_local([str(vp9_clip)], config)
    assert summary.frames == FRAMES and not summary.failed
