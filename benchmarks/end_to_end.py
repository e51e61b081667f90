"""(b) End to end, as fast as possible, and (d) the paper-style baseline on the same frames.

(b): ``settings.streams`` synthetic streams (one face per frame) are read at once by the
:class:`~engine.framepath.FramePath`, the one frame path ``veritas run`` and the workers
use (decoding in reader threads, overlapped with inference; pinned batches on CUDA;
every batch through ``Pipeline.analyze``). A per-frame CPU face detector (Haar) runs in
the reader threads too (``Pipeline.detect_ahead``), overlapping the model stages; its time
is reported apart (``detect_ahead_ms_per_face``). The clock runs from the first source
being opened to the last record. The models are warmed up first (compiled graphs built).

(d): :class:`~benchmarks.baseline.PaperBaseline` on the first ``baseline_frames`` frames
of the same streams (decoded the same way, one frame at a time), in the same process.
The report gives both rates, their ratio, and the largest difference of the two
implementations' ``p_fake`` / ``p_attacked`` on the frames both analysed.
"""

from __future__ import annotations

import itertools
import math
import time
from typing import Any

from benchmarks.baseline import PaperBaseline
from engine.batching import SourceEnded
from engine.framepath import FramePath, FramePathSettings, Stream
from engine.pipeline import STAGES, Pipeline


def frames_for(bench: Any, method: str) -> int:
    s = bench.settings
    return s.ig_frames if method == "integrated_gradients" else s.frames


def run(bench: Any) -> dict[str, Any]:
    s = bench.settings
    out: dict[str, Any] = {}
    for method in s.xai:
        pipeline: Pipeline = bench.pipeline(method)
        warm_s = pipeline.warm_start()  # every bucket compiled: none inside the trial
        pipeline.warmup((s.batch_size,))
        out[method] = analyse_streams(bench, pipeline, frames_for(bench, method))
        out[method]["warm_start_s"] = round(warm_s, 3)
    return out


def analyse_streams(bench: Any, pipeline: Pipeline, frames: int) -> dict[str, Any]:
    """Run every stream through the frame path as fast as possible."""
    s = bench.settings
    stage_ms = dict.fromkeys(STAGES, 0.0)
    results: dict[tuple[str, int], list[tuple[float, float | None]]] = {}
    n_frames = n_faces = batches = 0
    path = FramePath(pipeline, FramePathSettings(s.batch_size, pipeline_latency_ms(bench)))
    ahead_ms = pipeline.detect_ahead_ms
    start = time.perf_counter()
    with path:
        for name, factory in bench.streams(frames):
            path.add(Stream(name, factory))
        for step in path.run():
            if isinstance(step, SourceEnded):
                if step.error is not None:
                    raise step.error
                continue
            for _, result in step.parts:
                batches += 1
                for stage, ms in result.timings_ms.items():
                    stage_ms[stage] += ms
            for record in step.records:
                n_frames += 1
                n_faces += len(record.faces)
                results[(record.source, record.frame)] = [
                    (f.p_fake, f.p_attacked) for f in record.faces
                ]
    seconds = time.perf_counter() - start
    in_stages = sum(stage_ms.values())
    per_face = max(n_faces, 1)
    return {
        "streams": s.streams,
        "frames": n_frames,
        "faces": n_faces,
        "batches": batches,
        "seconds": seconds,
        "frames_per_s": n_frames / seconds,
        "faces_per_s": n_faces / seconds,
        "ms_per_face": 1000 * seconds / per_face,
        "stage_ms_per_face": {k: v / per_face for k, v in stage_ms.items()},
        "outside_stages_ms_per_face": (1000 * seconds - in_stages) / per_face,
        "detect_ahead_ms_per_face": (pipeline.detect_ahead_ms - ahead_ms) / per_face,
        "fused_classify_xai": pipeline.fused,
        "_results": results,
    }


def pipeline_latency_ms(bench: Any) -> float:
    return bench.config.pipeline.max_batch_latency_ms


def run_baseline(bench: Any, e2e: dict[str, Any] | None) -> dict[str, Any]:
    s = bench.settings
    ours = (e2e or {}).get("result", {})
    out: dict[str, Any] = {}
    for method in s.xai:
        count = s.ig_baseline_frames if method == "integrated_gradients" else s.baseline_frames
        pipeline = bench.paper_pipeline(method)  # the same weights, eager fp32 NCHW
        baseline = PaperBaseline(pipeline)
        per_stream = math.ceil(count / s.streams)
        faces = []
        n = 0
        start = time.perf_counter()
        for _, factory in bench.streams(frames_for(bench, method)):
            for frame in itertools.islice(factory(), min(per_stream, count - n)):
                faces.extend(baseline.analyze(frame))
                n += 1
            if n >= count:
                break
        seconds = time.perf_counter() - start
        row: dict[str, Any] = {
            "frames": n,
            "faces": len(faces),
            "seconds": seconds,
            "frames_per_s": n / seconds,
            "faces_per_s": len(faces) / seconds,
            "ms_per_face": 1000 * seconds / max(len(faces), 1),
        }
        mine = ours.get(method)
        if mine:
            row["veritas_frames_per_s"] = mine["frames_per_s"]
            row["speedup"] = mine["frames_per_s"] / row["frames_per_s"]
            row.update(_agreement(faces, mine.get("_results", {})))
        out[method] = row
    return out


def _agreement(
    faces: list[Any], results: dict[tuple[str, int], list[tuple[float, float | None]]]
) -> dict[str, Any]:
    """Largest |baseline - Veritas| of p_fake and p_attacked on the frames both analysed."""
    d_fake = d_att = 0.0
    compared = 0
    by_frame: dict[tuple[str, int], list[Any]] = {}
    for face in faces:
        by_frame.setdefault((face.source, face.frame), []).append(face)
    for key, theirs in by_frame.items():
        mine = results.get(key)
        if mine is None or len(mine) != len(theirs):
            continue
        for (p_fake, p_att), face in zip(mine, theirs, strict=True):
            compared += 1
            d_fake = max(d_fake, abs(p_fake - face.p_fake))
            if p_att is not None and face.p_attacked is not None:
                d_att = max(d_att, abs(p_att - face.p_attacked))
    return {
        "faces_compared": compared,
        "max_diff_p_fake": d_fake,
        "max_diff_p_attacked": d_att,
    }
