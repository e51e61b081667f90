"""Tests of engine.sources: decoding, sampling, image folders, and bad inputs."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from engine.errors import (
    ConfigError,
    CorruptStreamError,
    EmptySourceError,
    FrameTooLargeError,
    InputNotFoundError,
    NotAVideoError,
    OutsideAllowedRootsError,
    SourceError,
    SourceTooLongError,
    UnreadableImageError,
    UnsupportedSourceError,
)
from engine.frames import Frame
from engine.sources import (
    FrameSampler,
    ImageFileSource,
    ImageFolderSource,
    Source,
    SourceSettings,
    VideoFileSource,
    natural_key,
    open_source,
    register_scheme,
    unregister_scheme,
)
from engine.sources.confine import Confinement
from engine.sources.sampler import JITTER_TOLERANCE
from tests.media import (
    black_png,
    damage_packets,
    encode_audio,
    encode_video,
    mean_abs_error,
    moving_pattern,
    png_header,
    read_measuring_memory,
    truncate_mid_packet,
    write_image_folder,
)

FPS = 25
N = 30
H, W = 48, 64
MAX_LOSSY_ERROR = 8.0  # mean abs error of a decoded frame vs. the encoded one (measured ~4)


@pytest.fixture(scope="module")
def frames() -> list[np.ndarray]:
    return moving_pattern(N, H, W)


@pytest.fixture(scope="module")
def media(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("media")


@pytest.fixture(scope="module")
def clip(media: Path) -> Path:
    """50 frames, 2 s at 25 fps, H.264 in MP4."""
    return encode_video(media / "clip50.mp4", moving_pattern(50, 32, 32), FPS)


def read_all(source: Source) -> list[Frame]:
    with source:
        return list(source)


def read_until_error(source: Source) -> tuple[list[Frame], BaseException | None]:
    got: list[Frame] = []
    with source:
        try:
            for frame in source:
                got.append(frame)
        except SourceError as error:
            return got, error
    return got, None


# --- decoding every codec ---------------------------------------------------------------

CODECS = [
    ("h264.mp4", "libx264"),
    ("hevc.mp4", "libx265"),
    ("hevc.mkv", "libx265"),
    ("vp9.webm", "libvpx-vp9"),
    ("h264.ts", "libx264"),  # MPEG-TS: the container starts at 0.08 s, pts must start at 0
    ("h264.h264", "libx264"),  # raw stream: no timestamps, pts = index / fps
]


@pytest.mark.parametrize(("name", "codec"), CODECS)
def test_each_codec_decodes_every_frame_in_order_with_pts_from_zero(
    media: Path, frames: list[np.ndarray], name: str, codec: str
) -> None:
    path = encode_video(media / name, frames, FPS, codec)
    source = open_source(str(path), SourceSettings())
    assert isinstance(source, VideoFileSource)
    assert source.nominal_fps == pytest.approx(FPS)
    got = read_all(source)

    assert [f.index for f in got] == list(range(N))
    assert [f.pts for f in got] == pytest.approx([i / FPS for i in range(N)], abs=1e-6)
    assert all(f.source == str(path) for f in got)
    for frame in got:
        assert frame.image.dtype == np.uint8 and frame.image.shape == (H, W, 3)
        assert frame.image.flags["C_CONTIGUOUS"]
        assert mean_abs_error(frame.image, frames[frame.index]) < MAX_LOSSY_ERROR
        # the frame is nearest to its own original: decoding order is presentation order
        errors = [mean_abs_error(frame.image, original) for original in frames]
        assert int(np.argmin(errors)) == frame.index


def test_colour_channels_come_out_as_rgb(media: Path) -> None:
    red = np.zeros((32, 32, 3), np.uint8)
    red[..., 0] = 220
    path = encode_video(media / "red.mkv", [red] * 3, FPS)
    image = read_all(open_source(str(path)))[0].image
    assert image[..., 0].mean() > 180 and image[..., 1:].mean() < 40


def test_pts_come_from_the_container_for_variable_frame_rate(media: Path) -> None:
    times = [1.5, 1.53, 1.6, 1.62, 1.8, 1.81, 2.0]  # starts late, irregular spacing
    path = encode_video(media / "vfr.mkv", moving_pattern(len(times)), FPS, pts=times)
    got = read_all(open_source(str(path)))
    assert [f.pts for f in got] == pytest.approx([t - 1.5 for t in times], abs=1e-6)


def test_a_longer_audio_track_is_not_mistaken_for_truncation(media: Path) -> None:
    for name in ("av.mkv", "av.mp4"):
        path = encode_video(media / name, moving_pattern(10), FPS, audio_seconds=3.0)
        assert len(read_all(open_source(str(path)))) == 10


# --- sampling ---------------------------------------------------------------------------


def test_fps_target_keeps_frames_at_that_rate(clip: Path) -> None:
    got = read_all(open_source(str(clip), SourceSettings(fps=5)))
    assert [f.index for f in got] == list(range(0, 50, 5))
    assert np.diff([f.pts for f in got]) == pytest.approx(np.full(9, 0.2), abs=1e-6)


def test_fps_target_not_dividing_the_source_rate_keeps_the_average_rate(clip: Path) -> None:
    got = read_all(open_source(str(clip), SourceSettings(fps=10)))
    assert len(got) == 20  # 2 s at 10 fps
    gaps = np.diff([f.pts for f in got])
    assert np.all((gaps > 0.079) & (gaps < 0.121))  # 2 or 3 source frames apart
    assert gaps.mean() == pytest.approx(0.1, abs=0.005)


def test_every_nth_keeps_indices_multiple_of_n(clip: Path) -> None:
    got = read_all(open_source(str(clip), SourceSettings(every=4)))
    assert [f.index for f in got] == list(range(0, 50, 4))
    assert [f.pts for f in got] == pytest.approx([i / FPS for i in range(0, 50, 4)], abs=1e-6)


def reference_sample(pts: list[float], fps: float) -> list[int]:
    """Brute force: for each sampling time k/fps, the first frame at or after it."""
    tol = JITTER_TOLERANCE / fps
    kept: list[int] = []
    k = 0
    while k / fps <= pts[-1] + tol:
        later = [i for i, t in enumerate(pts) if t - pts[0] >= k / fps - tol]
        if later and later[0] not in kept:
            kept.append(later[0])
        k += 1
    return kept


def test_sampler_on_variable_frame_rate_matches_brute_force() -> None:
    rng = np.random.default_rng(3)
    pts = np.cumsum(rng.choice([0.01, 0.033, 0.04, 0.1, 0.25], size=300)).tolist()
    for fps in (2.0, 7.0, 12.5):
        sampler = FrameSampler(fps=fps)
        kept = [i for i, t in enumerate(pts) if sampler.keep(i, t)]
        assert kept == reference_sample(pts, fps)
        if fps == 2.0:  # no gap is longer than the period: the rate is exactly fps
            assert len(kept) == pytest.approx((pts[-1] - pts[0]) * fps, abs=1)


def test_sampler_tolerates_timestamp_jitter() -> None:
    rng = np.random.default_rng(4)
    pts = [i / 25 + rng.uniform(-0.002, 0.002) for i in range(100)]
    sampler = FrameSampler(fps=25)
    assert all(sampler.keep(i, t) for i, t in enumerate(pts))


def test_sampler_skips_the_sampling_times_inside_a_gap() -> None:
    pts = [i / 25 for i in range(25)] + [6 + i / 25 for i in range(25)]
    sampler = FrameSampler(fps=5)
    kept = [t for i, t in enumerate(pts) if sampler.keep(i, t)]
    assert kept == pytest.approx([0, 0.2, 0.4, 0.6, 0.8, 6.0, 6.2, 6.4, 6.6, 6.8])


def test_sampler_reanchors_after_a_timestamp_reset() -> None:
    pts = [i / 25 for i in range(25)] * 2  # the clock restarts at 0 halfway
    sampler = FrameSampler(fps=5)
    kept = [i for i, t in enumerate(pts) if sampler.keep(i, t)]
    assert kept == [0, 5, 10, 15, 20, 25, 30, 35, 40, 45]


def test_sampler_keeps_every_frame_of_a_source_slower_than_the_target() -> None:
    sampler = FrameSampler(fps=30)
    assert all(sampler.keep(i, i / 10) for i in range(20))


def test_sampler_every_nth_is_by_index_not_time() -> None:
    sampler = FrameSampler(every=3)
    assert [i for i in range(10) if sampler.keep(i, 0.0)] == [0, 3, 6, 9]


# --- settings -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "key"),
    [
        ({"fps": 0}, "sources.fps"),
        ({"fps": -5.0}, "sources.fps"),
        ({"fps": math.nan}, "sources.fps"),
        ({"fps": math.inf}, "sources.fps"),
        ({"fps": 1e308}, "sources.fps"),  # a period of 1e-308 s: the sampler cannot step
        ({"fps": 5e-324}, "sources.fps"),  # a period of 1/5e-324 = inf
        ({"image_folder_fps": 1e308}, "sources.image_folder_fps"),
        ({"every": 0}, "sources.every"),
        ({"every": 2.5}, "sources.every"),
        ({"every": True}, "sources.every"),
        ({"fps": 5, "every": 2}, "sources.every"),
        ({"max_frame_pixels": 0}, "sources.max_frame_pixels"),
        ({"max_duration_s": 0}, "sources.max_duration_s"),
        ({"max_duration_s": math.nan}, "sources.max_duration_s"),
        ({"image_folder_fps": -1}, "sources.image_folder_fps"),
        ({"decode_threads": -1}, "sources.decode_threads"),
        ({"decode_threads": "4"}, "sources.decode_threads"),
    ],
)
def test_settings_reject_invalid_values_naming_the_key(kwargs: dict, key: str) -> None:
    with pytest.raises(ConfigError) as raised:
        SourceSettings(**kwargs)
    assert raised.value.key == key
    assert key in str(raised.value)


def test_settings_accept_sensible_values() -> None:
    settings = SourceSettings(fps=2.5, max_duration_s=math.inf, decode_threads=2)
    assert settings.fps == 2.5 and settings.every == 1
    assert SourceSettings(every=3).every == 3


# --- image folders and images ---------------------------------------------------------------


def test_image_folder_is_read_in_natural_order_with_mixed_sizes(tmp_path: Path) -> None:
    images = moving_pattern(3, 40, 50) + moving_pattern(1, 20, 30)
    names = ["frame10.png", "frame2.bmp", "frame1.PNG", "frame9.webp"]
    write_image_folder(tmp_path, images, names)
    (tmp_path / "notes.txt").write_text("not an image")
    (tmp_path / ".hidden.png").write_bytes(b"resource fork, not an image")
    write_image_folder(tmp_path / "sub", [images[0]], ["frame0.png"])

    source = open_source(str(tmp_path), SourceSettings(image_folder_fps=10))
    assert isinstance(source, ImageFolderSource)
    assert source.nominal_fps == 10
    got = read_all(source)

    assert [f.index for f in got] == [0, 1, 2, 3]
    assert [f.pts for f in got] == pytest.approx([0, 0.1, 0.2, 0.3])
    expected = [images[2], images[1], images[3], images[0]]  # frame1, frame2, frame9, frame10
    for frame, image in zip(got, expected, strict=True):
        assert frame.image.shape == image.shape
        if frame.index != 2:  # webp is lossy
            np.testing.assert_array_equal(frame.image, image)  # lossless, and RGB not BGR


def test_natural_key_orders_digit_runs_by_value() -> None:
    names = ["img10.png", "img2.png", "IMG1.png", "img1.png", "a.png"]
    assert sorted(names, key=natural_key) == [
        "a.png",
        "IMG1.png",
        "img1.png",
        "img2.png",
        "img10.png",
    ]


def test_image_folder_stops_at_an_unreadable_image_naming_it(tmp_path: Path) -> None:
    write_image_folder(tmp_path, moving_pattern(2, 16, 16), ["a1.png", "a3.png"])
    (tmp_path / "a2.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    got, error = read_until_error(open_source(str(tmp_path)))
    assert [f.index for f in got] == [0]
    assert isinstance(error, UnreadableImageError)
    assert error.frame_index == 1 and error.path.endswith("a2.png")
    assert "a2.png" in str(error)


def test_folder_without_images_is_empty(tmp_path: Path) -> None:
    (tmp_path / "readme.txt").write_text("no images here")
    with pytest.raises(EmptySourceError, match="no image files"):
        open_source(str(tmp_path))


def test_single_image_is_one_frame(tmp_path: Path) -> None:
    image = moving_pattern(1, 24, 36)[0]
    (path,) = write_image_folder(tmp_path, [image], ["still.png"])
    source = open_source(str(path))
    assert isinstance(source, ImageFileSource) and source.nominal_fps is None
    got = read_all(source)
    assert [(f.index, f.pts) for f in got] == [(0, 0.0)]
    np.testing.assert_array_equal(got[0].image, image)


def test_unreadable_single_image_is_not_a_video(tmp_path: Path) -> None:
    path = tmp_path / "broken.jpg"
    path.write_bytes(b"\xff\xd8\xff garbage")
    with pytest.raises(NotAVideoError, match=r"broken\.jpg"):
        read_all(open_source(str(path)))


def test_8k_image_is_refused_from_its_header_without_decoding(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (path,) = write_image_folder(tmp_path, [np.zeros((4320, 7680, 3), np.uint8)], ["8k.png"])

    def no_decoding(*args: object) -> None:
        raise AssertionError("the image was decoded")

    monkeypatch.setattr("engine.sources.images.cv2.imdecode", no_decoding)
    with pytest.raises(FrameTooLargeError) as raised:
        read_all(open_source(str(path)))
    assert (raised.value.width, raised.value.height) == (7680, 4320)


@pytest.fixture
def no_decoding(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail the test if OpenCV is asked to decode an image."""

    def imdecode(*args: object) -> None:
        raise AssertionError("an image was decoded")

    monkeypatch.setattr("engine.sources.images.cv2.imdecode", imdecode)


