"""Chaos: several worker processes under a SIGKILL storm, with a Redis restart in the
middle (persistent Redis), and every job still ends done with each frame recorded once.

Bounded to about a minute on 2 cores: tiny models, small clips. The storm does not run on
a timer (jobs could finish before it): it kills, with a fixed random seed, a worker in
mid-job once that attempt has recorded 20 frames, so every kill loses work that the next
worker must neither skip nor record twice."""

from __future__ import annotations

import random
import signal
import time

import pytest

from engine.queue.job import JobStatus
from engine.queue.queue import Queue
from tests.engine.queue.conftest import consumers_ready, wait_for
from tests.engine.queue.test_worker import assert_each_frame_once, status
from tests.media import encode_video, moving_pattern

pytestmark = pytest.mark.slow

FRAMES = 400
JOBS = 6
KILLS = 6


def test_every_job_is_done_with_each_frame_once_through_a_kill_storm_and_a_redis_restart(
    redis_server, worker, tmp_path
):
    redis_server.stop()
    redis_server.start(appendonly=True)  # appendfsync always: nothing acknowledged is lost
    clip = encode_video(tmp_path / "clip.mp4", moving_pattern(FRAMES, 96, 96))
    client = redis_server.client()
    queue = Queue(client)
    flags = ["--concurrency", "2"]
    names = iter(f"w{i}" for i in range(100))
    live = {}
    for _ in range(3):
        name = next(names)
        live[name] = worker(redis_server, *flags, name=name)
    wait_for(lambda: consumers_ready(client, list(live)), 120, "three workers")
    jobs = [queue.enqueue(str(clip)) for _ in range(JOBS)]
    rng = random.Random(0)

    def advanced_holders() -> list[str]:
        """Live workers whose current attempt at a job has recorded 20 frames or more."""
        out = []
        for j in jobs:
            state = client.hmget(queue.keys.job(j), "status", "worker", "resumed_from")
            if state[0] != b"running" or state[1] is None or state[1].decode() not in live:
                continue
            last = queue.last_frame(j)
            if last and last[0] + 1 - int(state[2] or 0) >= 20:
                out.append(state[1].decode())
        return sorted(set(out))

    kills = 0
    restarted = False
    deadline = time.monotonic() + 120
    while kills < KILLS and time.monotonic() < deadline:
        victims = advanced_holders()  # kill in mid-job, once it has advanced: each kill
        if not victims:  # costs an attempt and work that must not be lost or redone twice
            time.sleep(0.1)
            continue
        victim = rng.choice(victims)
        live.pop(victim).signal(signal.SIGKILL)  # no hand-back: its jobs must be reclaimed
        kills += 1
        name = next(names)
        live[name] = worker(redis_server, *flags, name=name)  # the replacement
        if kills == KILLS // 2:
            redis_server.stop()  # Redis goes away under everyone ...
            time.sleep(1.0)
            redis_server.start(appendonly=True)  # ... and comes back with its data
            client = redis_server.client()
            queue = Queue(client)
            restarted = True
        time.sleep(rng.uniform(0.5, 1.5))
    assert kills == KILLS and restarted
    wait_for(
        lambda: all(status(queue, j) is JobStatus.DONE for j in jobs),
        240,
        "every job to be done",
    )
    for job in jobs:
        assert_each_frame_once(client, queue, job, FRAMES)
    assert queue.dead_letters() == []
    assert queue.info()["dead"] == 0
    assert sum(queue.job(j).attempts for j in jobs) >= JOBS + KILLS // 2  # the storm hit
