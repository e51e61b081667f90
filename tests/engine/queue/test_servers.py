"""Live feeds from real streaming servers on loopback, through ``veritas run`` and the queue.

For RTSP (GStreamer's RTSP server re-serving an ffmpeg RTP publisher), RTMP (nginx-rtmp
fed by ffmpeg), SRT (srt-live-transmit relaying an encrypted ffmpeg publisher, read
through the ffmpeg bridge) and live HLS (ffmpeg's sliding playlist behind an HTTP
server), each test shows: records flowing with the face found; the server killed and
restarted; the publisher killed and restarted behind a server that stayed up; frame
numbers and times monotonic and true throughout (no timestamp wrap read as real time);
lost frames counted by cause; latency reported; and the end (Ctrl-C for ``veritas
run``, cancel for a job) within seconds. Servers come from Debian packages that
``make test`` installs (``make live-servers``); every server is stopped by its test.
"""

from __future__ import annotations

import itertools
import json
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from engine.queue.job import JobStatus
from engine.queue.keys import GROUP
from engine.queue.queue import Queue
from engine.sources.live import LiveFeedSource, LiveSettings
from tests.conftest import TINY_FLAGS
from tests.engine.queue.conftest import REPO, consumers_ready, wait_for
from tests.servers import PACKAGES, SERVERS, Server, SrtServer, missing

pytestmark = pytest.mark.slow

PROTOCOLS = list(SERVERS)

LAG_BUDGET_S = 2.0
"""The real-time jobs' lag budget (``queue.live_max_lag_s``)."""

LIVE_FLAGS = [
    "--set", "queue.live_read_timeout_s=3.0",
    "--set", "queue.live_open_timeout_s=3.0",
    "--set", "queue.live_reconnect_min_s=0.2",
    "--set", "queue.live_reconnect_max_s=1.0",
    "--set", "queue.live_buffer_frames=4",
    "--set", f"queue.live_max_lag_s={LAG_BUDGET_S}",
]  # fmt: skip
"""Short timeouts, so that each outage is noticed within the test's patience."""

LOAD_FLAGS = [
    "--set", "pipeline.xai_method=integrated_gradients",
    "--set", "pipeline.ig_steps=128",
    "--set", "pipeline.fake_threshold=1.0",
]  # fmt: skip
"""An analysis several times slower than the 25 fps feeds: every face is checked (none
reaches p_fake 1.0) with 128-step Integrated Gradients, about 6 frames/s for the tiny
models on one core of the 2-core machine the suite was written on (35 frames/s with
the default Guided Backprop), so a real-time job must drop frames and a lossless one
falls behind."""

BATCH_SLACK_S = 6.0
"""The analysis of one batch under LOAD_FLAGS on a loaded 2-core machine, with room."""

DOWN_S = 3.0
"""How long a server or publisher stays down."""


@pytest.fixture(params=PROTOCOLS)
def server(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Server]:
    protocol = request.param
    absent = missing(*PACKAGES[protocol])
    if absent:
        pytest.fail(f"{protocol}: {absent} not installed: run 'make test' (make live-servers)")
    s = SERVERS[protocol](tmp_path / protocol).start()
    yield s
    s.stop()


def outages(server: Server, records: Callable[[], list[dict[str, Any]]]) -> float:
    """Records flow; the server, then the publisher behind it, go down for
    ``DOWN_S`` and come back; records of frames that arrived after each comeback flow
    again. Returns the wall time the scenario took from its first record."""

    def arrived_after(t: float) -> bool:
        return sum(1 for r in records() if r["arrived"] > t) >= 10

    wait_for(lambda: len(records()) >= 10, 90, f"{server.protocol}: the first records")
    started = time.monotonic()
    server.restart_server(DOWN_S)
    back = time.time()
    wait_for(lambda: arrived_after(back), 90, f"{server.protocol}: records after its restart")
    assert server.publisher_apart
    server.stop_publisher()
    time.sleep(DOWN_S)
    server.start_publisher()
    back = time.time()
    wait_for(
        lambda: arrived_after(back),
        90,
        f"{server.protocol}: records after the publisher's restart behind the server",
    )
    return time.monotonic() - started