def test_a_decompression_bomb_is_refused_by_its_header_before_any_pixel_is_decoded(
    tmp_path: Path, no_decoding: None
) -> None:
    """15000 x 15000 is over Pillow's own bomb limit (~179 M pixels), which used to hide
    the size: the header still gives it, and the frame-size limit refuses it."""
    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(png_header(15000, 15000))
    assert bomb.stat().st_size < 1000
    with pytest.raises(FrameTooLargeError) as raised:
        read_all(open_source(str(bomb)))
    assert (raised.value.width, raised.value.height) == (15000, 15000)


def test_a_bomb_in_a_folder_stops_it_after_the_frames_before(tmp_path: Path) -> None:
    write_image_folder(tmp_path, moving_pattern(1, 16, 16), ["1.png"])
    (tmp_path / "2.png").write_bytes(png_header(15000, 15000))
    got, error = read_until_error(open_source(str(tmp_path)))
    assert [f.index for f in got] == [0]
    assert isinstance(error, FrameTooLargeError) and error.width == 15000


BOMB = 12000
"""Side of the PNG bombs below: 144 M pixels, 432 MB as RGB, a 0.4 MB file."""

SMALL_GROWTH = 150 * 2**20
"""Peak memory an open + read refused before decoding may add (the bomb needs 432 MB)."""


