"""``veritas run``: analyse sources in this process (no Redis) and write frame records."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from engine.cli.options import (
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_OK,
    add_config_arguments,
    config_from_args,
)

log = logging.getLogger("veritas")


def cmd_run(args: argparse.Namespace) -> int:
    from engine.pipeline import Pipeline
    from engine.runner import run_local

    config = config_from_args(args)
    pipeline = Pipeline.from_config(config)
    pipeline.warm_start()  # every batch bucket built before the first frame (compile)
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
            realtime=args.realtime,
            events=config.events if args.events else None,
        )
    finally:
        if bar:
            bar.close()
    print(summary.format(), file=sys.stderr if to_stdout else sys.stdout)
    if args.summary_json:
        Path(args.summary_json).write_text(json.dumps(summary.to_dict(), indent=2) + "\n")
    if summary.interrupted:
        return EXIT_INTERRUPTED
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
    p.add_argument(
        "sources",
        nargs="+",
        metavar="SOURCE",
        help="video file, image, folder, or live feed URL (rtsp, rtmp, srt, hls, ...)",
    )
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
    p.add_argument(
        "--events",
        action="store_true",
        help="also write verdict events (a fake or attacked verdict persisting over "
        'events.window_s) to the output, as lines with "type": "event"',
    )
    p.add_argument(
        "--realtime",
        action="store_true",
        help="live feeds: drop frames when the analysis falls behind, within the "
        "queue.live_max_lag_s budget (default: analyse every frame)",
    )
    add_config_arguments(p)
    p.set_defaults(func=cmd_run)