def check_records(recs: list[dict[str, Any]], scenario_s: float, protocol: str) -> None:
    frames = [r["frame"] for r in recs]
    pts = [r["pts"] for r in recs]
    assert all(b > a for a, b in itertools.pairwise(frames)), f"{protocol}: frames {frames}"
    assert all(b > a for a, b in itertools.pairwise(pts)), f"{protocol}: pts {pts}"
    # True time: the pts span is the wall time the feed ran, never a leap (a 32-bit
    # millisecond wrap is 4.3 million seconds).
    assert pts[-1] - pts[0] < scenario_s + 60, f"{protocol}: pts ran ahead of real time: {pts}"
    no_face = [r["frame"] for r in recs if not r["faces"]]
    assert len(no_face) <= 0.1 * len(recs), f"{protocol}: no face in frames {no_face} of {frames}"
    assert all(isinstance(r["arrived"], float) for r in recs)


class VeritasRun:
    """``veritas run [--realtime] URL`` in a subprocess: its records as they are
    written, then Ctrl-C."""

    def __init__(self, url: str, folder: Path, *flags: str, realtime: bool = True) -> None:
        self.out, self.summary = folder / "records.jsonl", folder / "summary.json"
        self.log = folder / "run.log"
        self.process = subprocess.Popen(
            [sys.executable, "-m", "engine.cli", "run", url, *(["--realtime"] * realtime),
             "--out", str(self.out), "--summary-json", str(self.summary),
             *TINY_FLAGS, *LIVE_FLAGS, *flags],
            cwd=REPO, stdout=subprocess.DEVNULL, stderr=self.log.open("wb"),
        )  # fmt: skip

    def records(self) -> list[dict[str, Any]]:
        """The whole lines written so far (fails if the run ended by itself)."""
        assert self.process.poll() is None, self.log.read_text()[-3000:]
        if not self.out.exists():
            return []
        lines = self.out.read_text().splitlines(keepends=True)
        return [json.loads(line) for line in lines if line.endswith("\n")]

    def interrupt(self) -> list[dict[str, Any]]:
        """Ctrl-C: the run must end with status 130; every record it wrote."""
        self.process.send_signal(signal.SIGINT)
        assert self.process.wait(30) == 130, self.log.read_text()[-3000:]
        return [json.loads(line) for line in self.out.read_text().splitlines()]

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()


def test_veritas_run_reads_a_live_server_under_load_through_outages_and_stops_on_ctrl_c(
    server: Server, tmp_path: Path
) -> None:
    run = VeritasRun(server.url, tmp_path, *LOAD_FLAGS)
    try:
        scenario_s = outages(server, run.records)
        recs = run.interrupt()
    finally:
        run.kill()
    check_records(recs, scenario_s, server.protocol)
    assert len({r["source"] for r in recs}) == 1
    report = json.loads(run.summary.read_text())
    assert report["interrupted"] is True
    (feed,) = report["sources"].values()
    assert set(feed["lost"]) >= {"realtime", "feed_gap", "stall", "reconnect"}
    assert_outages_counted(feed["lost"], feed)
    assert_real_time_under_load(feed["lost"], feed["latency_ms"], feed)
    assert_no_secret(server, run.log.read_text(), *(r["source"] for r in recs))


def assert_outages_counted(lost: dict[str, int], report: object) -> None:
    """The outages are counted in frames, by cause (at the feed's rate over the time no
    frame arrived: shorter than DOWN_S where a reader had read ahead, as live HLS)."""
    assert lost["reconnect"] + lost["stall"] + lost["feed_gap"] > 0, report


def assert_real_time_under_load(
    lost: dict[str, int], latency_ms: dict[str, float], report: object
) -> None:
    """Under LOAD_FLAGS a real-time reading drops most frames, counted, and each record
    comes within the lag budget plus the analysis of one batch (unbounded without the
    drop: the issue's feeds fell 29 to 94 s behind)."""
    assert lost["realtime"] > 0, report
    assert 0 < latency_ms["p99_ms"] < (LAG_BUDGET_S + BATCH_SLACK_S) * 1000, report


