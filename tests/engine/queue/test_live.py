"""Live feeds over loopback: MPEG-TS over TCP and UDP from a sender process, HTTP and HLS
files; reconnection after a cut, giving up on a dead feed, and credentials masked."""

from __future__ import annotations

import functools
import http.server
import itertools
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import av
import pytest

from engine.sources import open_source
from engine.sources.live import (
    FeedRefusedError,
    FeedUnavailableError,
    LiveFeedSource,
    LiveSettings,
    redact,
    redact_url,
)
from tests.engine.queue.conftest import free_port, wait_for
from tests.media import black_png, encode_video, moving_pattern, read_measuring_memory

QUICK = LiveSettings(
    open_timeout_s=1.0, read_timeout_s=1.0, reconnect_min_s=0.1, reconnect_max_s=0.4, give_up_s=20
)


def test_a_cut_tcp_feed_is_reconnected_and_its_frames_keep_their_order(feed):
    port = free_port()
    url = f"tcp://127.0.0.1:{port}"
    sender = feed(f"{url}?listen=1")
    source = LiveFeedSource(url, live=QUICK, start_index=100)
    frames = []
    with source:
        for frame in source:
            frames.append(frame)
            if len(frames) == 15:
                sender.kill()  # the broadcast drops ...
                sender = feed(f"{url}?listen=1")  # ... and comes back
            if len(frames) == 40:
                break
    indices = [f.index for f in frames]
    assert indices == list(range(100, 140))  # numbering goes on across the cut
    pts = [f.pts for f in frames]
    assert all(b > a for a, b in itertools.pairwise(pts))
    assert source.connections == 2 and source.reconnects >= 1
    assert not source.finite
    assert frames[0].image.shape == (64, 64, 3)


def test_a_consumer_that_holds_the_reader_is_not_a_stall_of_the_feed(feed):
    """Lossless back-pressure: the reader is held 2.5 s (over ``stall_s``) while the feed
    goes on into the socket; its frames then come with contiguous timestamps, and that
    is the consumer's wait, not a silence of the feed."""
    url = f"tcp://127.0.0.1:{free_port()}"
    feed(f"{url}?listen=1")
    source = LiveFeedSource(url, live=LiveSettings(read_timeout_s=5.0, stall_s=1.5))
    pts = []
    with source:
        for frame in source:
            pts.append(frame.pts)
            if len(pts) == 20:
                time.sleep(2.5)
            if len(pts) == 40:
                break
    assert source.lost == {"feed_gap": 0, "stall": 0, "reconnect": 0}
    assert source.discontinuities == 0
    assert max(b - a for a, b in itertools.pairwise(pts)) < 0.1  # no 2.5 s leap


def test_a_feed_that_never_sends_a_frame_fails_with_the_reason():
    url = f"tcp://127.0.0.1:{free_port()}"  # nobody listens
    settings = LiveSettings(0.5, 0.5, 0.05, 0.1, give_up_s=1.0)
    start = time.monotonic()
    with pytest.raises(FeedUnavailableError) as e:
        list(LiveFeedSource(url, live=settings))
    assert time.monotonic() - start < 10
    assert "no frame from the feed for" in str(e.value) and "refused" in str(e.value).lower()
    assert e.value.frames == 0


def test_stopping_a_feed_ends_it_during_its_back_off():
    stop = threading.Event()
    source = LiveFeedSource(
        f"tcp://127.0.0.1:{free_port()}",
        live=LiveSettings(0.5, 0.5, reconnect_min_s=30, reconnect_max_s=30, give_up_s=600),
        stop=stop,
    )
    done = threading.Event()

    def read() -> None:
        list(source)
        done.set()

    threading.Thread(target=read, daemon=True).start()
    wait_for(lambda: source.reconnects >= 1, 10, "the first failed connection")
    stop.set()
    assert done.wait(5), "the source kept waiting out its 30 s back-off"


def test_a_udp_feed_is_read(feed):
    port = free_port()
    url = f"udp://127.0.0.1:{port}"
    source = LiveFeedSource(url, live=QUICK)
    feed(f"{url}?pkt_size=1316")
    got = []
    with source:
        for frame in source:
            got.append(frame.index)
            if len(got) == 20:
                break
    assert got == list(range(20))


@pytest.fixture
def http_folder(tmp_path):
    """A folder served over HTTP on a free local port: ``(folder, base_url)``."""
    folder = tmp_path / "www"
    folder.mkdir()

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(Quiet, directory=str(folder))
    )
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield folder, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def write_hls(folder: Path, n: int) -> Path:
    """An HLS VOD playlist (``#EXT-X-ENDLIST``) of ``n`` frames in 1-second segments."""
    playlist = folder / "index.m3u8"
    with av.open(str(playlist), "w", format="hls",
                 options={"hls_time": "1", "hls_playlist_type": "vod"}) as c:  # fmt: skip
        stream = c.add_stream("libx264", rate=25)
        stream.width = stream.height = 64
        stream.pix_fmt = "yuv420p"
        stream.codec_context.options = {"g": "25"}
        for i, image in enumerate(moving_pattern(n, 64, 64)):
            frame = av.VideoFrame.from_ndarray(image, format="rgb24")
            frame.pts = i
            for packet in stream.encode(frame):
                c.mux(packet)
        for packet in stream.encode(None):
            c.mux(packet)
    return playlist