@pytest.mark.parametrize("small_frames_first", [0, 3])
def test_a_png_bomb_under_a_video_name_is_refused_before_its_pixels_are_allocated(
    tmp_path: Path, small_frames_first: int
) -> None:
    """FFmpeg's stream probe decodes a first picture whose size the container does not
    declare (a PNG renamed .mp4): it used to decode the whole bomb inside ``av.open``
    (peak +0.9 GB) before any size check. A stream that grows to a bomb mid-way is
    refused at the big picture too, the frames before it read."""
    path = tmp_path / "bomb.mp4"
    path.write_bytes(black_png(64, 64) * small_frames_first + black_png(BOMB, BOMB))
    indices, error, growth = read_measuring_memory(str(path))
    assert error == "FrameTooLargeError"
    assert growth < SMALL_GROWTH, f"peak memory grew by {growth / 2**20:.0f} MB"
    # frame threads may lose the frames in flight when the decoder refuses one
    assert indices == list(range(len(indices))) and len(indices) <= small_frames_first


def test_an_image_whose_header_gives_no_size_is_refused_undecoded(
    tmp_path: Path, no_decoding: None
) -> None:
    odd = tmp_path / "odd.png"
    odd.write_bytes(b"GIF89a" + bytes(200))  # no header of the formats read as images
    with pytest.raises(NotAVideoError, match="header gives its size, so it is not decoded"):
        read_all(open_source(str(odd)))