def assert_no_secret(server: Server, *texts: str) -> None:
    """The SRT passphrase never reaches records or logs."""
    secret = getattr(server, "passphrase", None)
    if secret:
        assert not any(secret in t for t in texts)


def test_a_job_reads_a_live_server_under_load_through_outages_with_losses_and_a_quick_cancel(
    server: Server, redis_server, worker
) -> None:
    client = redis_server.client()
    queue = Queue(client)
    w = worker(redis_server, *LIVE_FLAGS, *LOAD_FLAGS, name="live")
    wait_for(lambda: consumers_ready(client, ["live"]), 90, "the worker")
    job = queue.enqueue(server.url)
    try:
        scenario_s = outages(server, lambda: list(queue.results(job)))
    except AssertionError as error:
        state = queue.job(job)
        raise AssertionError(
            f"{error}\njob {state.status} {state.error}\n{w.logs()[-3000:]}"
        ) from None
    progress = wait_for(
        lambda: (p := queue.job(job).progress) and p.get("latency_ms") and p, 30, "latency"
    )
    check_records(list(queue.results(job)), scenario_s, server.protocol)
    assert queue.job(job).mode == progress["mode"] == "realtime"
    lost = progress["lost"]
    assert set(lost) >= {"realtime", "feed_gap", "stall", "reconnect"}
    assert_outages_counted(lost, f"{progress}\n{w.logs()[-2500:]}")
    assert_real_time_under_load(lost, progress["latency_ms"], progress)
    assert progress["lag_s"] < LAG_BUDGET_S + BATCH_SLACK_S, progress

    cancelled = time.monotonic()
    queue.cancel(job)
    wait_for(lambda: client.xpending(queue.keys.jobs, GROUP)["pending"] == 0, 10, "the cancel")
    assert queue.job(job).status is JobStatus.CANCELLED
    let_go = time.monotonic() - cancelled
    n = len(list(queue.results(job)))
    time.sleep(1.0)
    assert len(list(queue.results(job))) == n  # no record after the cancel was taken
    assert let_go < 10, let_go
    assert w.alive()
    assert_no_secret(server, w.logs(), *(r["source"] for r in queue.results(job)))


def test_veritas_run_listens_for_an_srt_caller(tmp_path: Path) -> None:
    """SRT listener mode: the encoder calls (encrypted, 256-bit key, a streamid)."""
    if missing("ffmpeg"):
        pytest.fail("ffmpeg not installed: run 'make test' (make live-servers)")
    other = SrtServer(tmp_path / "srt-caller", veritas_mode="listener").start()
    run = VeritasRun(other.url, tmp_path)
    try:
        wait_for(lambda: len(run.records()) >= 10, 90, "records from the caller")
        recs = run.interrupt()
    finally:
        run.kill()
        other.stop()
    check_records(recs, 60, other.protocol)
    assert_no_secret(other, run.log.read_text(), *(r["source"] for r in recs))


FEED_FPS = 25


def behind(recs: list[dict[str, Any]]) -> bool:
    """The records cover under half the frames their pts span held: frames were skipped."""
    if len(recs) < 40:
        return False
    return len(recs) < 0.5 * (recs[-1]["pts"] - recs[0]["pts"]) * FEED_FPS


def assert_every_frame_counted(recs: list[dict[str, Any]], lost: dict[str, int]) -> None:
    """Live HLS read losslessly by an analysis slower than the feed: the reader falls
    behind the sliding playlist, segments leave it unread, and every frame the feed
    produced over the records' span is either a record or lost, by cause (the issue's
    job analysed 14.5 of 25 frames/s with nothing counted)."""
    check_records(recs, 600, "hls")
    assert lost["feed_gap"] > 0, lost
    assert lost["realtime"] == 0, lost  # lossless: nothing dropped for time
    produced = round((recs[-1]["pts"] - recs[0]["pts"]) * FEED_FPS) + 1
    accounted = len(recs) + sum(lost.values())
    # Frames lost before the first record (a reconnect gap ending at it) are counted
    # too: hence a little over, never under.
    assert 0.95 * produced <= accounted <= 1.1 * produced, (len(recs), lost, produced)


