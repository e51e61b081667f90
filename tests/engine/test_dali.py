"""DALI decoding (``engine.sources.dali``) on the CPU: VP9 files, as CI tests the DALI path.

DALI's CPU decoder takes VP8/VP9/MJPEG; H.264/HEVC need its GPU ("mixed") decoder, which
no test machine has, so that path is unverified here. Frames are compared with PyAV's
(the same libavcodec decode; RGB conversion differs by a little rounding). The shared
pipeline (``DaliStreamGroup``) is tested with streams of different lengths read at once,
more files than slots, streams closed early, and a count its decoder disagrees with.
"""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest

from engine.errors import CorruptStreamError, NotAVideoError, SourceError
from engine.sources import SourceSettings, VideoFileSource, open_source
from engine.sources import dali as dali_module
from engine.sources.dali import (
    FILLER,
    FILLER_SHAPE,
    SEQUENCE_LENGTH,
    DaliStreamGroup,
    DaliUnavailableError,
    DaliVideoSource,
)
from tests.conftest import tiny_config
from tests.media import encode_video, face_frames, mean_abs_error, moving_pattern

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


# --- the shared pipeline ------------------------------------------------------------------

LENGTHS = (SEQUENCE_LENGTH + 5, 3 * SEQUENCE_LENGTH + 5, SEQUENCE_LENGTH)  # uneven ends


@pytest.fixture(scope="module")
def clips(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """VP9 files of different lengths and sizes (so a frame in the wrong stream shows)."""
    folder = tmp_path_factory.mktemp("dali-group")
    return [
        encode_video(folder / f"clip{i}.webm", moving_pattern(n, 48 + 16 * i, 64), fps=25)
        for i, n in enumerate(LENGTHS)
    ]


def pyav_images(path: Path) -> list[np.ndarray]:
    return [f.image for f in read(VideoFileSource(path))]


def assert_frames_match(images: list, path: Path) -> None:
    reference = pyav_images(path)
    assert len(images) == len(reference)
    for a, b in zip(images, reference, strict=True):
        assert a.shape == b.shape and mean_abs_error(a, b) < 3.0


def read_in_threads(sources: list) -> list[list]:
    """Read every source in a thread of its own, as the frame path's reader threads do."""
    results: list[list] = [[] for _ in sources]
    errors: list[BaseException] = []

    def reader(i: int) -> None:
        try:
            results[i] = read(sources[i])
        except BaseException as error:  # reported by the test
            errors.append(error)

    threads = [threading.Thread(target=reader, args=(i,)) for i in range(len(sources))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not any(t.is_alive() for t in threads), "a reader is stuck"
    assert not errors, errors
    return results


def test_the_filler_decodes_to_its_one_frame():
    # The idle slots' input: if it decoded to another shape, every count would be off.
    group = DaliStreamGroup("cpu", dali_module.torch.device("cpu"), slots=1)
    pipe = group._pipeline()
    pipe.feed_input("slot0", [np.frombuffer(FILLER, np.uint8)])
    (out,) = pipe.run()
    assert tuple(out.at(0).shape) == FILLER_SHAPE


def test_streams_read_at_once_share_each_run_and_get_their_own_frames(clips):
    group = DaliStreamGroup("cpu", dali_module.torch.device("cpu"), slots=4)
    # The decode thread starts at the first open: the group's lock held over the opens
    # keeps it from running until all three files are queued, so all start at one run.
    with group._cv:
        tickets = [
            group.open(str(p), str(p), n, (48 + 16 * i, 64))
            for i, (p, n) in enumerate(zip(clips, LENGTHS, strict=True))
        ]

    def sequences(ticket) -> list:
        out = []
        while (frames := group.read(ticket)) is not None:
            out.append(frames)
        group.leave(ticket)
        return out

    results: list[list] = [[] for _ in tickets]
    threads = [
        threading.Thread(target=lambda i=i: results.__setitem__(i, sequences(tickets[i])))
        for i in range(len(tickets))
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    for path, got in zip(clips, results, strict=True):
        assert_frames_match([frame for sequence in got for frame in sequence], path)
    # One run decodes a sequence of every stream: as many runs as the longest file has
    # sequences (one pipeline per stream would have run once per sequence of each).
    assert group.runs == -(-max(LENGTHS) // SEQUENCE_LENGTH)
    assert group.wait_idle(10) and group._pipe is None  # nothing left to read: freed


def test_more_files_than_slots_wait_for_a_slot_and_every_frame_arrives(clips):
    group = DaliStreamGroup("cpu", dali_module.torch.device("cpu"), slots=2)
    sources = [DaliVideoSource(p, device="cpu", group=group) for p in clips]
    for path, frames in zip(clips, read_in_threads(sources), strict=True):
        assert [f.index for f in frames] == list(range(len(pyav_images(path))))
        assert_frames_match([f.image for f in frames], path)
    np.testing.assert_allclose([f.pts for f in frames], [i / 25 for i in range(len(frames))])


def test_a_stream_closed_early_leaves_the_others_whole(clips):
    group = DaliStreamGroup("cpu", dali_module.torch.device("cpu"), slots=2)
    early = DaliVideoSource(clips[1], device="cpu", group=group)
    first = next(iter(early))
    early.close()
    assert first.index == 0
    whole = read_in_threads([DaliVideoSource(p, device="cpu", group=group) for p in clips[::2]])
    for path, frames in zip(clips[::2], whole, strict=True):
        assert_frames_match([f.image for f in frames], path)
    assert group.wait_idle(10) and group._pipe is None


def test_a_decoder_that_disagrees_with_the_count_fails_its_stream_only(clips):
    group = DaliStreamGroup("cpu", dali_module.torch.device("cpu"), slots=2)
    wrong = group.open("wrong", str(clips[2]), LENGTHS[2] + SEQUENCE_LENGTH, (80, 64))
    right = group.open("right", str(clips[1]), LENGTHS[1], (64, 64))
    got = []
    with pytest.raises(CorruptStreamError, match="disagrees"):
        while group.read(wrong) is not None:
            got.append(group.read(right))
    assert len(got) == 1  # its one real sequence came; the filler where a second was due
    while (frames := group.read(right)) is not None:
        got.append(frames)
    assert_frames_match([f for sequence in got for f in sequence], clips[1])


@pytest.mark.timeout(60)  # the bug this guards against is a hang
def test_one_thread_interleaving_dali_sources_is_told_instead_of_hanging(clips):
    group = DaliStreamGroup("cpu", dali_module.torch.device("cpu"), slots=2)
    held = DaliVideoSource(clips[1], device="cpu", group=group)
    next(iter(held))  # read once, then left unread while the same thread reads another
    with pytest.raises(SourceError, match="each in its own thread"):
        read(
            DaliVideoSource(clips[1], device="cpu", group=group)
        )  # 4 sequences: more than AHEAD + 1
    held.close()


def test_veritas_run_reads_several_dali_files_in_one_pipeline(clips):
    from engine.runner import run_local

    summary = run_local([str(p) for p in clips], tiny_config('sources.decoder="dali"'))
    assert summary.frames == sum(LENGTHS) and not summary.failed