def test_image_over_the_limit_midway_in_a_folder_keeps_earlier_frames(tmp_path: Path) -> None:
    images = moving_pattern(2, 16, 16) + moving_pattern(1, 64, 64)
    write_image_folder(tmp_path, images, ["1.png", "2.png", "3.png"])
    got, error = read_until_error(open_source(str(tmp_path), SourceSettings(max_frame_pixels=300)))
    assert [f.index for f in got] == [0, 1]
    assert isinstance(error, FrameTooLargeError) and error.width == 64


# --- bad inputs -------------------------------------------------------------------------------


def test_missing_path_is_input_not_found(tmp_path: Path) -> None:
    missing = str(tmp_path / "nope.mp4")
    with pytest.raises(InputNotFoundError, match=r"nope\.mp4"):
        open_source(missing)


@pytest.mark.parametrize("name", ["notes.txt", "fake.mp4", "empty.mkv"])
def test_a_file_ffmpeg_cannot_read_is_not_a_video(tmp_path: Path, name: str) -> None:
    path = tmp_path / name
    path.write_text("" if name.startswith("empty") else "hello, I am text\n" * 20)
    with pytest.raises(NotAVideoError, match=name):
        open_source(str(path))


@pytest.mark.parametrize(("name", "cover_art"), [("speech.m4a", False), ("song.mp4", True)])
def test_audio_only_file_is_not_a_video_even_with_cover_art(
    tmp_path: Path, name: str, cover_art: bool
) -> None:
    path = encode_audio(tmp_path / name, cover_art=cover_art)
    with pytest.raises(NotAVideoError, match="no video stream"):
        open_source(str(path))