def test_finite_streams_over_http_and_hls_end_and_resume_like_files(http_folder):
    folder, base = http_folder
    encode_video(folder / "clip.mp4", moving_pattern(30, 64, 64))
    write_hls(folder, 60)
    for name, n in (("clip.mp4", 30), ("index.m3u8", 60)):
        source = open_source(f"{base}/{name}")  # the registered opener
        assert isinstance(source, LiveFeedSource)
        with source:
            assert [f.index for f in source] == list(range(n))
        assert source.finite and source.reconnects == 0
        resumed = LiveFeedSource(f"{base}/{name}", live=QUICK, start_index=n - 5)
        with resumed:
            assert [f.index for f in resumed] == list(range(n - 5, n))
        past_the_end = LiveFeedSource(f"{base}/{name}", live=QUICK, start_index=n)
        with past_the_end:  # every frame was recorded before: nothing left, no error
            assert list(past_the_end) == []


def test_a_png_bomb_from_a_server_is_refused_before_its_pixels_are_allocated(http_folder):
    """A server sending a 0.4 MB PNG that decodes to 432 MB: FFmpeg's probe used to decode
    it (peak +0.4 GB); the size limit now holds inside the decoder, and the failure is the
    frame size, not a refusal read as "Invalid argument"."""
    folder, base = http_folder
    (folder / "bomb.mp4").write_bytes(black_png(12000, 12000))
    indices, error, growth = read_measuring_memory(f"{base}/bomb.mp4")
    assert (indices, error) == ([], "FrameTooLargeError")
    assert growth < 150 * 2**20, f"peak memory grew by {growth / 2**20:.0f} MB"


def test_credentials_are_masked_in_names_errors_and_text():
    assert redact_url("rtsp://admin:hunter2@cam/live?token=abc&x=1") == (
        "rtsp://admin:***@cam/live?token=***&x=1"
    )
    assert redact_url("rtmp://host/live/streamkey123") == "rtmp://host/live/***"
    assert redact_url("srt://h:9000?passphrase=p4ss&latency=20") == (
        "srt://h:9000?passphrase=***&latency=20"
    )
    assert redact_url("rediss://default:pw@redis:6380/0") == "rediss://default:***@redis:6380/0"
    assert redact_url("/data/clip.mp4") == "/data/clip.mp4"
    assert redact("failed: 'redis://:pw@h:6379' and 'https://tok@h/x'") == (
        "failed: 'redis://:***@h:6379' and 'https://***@h/x'"
    )
    source = LiveFeedSource("rtsp://admin:hunter2@127.0.0.1:9/live")
    assert "hunter2" not in source.name and "hunter2" not in repr(source)


class _Answers(http.server.BaseHTTPRequestHandler):
    """A web server whose answers are not video: a redirect to file://, a 404, a page."""

    def do_GET(self) -> None:
        if self.path == "/redirect":
            self.send_response(302)
            self.send_header("Location", "file:///etc/passwd")
            self.end_headers()
        elif self.path == "/page":
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.end_headers()
            self.wfile.write(b"<html><body>not a stream</body></html>" * 50)
        else:
            self.send_error(404)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def web() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Answers)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


@pytest.mark.parametrize(
    ("path", "reason"),
    [("/redirect", "Invalid argument"), ("/missing", "404 Not Found"), ("/page", "output error")],
)
def test_an_answer_that_is_not_video_fails_at_once_with_the_real_reason(web, path, reason):
    """A retry would get the same answer: no reconnection, no give-up wait."""
    patient = LiveSettings(1.0, 1.0, 0.1, 0.4, give_up_s=600, first_frame_s=600)
    start = time.monotonic()
    with pytest.raises(FeedRefusedError, match=reason) as e:
        list(LiveFeedSource(web + path, live=patient))
    assert time.monotonic() - start < 5
    assert "is not a video stream" in str(e.value)


def test_an_http_url_at_a_redis_port_fails_at_once(redis_server):
    """Redis hangs up on an HTTP request: that server will never send a stream."""
    url = f"http://127.0.0.1:{redis_server.port}/live"
    patient = LiveSettings(1.0, 1.0, 0.1, 0.4, give_up_s=600, first_frame_s=600)
    with pytest.raises(FeedRefusedError, match="End of file"):
        list(LiveFeedSource(url, live=patient))


def test_a_server_that_accepts_and_never_sends_is_named_so_and_bounded(tmp_path):
    """The reason says it connected; a feed that never gave a frame holds its slot for
    first_frame_s, not give_up_s."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    url = f"http://127.0.0.1:{listener.getsockname()[1]}/live"
    settings = LiveSettings(0.5, 0.5, 0.05, 0.1, give_up_s=600, first_frame_s=1.5)
    start = time.monotonic()
    try:
        with pytest.raises(FeedUnavailableError) as e:
            list(LiveFeedSource(url, live=settings))
    finally:
        listener.close()
    assert time.monotonic() - start < 10
    assert "connected, but no stream header arrived within 0.5 s" in str(e.value)
    assert e.value.frames == 0


def test_veritas_run_reads_live_feeds_with_the_queue_live_settings():
    """``veritas run`` (``engine.runner.run_local``) gives a live URL the ``[queue]
    live_*`` settings, as workers do: a feed that never answers fails after
    ``live_first_frame_s`` (here 1.5 s), not the 30 s default."""
    from engine.runner import run_local
    from tests.conftest import tiny_config

    config = tiny_config(
        "queue.live_first_frame_s=1.5",
        "queue.live_open_timeout_s=0.5",
        "queue.live_reconnect_min_s=0.1",
        "queue.live_reconnect_max_s=0.2",
    )
    url = f"tcp://127.0.0.1:{free_port()}?timeout=500000"  # nothing listens there
    summary = run_local([url], config)
    (error,) = [t.error for t in summary.sources.values()]
    assert error and "no frame from the feed for 1." in error, error
