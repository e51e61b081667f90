"""``veritas``: the command line.

Exit status: 0 when every source was processed; 1 when a source failed (the records
of the frames processed before are kept); 2 for bad usage, configuration or weights
(nothing was processed).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from benchmarks.cli import add_parser as add_bench_parser
from engine.errors import ConfigError, VeritasError
from engine.queue.cli import add_parsers as add_queue_parsers

log = logging.getLogger("veritas")

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2

Command = Callable[[argparse.Namespace], int]


class _Formatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return f"veritas: {record.levelname.lower()}: {record.getMessage()}"


def setup_logging(verbose: int) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_Formatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.DEBUG if verbose > 1 else logging.INFO if verbose else logging.WARNING)


# --- veritas run --------------------------------------------------------------------------

# Shortcut flags: flag -> (config key, type).
RUN_OPTIONS: dict[str, tuple[str, type, str]] = {
    "--detector": ("models.detector", str, "deepfake detector (xception, efficientnet_b4st)"),
    "--detector-weights": ("models.detector_weights", str, "detector weights (.safetensors)"),
    "--face-detector": ("models.face_detector", str, "face detector (haar, retinaface)"),
    "--face-detector-weights": ("models.face_detector_weights", str, "face detector weights"),
    "--adversarial": ("models.adversarial", str, "adversarial detector (detect_resnet50)"),
    "--adversarial-weights": ("models.adversarial_weights", str, "Detect-ResNet50 weights"),
    "--xai": (
        "pipeline.xai_method",
        str,
        "guided_backprop, saliency, input_x_gradient, integrated_gradients",
    ),
    "--device": ("pipeline.device", str, "auto, cpu, cuda, cuda:N"),
    "--batch-size": ("pipeline.batch_size", int, "frames per batch"),
    "--fake-threshold": ("pipeline.fake_threshold", float, "p_fake at or above: fake"),
    "--attacked-threshold": (
        "pipeline.attacked_threshold",
        float,
        "p_attacked at or above: attacked",
    ),
    "--fps": ("sources.fps", float, "analyse frames at this rate (default: every frame)"),
    "--every": ("sources.every", int, "analyse every Nth frame"),
}


def add_config_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", metavar="FILE", help="TOML config file (see README)")
    p.add_argument(
        "--set",
        metavar="KEY=VALUE",
        action="append",
        default=[],
        help="override a config value, e.g. --set pipeline.ig_steps=32 (repeatable)",
    )
    for flag, (key, typ, text) in RUN_OPTIONS.items():
        p.add_argument(flag, type=typ, metavar=typ.__name__.upper(), help=f"{text} [{key}]")


def config_from_args(args: argparse.Namespace):  # -> Config (imported lazily: torch is slow)
    from engine.config import load_config

    overrides = list(args.set)
    for flag, (key, typ, _) in RUN_OPTIONS.items():
        value = getattr(args, flag.lstrip("-").replace("-", "_"))
        if value is not None:
            overrides.append(f"{key}={json.dumps(value) if typ is str else value}")
    return load_config(args.config, overrides)


def cmd_run(args: argparse.Namespace) -> int:
    from engine.pipeline import Pipeline
    from engine.runner import run_local

    config = config_from_args(args)
    pipeline = Pipeline.from_config(config)
    if pipeline.untrained_parts:
        log.warning(
            "untrained weights for %s: verdicts are random; records say "
            '"weights": "untrained" (README: \'Bringing real weights\')',
            ", ".join(pipeline.untrained_parts),
        )
    out = args.out or "-"
    to_stdout = out == "-"
    bar = None

    def on_start(total: int | None) -> None:
        nonlocal bar
        bar = _progress_bar(args, total)

    def on_error(name: str, error: BaseException) -> None:
        (bar.write if bar else lambda m: print(m, file=sys.stderr))(f"veritas: error: {error}")

    try:
        summary = run_local(
            args.sources,
            config,
            out=out,
            annotate=args.annotate,
            pipeline=pipeline,
            on_start=on_start,
            on_frames=lambda n: bar and bar.update(n),
            on_source_error=on_error,
        )
    finally:
        if bar:
            bar.close()
    print(summary.format(), file=sys.stderr if to_stdout else sys.stdout)
    if args.summary_json:
        Path(args.summary_json).write_text(json.dumps(summary.to_dict(), indent=2) + "\n")
    return EXIT_FAILED if summary.failed else EXIT_OK


def _progress_bar(args: argparse.Namespace, total: int | None):
    """A progress bar on stderr when it is a terminal (never in pipes or CI logs)."""
    if args.no_progress or not sys.stderr.isatty():
        return None
    from tqdm import tqdm

    return tqdm(total=total, unit="frame", desc="analysing", file=sys.stderr, dynamic_ncols=True)


def add_run_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "run",
        help="analyse sources in this process, write frame records",
        description="Analyse video files, images or image folders in this "
        "process (no Redis) and write one JSON record per analysed frame.",
    )
    p.add_argument("sources", nargs="+", metavar="SOURCE", help="video file, image, or folder")
    p.add_argument(
        "--out",
        metavar="FILE.jsonl",
        help="write records here (default: standard output; summary then on stderr)",
    )
    p.add_argument(
        "--annotate",
        metavar="OUT.mp4",
        help="write the video with boxes, verdicts and XAI heat maps "
        "(several sources: OUT-0.mp4, OUT-1.mp4, ...)",
    )
    p.add_argument("--summary-json", metavar="FILE", help="also write the summary as JSON")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_config_arguments(p)
    p.set_defaults(func=cmd_run)


# --- veritas sample -----------------------------------------------------------------------


def cmd_sample(args: argparse.Namespace) -> int:
    from engine.sample import write_sample

    if args.seconds <= 0 or args.fps <= 0 or not 64 <= args.size <= 4096:
        raise ConfigError(
            "sample",
            f"{args.seconds}s {args.fps}fps {args.size}px",
            "seconds > 0, fps > 0, size from 64 to 4096",
        )
    path = write_sample(args.out, seconds=args.seconds, fps=args.fps, size=args.size)
    print(path)
    return EXIT_OK


def add_sample_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("sample", help="write a sample clip made from a bundled real face photo")
    p.add_argument("out", metavar="OUT", help="output video (.mp4: H.264, .webm: VP9)")
    p.add_argument("--seconds", type=float, default=2.0)
    p.add_argument("--fps", type=float, default=25.0)
    p.add_argument("--size", type=int, default=384, help="frame width and height")
    p.set_defaults(func=cmd_sample)


# --- veritas convert-weights --------------------------------------------------------------


def cmd_convert(args: argparse.Namespace) -> int:
    from engine.convert import convert_weights

    path, report = convert_weights(
        args.src, args.dst, args.format, args.arch, trust_pickle=args.trust_pickle
    )
    print(f"{path}: {report}")
    return EXIT_OK


def add_convert_parser(sub: argparse._SubParsersAction) -> None:
    from engine.convert import FORMATS

    p = sub.add_parser(
        "convert-weights",
        help="convert a published checkpoint to Veritas safetensors",
        description="Convert a published checkpoint into the project's safetensors format. "
        "Formats: " + "; ".join(f"{name}: {f.description}" for name, f in FORMATS.items()),
    )
    p.add_argument("src", help="published checkpoint (.p/.pth pickle, or .safetensors)")
    p.add_argument("dst", help="output .safetensors file")
    p.add_argument("--format", required=True, choices=sorted(FORMATS))
    p.add_argument(
        "--arch",
        help="target architecture when the format fits several "
        "(e.g. xception_tiny); default: the format's full-size model",
    )
    p.add_argument(
        "--trust-pickle",
        action="store_true",
        help="allow reading a pickle file (only for checkpoints you trust)",
    )
    p.set_defaults(func=cmd_convert)


# --- main ---------------------------------------------------------------------------------

PARSERS = [add_run_parser, add_sample_parser, add_convert_parser, add_queue_parsers]
PARSERS.append(add_bench_parser)  # veritas bench: benchmarks/cli.py


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="veritas", description="Deepfake and adversarial-attack detection on video."
    )
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more logging")
    parser.add_argument(
        "--list-models",
        action="store_true",
        help="list the registered models and face detectors, then exit",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for add in PARSERS:
        add(sub)
    return parser


def list_models() -> str:
    from engine.faces import face_detector_cfg, list_face_detectors
    from engine.models import list_models as models
    from engine.models import model_cfg

    rows = []
    for name in models():
        c = model_cfg(name)
        rows.append(
            f"{c.kind:<12} {name:<22} {c.input_size:>4}px  "
            f"weights: --format {c.weights_format or '-'}"
        )
    for name in list_face_detectors():
        c = face_detector_cfg(name)
        rows.append(
            f"{'face':<12} {name:<22} {'':>4}    weights: --format {c.weights_format or '-'}"
        )
    return "\n".join(rows)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    setup_logging(args.verbose)
    if args.list_models:
        print(list_models())
        return EXIT_OK
    if not args.command:
        parser.print_help()
        return EXIT_USAGE
    try:
        return args.func(args)
    except VeritasError as e:
        print(f"veritas: error: {e}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("veritas: interrupted; records written so far are kept", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
