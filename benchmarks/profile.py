"""Where the time goes: the end-to-end run at the default configuration, profiled by stage.

The streams of the end-to-end workload go through the pipeline with the first XAI
method (Guided Backprop by default) under ``torch.profiler``. For each stage it gives

* wall time and its share of the run's wall time (the pipeline's own stage timers,
  which synchronize CUDA so GPU work counts in its stage);
* CPU time (the profiler's ``veritas.<stage>`` ranges) and, on a GPU, device time of the
  kernels launched in the stage, with its share of all device time;

the time a per-frame face detector spent in the reader threads (``Pipeline.detect_ahead``:
it overlaps the other stages, so it has no share of the wall time of its own), and the
time outside the stages (waiting for decoded and detected frames, batching, records).
"""

from __future__ import annotations

from typing import Any

import torch

from benchmarks.end_to_end import analyse_streams, frames_for
from engine.pipeline import STAGES


def run(bench: Any) -> dict[str, Any]:
    s = bench.settings
    method = s.xai[0]
    pipeline = bench.pipeline(method)
    pipeline.warm_start()  # no compilation inside the profile
    pipeline.warmup((s.batch_size,))
    activities = [torch.profiler.ProfilerActivity.CPU]
    if pipeline.device.type == "cuda":
        activities.append(torch.profiler.ProfilerActivity.CUDA)
    with torch.profiler.profile(activities=activities) as prof:
        e2e = analyse_streams(bench, pipeline, frames_for(bench, method))
    events = {e.key: e for e in prof.key_averages()}
    wall_ms = 1000 * e2e["seconds"]
    faces = max(e2e["faces"], 1)
    device_total = 0.0
    rows = []
    for stage in STAGES:
        event = events.get(f"veritas.{stage}")
        cpu_ms = event.cpu_time_total / 1000 if event else 0.0
        gpu_ms = _device_ms(event) if event and pipeline.device.type == "cuda" else None
        device_total += gpu_ms or 0.0
        stage_wall = e2e["stage_ms_per_face"][stage] * faces
        rows.append(
            {
                "stage": stage,
                "runs_on": pipeline.placement[stage],
                "wall_ms": stage_wall,
                "wall_share": stage_wall / wall_ms,
                "cpu_ms": cpu_ms,
                "gpu_ms": gpu_ms,
            }
        )
    ahead = e2e["detect_ahead_ms_per_face"] * faces
    if ahead:
        rows.append(
            {
                "stage": "detect (in reader threads)",
                "runs_on": "cpu",
                "wall_ms": None,
                "wall_share": None,
                "cpu_ms": ahead,
                "gpu_ms": None,
            }
        )
    outside = e2e["outside_stages_ms_per_face"] * faces
    rows.append(
        {
            "stage": "outside stages",
            "runs_on": "cpu",
            "wall_ms": outside,
            "wall_share": outside / wall_ms,
            "cpu_ms": None,
            "gpu_ms": None,
        }
    )
    for row in rows:
        row["gpu_share"] = row["gpu_ms"] / device_total if row["gpu_ms"] and device_total else None
    return {
        "method": method,
        "frames": e2e["frames"],
        "faces": e2e["faces"],
        "wall_ms": wall_ms,
        "frames_per_s": e2e["frames_per_s"],
        "rows": rows,
    }


def _device_ms(event: Any) -> float:
    total = getattr(event, "device_time_total", None)
    if total is None:
        total = getattr(event, "cuda_time_total", 0.0)
    return float(total) / 1000
