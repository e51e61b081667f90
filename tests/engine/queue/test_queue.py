"""The queue against a real redis-server: backpressure, trimming, exactly-once results,
size policies, state changes that cancellation always wins, claims and heartbeats,
and a key layout that works on Redis Cluster."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from urllib.parse import quote

import cv2
import numpy as np
import pytest
import redis

from engine.cli import main
from engine.config import QueueConfig
from engine.queue.connection import connect
from engine.queue.errors import (
    InvalidJobError,
    JobNotCancellableError,
    NoSuchJobError,
    QueueFullError,
)
from engine.queue.heartbeat import Heartbeat
from engine.queue.job import JobSpec, JobStatus, Mode
from engine.queue.keys import GROUP
from engine.queue.queue import Queue
from engine.queue.results import ResultsLostError, ResultWriter
from engine.sources import open_source
from engine.sources.urls import file_url_path
from tests.engine.queue.conftest import REPO, free_port, wait_for


def record(job: str, frame: int) -> dict:
    return {
        "schema": 1,
        "job": job,
        "source": "/x.mp4",
        "frame": frame,
        "pts": frame / 25,
        "faces": [],
        "verdict": "no_face",
        "weights": "untrained",
        "timings_ms": {},
    }


def write(
    client: redis.Redis, queue: Queue, job: str, frames: range, stored: int = -1
) -> tuple[int, int]:
    writer = ResultWriter(queue.keys, queue.config.results_max_len)
    pipe = client.pipeline(transaction=False)
    writer.add(pipe, job, [record(job, f) for f in frames], stored)
    appended = ResultWriter.count(pipe.execute(raise_on_error=False))
    return appended.written, appended.duplicates


def take(client: redis.Redis, queue: Queue, consumer: str, count: int = 10) -> list[str]:
    reply = client.xreadgroup(GROUP, consumer, {queue.keys.jobs: ">"}, count=count)
    return [entry.decode() for _, entries in reply for entry, _ in entries]


def test_submit_refuses_when_the_queue_is_full_and_says_so(redis_server, capsys):
    client = redis_server.client()
    queue = Queue(client, QueueConfig(max_queue_length=3))
    for i in range(3):
        queue.enqueue(f"/data/{i}.mp4")
    with pytest.raises(QueueFullError, match="3 jobs waiting or running, limit 3"):
        queue.enqueue("/data/3.mp4")
    # The CLI exits 75 (try again later) with the reason, and never shows the password.
    code = main(["submit", "/data/x.mp4", "--redis", redis_server.url,
                 "--set", "queue.max_queue_length=3"])  # fmt: skip
    out, err = capsys.readouterr()
    assert code == 75 and "the queue is full" in err and out == ""
    assert redis_server.password not in err
    # A job taken and finished frees a place.
    entry = take(client, queue, "w")[0]
    queue.ack(entry)
    assert queue.backlog() == 2
    queue.enqueue("/data/4.mp4")


def test_submit_prints_one_id_per_source_with_absolute_paths(redis_server, capsys, tmp_path):
    (tmp_path / "a.mp4").write_bytes(b"")
    code = main(["submit", str(tmp_path / "a.mp4"), "rtsp://cam:554/live",
                 "--redis", redis_server.url, "--fps", "5"])  # fmt: skip
    ids = capsys.readouterr().out.split()
    assert code == 0 and len(ids) == 2
    queue = Queue(redis_server.client())
    job = queue.job(ids[0])
    assert job.status is JobStatus.QUEUED and job.source == str(tmp_path / "a.mp4")
    assert queue.info()["backlog"] == 2
    with pytest.raises(InvalidJobError, match="already taken"):
        queue.enqueue("/data/x.mp4", job_id=ids[0])


# A command run in a child process that reports which heavy libraries it imported.
_AUDIT = (
    "import sys, runpy; sys.argv = ['veritas'] + sys.argv[1:]\n"
    "try:\n"
    "    runpy.run_module('engine.cli', run_name='__main__')\n"
    "finally:\n"
    "    heavy = ('torch', 'numpy', 'cv2', 'av', 'engine.models', 'engine.pipeline')\n"
    "    print('IMPORTED', sorted(m for m in heavy if m in sys.modules), file=sys.stderr)\n"
)


@pytest.mark.parametrize("model_flags", [[], ["--set", 'models.detector="xception_tiny"']])
def test_the_queue_commands_run_without_torch_or_any_decoder(redis_server, tmp_path, model_flags):
    """submit, status, results and cancel answer in a fraction of a second: a real run
    against Redis imports neither torch nor NumPy, OpenCV, PyAV or the models, with the
    default model names and with another bundled one."""
    clip = tmp_path / "a.mp4"
    clip.write_bytes(b"")

    def veritas(*args: str) -> str:
        out = subprocess.run(
            [sys.executable, "-c", _AUDIT, *args, "--redis", redis_server.url, *model_flags],
            capture_output=True, text=True, timeout=60, cwd=REPO,
        )  # fmt: skip
        assert out.returncode == 0, out.stderr
        assert "IMPORTED []" in out.stderr, out.stderr
        return out.stdout

    job_id = veritas("submit", str(clip), "rtsp://cam:554/live").split()[0]
    assert "waiting" in veritas("status")
    veritas("results", job_id)
    veritas("cancel", job_id)
    assert Queue(redis_server.client()).job(job_id).status is JobStatus.CANCELLED


def test_an_unknown_model_name_is_still_refused_by_the_queue_commands(redis_server, capsys):
    """Names outside the bundled catalog go to the registries, which know plugins too."""
    code = main(["status", "--redis", redis_server.url, "--set", 'models.detector="xceptoin"'])
    err = capsys.readouterr().err
    assert code != 0 and "models.detector" in err and "xception" in err


def test_a_refused_multi_source_submit_enqueues_nothing(redis_server, capsys):
    """All or none: 2 of 3 places taken and 2 sources submitted -> exit 75, the queue
    and the job hashes exactly as before; the same for a taken id among new ones."""
    client = redis_server.client()
    queue = Queue(client, QueueConfig(max_queue_length=3))
    queue.enqueue("/data/0.mp4", job_id="taken")
    queue.enqueue("/data/1.mp4")
    before = sorted(client.scan_iter("veritas:job:*"))
    code = main(["submit", "/data/a.mp4", "/data/b.mp4", "--redis", redis_server.url,
                 "--set", "queue.max_queue_length=3"])  # fmt: skip
    out, err = capsys.readouterr()
    assert code == 75 and out == "" and "nothing was enqueued" in err and "2 jobs asked" in err
    assert queue.backlog() == 2 and sorted(client.scan_iter("veritas:job:*")) == before
    with pytest.raises(InvalidJobError, match="'taken' is already taken"):
        queue.enqueue_many(["/data/n.mp4", "/data/t.mp4"], job_ids=["fresh", "taken"])
    with pytest.raises(NoSuchJobError):
        queue.job("fresh")
    assert queue.backlog() == 2 and queue.job("taken").source == "/data/0.mp4"
    # The one place left still takes one job.
    (job_id,) = queue.enqueue_many(["/data/last.mp4"])
    assert queue.job(job_id).status is JobStatus.QUEUED and queue.backlog() == 3
    assert client.ttl(queue.keys.job(job_id)) == -1  # kept for good once in the stream


def test_a_path_that_is_not_utf8_is_refused_without_a_traceback(redis_server, tmp_path):
    """A file name with bytes that are not UTF-8 cannot travel in a msgpack string: submit
    says so and how to name it instead (a file:// URL with the bytes %-escaped)."""
    name = os.fsencode(tmp_path) + b"/caf\xe9.png"
    with open(name, "wb") as f:  # OpenCV's own file functions take UTF-8 names only
        f.write(cv2.imencode(".png", np.zeros((32, 32, 3), np.uint8))[1].tobytes())
    out = subprocess.run(
        [sys.executable, "-m", "engine.cli", "submit", name, "--redis", redis_server.url],
        capture_output=True, timeout=60, cwd=REPO,
    )  # fmt: skip
    err = out.stderr.decode(errors="replace")
    assert out.returncode == 1 and "Traceback" not in err, err
    assert "is not UTF-8 text" in err and "file://" in err
    assert queue_is_empty(redis_server.client())
    url = "file://" + quote(name)
    assert file_url_path(url) == os.fsdecode(name)
    (frame,) = list(open_source(url))
    assert frame.image.shape[:2] == (32, 32)
    job_id = Queue(redis_server.client()).enqueue(url)
    assert Queue(redis_server.client()).job(job_id).source == url


def queue_is_empty(client: redis.Redis) -> bool:
    return not list(client.scan_iter("veritas:job:*")) and not client.xlen("veritas:jobs")


def test_trimming_drops_acknowledged_jobs_and_keeps_pending_and_new_ones(redis_server):
    client = redis_server.client()
    queue = Queue(client)
    for i in range(10):
        queue.enqueue(f"/data/{i}.mp4")
    entries = take(client, queue, "w", count=7)  # 3 stay undelivered
    for e in entries[:3] + entries[5:6]:
        queue.ack(e)  # 0, 1, 2 and 5 done; 3, 4 and 6 pending
    assert queue.trim() == 3  # only the head up to the first pending entry
    left = [e.decode() for e, _ in client.xrange(queue.keys.jobs)]
    assert left == entries[3:] + left[4:]
    assert len(left) == 7
    for e in entries[3:]:
        queue.ack(e)
    assert queue.trim() == 4  # every delivered entry is done; the 3 new ones stay
    assert client.xlen(queue.keys.jobs) == 3
    assert len(take(client, queue, "w")) == 3  # nothing undelivered was lost


def test_a_frame_is_recorded_once_and_in_order_whoever_writes_it(redis_server):
    client = redis_server.client()
    queue = Queue(client)
    assert write(client, queue, "j", range(10)) == (10, 0)
    # A second worker redoing frames 5..14 (a reclaimed job) adds only 10..14.
    assert write(client, queue, "j", range(5, 15)) == (5, 5)
    # A retried round trip changes nothing.
    assert write(client, queue, "j", range(10, 15)) == (0, 5)
    frames = [r["frame"] for r in queue.results("j")]
    assert frames == list(range(15))
    assert queue.last_frame("j") == (14, pytest.approx(14 / 25))
    assert [r["frame"] for r in queue.results("j", start_frame=12)] == [12, 13, 14]


def test_a_write_after_redis_lost_acknowledged_frames_appends_nothing(redis_server):
    """The writer saw frame 9 stored; Redis comes back holding frames 0..5 only (an older
    snapshot): appending 10..12 would leave a hole, so the write is refused whole."""
    client = redis_server.client()
    queue = Queue(client)
    assert write(client, queue, "j", range(10)) == (10, 0)
    client.delete(queue.keys.results("j"))  # Redis restarts from a snapshot of 0..5
    assert write(client, queue, "j", range(6)) == (6, 0)
    with pytest.raises(ResultsLostError) as lost:
        write(client, queue, "j", range(10, 13), stored=9)
    assert lost.value.stored == 5
    assert [r["frame"] for r in queue.results("j")] == list(range(6))
    assert write(client, queue, "j", range(6, 13), stored=5) == (7, 0)  # resumed: no hole
    assert [r["frame"] for r in queue.results("j")] == list(range(13))


def test_results_are_capped_per_job_and_expire_after_it_ends(redis_server):
    client = redis_server.client()
    queue = Queue(client, QueueConfig(results_max_len=5, results_ttl_s=1000))
    job = queue.enqueue("/data/a.mp4")
    entry = take(client, queue, "w")[0]
    queue.start(JobSpec(job, "/data/a.mp4"), entry, "w", Mode.LOSSLESS, live=False)
    write(client, queue, job, range(12))
    assert [r["frame"] for r in queue.results(job)] == [7, 8, 9, 10, 11]
    assert client.ttl(queue.keys.results(job)) == -1  # no expiry while running
    assert queue.finish(job, entry, JobStatus.DONE) == "done"
    assert 0 < client.ttl(queue.keys.results(job)) <= 1000
    assert 0 < client.ttl(queue.keys.job(job)) <= 1000
    assert queue.backlog() == 0  # acknowledged


def test_cancellation_wins_over_a_worker_finishing_and_ends_only_live_jobs(redis_server):
    client = redis_server.client()
    queue = Queue(client)
    job = queue.enqueue("/data/a.mp4")
    entry = take(client, queue, "w")[0]
    queue.start(JobSpec(job, "/data/a.mp4"), entry, "w", Mode.LOSSLESS, live=False)
    assert queue.cancel(job) == "running"
    assert queue.finish(job, entry, JobStatus.DONE) == "cancelled"
    assert queue.job(job).status is JobStatus.CANCELLED
    with pytest.raises(JobNotCancellableError, match="already cancelled"):
        queue.cancel(job)
    with pytest.raises(NoSuchJobError):
        queue.cancel("nope")
    # A cancelled job that was still queued is skipped when a worker gets it.
    queued = queue.enqueue("/data/b.mp4")
    queue.cancel(queued)
    entry = take(client, queue, "w")[0]
    started = queue.start(JobSpec(queued, "/data/b.mp4"), entry, "w", Mode.LOSSLESS, False)
    assert (started.action, started.status) == ("skip", "cancelled")


def test_an_entry_reusing_another_jobs_id_cannot_touch_that_job(redis_server):
    client = redis_server.client()
    queue = Queue(client)
    job = queue.enqueue("/data/a.mp4")
    spec = JobSpec(job, "/data/a.mp4")
    entry = take(client, queue, "w")[0]
    assert queue.start(spec, entry, "w", Mode.LOSSLESS, False).action == "run"
    hostile = client.xadd(queue.keys.jobs, {"payload": b"x"}).decode()
    assert queue.start(spec, hostile, "w", Mode.LOSSLESS, False).action == "duplicate"
    assert queue.finish(job, hostile, JobStatus.FAILED, "nope") == "foreign"
    assert queue.release(job, hostile, "w") == "foreign"
    state = queue.job(job)
    assert (state.status, state.attempts, state.error) == (JobStatus.RUNNING, 1, "")


def test_a_handed_back_job_is_reclaimable_at_once_and_not_counted(redis_server):
    client = redis_server.client()
    queue = Queue(client, QueueConfig(claim_idle_s=60.0))
    job = queue.enqueue("/data/a.mp4")
    entry = take(client, queue, "a")[0]
    queue.start(JobSpec(job, "/data/a.mp4"), entry, "a", Mode.LOSSLESS, False)
    # Nothing is idle for 60 s: another worker cannot take it yet.
    assert client.xautoclaim(queue.keys.jobs, GROUP, "b", 60_000)[1] == []
    assert queue.release(job, entry, "a", handback=True) == "queued"
    _, claimed, _ = client.xautoclaim(queue.keys.jobs, GROUP, "b", 60_000)
    assert [e.decode() for e, _ in claimed] == [entry]
    state = queue.job(job)
    assert (state.status, state.attempts) == (JobStatus.QUEUED, 0)
    # A retry (not a hand-back) keeps the attempt and records why.
    queue.start(JobSpec(job, "/data/a.mp4"), entry, "b", Mode.LOSSLESS, False)
    queue.release(job, entry, "b", error="feed down")
    assert (queue.job(job).attempts, queue.job(job).error) == (1, "feed down")


def test_heartbeat_renews_its_claims_and_never_takes_back_a_reclaimed_one(redis_server):
    client = redis_server.client()
    queue = Queue(client)
    queue.enqueue("/data/a.mp4")
    entry = take(client, queue, "a")[0]
    lost: list[str] = []
    beat = Heartbeat(client, queue.keys, "a", 1.0, lambda: [entry], lost.append)

    def idle_ms() -> int:
        return client.xpending_range(queue.keys.jobs, GROUP, entry, entry, 1)[0][
            "time_since_delivered"
        ]

    client.xclaim(queue.keys.jobs, GROUP, "a", 0, [entry], idle=10_000, justid=True)
    assert idle_ms() >= 10_000  # as if the worker had been silent for 10 s
    beat.beat()
    assert idle_ms() < 5_000 and lost == []
    assert client.xautoclaim(queue.keys.jobs, GROUP, "b", 5_000)[1] == []
    # Another worker takes it (the claim had lapsed): the heartbeat reports the loss
    # and leaves the entry with its new owner.
    client.xclaim(queue.keys.jobs, GROUP, "b", 0, [entry], justid=True)
    beat.beat()
    assert lost == [entry]
    owner = client.xpending_range(queue.keys.jobs, GROUP, entry, entry, 1)[0]["consumer"]
    assert owner == b"b"


def test_following_results_ends_when_the_job_ends(redis_server):
    client = redis_server.client()
    queue = Queue(client)
    job = queue.enqueue("/data/a.mp4")
    entry = take(client, queue, "w")[0]
    queue.start(JobSpec(job, "/data/a.mp4"), entry, "w", Mode.LOSSLESS, False)
    write(client, queue, job, range(3))
    seen: list[int] = []

    def follow() -> None:
        for r in queue.results(job, follow=True, block_s=0.1):
            seen.append(r["frame"])

    reader = threading.Thread(target=follow)
    reader.start()
    wait_for(lambda: len(seen) == 3, 10, "the records written before following")
    write(client, queue, job, range(3, 6))
    queue.finish(job, entry, JobStatus.DONE)
    reader.join(10)
    assert not reader.is_alive() and seen == list(range(6))


def test_idle_consumers_are_removed_only_when_they_hold_nothing(redis_server):
    client = redis_server.client()
    queue = Queue(client)
    queue.enqueue("/data/a.mp4")
    take(client, queue, "holder")
    client.xgroup_createconsumer(queue.keys.jobs, GROUP, "empty")
    assert not queue.delete_idle_consumer("holder", 0)  # its job would be lost
    assert queue.delete_idle_consumer("empty", 0)
    assert not queue.delete_idle_consumer("empty", 0)
    assert [c["name"] for c in queue.consumers()] == ["holder"]


def test_the_key_layout_works_on_redis_cluster(tmp_path):
    """On a cluster, a command or script touching keys of two slots fails (CROSSSLOT):
    one cluster node owning every slot still checks it."""
    port = free_port()
    conf = tmp_path / "cluster.conf"
    conf.write_text(
        f"port {port}\nbind 127.0.0.1\ncluster-enabled yes\ncluster-port {free_port()}\n"
        f"dir {tmp_path}\n"
        f'cluster-config-file {tmp_path}/nodes.conf\nsave ""\nappendonly no\n'
        f"logfile {tmp_path}/redis.log\n"
    )
    server = subprocess.Popen(["redis-server", str(conf)])
    try:
        plain = redis.Redis(port=port)
        wait_for(lambda: _ping(plain) or server.poll() is not None, 20, "the cluster node")
        assert server.poll() is None, (tmp_path / "redis.log").read_text()[-2000:]
        plain.execute_command("CLUSTER", "ADDSLOTSRANGE", 0, 16383)
        wait_for(lambda: b"cluster_state:ok" in plain.execute_command("CLUSTER", "INFO"), 10,
                 "the cluster to be ok")  # fmt: skip
        client = connect(f"redis://127.0.0.1:{port}/0", cluster=True)
        queue = Queue(client, QueueConfig(prefix="{veritas}:"))
        other = Queue(client)  # the default prefix spreads keys over slots: also fine
        for q in (queue, other):
            job = q.enqueue("/data/a.mp4")
            entry = take(client, q, "w")[0]
            q.start(JobSpec(job, "/data/a.mp4"), entry, "w", Mode.LOSSLESS, False)
            write(client, q, job, range(4))
            Heartbeat(client, q.keys, "w", 1.0, lambda e=entry: [e], lambda e: None).beat()
            assert q.last_frame(job)[0] == 3
            q.release(job, entry, "w", handback=True)
            q.finish(job, entry, JobStatus.DONE)
            q.dead_letter("0-1", "test", 1, "w", None, b"x")
            assert q.trim() >= 1
            assert [r["frame"] for r in q.results(job)] == [0, 1, 2, 3]
            assert q.info()["dead"] == 1
    finally:
        server.kill()
        server.wait()


def _ping(client: redis.Redis) -> bool:
    try:
        return bool(client.ping())
    except redis.RedisError:
        return False


def test_job_state_reads_back_as_written(redis_server):
    queue = Queue(redis_server.client())
    job = queue.enqueue("rtsp://admin:hunter2@cam/live", mode="realtime", fps=2.0)
    state = queue.job(job).to_dict()
    assert state["source"] == "rtsp://admin:***@cam/live"  # the hash never holds it
    assert state["mode"] == "realtime" and state["status"] == "queued"
    assert "hunter2" not in json.dumps(state)


def test_status_results_and_cancel_commands(redis_server, capsys):
    client = redis_server.client()
    queue = Queue(client)
    job = queue.enqueue("/data/a.mp4")
    entry = take(client, queue, "w")[0]
    queue.start(JobSpec(job, "/data/a.mp4"), entry, "w", Mode.LOSSLESS, False)
    write(client, queue, job, range(3))
    url = ["--redis", redis_server.url]
    capsys.readouterr()
    assert main(["status", job, "--json", *url]) == 0
    assert json.loads(capsys.readouterr().out)["status"] == "running"
    assert main(["results", job, *url]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [json.loads(x)["frame"] for x in lines] == [0, 1, 2]
    assert main(["cancel", job, *url]) == 0
    assert "cancelled (was running)" in capsys.readouterr().out
    assert main(["cancel", job, *url]) == 1
    assert "already cancelled" in capsys.readouterr().err
    assert main(["status", *url]) == 0
    out = capsys.readouterr().out
    assert "consumers  1" in out and "w: 1 jobs" in out
    queue.dead_letter("0-1", "bad payload", 0, "w")
    assert main(["status", "--dead", *url]) == 0
    assert "bad payload" in capsys.readouterr().out
    assert main(["status", "nope", *url]) == 1
    assert main(["results", "nope", *url]) == 1
    err = capsys.readouterr().err
    assert "no such job 'nope'" in err and redis_server.password not in err
    # Redis unreachable: one clear line, no password, no traceback.
    wrong = f"redis://:{redis_server.password}@127.0.0.1:{free_port()}/0"
    assert main(["status", "--redis", wrong]) == 1
    err = capsys.readouterr().err
    assert err.startswith("veritas: error: redis at redis://:***@127.0.0.1")
    assert redis_server.password not in err and "Traceback" not in err
