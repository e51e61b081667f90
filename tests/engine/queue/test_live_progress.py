"""A live job's progress and metrics: lost frames by cause and latency per feed."""

from __future__ import annotations

from engine.queue.job import JobSpec, Mode
from engine.queue.metrics import WorkerMetrics
from engine.queue.running import RunningJob
from engine.realtime import LatencyWindow


class FeedStandIn:
    """What a job reads from its live source: counters."""

    def __init__(self) -> None:
        self.reconnects = 0
        self.discontinuities = 0
        self.lost = {"feed_gap": 0, "stall": 0, "reconnect": 0}


def held_job(source: FeedStandIn, lost_before: dict[str, int] | None = None) -> RunningJob:
    job = RunningJob(
        key="k", entry="1-0", spec=JobSpec("job-1", "rtmp://cam/live/key"), payload=b"",
        mode=Mode.REALTIME, live=True, attempts=2, resume_from=0, epoch=None,
        lost_before=lost_before or {},
    )  # fmt: skip
    job.source = source  # type: ignore[assignment]
    job.latency = LatencyWindow()
    return job


def sample(text: str, name: str, **labels: str) -> float | None:
    want = ",".join(f'{k}="{v}"' for k, v in labels.items())
    for line in text.splitlines():
        if line.startswith(f"{name}{{{want}}}" if labels else f"{name} "):
            return float(line.rsplit(" ", 1)[1])
    return None


def test_lost_frames_by_cause_and_latency_reach_progress_and_metrics() -> None:
    source = FeedStandIn()
    job = held_job(source, lost_before={"reconnect": 7})
    metrics = WorkerMetrics("w")
    for ms in range(1, 101):  # latencies of 1..100 ms
        job.latency.add(ms / 1000)
    source.lost.update(feed_gap=50, stall=24)
    source.discontinuities = 1
    job.count_live(dropped_now=5, metrics=metrics)
    source.lost["feed_gap"] = 60  # more later: only the difference is added
    job.count_live(dropped_now=9, metrics=metrics)

    progress = job.progress()
    assert progress["lost"] == {"realtime": 9, "feed_gap": 60, "stall": 24, "reconnect": 7}
    assert progress["latency_ms"] == {"p50_ms": 50.0, "p99_ms": 99.0, "max_ms": 100.0}
    assert progress["lag_s"] == 0.1 and progress["discontinuities"] == 1

    text = metrics.exposition().decode()
    lost = "veritas_live_frames_lost_total"
    assert sample(text, lost, cause="realtime") == 9
    assert sample(text, lost, cause="feed_gap") == 60
    assert sample(text, lost, cause="stall") == 24
    latency = "veritas_feed_latency_seconds"
    assert sample(text, latency, job="job-1", quantile="0.99") == 0.099
    assert sample(text, latency, job="job-1", quantile="0.5") == 0.05
    metrics.forget_job("job-1")
    assert sample(metrics.exposition().decode(), latency, job="job-1", quantile="0.5") is None


def test_a_file_job_has_no_live_fields() -> None:
    job = held_job(FeedStandIn())
    job.live = False
    assert "lost" not in job.progress() and "latency_ms" not in job.progress()
