"""``veritas bench``: the harness runs in CI size and writes valid JSON; its parts are right.

No speed is asserted anywhere: timings depend on the machine and its load.
"""

from __future__ import annotations

import json
import math
import threading
import time

import pytest

from benchmarks import kernels as kernel_bench
from benchmarks.cli import settings_from_args
from benchmarks.realtime import Trial, find_max_streams, memory_per_stream
from benchmarks.report import format_report, model_pass_ms_per_face, targets, to_json
from benchmarks.settings import WORKLOADS, BenchSettings, preset
from benchmarks.synthetic import Arrivals, PacedStream, memory_stream, percentile, stream_frames
from engine.cli import build_parser, main

CI_SIZE = [
    "--quick",
    "--streams", "2",
    "--frames", "3",
    "--ig-frames", "2",
    "--baseline-frames", "2",
    "--ig-baseline-frames", "1",
    "--ig-steps", "3",
    "--stage-batches", "1,2",
    "--ig-stage-batches", "1,2",
    "--batch-size", "2",
    "--fps", "25",
    "--trial-seconds", "0.3",
    "--max-streams", "2",
    "--stage-seconds", "0.02",
    "--threads", "1",
]  # fmt: skip


def test_quick_bench_completes_and_writes_valid_json(tmp_path, capsys):
    out = tmp_path / "bench.json"
    assert main(["bench", *CI_SIZE, "--json", str(out)]) == 0
    report = json.loads(out.read_text())  # valid JSON: NaN and private keys are gone
    assert report["schema"] == 1 and report["settings"]["size"] == "quick"
    assert set(report["workloads"]) == set(WORKLOADS)
    w = {name: v["result"] for name, v in report["workloads"].items()}
    stages = {(r["stage"], r["method"], r["batch"]) for r in w["stages"]}
    for b in (1, 2):
        assert ("detect", None, b) in stages and ("adversarial", None, b) in stages
        assert ("classify+xai", "guided_backprop", b) in stages
        assert ("xai", "integrated_gradients", b) in stages
    for method in ("guided_backprop", "integrated_gradients"):
        e2e = w["e2e"][method]
        frames = 2 * (3 if method == "guided_backprop" else 2)
        assert e2e["frames"] == frames and e2e["faces"] == frames  # one face per frame
        base = w["baseline"][method]
        assert base["speedup"] > 0 and base["faces_compared"] >= 1
        # The same models on the same frames: the baseline computes what Veritas does.
        assert base["max_diff_p_fake"] < 1e-4 and base["max_diff_p_attacked"] < 1e-2
    rt = w["realtime"]["25fps"]
    assert rt["trials"] and all(1 <= t["streams"] <= 2 for t in rt["trials"])
    # the result is what the trials say: the most streams held (0 when none held), and a
    # held trial is one with no drop where every frame sent was analysed
    held = [t["streams"] for t in rt["trials"] if t["held"]]
    assert rt["max_streams"] == max(held, default=0)
    assert rt["limit_reached"] == (rt["max_streams"] == 2)
    for t in rt["trials"]:
        if t["held"]:
            assert t["dropped"] == 0 and t["analysed"] == t["sent"] > 0
    profile = {r["stage"]: r for r in w["profile"]["rows"]}
    assert {"detect", "crop", "classify", "xai", "adversarial", "outside stages"} <= set(profile)
    assert profile["detect (in reader threads)"]["cpu_ms"] > 0  # Haar ran in the readers
    shares = [r["wall_share"] for r in profile.values() if r["wall_share"] is not None]
    assert math.isclose(sum(shares), 1.0, abs_tol=1e-4)  # JSON keeps 6 decimals
    assert "skipped" in w["kernels"]  # no GPU here
    assert report["memory"]["peak_host_mb"] > 0 and report["memory"]["peak_gpu_mb"] is None
    names = {t["name"] for t in report["targets"]}
    assert "end to end vs paper baseline (integrated_gradients)" in names
    text = capsys.readouterr().out
    assert "(a) stages alone" in text and "(d) paper-style baseline" in text and "targets" in text


# --- the real-time search -------------------------------------------------------------------


@pytest.mark.parametrize("capacity", [0, 1, 2, 3, 5, 6, 7, 8, 13])
def test_stream_search_finds_the_capacity_within_its_bound(capacity):
    limit = 8
    seen: list[int] = []

    def trial(n: int) -> Trial:
        seen.append(n)
        return Trial(streams=n, fps=25.0, held=n <= capacity)

    best, trials = find_max_streams(trial, limit)
    assert best == min(capacity, limit)
    assert len(trials) == len(seen) <= 2 * math.log2(limit) + 1
    assert all(1 <= n <= limit for n in seen)


