"""(c) Real time: the most streams held at a frame rate with no drop and p99 latency in budget.

A *trial* plays ``n`` :class:`~benchmarks.synthetic.PacedStream` s at ``fps`` for
``trial_seconds`` (each stream's first frame at a random phase of the frame period)
through the frame path (:class:`~engine.framepath.FramePath`: a per-frame face detector
runs in the reader threads, batches go through ``Pipeline.analyze``), as ``veritas run``
and the workers do with live feeds. A frame's latency runs from the moment it was due
to the moment its record exists. The trial **holds** when no frame was dropped (a feed
with a one-frame buffer: a frame not taken before the next is due is lost), every sent
frame got a record, and the 99th-percentile latency is within the budget. A trial that
cannot hold any more (a drop, or more than 1% of its frames already over budget) stops
early.

:func:`find_max_streams` doubles ``n`` from 1 while trials hold, then bisects between
the last that held and the first that did not; it stops by itself after at most
``2 * log2(max_streams) + 1`` trials.

The muxer is configured as ``veritas run`` configures it (its default buffer per source,
readers that wait when it is full): a frame that waits in a full buffer makes its feed
late, which the paced feed counts as a drop, and its latency grows.
"""

from __future__ import annotations

import math
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from benchmarks import measure
from benchmarks.synthetic import Arrivals, PacedStream, percentile
from engine.batching import SourceEnded
from engine.framepath import FramePath, FramePathSettings, Stream
from engine.pipeline import Pipeline

EARLY_STOP_SHARE = 0.01
"""A trial stops once this share of its frames is already over the latency budget."""


@dataclass
class Trial:
    streams: int
    fps: float
    held: bool
    sent: int = 0
    analysed: int = 0
    dropped: int = 0
    p50_s: float = math.nan
    p99_s: float = math.nan
    max_s: float = math.nan
    stopped_early: bool = False
    seconds: float = 0.0
    memory: dict[str, float | None] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items()}


def find_max_streams(trial: Callable[[int], Trial], max_streams: int) -> tuple[int, list[Trial]]:
    """The most streams ``n <= max_streams`` whose trial holds (0 if even 1 fails).

    Doubling from 1, then bisection; assumes that more streams never hold better.
    """
    trials: list[Trial] = []

    def holds(n: int) -> bool:
        t = trial(n)
        trials.append(t)
        return t.held

    best, n = 0, 1
    while n <= max_streams and holds(n):
        best, n = n, n * 2
    if n > max_streams:  # every doubling held: try the limit itself
        if best < max_streams and holds(max_streams):
            best = max_streams
        else:
            n = max_streams
    if best < max_streams:
        low, high = best, min(n, max_streams)  # low holds (or is 0), high does not
        while high - low > 1:
            mid = (low + high) // 2
            if holds(mid):
                low = mid
            else:
                high = mid
        best = low
    return best, trials


def run_trial(bench: Any, pipeline: Pipeline, streams: int, fps: float) -> Trial:
    s = bench.settings
    device = pipeline.device
    count = max(1, round(fps * s.trial_seconds))
    budget = s.latency_budget_s
    arrivals = Arrivals()
    stop = threading.Event()
    rng = random.Random(streams)
    latencies: list[float] = []
    over = 0
    stopped = False
    measure.reset_peak_memory(device)
    path = FramePath(
        pipeline, FramePathSettings(s.batch_size, bench.config.pipeline.max_batch_latency_ms)
    )
    begin = time.monotonic()
    start = begin + 0.2  # time to open the sources
    try:
        for (name, factory), _ in zip(
            bench.streams(s.frames, streams), range(streams), strict=True
        ):
            paced = PacedStream(
                name, factory, fps, count, start + rng.random() / fps, arrivals, stop
            )
            path.add(Stream(name, lambda p=paced: p))
        for step in path.run():
            if isinstance(step, SourceEnded):
                if step.error is not None:
                    raise step.error
                continue
            now = time.monotonic()
            with arrivals.lock:
                for record in step.records:
                    latency = now - arrivals.due[(record.source, record.frame)]
                    latencies.append(latency)
                    over += latency > budget
                dropped = arrivals.dropped
            if dropped or over > EARLY_STOP_SHARE * count * streams:
                stopped = True
                break
    finally:
        stop.set()
        path.close()
    with arrivals.lock:
        sent, dropped = arrivals.sent, arrivals.dropped
    p99 = percentile(latencies, 0.99)
    held = not stopped and dropped == 0 and len(latencies) == sent == count * streams
    held = held and p99 <= budget
    return Trial(
        streams=streams,
        fps=fps,
        held=held,
        sent=sent,
        analysed=len(latencies),
        dropped=dropped,
        p50_s=percentile(latencies, 0.5),
        p99_s=p99,
        max_s=max(latencies, default=math.nan),
        stopped_early=stopped,
        seconds=time.monotonic() - begin,
        memory=measure.peak_memory(device),
    )


def run(bench: Any) -> dict[str, Any]:
    s = bench.settings
    pipeline: Pipeline = bench.pipeline(s.xai[0])
    warm_s = pipeline.warm_start()  # compilation apart from the trials
    pipeline.warmup((1, s.batch_size))
    out: dict[str, Any] = {
        "method": s.xai[0],
        "warm_start_s": round(warm_s, 3),
        "latency_budget_s": s.latency_budget_s,
        "trial_seconds": s.trial_seconds,
        "max_streams_searched": s.max_streams,
    }
    for fps in s.fps:
        best, trials = find_max_streams(
            lambda n, f=fps: run_trial(bench, pipeline, n, f), s.max_streams
        )
        out[f"{fps:g}fps"] = {
            "max_streams": best,
            "limit_reached": best == s.max_streams,
            "trials": [t.to_dict() for t in trials],
            "memory_per_stream_mb": memory_per_stream(trials),
        }
    return out


def memory_per_stream(trials: list[Trial]) -> dict[str, float | None]:
    """Peak memory added per stream: slope between the smallest and largest trial."""
    out: dict[str, float | None] = {}
    for key, short in (("peak_gpu_mb", "gpu"), ("peak_host_mb", "host")):
        points = sorted((t.streams, t.memory.get(key)) for t in trials if t.memory.get(key))
        if len(points) < 2 or points[0][0] == points[-1][0]:
            out[short] = None
            continue
        (n0, m0), (n1, m1) = points[0], points[-1]
        out[short] = (m1 - m0) / (n1 - n0)
    return out
