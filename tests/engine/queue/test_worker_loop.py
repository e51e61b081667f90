"""The worker loop in this process, with a stand-in for the models (so each case takes a
second, not a model build), against a real redis-server: a job whose frames break the
models fails alone, a job whose workers keep dying is dead-lettered, cancellation stops
a running job, and a graceful stop hands a job back to be finished exactly once."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable, Iterator, Mapping

from engine.config import load_config
from engine.frames import Frame, FrameBatch
from engine.pipeline import BatchResult
from engine.queue.job import JobSpec, JobStatus, Mode
from engine.queue.keys import GROUP
from engine.queue.queue import RELEASE_IDLE_MS, Queue
from engine.queue.results import ResultWriter
from engine.queue.worker import Worker
from engine.records import FrameRecord
from tests.engine.queue.conftest import wait_for
from tests.media import encode_video, moving_pattern


class StandInModels:
    """Analyses a batch into empty records; raises for the frames of ``poison`` jobs."""

    device = "cpu"

    def __init__(self, poison: str | None = None, seconds_per_batch: float = 0.0) -> None:
        self.poison = poison
        self.seconds_per_batch = seconds_per_batch
        self.batches = 0

    def stream_ended(self, stream: str) -> None:
        pass  # no per-stream state

    def detect_ahead(self, frames: Iterable[Frame]) -> Iterator[Frame]:
        return iter(frames)  # nothing to detect ahead

    def analyze(
        self, batch: FrameBatch, job: str | Mapping[str, str] = "", keep_maps: bool = False
    ) -> BatchResult:
        self.batches += 1
        # As Pipeline.analyze: one job for all frames, or a job per stream key.
        jobs = [job if isinstance(job, str) else job.get(k, "") for k in batch.streams]
        if self.poison and self.poison in jobs:
            raise RuntimeError("CUDA error: an illegal memory access was encountered")
        time.sleep(self.seconds_per_batch)  # stands in for the models' time
        records = [
            FrameRecord(j, s, i, p, (), "untrained", {"detect": 1.0})
            for j, s, i, p in zip(jobs, batch.sources, batch.indices, batch.pts, strict=True)
        ]
        return BatchResult(records, None, {"detect": float(len(batch))})  # type: ignore[arg-type]


def config(tmp_path, *overrides: str):
    return load_config(
        None,
        [
            "queue.poll_s=0.1",
            "queue.claim_idle_s=1.0",
            "queue.heartbeat_s=0.2",
            "queue.max_attempts=2",
            "queue.max_worker_losses=2",
            f'queue.allowed_roots=["{tmp_path}"]',
            "pipeline.batch_size=4",
            "pipeline.max_batch_latency_ms=10",
            *overrides,
        ],
    )


def run_in_thread(worker: Worker) -> threading.Thread:
    thread = threading.Thread(target=worker.work, kwargs={"install_signals": False})
    thread.start()
    return thread


def test_a_job_whose_frames_break_the_models_fails_alone(redis_server, tmp_path):
    good = encode_video(tmp_path / "good.mp4", moving_pattern(20, 64, 64))
    bad = encode_video(tmp_path / "bad.mp4", moving_pattern(20, 64, 64))
    client = redis_server.client()
    queue = Queue(client)
    good_job, bad_job = queue.enqueue(str(good)), queue.enqueue(str(bad))
    models = StandInModels(poison=bad_job)
    worker = Worker(client, config(tmp_path), pipeline=models, name="w", burst=True)
    assert worker.work(install_signals=False) == 0  # burst: returns when nothing is left
    assert [r["frame"] for r in queue.results(good_job)] == list(range(20))
    assert queue.job(good_job).status is JobStatus.DONE
    state = queue.job(bad_job)
    assert state.status is JobStatus.FAILED and state.attempts == 2
    (dead,) = queue.dead_letters()
    assert dead["job"] == bad_job and dead["attempts"] == 2
    assert "failed 2 times" in dead["reason"] and "illegal memory access" in dead["reason"]


def test_a_job_whose_workers_keep_dying_is_dead_lettered(redis_server, tmp_path):
    clip = encode_video(tmp_path / "clip.mp4", moving_pattern(4, 64, 64))
    client = redis_server.client()
    queue = Queue(client)
    job = queue.enqueue(str(clip))
    entry = client.xreadgroup(GROUP, "ghost-1", {queue.keys.jobs: ">"})[0][1][0][0].decode()
    spec = JobSpec(job, str(clip))
    for ghost in ("ghost-1", "ghost-2"):  # each takes it, starts it and dies
        client.xclaim(queue.keys.jobs, GROUP, ghost, 0, [entry], justid=True)
        assert queue.start(spec, entry, ghost, Mode.LOSSLESS, live=False).action == "run"
    client.xclaim(queue.keys.jobs, GROUP, "ghost-2", 0, [entry], idle=RELEASE_IDLE_MS, justid=True)
    worker = Worker(client, config(tmp_path), pipeline=StandInModels(), name="w", burst=True)
    worker.work(install_signals=False)
    state = queue.job(job)
    assert state.status is JobStatus.FAILED and state.attempts == 2
    assert "its workers stopped 2 times in a row without recording a frame" in state.error
    assert queue.backlog() == 0  # acknowledged: it will not come back
    assert list(queue.results(job)) == []  # never run a third time


def _ghost_attempt(client, queue: Queue, spec: JobSpec, entry: str, ghost: str, frames) -> int:
    """A worker takes the job, records ``frames`` and dies (its entry left pending);
    returns the losses counted against the job when it started."""
    client.xclaim(queue.keys.jobs, GROUP, ghost, 0, [entry], justid=True)
    started = queue.start(spec, entry, ghost, Mode.LOSSLESS, live=False)
    assert started.action == "run" and started.resume_from == frames.start
    writer = ResultWriter(queue.keys, queue.config.results_max_len)
    pipe = client.pipeline(transaction=False)
    records = [
        FrameRecord(spec.id, spec.source, i, i / 25, (), "untrained", {}).to_dict() for i in frames
    ]
    writer.add(pipe, spec.id, records)
    pipe.execute()
    return started.losses


def test_a_job_that_advances_survives_any_number_of_worker_deaths(redis_server, tmp_path):
    """Preemption storms kill workers, not jobs: five workers die in turn while the job
    advances (max_worker_losses=2, max_attempts=2), and the sixth finishes it with each
    frame once. A death in an attempt that recorded nothing is counted, and progress
    clears the count."""
    n = 12
    clip = encode_video(tmp_path / "clip.mp4", moving_pattern(n, 64, 64))
    client = redis_server.client()
    queue = Queue(client)
    job = queue.enqueue(str(clip))
    entry = client.xreadgroup(GROUP, "g0", {queue.keys.jobs: ">"})[0][1][0][0].decode()
    spec = JobSpec(job, str(clip))
    chunks = [range(0, 2), range(2, 4), range(4, 4), range(4, 7), range(7, 9)]
    losses = [_ghost_attempt(client, queue, spec, entry, f"g{i}", f) for i, f in enumerate(chunks)]
    assert losses == [0, 0, 0, 1, 0]  # the third recorded nothing: counted, then cleared
    client.xclaim(queue.keys.jobs, GROUP, "g4", 0, [entry], idle=RELEASE_IDLE_MS, justid=True)
    worker = Worker(client, config(tmp_path), pipeline=StandInModels(), name="w", burst=True)
    worker.work(install_signals=False)
    state = queue.job(job)
    assert state.status is JobStatus.DONE, state.error
    assert state.attempts == 6 and state.progress["resumed_from"] == 9
    assert [r["frame"] for r in queue.results(job)] == list(range(n))
    assert queue.dead_letters() == []


def test_cancelling_a_running_job_stops_it_and_the_worker_goes_on(redis_server, tmp_path):
    clip = encode_video(tmp_path / "long.mp4", moving_pattern(300, 64, 64))
    client = redis_server.client()
    queue = Queue(client)
    worker = Worker(
        client, config(tmp_path), pipeline=StandInModels(seconds_per_batch=0.05), name="w"
    )
    thread = run_in_thread(worker)
    try:
        job = queue.enqueue(str(clip))
        wait_for(lambda: client.xlen(queue.keys.results(job)) >= 8, 30, "frames")
        queue.cancel(job)
        wait_for(lambda: client.xpending(queue.keys.jobs, GROUP)["pending"] == 0, 10, "the ack")
        assert queue.job(job).status is JobStatus.CANCELLED
        assert client.xlen(queue.keys.results(job)) < 300
        nxt = queue.enqueue(str(encode_video(tmp_path / "next.mp4", moving_pattern(4, 64, 64))))
        wait_for(lambda: queue.job(nxt).status is JobStatus.DONE, 30, "the next job")
    finally:
        worker.stop()
        thread.join(30)
    assert not thread.is_alive()


def test_a_graceful_stop_hands_the_job_back_to_be_finished_once(redis_server, tmp_path):
    n = 200
    clip = encode_video(tmp_path / "long.mp4", moving_pattern(n, 64, 64))
    client = redis_server.client()
    queue = Queue(client)
    job = queue.enqueue(str(clip))
    first = Worker(
        client, config(tmp_path), pipeline=StandInModels(seconds_per_batch=0.05), name="first"
    )
    thread = run_in_thread(first)
    wait_for(lambda: client.xlen(queue.keys.results(job)) >= 8, 30, "frames")
    first.stop("test")
    thread.join(30)
    assert not thread.is_alive()
    state = queue.job(job)
    assert state.status is JobStatus.QUEUED and state.attempts == 0  # not a failure
    done_before = client.xlen(queue.keys.results(job))
    assert 0 < done_before < n
    # Any worker takes it at once (no claim_idle_s wait) and resumes after the last frame.
    second = Worker(client, config(tmp_path, "queue.claim_idle_s=60.0"),
                    pipeline=StandInModels(), name="second", burst=True)  # fmt: skip
    second.work(install_signals=False)
    state = queue.job(job)
    assert state.status is JobStatus.DONE and state.worker == "second" and state.attempts == 1
    assert [r["frame"] for r in queue.results(job)] == list(range(n))
    assert state.progress["resumed_from"] == done_before


def test_the_first_loop_after_an_outage_reclaims_nothing(redis_server, tmp_path):
    """A peer's job idle past claim_idle_s because Redis was down: its holder could not
    renew the claim, so this worker's first intake after the outage (before the loop has
    recorded the outage's end) must not take it; only once the peers have had
    claim_idle_s does a still-idle job move (before the fix it moved at once)."""
    import redis

    clip = encode_video(tmp_path / "clip.mp4", moving_pattern(4, 64, 64))
    client = redis_server.client()
    queue = Queue(client)
    job = queue.enqueue(str(clip))
    worker = Worker(client, config(tmp_path), pipeline=StandInModels(), name="w", burst=True)
    worker._join()
    client.xreadgroup(GROUP, "peer", {queue.keys.jobs: ">"})  # the peer holds it
    idle = int(worker.qc.claim_idle_s * 1000) * 3  # as after an outage of 3 claim times
    entry = client.xpending_range(queue.keys.jobs, GROUP, "-", "+", 1)[0]["message_id"]
    client.xclaim(queue.keys.jobs, GROUP, "peer", 0, [entry], idle=idle, justid=True)

    def holder() -> str:
        return client.xpending_range(queue.keys.jobs, GROUP, "-", "+", 1)[0]["consumer"].decode()

    worker.backoff.failed(redis.ConnectionError("down"), "working")  # the outage
    worker.intake.take()  # Redis answers again; the loop has not called ok() yet
    assert holder() == "peer"
    worker.backoff.ok()
    worker.intake.take()
    assert holder() == "peer"  # the peers get claim_idle_s to renew
    worker.backoff.back_at -= worker.qc.claim_idle_s  # claim_idle_s later, still idle
    worker.intake.take()
    assert holder() == "w"
    assert worker.work(install_signals=False) == 0  # burst: it finishes the job it took
    assert queue.job(job).status is JobStatus.DONE
