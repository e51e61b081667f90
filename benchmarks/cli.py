"""``veritas bench``: the benchmark harness on the command line.

veritas bench --quick --json bench.json           # CPU-sized, minutes
veritas bench --json bench-cpu.json               # full size (GPU when there is one)
veritas bench --workloads e2e,baseline --xai guided_backprop --streams 4
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

from engine.cli.options import dest, flag

EXIT_OK = 0


def _csv(kind: type) -> object:
    def parse(text: str) -> tuple:
        try:
            return tuple(kind(x) for x in text.split(",") if x.strip())
        except ValueError as e:
            raise argparse.ArgumentTypeError(str(e)) from e

    parse.__name__ = f"comma-separated {kind.__name__}s"
    return parse


def _engine(name: str, field: str) -> tuple[str, object, str]:
    """A flag of the engine's table (engine.cli.options), setting bench's ``field``."""
    key, kind, text = flag(name)
    return field, kind, f"{text} [{key}]"


# flag -> (BenchSettings field, type, help)
OPTIONS: dict[str, tuple[str, object, str]] = {
    "--workloads": ("workloads", _csv(str), "stages,e2e,baseline,realtime,profile,kernels"),
    "--device": _engine("--device", "device"),
    "--detector": _engine("--detector", "detector"),
    "--adversarial": _engine("--adversarial", "adversarial"),
    "--face-detector": _engine("--face-detector", "face_detector"),
    "--xai": ("xai", _csv(str), "XAI methods, e.g. guided_backprop,integrated_gradients"),
    "--runtime": _engine("--runtime", "runtime"),
    "--precision": _engine("--precision", "precision"),
    "--streams": ("streams", int, "end to end: streams read at once"),
    "--frames": ("frames", int, "end to end: frames per stream"),
    "--ig-frames": ("ig_frames", int, "end to end with Integrated Gradients: frames per stream"),
    "--batch-size": _engine("--batch-size", "batch_size"),
    "--stage-batches": ("stage_batches", _csv(int), "(a): batch sizes, e.g. 1,8,32"),
    "--ig-stage-batches": ("ig_stage_batches", _csv(int), "(a): batch sizes for IG"),
    "--baseline-frames": ("baseline_frames", int, "(d): frames the baseline analyses"),
    "--ig-baseline-frames": ("ig_baseline_frames", int, "(d): frames with Integrated Gradients"),
    "--fps": ("fps", _csv(float), "(c): frame rates, e.g. 25,30"),
    "--latency-budget": ("latency_budget_s", float, "(c): p99 frame latency budget (s)"),
    "--max-streams": ("max_streams", int, "(c): the stream search stops here"),
    "--trial-seconds": ("trial_seconds", float, "(c): length of one trial (s)"),
    "--ig-steps": _engine("--ig-steps", "ig_steps"),
    "--ig-internal-batch-size": ("ig_internal_batch_size", int, "IG rows per pass; 0 = all"),
    "--input": ("input", str, "file (encoded H.264, decoded) or memory (decoded frames)"),
    "--decoder": _engine("--decoder", "decoder"),
    "--stage-seconds": ("stage_seconds", float, "(a): seconds each measurement repeats"),
    "--threads": ("threads", int, "PyTorch CPU threads; 0 = one per core"),
}


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "bench",
        help="run the benchmark harness and print a table",
        description="Measure Veritas: (a) each stage alone across batch sizes, (b) end to "
        "end on synthetic streams, (c) the most streams held in real time, (d) the "
        "paper-style baseline on the same frames, a per-stage profile and the fused "
        "kernels. See benchmarks/README.md.",
    )
    p.add_argument(
        "--quick",
        action="store_true",
        help="CPU-sized workloads with tiny models (minutes); default: full size",
    )
    p.add_argument("--json", metavar="FILE", help="also write the report as JSON")
    p.add_argument(
        "--set",
        metavar="KEY=VALUE",
        action="append",
        default=[],
        help="engine config override, e.g. --set runtime.channels_last=true (repeatable)",
    )
    p.add_argument("--channels-last", action="store_true", default=None, help="NHWC convolutions")
    for name, (field, kind, text) in OPTIONS.items():
        p.add_argument(name, type=kind, metavar=field.upper(), help=text)  # type: ignore[arg-type]
    p.set_defaults(func=cmd_bench)


def settings_from_args(args: argparse.Namespace):  # -> BenchSettings (imports torch)
    from benchmarks.settings import default_size, preset

    settings = preset(default_size(args.quick), args.device)
    changes = {field: getattr(args, dest(name)) for name, (field, _, _) in OPTIONS.items()}
    changes = {k: v for k, v in changes.items() if v is not None}
    if args.channels_last is not None:
        changes["channels_last"] = args.channels_last
    if args.set:
        changes["overrides"] = tuple(args.set)
    return settings.replace(**changes)


def cmd_bench(args: argparse.Namespace) -> int:
    from benchmarks.harness import run_bench
    from benchmarks.report import format_report, write_json
    from engine.config import load_config

    try:
        settings = settings_from_args(args)
    except ValueError as e:
        print(f"veritas: error: bench: {e}", file=sys.stderr)
        return 2
    load_config(None, settings.config_overrides)  # a bad value fails now (exit 2)
    command = shlex.join(["veritas", *sys.argv[1:]]) if sys.argv[1:2] == ["bench"] else None
    report = run_bench(
        settings, command=command, progress=lambda m: print(m, file=sys.stderr, flush=True)
    )
    print(format_report(report))
    if args.json:
        path = write_json(report, args.json)
        print(f"report written to {Path(path)}", file=sys.stderr)
    return EXIT_OK