def test_memory_per_stream_is_the_slope_between_trials():
    trials = [
        Trial(1, 25.0, True, memory={"peak_gpu_mb": 1000.0, "peak_host_mb": 500.0}),
        Trial(4, 25.0, True, memory={"peak_gpu_mb": 1600.0, "peak_host_mb": 500.0}),
    ]
    assert memory_per_stream(trials) == {"gpu": 200.0, "host": 0.0}
    assert memory_per_stream(trials[:1]) == {"gpu": None, "host": None}


def test_paced_stream_sends_on_time_and_drops_frames_a_slow_consumer_missed():
    images = stream_frames(2, 32, 32)
    fps = 10.0  # a period of 100 ms: far above scheduling jitter on a loaded machine
    fast = Arrivals()
    start = time.monotonic() + 0.01
    frames = list(PacedStream("a", lambda: memory_stream("a", images), fps, 5, start, fast))
    assert [f.index for f in frames] == [0, 1, 2, 3, 4] and fast.dropped == 0
    assert time.monotonic() >= start + 4 / fps
    assert fast.due[("a", 3)] == pytest.approx(start + 3 / fps)
    slow = Arrivals()
    stream = iter(
        PacedStream("b", lambda: memory_stream("b", images), fps, 6, time.monotonic(), slow)
    )
    next(stream)
    time.sleep(0.35)  # the consumer holds frame 0 for 3.5 periods
    rest = list(stream)
    assert slow.dropped >= 2 and slow.sent == 1 + len(rest) and slow.sent + slow.dropped == 6


def test_paced_stream_stops_when_asked():
    stop = threading.Event()
    stop.set()
    images = stream_frames(1, 32, 32)
    arrivals = Arrivals()
    paced = PacedStream("a", lambda: memory_stream("a", images), 10.0, 50, 0.0, arrivals, stop)
    assert list(paced) == []


def test_synthetic_frames_have_the_requested_size_and_differ_by_stream():
    a, b = stream_frames(2, 90, 160, stream=0), stream_frames(2, 90, 160, stream=1)
    assert a[0].shape == (90, 160, 3) and a[0].dtype.name == "uint8"
    assert (a[0] != b[0]).any()


def test_percentile_is_nearest_rank():
    assert percentile([3.0, 1.0, 2.0], 0.5) == 2.0
    assert percentile(list(range(1, 101)), 0.99) == 99
    assert math.isnan(percentile([], 0.99))


# --- the report -----------------------------------------------------------------------------


def fake_report(device: str = "cpu") -> dict:
    stages = [
        {"stage": "detect", "method": None, "batch": 8, "ms_per_item": 10.0},
        {"stage": "classify", "method": None, "batch": 8, "ms_per_item": 3.0},
        {"stage": "classify+xai", "method": "guided_backprop", "batch": 8, "ms_per_item": 8.0},
        {"stage": "xai", "method": "integrated_gradients", "batch": 8, "ms_per_item": 40.0},
        {"stage": "adversarial", "method": None, "batch": 8, "ms_per_item": 2.0},
        {"stage": "detect", "method": None, "batch": 1, "ms_per_item": 99.0},
    ]
    return {
        "machine": {"device": device},
        "settings": {"batch_size": 8, "frame_size": [256, 256], "input": "file"},
        "workloads": {
            "stages": {"result": stages},
            "e2e": {
                "result": {
                    "guided_backprop": {"ms_per_face": 24.0},
                    "integrated_gradients": {"ms_per_face": 100.0},
                }
            },
            "baseline": {
                "result": {
                    "guided_backprop": {"speedup": 3.5},
                    "integrated_gradients": {"speedup": 7.0},
                }
            },
        },
    }


def test_targets_compare_measurements_on_the_right_machine():
    report = fake_report()
    assert model_pass_ms_per_face(report, "guided_backprop") == 20.0  # 10 + 8 + 2
    assert model_pass_ms_per_face(report, "integrated_gradients") == 55.0  # 10 + 3 + 40 + 2
    by_name = {(t["name"], t["machine"]): t for t in targets(report)}
    gb = by_name[("end to end vs paper baseline (guided_backprop)", "cpu")]
    ig = by_name[("end to end vs paper baseline (integrated_gradients)", "cpu")]
    assert gb["met"] is True and ig["met"] is False and ig["measured"] == 7.0
    overhead = by_name[("time per face / model passes alone (guided_backprop)", "cpu")]
    assert overhead["measured"] == pytest.approx(1.2) and overhead["met"] is True
    assert by_name[("end to end vs paper baseline (guided_backprop)", "gpu")]["met"] is None
    assert by_name[("streams held at 25 fps, p99 <= 1 s (1080p H.264)", "gpu")]["met"] is None