@pytest.mark.parametrize("name", ["nothing.mkv", "nothing.mp4"])
def test_video_stream_without_decodable_frames_is_empty(
    tmp_path: Path, frames: list[np.ndarray], name: str
) -> None:
    path = encode_video(tmp_path / name, frames[:10], FPS)
    damage_packets(path, start=0.0, fill="zeros")
    source = open_source(str(path))  # the header is intact: it opens
    with pytest.raises(EmptySourceError):
        read_all(source)


CORRUPTIONS = [
    ("overwritten.mp4", "damage", {}),  # the decoder fails on the garbage
    ("overwritten.mkv", "damage", {}),  # the demuxer skips it: ends before its duration
    ("overwritten.webm", "damage", {}),
    ("truncated.mp4", "truncate", {"movflags": "faststart"}),
    ("truncated.mkv", "truncate", {}),
]


@pytest.mark.parametrize(("name", "how", "muxer"), CORRUPTIONS)
def test_stream_corrupt_halfway_yields_the_good_frames_then_fails(
    tmp_path: Path, name: str, how: str, muxer: dict[str, str]
) -> None:
    originals = moving_pattern(100, 32, 32)
    path = encode_video(tmp_path / name, originals, FPS, container_options=muxer)
    intact = (damage_packets if how == "damage" else truncate_mid_packet)(path, 0.5)
    got, error = read_until_error(open_source(str(path)))

    assert isinstance(error, CorruptStreamError), error
    assert [f.index for f in got] == list(range(len(got)))
    assert intact - 8 <= len(got) <= intact  # at most the decoder's delay is lost
    assert error.frame_index == got[-1].index
    # What was delivered is the real picture, not concealment. A B-frame whose packet
    # was lost leaves a hole, so the original is found by pts, not by decoded index.
    for frame in got:
        original = originals[round(frame.pts * FPS)]
        assert mean_abs_error(frame.image, original) < MAX_LOSSY_ERROR


def test_damaged_mpeg_ts_ends_silently_since_it_declares_no_duration(tmp_path: Path) -> None:
    """Documents a limit: MPEG-TS has no index, FFmpeg skips the garbage, no error."""
    path = encode_video(tmp_path / "broadcast.ts", moving_pattern(100, 32, 32), FPS)
    intact = damage_packets(path, 0.5)
    got, error = read_until_error(open_source(str(path)))
    assert error is None
    assert intact - 8 <= len(got) <= intact + 2


def test_8k_video_is_refused_before_decoding(tmp_path: Path) -> None:
    path = encode_video(
        tmp_path / "8k.mp4",
        [np.zeros((4320, 7680, 3), np.uint8)],
        FPS,
        options={"preset": "ultrafast", "tune": "zerolatency", "threads": "1"},
    )
    with pytest.raises(FrameTooLargeError) as raised:
        open_source(str(path))
    assert (raised.value.width, raised.value.height) == (7680, 4320)
    assert raised.value.max_pixels == 3840 * 2160


def test_resolution_growing_mid_stream_is_refused_at_the_first_large_frame(
    tmp_path: Path,
) -> None:
    segments = moving_pattern(5, 32, 32) + moving_pattern(5, 96, 128)
    path = encode_video(tmp_path / "switch.ts", segments, FPS)
    got, error = read_until_error(open_source(str(path), SourceSettings(max_frame_pixels=32 * 32)))
    assert [f.index for f in got] == [0, 1, 2, 3, 4]
    assert isinstance(error, FrameTooLargeError)
    assert (error.width, error.height) == (128, 96)


def test_duration_limit_stops_after_the_frames_within_it(clip: Path) -> None:
    got, error = read_until_error(open_source(str(clip), SourceSettings(max_duration_s=0.98)))
    assert [f.index for f in got] == list(range(25))  # pts 0 .. 0.96
    assert isinstance(error, SourceTooLongError)
    assert "1.0 s" in str(error)