def live_hls(tmp_path: Path) -> Server:
    if missing(*PACKAGES["hls"]):
        pytest.fail("ffmpeg not installed: run 'make test' (make live-servers)")
    return SERVERS["hls"](tmp_path / "hls").start()


def test_veritas_run_counts_the_hls_segments_a_slow_lossless_reading_missed(
    tmp_path: Path,
) -> None:
    hls = live_hls(tmp_path)
    run = VeritasRun(hls.url, tmp_path, *LOAD_FLAGS, realtime=False)
    try:
        wait_for(lambda: behind(run.records()), 120, "the reader falling behind the playlist")
        recs = run.interrupt()
    finally:
        run.kill()
        hls.stop()
    (feed,) = json.loads(run.summary.read_text())["sources"].values()
    assert_every_frame_counted(recs, feed["lost"])


def test_a_lossless_job_counts_the_hls_segments_it_missed(
    tmp_path: Path, redis_server, worker
) -> None:
    hls = live_hls(tmp_path)
    client = redis_server.client()
    queue = Queue(client)
    w = worker(redis_server, *LIVE_FLAGS, *LOAD_FLAGS, name="lossless")
    try:
        wait_for(lambda: consumers_ready(client, ["lossless"]), 90, "the worker")
        job = queue.enqueue(hls.url, mode="lossless")
        wait_for(lambda: behind(list(queue.results(job))), 120, "the job falling behind")
        queue.cancel(job)
        wait_for(lambda: client.xpending(queue.keys.jobs, GROUP)["pending"] == 0, 10, "the end")
    finally:
        hls.stop()
    assert queue.job(job).mode == "lossless"
    recs = list(queue.results(job))
    progress = queue.job(job).progress
    assert progress["frames"] == len(recs), (progress, len(recs), w.logs()[-2000:])
    assert_every_frame_counted(recs, progress["lost"])


def test_an_rtmp_publisher_away_behind_nginx_is_a_stall_and_time_stays_true(
    tmp_path: Path,
) -> None:
    """nginx-rtmp keeps the player connected while the publisher is away (shorter than
    the read timeout), then stamps the new publisher's frames right after the last
    ones: the silence must show in ``pts`` and be counted, not vanish."""
    if missing(*PACKAGES["rtmp"]):
        pytest.fail("nginx-rtmp not installed: run 'make test' (make live-servers)")
    server = SERVERS["rtmp"](tmp_path / "rtmp").start()
    source = LiveFeedSource(server.url, live=LiveSettings(read_timeout_s=10.0))
    away_s = 2.5
    frames: list[tuple[float, float]] = []  # (pts, wall)

    def publisher_away() -> None:  # apart from the reader, which waits on its socket
        server.stop_publisher()
        time.sleep(away_s)
        server.start_publisher()

    try:
        for frame in source:
            frames.append((frame.pts, time.time()))
            if len(frames) == 75:
                threading.Thread(target=publisher_away, daemon=True).start()
            if len(frames) == 150:
                break
    finally:
        source.close()
        server.stop()
    assert source.reconnects == 0  # the same connection throughout
    assert source.lost["stall"] >= away_s * FEED_FPS * 0.8, source.lost
    pts = [p for p, _ in frames]
    assert all(b > a for a, b in itertools.pairwise(pts))
    gap = max(b - a for a, b in itertools.pairwise(pts))
    assert gap >= away_s, pts  # the silence shows at (at least) its length
    # True time: from a frame before the silence (after the burst of frames a new
    # connection decodes at once) to the last, pts kept pace with the wall, not falling
    # ``away_s`` behind it.
    (p0, w0), (p1, w1) = frames[60], frames[-1]
    assert abs((p1 - p0) - (w1 - w0)) < 1.0, frames