def test_json_drops_private_keys_and_non_finite_numbers():
    text = to_json({"a": math.nan, "b": [1.0, math.inf], "_private": 1, "c": {"_x": 2, "y": 3}})
    assert json.loads(text) == {"a": None, "b": [1.0, None], "c": {"y": 3}}


def test_table_formats_the_targets_of_a_report_with_no_workload_tables():
    """A report whose workloads are not shown (only their targets, as in a summary) still
    renders every target row with its measured figure and verdict."""
    report = fake_report()
    report["machine"].update(date="2026-11-21", cpu="cpu", cpu_cores=2, torch="2.14")
    report["settings"].update(
        size="quick", detector="d", adversarial="a", face_detector="haar", ig_steps=50
    )
    report["pipeline"] = {"runtime": {"backend": "eager", "precision": "fp32"}}
    report["targets"] = targets(report)
    report["workloads"] = {}
    report["memory"] = {"peak_host_mb": 1.0, "peak_gpu_mb": None}
    report["seconds"] = 1.0
    text = format_report(report)
    rows = {}
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip("|").split("|")]
        if len(cells) == 5 and cells[1] in ("cpu", "gpu"):
            rows[(cells[0], cells[1])] = cells[2:]
    assert len(rows) == len(report["targets"])
    e2e = "end to end vs paper baseline ({})"
    assert rows[(e2e.format("guided_backprop"), "cpu")] == [">= 3x", "3.50", "yes"]
    assert rows[(e2e.format("integrated_gradients"), "cpu")][1:] == ["7.00", "no"]
    overhead = rows[("time per face / model passes alone (guided_backprop)", "cpu")]
    assert overhead[1:] == ["1.20", "yes"]
    assert rows[("streams held at 25 fps, p99 <= 1 s (1080p H.264)", "gpu")][1:] == ["-", "-"]
    assert "1 s" in text and "1.00 MB" in text


# --- settings and the kernels hook -----------------------------------------------------------


def test_cli_options_override_the_size_defaults():
    args = build_parser().parse_args(
        ["bench", "--quick", "--xai", "saliency", "--fps", "25,30", "--streams", "3",
         "--set", "pipeline.map_quantile=0.99", "--channels-last"]
    )  # fmt: skip
    settings = settings_from_args(args)
    assert settings.size == "quick" and settings.detector == "xception_tiny"
    assert settings.xai == ("saliency",) and settings.fps == (25.0, 30.0)
    assert settings.streams == 3 and settings.channels_last is True
    assert "pipeline.map_quantile=0.99" in settings.config_overrides
    assert "pipeline.fake_threshold=1.0" in settings.config_overrides


def test_the_bench_warms_the_face_detector_for_its_own_frame_size_unless_told_otherwise():
    from engine.config import load_config

    def warm_sizes(settings: BenchSettings) -> list[tuple[int, int]]:
        return load_config(None, settings.config_overrides).faces.warm_sizes

    settings = preset("quick").replace(frame_size=(96, 160))
    assert warm_sizes(settings) == [(96, 160)]  # (height, width); the default is 1080p
    own = settings.replace(overrides=('faces.warm_frame_sizes=["64x48"]',))
    assert warm_sizes(own) == [(48, 64)]  # --set wins


def test_sizes_are_valid_and_bad_workloads_are_refused():
    for size in ("quick", "cpu", "gpu"):
        assert preset(size).size == size
    assert preset("gpu").frame_size == (1080, 1920) and preset("gpu").device == "cuda"
    with pytest.raises(ValueError, match="unknown workloads"):
        BenchSettings(workloads=("stages", "everything"))


def test_kernel_cases_come_from_the_kernels_hook(monkeypatch):
    import kernels

    calls = []

    def cases(device):
        calls.append(device)
        return [
            {"name": "add", "kernel": lambda: 1, "reference": lambda: 2},
            type("Case", (), {"name": "mul", "shapes": "(2,)", "make_inputs": lambda self: (3,),
                              "kernel": lambda self, x: x, "reference": lambda self, x: x,
                              "fused_bytes": 8})(),
        ]  # fmt: skip

    monkeypatch.setattr(kernels, "bench_cases", cases, raising=False)
    found, why = kernel_bench.load_cases("cuda")
    assert why is None and calls == ["cuda"]
    assert [c["name"] for c in found] == ["add", "mul"]
    assert found[1]["make_inputs"]() == (3,) and found[1]["bytes"] == 8
    monkeypatch.delattr(kernels, "bench_cases")
    found, why = kernel_bench.load_cases("cuda")
    assert found is None and "bench_cases" in why