def test_source_is_closed_after_reading_and_cannot_be_read_twice(clip: Path) -> None:
    source = open_source(str(clip))
    assert len(read_all(source)) == 50
    assert source._container is None  # type: ignore[attr-defined]
    with pytest.raises(RuntimeError, match="already read"):
        iter(source)


def test_stopping_early_closes_the_container(clip: Path) -> None:
    source = open_source(str(clip))
    with source:
        for frame in source:
            if frame.index == 3:
                break
    assert source._container is None  # type: ignore[attr-defined]


# --- open_source ------------------------------------------------------------------------------


def test_unknown_url_scheme_is_a_clear_source_error() -> None:
    with pytest.raises(UnsupportedSourceError, match=r"gopher:// sources are not supported"):
        open_source("gopher://camera.local/stream1")


def test_registered_scheme_opener_gets_the_spec_and_settings(clip: Path) -> None:
    calls: list[tuple[str, SourceSettings]] = []

    @register_scheme("testfeed")
    def opener(spec: str, settings: SourceSettings) -> Source:
        calls.append((spec, settings))
        return VideoFileSource(clip, settings, name=spec)

    try:
        settings = SourceSettings(every=2)
        source = open_source("TESTFEED://cam/1", settings)
        assert calls == [("TESTFEED://cam/1", settings)]
        assert len(read_all(source)) == 25
        with pytest.raises(ValueError, match="registered twice"):
            register_scheme("testfeed")(opener)
    finally:
        unregister_scheme("testfeed")


def test_file_url_opens_the_local_file(clip: Path) -> None:
    source = open_source(clip.as_uri())
    assert isinstance(source, VideoFileSource)
    assert len(read_all(source)) == 50


# --- lifecycle ----------------------------------------------------------------------------------


def test_sources_are_context_managers_and_close_is_idempotent(tmp_path: Path) -> None:
    write_image_folder(tmp_path, moving_pattern(2, 8, 8))
    source = open_source(str(tmp_path))
    with source as entered:
        assert entered is source
    source.close()
    with pytest.raises(RuntimeError):
        iter(source)


def test_frames_batch_with_the_engine_batcher(tmp_path: Path) -> None:
    from engine.frames import batched

    write_image_folder(tmp_path, moving_pattern(3, 8, 8) + moving_pattern(2, 10, 12))
    batches = list(batched(read_all(open_source(str(tmp_path))), 4))
    assert [len(b) for b in batches] == [4, 1]
    assert batches[0].images.shape == (4, 10, 12, 3)


@pytest.mark.parametrize("fps", [1e308, 5e-324, 0.0])
def test_the_sampler_refuses_rates_its_arithmetic_cannot_hold(fps: float) -> None:
    with pytest.raises(ValueError, match="fps must be from"):
        FrameSampler(fps=fps)


# --- confinement (a worker's allowed roots) ------------------------------------------------


def test_a_link_out_of_a_confined_folder_is_refused_before_any_frame(tmp_path: Path) -> None:
    """Every file a confined source opens is checked, not only the folder it was given;
    links that stay inside the roots are fine, and unconfined sources follow any link."""
    root, outside = tmp_path / "root", tmp_path / "outside"
    (secret,) = write_image_folder(outside, moving_pattern(1, 16, 16))
    folder = root / "clips"
    write_image_folder(folder, moving_pattern(2, 16, 16), ["1.png", "3.png"])
    (folder / "2.png").symlink_to(folder / "1.png")  # inside: allowed
    confined = Confinement([root])
    assert len(read_all(open_source(str(folder), confine=confined))) == 3
    (folder / "4.png").symlink_to(secret)
    with pytest.raises(OutsideAllowedRootsError, match=r"4\.png leads outside") as raised:
        open_source(str(folder), confine=confined)
    assert raised.value.path == str(folder / "4.png")
    assert len(read_all(open_source(str(folder)))) == 4  # veritas run: the user's own files
    # A file:// URL of a link, and a link swapped in after the folder was listed.
    with pytest.raises(OutsideAllowedRootsError):
        open_source(f"file://{folder / '4.png'}", confine=confined)
    (folder / "4.png").unlink()
    source = open_source(str(folder), confine=confined)
    (folder / "3.png").unlink()
    (folder / "3.png").symlink_to(secret)
    got, error = read_until_error(source)
    assert [f.index for f in got] == [0, 1] and isinstance(error, OutsideAllowedRootsError)
