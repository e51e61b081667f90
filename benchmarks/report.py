"""The report: targets checked against the measurements, a text table, and JSON.

Targets (issue #5) are *reported*, never asserted by tests:

* CPU (``--quick``): end to end with Guided Backprop >= 3x the paper-style baseline's
  frames/s, >= 8x with Integrated Gradients; Veritas' time per face <= 1.3x the sum of
  its model passes measured alone (face detection, the detector's classify+XAI pass(es)
  and Detect-ResNet50, from workload (a) at the end-to-end batch size).
* GPU: >= 100 streams of 1080p H.264 at 25 fps held with p99 <= 1 s; >= 20x the
  baseline end to end; every fused kernel >= 2x its reference; memory per added stream
  (documented, no threshold).

A target whose workload did not run, or that belongs to the other kind of machine, is
reported with ``met: null``.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

GB, IG = "guided_backprop", "integrated_gradients"


def _result(report: dict[str, Any], workload: str) -> Any:
    return (report["workloads"].get(workload) or {}).get("result")


def model_pass_ms_per_face(report: dict[str, Any], method: str) -> float | None:
    """Sum of the model passes alone, per face, at the end-to-end batch size."""
    stages = _result(report, "stages")
    if not stages:
        return None
    b = report["settings"]["batch_size"]
    rows = {(r["stage"], r["method"]): r["ms_per_item"] for r in stages if r["batch"] == b}
    detect, adversarial = rows.get(("detect", None)), rows.get(("adversarial", None))
    fused = rows.get(("classify+xai", method))
    if fused is None:
        classify, xai = rows.get(("classify", None)), rows.get(("xai", method))
        fused = None if classify is None or xai is None else classify + xai
    if None in (detect, adversarial, fused):
        return None
    return detect + fused + adversarial  # type: ignore[operator]


def targets(report: dict[str, Any]) -> list[dict[str, Any]]:
    on_gpu = report["machine"]["device"].startswith("cuda")
    e2e = _result(report, "e2e") or {}
    baseline = _result(report, "baseline") or {}
    out: list[dict[str, Any]] = []

    def add(name: str, machine: str, goal: str, measured: float | None, ok: bool | None) -> None:
        applies = (machine == "gpu") == on_gpu
        out.append(
            {
                "name": name,
                "machine": machine,
                "target": goal,
                "measured": measured,
                "met": ok if applies and measured is not None else None,
            }
        )

    for machine in ("cpu", "gpu"):
        for method, goal in ((GB, 3.0), (IG, 8.0)) if machine == "cpu" else ((GB, 20.0),):
            ratio = (baseline.get(method) or {}).get("speedup")
            add(
                f"end to end vs paper baseline ({method})",
                machine,
                f">= {goal:g}x",
                ratio,
                None if ratio is None else ratio >= goal,
            )
    for method in (GB, IG):
        mine = (e2e.get(method) or {}).get("ms_per_face")
        alone = model_pass_ms_per_face(report, method)
        ratio = None if mine is None or not alone else mine / alone
        add(
            f"time per face / model passes alone ({method})",
            "cpu",
            "<= 1.3",
            ratio,
            None if ratio is None else ratio <= 1.3,
        )
    realtime = _result(report, "realtime") or {}
    held = (realtime.get("25fps") or {}).get("max_streams")
    hd = report["settings"]["frame_size"] == [1080, 1920] and report["settings"]["input"] == "file"
    add(
        "streams held at 25 fps, p99 <= 1 s (1080p H.264)",
        "gpu",
        ">= 100",
        held,
        None if held is None else held >= 100 and hd,
    )
    kernels = (_result(report, "kernels") or {}).get("cases") or []
    worst = min((k["speedup"] for k in kernels), default=None)
    fast = None if worst is None else worst >= 2.0
    add("fused kernels vs PyTorch reference (slowest)", "gpu", ">= 2x", worst, fast)
    per_stream = (realtime.get("25fps") or {}).get("memory_per_stream_mb") or {}
    add("GPU memory per added stream (MB)", "gpu", "documented", per_stream.get("gpu"), None)
    return out


# --- JSON -------------------------------------------------------------------------------


def to_json(report: dict[str, Any]) -> str:
    """The report as JSON: private keys dropped, NaN and infinities as null."""
    return json.dumps(_clean(report), indent=2, allow_nan=False) + "\n"


def write_json(report: dict[str, Any], path: str | Path) -> Path:
    path = Path(path)
    path.write_text(to_json(report))
    return path


def _clean(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items() if not str(k).startswith("_")}
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    if isinstance(value, float):
        return round(value, 6) if math.isfinite(value) else None
    return value


# --- text -------------------------------------------------------------------------------


def _fmt(value: Any, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        if value == 0:
            return "0"
        magnitude = math.floor(math.log10(abs(value)))
        return f"{value:.{max(0, digits - 1 - magnitude)}f}"
    return str(value)


def table(headers: list[str], rows: list[list[Any]]) -> str:
    """A Markdown table (also readable as plain text)."""
    cells = [[_fmt(c) for c in row] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) for i, h in enumerate(headers)]
    line = lambda r: "| " + " | ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) + " |"  # noqa: E731
    sep = "| " + " | ".join("-" * w for w in widths) + " |"
    return "\n".join([line(headers), sep, *(line(r) for r in cells)])


def format_report(report: dict[str, Any]) -> str:
    """The report as text: a header, one Markdown table per workload, targets, memory."""
    m, s, w = report["machine"], report["settings"], report["workloads"]
    rt = report["pipeline"]["runtime"]
    gpu = f", {m['gpu']}" if m.get("gpu") else ", no GPU"
    lines = [
        f"Veritas bench, size {s['size']}: {m['date']}, {m['cpu']} ({m['cpu_cores']} cores"
        f"{gpu}), torch {m['torch']}, load average {m.get('load_average')} -> "
        f"{m.get('load_average_after')}",
        f"models {s['detector']} + {s['adversarial']}, faces {s['face_detector']}, frames "
        f"{s['frame_size'][1]}x{s['frame_size'][0]} ({s['input']}), runtime {rt['backend']} "
        f"{rt['precision']}, batch {s['batch_size']}, IG steps {s['ig_steps']}",
    ]
    if report.get("matmul_peak_flops"):
        lines.append(f"bf16 matmul peak: {report['matmul_peak_flops'] / 1e12:.1f} TFLOP/s")

    def section(title: str, headers: list[str], rows: list[list[Any]]) -> None:
        lines.extend(["", title, table(headers, rows)])

    if "stages" in w:
        section(
            "(a) stages alone",
            ["stage", "method", "batch", "items/s", "ms/item", "TFLOP/s", "% peak"],
            [
                [
                    r["stage"],
                    r["method"] or "",
                    r["batch"],
                    r["items_per_s"],
                    r["ms_per_item"],
                    r.get("tflops_per_s"),
                    _pct(r.get("share_of_peak")),
                ]
                for r in w["stages"]["result"]
            ],
        )
    if "e2e" in w:
        section(
            "(b) end to end (ms per face by stage; outside = waiting for frames, batching, "
            "records; detect ahead = face detection in the reader threads, overlapped)",
            [
                "method",
                "streams",
                "frames",
                "faces",
                "frames/s",
                "faces/s",
                "ms/face",
                *STAGE_COLUMNS,
                "outside",
                "detect ahead",
            ],
            [
                [
                    method,
                    r["streams"],
                    r["frames"],
                    r["faces"],
                    r["frames_per_s"],
                    r["faces_per_s"],
                    r["ms_per_face"],
                    *(r["stage_ms_per_face"][k] for k in STAGE_COLUMNS),
                    r["outside_stages_ms_per_face"],
                    r.get("detect_ahead_ms_per_face"),
                ]
                for method, r in w["e2e"]["result"].items()
            ],
        )
    if "baseline" in w:
        section(
            "(d) paper-style baseline (frame by frame, batch 1, fp32, Captum) on the same frames",
            [
                "method",
                "frames",
                "baseline frames/s",
                "Veritas frames/s",
                "ratio",
                "faces compared",
                "max |dp_fake|",
                "max |dp_attacked|",
            ],
            [
                [
                    method,
                    r["frames"],
                    r["frames_per_s"],
                    r.get("veritas_frames_per_s"),
                    r.get("speedup"),
                    r.get("faces_compared"),
                    r.get("max_diff_p_fake"),
                    r.get("max_diff_p_attacked"),
                ]
                for method, r in w["baseline"]["result"].items()
            ],
        )
    if "realtime" in w:
        r = w["realtime"]["result"]
        rates = {k: v for k, v in r.items() if k.endswith("fps")}
        section(
            f"(c) real time ({r['method']}, p99 budget {r['latency_budget_s']} s, trials of "
            f"{r['trial_seconds']} s)",
            ["rate", "max streams", "search limit reached", "trials (streams: result)"],
            [
                [key, v["max_streams"], v["limit_reached"], _trials(v["trials"])]
                for key, v in rates.items()
            ],
        )
    if "profile" in w:
        p = w["profile"]["result"]
        section(
            f"profile ({p['method']}, {p['frames']} frames, {_fmt(p['wall_ms'])} ms wall)",
            ["stage", "runs on", "wall ms", "wall %", "CPU ms", "GPU ms", "GPU %"],
            [
                [
                    r["stage"],
                    r["runs_on"],
                    r["wall_ms"],
                    _pct(r["wall_share"]),
                    r["cpu_ms"],
                    r["gpu_ms"],
                    _pct(r["gpu_share"]),
                ]
                for r in p["rows"]
            ],
        )
    if "kernels" in w:
        k = w["kernels"]["result"]
        if "skipped" in k:
            lines.extend(["", f"kernels: skipped ({k['skipped']})"])
        else:
            section(
                "fused kernels",
                ["kernel", "ms", "reference ms", "speedup"],
                [[c["name"], c["kernel_ms"], c["reference_ms"], c["speedup"]] for c in k["cases"]],
            )
    section(
        "targets",
        ["target", "machine", "goal", "measured", "met"],
        [
            [t["name"], t["machine"], t["target"], t["measured"], t["met"]]
            for t in report["targets"]
        ],
    )
    mem = report["memory"]
    per = ", ".join(f"{k} {_fmt(v['memory']['peak_host_mb'])}" for k, v in w.items())
    lines.extend(
        [
            "",
            f"peak host memory: {_fmt(mem['peak_host_mb'])} MB (by workload: {per}); "
            f"peak GPU memory: {_fmt(mem['peak_gpu_mb'])} MB; run time {report['seconds']:.0f} s",
        ]
    )
    return "\n".join(lines)


STAGE_COLUMNS = ("detect", "crop", "classify", "xai", "adversarial")


def _trials(trials: list[dict[str, Any]]) -> str:
    return "; ".join(
        f"{t['streams']}: {'held' if t['held'] else 'failed'} (p99 {_fmt(t['p99_s'])} s, "
        f"dropped {t['dropped']})"
        for t in trials
    )


def _pct(share: float | None) -> str | None:
    return None if share is None else f"{100 * share:.1f}%"
