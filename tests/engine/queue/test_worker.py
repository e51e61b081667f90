"""Worker processes against a real redis-server: shared work, a worker killed mid-job,
hostile jobs, real-time drops on a live feed, a Redis restart ridden out, a live feed kept,
handed back on SIGTERM and reconnected, and ``serve``.

Every worker is a real ``python -m engine.cli worker`` process with the tiny models.
Waits poll a condition with a timeout; the timeouts are generous for a loaded 2-core
machine, and the tests finish as soon as the condition holds.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import msgpack
import pytest
import redis

from engine.queue.connection import connect
from engine.queue.job import JobStatus
from engine.queue.keys import GROUP
from engine.queue.queue import Queue
from engine.records import validate_record
from tests.engine.queue.conftest import (
    REPO,
    WORKER_MODEL_FLAGS,
    consumers_ready,
    free_port,
    wait_for,
)
from tests.media import (
    encode_video,
    face_frames,
    moving_pattern,
    png_header,
    write_image_folder,
)

pytestmark = pytest.mark.slow


def status(queue: Queue, job: str) -> JobStatus:
    return queue.job(job).status


def frames_of(queue: Queue, job: str) -> list[int]:
    return [r["frame"] for r in queue.results(job)]


def assert_each_frame_once(client: redis.Redis, queue: Queue, job: str, n: int) -> None:
    entries = client.xrange(queue.keys.results(job))
    ids = [int(e.decode().split("-")[0]) for e, _ in entries]
    records = [validate_record(msgpack.unpackb(f[b"payload"], raw=False)) for _, f in entries]
    assert ids == list(range(n)), f"frames recorded: {ids}"
    assert [r["frame"] for r in records] == ids
    assert {r["job"] for r in records} == {job}


def test_jobs_from_several_producers_are_shared_by_several_workers(
    tls_redis_server, worker, tmp_path
):
    server = tls_redis_server  # TLS, with a password
    metrics_port = free_port()
    workers = [
        worker(server, "--concurrency", "2", "--metrics-port", str(metrics_port), name="a"),
        worker(server, "--concurrency", "2", name="b"),
    ]
    clips = [
        encode_video(tmp_path / f"clip{i}.mp4", moving_pattern(40 + 4 * i, 128, 128))
        for i in range(5)
    ]
    clips.append(encode_video(tmp_path / "face.mp4", face_frames(4, 128)))
    client = server.client()
    queue = Queue(client)
    wait_for(lambda: consumers_ready(client, ["a", "b"]), 90, "both workers to be ready")
    jobs: dict[str, Path] = {}

    def produce(half: list[Path]) -> None:
        own = Queue(server.client())  # each producer has its own connection
        for clip in half:
            jobs[own.enqueue(str(clip))] = clip

    producers = [threading.Thread(target=produce, args=(h,)) for h in (clips[:3], clips[3:])]
    for p in producers:
        p.start()
    for p in producers:
        p.join(60)
    assert len(jobs) == 6
    wait_for(lambda: all(status(queue, j) is JobStatus.DONE for j in jobs), 120, "every job")
    for job, clip in jobs.items():
        n = 4 if clip.name == "face.mp4" else 40 + 4 * int(clip.stem[-1])
        assert_each_frame_once(client, queue, job, n)
        assert queue.job(job).attempts == 1
    assert {queue.job(j).worker for j in jobs} == {"a", "b"}  # both took a share
    faces = [r for r in queue.results(next(j for j, c in jobs.items() if c.name == "face.mp4"))]
    assert sum(len(r["faces"]) > 0 for r in faces) >= 3  # the real face is found
    # Acknowledged jobs are trimmed from the jobs stream.
    wait_for(lambda: client.xlen(queue.keys.jobs) == 0, 30, "the jobs stream to be trimmed")
    # Worker a served metrics (its batches mixed frames of its jobs) and its health.
    text = urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10).read()
    metrics = _samples(text.decode())
    assert metrics["veritas_frames_total"] > 0
    assert metrics['veritas_batch_jobs_bucket{le="1.0"}'] < metrics["veritas_batch_jobs_count"]
    health = json.loads(
        urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/healthz", timeout=10).read()
    )
    assert health["status"] == "ok" and health["redis"] == "ok"
    for w in workers:
        assert w.alive()
        assert server.password not in w.logs()
        assert _most_held(w.logs()) <= 2  # --concurrency bounds the jobs in hand


def _most_held(logs: str) -> int:
    """The most jobs a worker held at once, from its "started" and "done" log lines."""
    held = most = 0
    for line in logs.splitlines():
        if 'msg="job ' in line and " started: " in line:
            held += 1
        elif 'msg="job ' in line and (" done" in line or " failed" in line):
            held -= 1
        most = max(most, held)
    return most


def _samples(text: str) -> dict[str, float]:
    out = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            out[name] = float(value)
    return out


def test_a_job_of_a_killed_worker_finishes_on_another_with_every_frame_once(
    redis_server, worker, tmp_path
):
    n = 150
    clip = encode_video(tmp_path / "long.mp4", moving_pattern(n, 256, 256))
    client = redis_server.client()
    queue = Queue(client)
    workers = {name: worker(redis_server, name=name) for name in ("one", "two")}
    wait_for(lambda: consumers_ready(client, list(workers)), 90, "both workers")
    job = queue.enqueue(str(clip))
    wait_for(lambda: client.xlen(queue.keys.results(job)) >= 20, 60, "20 frames recorded")
    killed = queue.job(job).worker
    survivor = next(name for name in workers if name != killed)
    workers[killed].signal(signal.SIGKILL)
    workers[killed].wait(10)
    recorded = client.xlen(queue.keys.results(job))
    assert recorded < n, "the job finished before the worker was killed"
    assert status(queue, job) is JobStatus.RUNNING  # nobody could tell
    pending = client.xpending_range(queue.keys.jobs, GROUP, "-", "+", 10)
    assert [p["consumer"].decode() for p in pending] == [killed]
    wait_for(lambda: status(queue, job) is JobStatus.DONE, 120, "the job to finish elsewhere")
    assert_each_frame_once(client, queue, job, n)
    state = queue.job(job)
    assert state.worker == survivor and state.attempts == 2
    # The survivor resumed after the last frame the killed worker recorded.
    assert state.progress["resumed_from"] >= recorded
    assert f"reclaimed from {killed}, which went silent" in workers[survivor].logs()


def test_malformed_and_hostile_jobs_are_dead_lettered_while_the_worker_serves(
    redis_server, worker, tmp_path, tmp_path_factory
):
    not_video = tmp_path / "notes.mp4"
    not_video.write_text("this is not a video")
    bomb = tmp_path / "bomb.png"  # declares 15000x15000 in a few hundred bytes
    # An allowed folder holding a link to an image outside the allowed root (tmp_path).
    secret = write_image_folder(tmp_path_factory.mktemp("outside"), moving_pattern(1, 16, 16))
    linked = tmp_path / "linked"
    write_image_folder(linked, moving_pattern(1, 16, 16), ["1.png"])
    (linked / "2.png").symlink_to(secret[0])
    bomb.write_bytes(png_header(15000, 15000))
    good = encode_video(tmp_path / "good.mp4", moving_pattern(8, 64, 64))
    client = redis_server.client()
    queue = Queue(client)
    w = worker(
        redis_server,
        "--set", "queue.max_payload_bytes=2048",
        "--set", 'queue.allowed_schemes=["file", "tcp", "http"]',
        "--set", "queue.max_attempts=2",
        "--set", "queue.live_give_up_s=1.0",
        "--set", "queue.live_open_timeout_s=0.5",
        "--set", "queue.live_reconnect_min_s=0.1",
        "--set", "queue.max_job_duration_s=5.0",
        name="target",
    )  # fmt: skip
    wait_for(lambda: consumers_ready(client, ["target"]), 90, "the worker")

    def raw(payload: object, field: bytes = b"payload") -> str:
        data = payload if isinstance(payload, bytes) else msgpack.packb(payload)
        return client.xadd(queue.keys.jobs, {field: data}).decode()

    def job(job_id: str, **fields: object) -> dict:
        return {"schema": 1, "id": job_id, "source": str(good), **fields}

    dead_port = free_port()
    expected = {
        raw(b"\xc1garbage"): "not valid msgpack",
        raw([1, 2, 3]): "must be a msgpack map, got a list",
        raw(b"x", field=b"data"): "no 'payload' field",
        raw(job("v99", schema=99)): "unsupported schema version 99",
        raw({"schema": 1, "id": "nosource"}): "missing field 'source'",
        raw(job("typed", fps="fast")): "'fps' must be a number",
        # Rates the sampler cannot step by are refused at once, not retried as transient.
        raw(job("rate", fps=1e308)): "'fps' = 1e+308 must be from 0.001 to 1000",
        raw(job("subnormal", fps=5e-324)): "'fps' = 5e-324 must be from 0.001 to 1000",
        raw(job("huge", source="/" + "x" * 4000)): "over the limit of 2048",
        raw(job("passwd", source="/etc/passwd")): "outside the allowed roots",
        raw(job("dots", source=f"{tmp_path}/../../etc/passwd")): "outside the allowed roots",
        raw(job("scheme", source="udp://127.0.0.1:9")): "udp:// sources are not allowed",
        # Redis answers HTTP by hanging up: failed at once, not retried as a network error.
        raw(job("redisport", source=f"http://127.0.0.1:{redis_server.port}/live")): (
            "the server's answer is not a video stream (End of file)"
        ),
        raw(job("long", max_duration_s=3600.0)): "over this worker's limit of 5 s",
        raw(job("missing", source=str(tmp_path / "nope.mp4"))): "no such file or folder",
        raw(job("notvideo", source=str(not_video))): "not a readable video",
        raw(job("linked", source=str(linked))): f"{linked / '2.png'} leads outside the allowed",
        raw(job("bomb", source=str(bomb))): "frame is 15000x15000 (225000000 pixels), over",
        raw(job("silent", source=f"tcp://127.0.0.1:{dead_port}")): (
            f"failed 2 times; last: tcp://127.0.0.1:{dead_port}: no frame from the feed"
        ),
    }
    good_job = queue.enqueue(str(good))
    wait_for(lambda: status(queue, good_job) is JobStatus.DONE, 60, "the good job")
    wait_for(lambda: queue.info()["dead"] == len(expected), 60, "every bad job dead-lettered")
    dead = {d["entry"]: d for d in queue.dead_letters(100)}
    for entry, reason in expected.items():
        assert reason in dead[entry]["reason"], (reason, dead[entry]["reason"])
    assert dead[next(e for e, r in expected.items() if "failed 2 times" in r)]["attempts"] == 2
    # Every job whose id could be read is failed with its reason (an over-size payload
    # is not decoded at all, so its id stays unknown).
    for job_id in ("v99", "typed", "rate", "subnormal", "passwd", "dots", "scheme", "long",
                   "missing", "notvideo", "linked", "bomb", "redisport", "silent"):  # fmt: skip
        state = queue.job(job_id)
        assert state.status is JobStatus.FAILED and state.error, job_id
    assert w.alive(), w.logs()[-3000:]


def test_a_live_job_faster_than_the_models_drops_frames_in_real_time_and_ends_on_time(
    redis_server, worker, feed
):
    """Real-time mode drops frames and says how many; ``max_duration_s`` ends the live job
    as done."""
    client = redis_server.client()
    queue = Queue(client)
    worker(
        redis_server,
        "--set", 'queue.allowed_schemes=["file", "tcp", "http"]',
        "--set", "queue.live_buffer_frames=2",
        name="live",
    )  # fmt: skip
    wait_for(lambda: consumers_ready(client, ["live"]), 90, "the worker")
    port = free_port()
    feed(f"tcp://127.0.0.1:{port}?listen=1", fps=25, size=128, faces=True).wait_listening()
    live = queue.enqueue(f"tcp://127.0.0.1:{port}", max_duration_s=3.0)
    wait_for(lambda: status(queue, live) is JobStatus.DONE, 60, "the live job's 3 s")
    progress = queue.job(live).progress
    frames = frames_of(queue, live)
    assert progress["dropped"] > 0 and progress["mode"] == "realtime"
    assert queue.job(live).mode == "realtime"  # submitted without a mode: one truth
    assert len(frames) == progress["frames"] and frames == sorted(set(frames))
    assert frames[-1] - frames[0] + 1 > len(frames)  # the dropped frames left gaps
    # records name the feed as submitted (the stream key of the attempt stays internal)
    assert {r["source"] for r in queue.results(live)} == {f"tcp://127.0.0.1:{port}"}
    assert {r["job"] for r in queue.results(live)} == {live}


def test_a_worker_rides_out_a_redis_restart_that_forgot_everything(redis_server, worker, tmp_path):
    """Redis restarts without persistence: the worker waits it out, creates its consumer
    group again and serves the next job, without a traceback or the password in its log."""
    good = encode_video(tmp_path / "good.mp4", moving_pattern(8, 64, 64))
    client = redis_server.client()
    queue = Queue(client)
    w = worker(redis_server, name="target")
    wait_for(lambda: consumers_ready(client, ["target"]), 90, "the worker")
    before = queue.enqueue(str(good))
    wait_for(lambda: status(queue, before) is JobStatus.DONE, 60, "a job before the restart")

    redis_server.stop()
    wait_for(lambda: "redis unavailable" in w.logs(), 30, "the worker to notice the outage")
    redis_server.start()
    wait_for(lambda: "consumer group is gone" in w.logs(), 30, "the worker to recreate it")
    queue = Queue(redis_server.client())
    assert not redis_server.client().exists(queue.keys.results(before))  # all forgotten
    after = queue.enqueue(str(good))
    wait_for(lambda: status(queue, after) is JobStatus.DONE, 60, "a job after the restart")
    assert_each_frame_once(redis_server.client(), queue, after, 8)
    assert w.alive()
    logs = w.logs()
    assert "redis is back" in logs and "Traceback" not in logs
    assert redis_server.password not in logs


def test_a_redis_restored_from_an_older_snapshot_leaves_no_hole(redis_server, worker, tmp_path):
    """A power cut with a lagging persistence (an RDB, or an AOF with appendfsync
    everysec): Redis comes back holding less than it acknowledged. The worker's next write
    sees its results stream behind, appends nothing, and hands the job back to resume
    from the last frame really stored: the job ends done with every frame once."""
    n = 150
    clip = encode_video(tmp_path / "long.mp4", moving_pattern(n, 128, 128))
    client = redis_server.client()
    queue = Queue(client)
    w = worker(redis_server, name="target")
    wait_for(lambda: consumers_ready(client, ["target"]), 90, "the worker")
    job = queue.enqueue(str(clip))
    wait_for(lambda: client.xlen(queue.keys.results(job)) >= 10, 60, "10 frames recorded")
    # the snapshot the restart will come back from; frames keep coming meanwhile, so it
    # holds between `low` and `snapshot` of them
    low = client.xlen(queue.keys.results(job))
    client.save()
    snapshot = client.xlen(queue.keys.results(job))
    shutil.copy(redis_server.folder / "dump.rdb", tmp_path / "older.rdb")
    wait_for(lambda: client.xlen(queue.keys.results(job)) >= snapshot + 20, 60, "20 more frames")
    assert status(queue, job) is JobStatus.RUNNING, "the job finished too soon"
    redis_server.process.kill()  # a power cut: nothing written since the snapshot survives
    redis_server.process.wait()
    shutil.copy(tmp_path / "older.rdb", redis_server.folder / "dump.rdb")
    redis_server.start()
    client = redis_server.client()
    queue = Queue(client)
    wait_for(lambda: status(queue, job) is JobStatus.DONE, 120, "the job to finish")
    assert_each_frame_once(client, queue, job, n)
    logs = w.logs()
    lost = re.search(rf"job {job}: Redis lost frames (\d+) to", logs)
    assert lost is not None, logs[-3000:]
    assert low <= int(lost.group(1)) <= snapshot + 1  # the frame after the last stored
    assert queue.job(job).progress["resumed_from"] <= snapshot


def test_an_outage_longer_than_the_claim_time_costs_no_attempt(redis_server, worker, tmp_path):
    """Redis (persistent) is down for longer than claim_idle_s while two workers with free
    slots run two jobs: nobody could renew a claim, so when it is back nobody reclaims a
    job (its own worker renews it first); both finish on their first attempt with every
    frame once."""
    n = 400
    redis_server.stop()
    redis_server.start(appendonly=True)
    clip = encode_video(tmp_path / "long.mp4", moving_pattern(n, 128, 128))
    client = redis_server.client()
    queue = Queue(client)
    flags = ["--concurrency", "2", "--set", "queue.heartbeat_s=1.0"]  # free slots to reclaim
    workers = {name: worker(redis_server, *flags, name=name) for name in "ab"}
    wait_for(lambda: consumers_ready(client, list(workers)), 90, "both workers")
    jobs = [queue.enqueue(str(clip)) for _ in workers]
    wait_for(
        lambda: all(client.xlen(queue.keys.results(j)) >= 10 for j in jobs), 60, "both running"
    )
    redis_server.stop()
    time.sleep(3.0)  # claim_idle_s is 2 s (FAST_QUEUE)
    redis_server.start(appendonly=True)
    client = redis_server.client()
    queue = Queue(client)
    assert all(status(queue, j) is JobStatus.RUNNING for j in jobs), "finished too soon"
    wait_for(lambda: all(status(queue, j) is JobStatus.DONE for j in jobs), 120, "both jobs")
    for j in jobs:
        assert_each_frame_once(client, queue, j, n)
        assert queue.job(j).attempts == 1, queue.job(j)
    for w in workers.values():
        assert "reclaimed from" not in w.logs(), w.logs()[-3000:]


def test_a_live_job_is_kept_while_its_worker_lives_then_handed_back_and_reconnected(
    redis_server, worker, feed
):
    port = free_port()
    url = f"tcp://127.0.0.1:{port}"
    sender = feed(f"{url}?listen=1")
    sender.wait_listening()
    client = redis_server.client()
    queue = Queue(client)
    workers = {name: worker(redis_server, name=name) for name in ("one", "two")}
    wait_for(lambda: consumers_ready(client, list(workers)), 90, "both workers")
    job = queue.enqueue(url)
    wait_for(lambda: queue.job(job).progress.get("frames", 0) >= 5, 60, "live frames")
    name = queue.job(job).worker
    holder = workers[name]
    other_name = next(n for n in workers if n != name)
    other = workers[other_name]
    # claim_idle_s is 2 s: while 6 s of broadcast go by, the idle worker looks for
    # stale jobs ~30 times. The heartbeat keeps this one.
    start = queue.last_frame(job)[0]
    wait_for(lambda: queue.last_frame(job)[0] >= start + 150, 60, "6 s of live frames")
    state = queue.job(job)
    assert (state.worker, state.attempts, state.status) == (name, 1, JobStatus.RUNNING)
    owner = client.xpending_range(queue.keys.jobs, GROUP, "-", "+", 10)[0]["consumer"]
    assert owner.decode() == name and "reclaimed" not in other.logs()

    # SIGTERM: the job is handed back, not lost, and the other worker continues it.
    holder.signal(signal.SIGTERM)
    assert holder.wait(30) == 0
    assert "handed back" in holder.logs()
    last_by_holder = queue.last_frame(job)[0]
    wait_for(lambda: queue.job(job).worker == other_name, 30, "the other worker to take over")
    assert queue.job(job).attempts == 1  # a hand-back is not a failed attempt
    wait_for(lambda: queue.last_frame(job)[0] >= last_by_holder + 25, 60, "frames from other")

    # The feed is cut and comes back: the worker reconnects and the job goes on.
    sender.kill()
    cut = queue.last_frame(job)[0]
    feed(f"{url}?listen=1")  # listening again soon: the worker reconnects with back-off
    wait_for(lambda: queue.last_frame(job)[0] >= cut + 25, 60, "frames after the cut")
    wait_for(lambda: (queue.job(job).progress.get("reconnects") or 0) >= 1, 10, "reconnects")
    frames = frames_of(queue, job)
    assert frames == sorted(set(frames))  # each frame once, in order, across both workers
    assert frames[0] == 0 and any(f > last_by_holder for f in frames)

    queue.cancel(job)
    wait_for(lambda: client.xpending(queue.keys.jobs, GROUP)["pending"] == 0, 30, "the ack")
    assert status(queue, job) is JobStatus.CANCELLED and other.alive()
    for w in (holder, other):
        assert redis_server.password not in w.logs()


def test_serve_runs_an_embedded_redis_and_workers_and_stops_both(tmp_path):
    clip = encode_video(tmp_path / "clip.mp4", moving_pattern(10, 64, 64))
    log = (tmp_path / "serve.log").open("w")
    serve = subprocess.Popen(
        [sys.executable, "-m", "engine.cli", "serve", "--workers", "1", "--allow-root",
         str(tmp_path), *WORKER_MODEL_FLAGS, "--set", "queue.poll_s=0.2"],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=log,
        text=True,
        env={"PATH": "/usr/bin:/bin"},
    )  # fmt: skip
    try:
        url = serve.stdout.readline().strip()
        assert url.startswith("redis://127.0.0.1:"), url
        queue = Queue(connect(url))
        job = queue.enqueue(str(clip))
        wait_for(lambda: status(queue, job) is JobStatus.DONE, 120, "the job")
        assert frames_of(queue, job) == list(range(10))
        serve.send_signal(signal.SIGTERM)
        assert serve.wait(60) == 0, (tmp_path / "serve.log").read_text()[-3000:]
        with pytest.raises(redis.ConnectionError):
            connect(url).ping()  # the embedded server is gone with it
    finally:
        if serve.poll() is None:
            serve.kill()
            serve.wait()
        log.close()


def test_a_worker_writes_verdict_events_that_veritas_results_shows(redis_server, worker, tmp_path):
    # Every face is called fake (threshold 0): the fake verdict persists over the clip.
    clip = encode_video(tmp_path / "face.mp4", face_frames(16, 160))
    client = redis_server.client()
    queue = Queue(client)
    flags = ["--fake-threshold", "0", "--set", "events.window_s=0.2",
             "--set", "events.min_frames=3"]  # fmt: skip
    worker(redis_server, *flags, name="ev")
    wait_for(lambda: consumers_ready(client, ["ev"]), 90, "the worker")
    job = queue.enqueue(str(clip))
    other = queue.enqueue(str(encode_video(tmp_path / "plain.mp4", moving_pattern(8, 64, 64))))
    wait_for(lambda: status(queue, job) is JobStatus.DONE, 60, "the job")
    wait_for(lambda: status(queue, other) is JobStatus.DONE, 60, "the other job")
    events = list(queue.events(job))
    assert [(e["event"], e["verdict"]) for e in events] == [("start", "fake"), ("end", "fake")]
    assert {e["job"] for e in events} == {job} and events[0]["id"] == events[1]["id"]
    assert events[1]["peak"]["thumbnail"]  # the worst face, as a JPEG
    assert list(queue.events(other)) == []  # no face, no event
    shown = subprocess.run(
        [sys.executable, "-m", "engine.cli", "results", job, "--events"],
        cwd=REPO, capture_output=True, text=True, timeout=60,
        env={**os.environ, "VERITAS_REDIS_URL": redis_server.url},
    )  # fmt: skip
    assert shown.returncode == 0, shown.stderr
    assert [json.loads(line) for line in shown.stdout.splitlines()] == events


def test_an_srt_job_a_worker_cannot_read_is_retried_not_failed(redis_server, worker, tmp_path):
    # This worker has no ffmpeg on its PATH (the SRT bridge): another attempt, or another
    # worker that has one, may read the feed, so the job is handed back for a retry.
    client = redis_server.client()
    queue = Queue(client)
    w = worker(redis_server, name="noffmpeg", env={"PATH": str(tmp_path / "empty")})
    wait_for(lambda: consumers_ready(client, ["noffmpeg"]), 90, "the worker")
    job = queue.enqueue(f"srt://127.0.0.1:{free_port()}?mode=caller")
    wait_for(lambda: queue.job(job).attempts >= 2, 60, "a second attempt")
    state = queue.job(job)
    assert "no 'ffmpeg' executable" in (state.error or ""), state.error
    assert "handing it back for a retry" in w.logs()
