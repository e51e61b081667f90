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
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from engine.queue.job import JobStatus
from engine.queue.keys import GROUP
from engine.queue.queue import Queue
from tests.conftest import TINY_FLAGS
from tests.engine.queue.conftest import REPO, consumers_ready, wait_for
from tests.servers import PACKAGES, SERVERS, Server, SrtServer, missing

pytestmark = pytest.mark.slow

PROTOCOLS = list(SERVERS)

LIVE_FLAGS = [
    "--set", "queue.live_read_timeout_s=3.0",
    "--set", "queue.live_open_timeout_s=3.0",
    "--set", "queue.live_reconnect_min_s=0.2",
    "--set", "queue.live_reconnect_max_s=1.0",
    "--set", "queue.live_buffer_frames=4",
    "--set", "queue.live_max_lag_s=2.0",
]  # fmt: skip
"""Short timeouts, so that each outage is noticed within the test's patience."""

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
    """``veritas run --realtime URL`` in a subprocess: its records as they are written,
    then Ctrl-C."""

    def __init__(self, url: str, folder: Path) -> None:
        self.out, self.summary = folder / "records.jsonl", folder / "summary.json"
        self.log = folder / "run.log"
        self.process = subprocess.Popen(
            [sys.executable, "-m", "engine.cli", "run", url, "--realtime",
             "--out", str(self.out), "--summary-json", str(self.summary),
             *TINY_FLAGS, *LIVE_FLAGS],
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


def test_veritas_run_reads_a_live_server_through_outages_and_stops_on_ctrl_c(
    server: Server, tmp_path: Path
) -> None:
    run = VeritasRun(server.url, tmp_path)
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
    assert feed["latency_ms"]["p99_ms"] > 0
    assert set(feed["lost"]) >= {"realtime", "feed_gap", "stall", "reconnect"}
    assert_no_secret(server, run.log.read_text(), *(r["source"] for r in recs))


def assert_no_secret(server: Server, *texts: str) -> None:
    """The SRT passphrase never reaches records or logs."""
    secret = getattr(server, "passphrase", None)
    if secret:
        assert not any(secret in t for t in texts)


def test_a_job_reads_a_live_server_through_outages_with_losses_latency_and_a_quick_cancel(
    server: Server, redis_server, worker
) -> None:
    client = redis_server.client()
    queue = Queue(client)
    w = worker(redis_server, *LIVE_FLAGS, name="live")
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
    # The outages are counted in frames, by cause (at the feed's rate over the time no
    # frame arrived: shorter than DOWN_S where a reader had read ahead, as live HLS).
    assert lost["reconnect"] + lost["stall"] + lost["feed_gap"] > 0, (
        f"{progress}\n{w.logs()[-2500:]}"
    )
    assert progress["latency_ms"]["p99_ms"] > 0
    assert progress["lag_s"] < 2.0 + 10.0  # the lag budget (plus one batch), not minutes

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
    caller = SrtServer(tmp_path / "srt-caller", veritas_listens=True).start()
    run = VeritasRun(caller.url, tmp_path)
    try:
        wait_for(lambda: len(run.records()) >= 10, 90, "records from the caller")
        recs = run.interrupt()
    finally:
        run.kill()
        caller.stop()
    check_records(recs, 60, caller.protocol)
    assert_no_secret(caller, run.log.read_text(), *(r["source"] for r in recs))
