"""``veritas``: the command line.

Exit status: 0 when every source was processed; 1 when a source failed (the records
of the frames processed before are kept); 2 for bad usage, configuration or weights
(nothing was processed).

One module per group of commands: :mod:`engine.cli.run` (``run``),
:mod:`engine.cli.tools` (``sample``, ``convert-weights``, ``--list-models``),
``engine.queue.cli`` (``submit``, ``worker``, ``serve``, ``status``, ...), and
``benchmarks.cli`` (``bench``, imported only when it runs); what they share (exit
codes, logging, the flag -> config table) is in :mod:`engine.cli.options`.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from engine.cli.options import (
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_USAGE,
    RUN_OPTIONS,
    add_config_arguments,
    config_from_args,
)
from engine.cli.run import add_run_parser
from engine.cli.tools import add_convert_parser, add_sample_parser, list_models
from engine.errors import VeritasError
from engine.logs import setup_logging, verbosity
from engine.queue.cli import add_parsers as add_queue_parsers

__all__ = [
    "EXIT_FAILED",
    "EXIT_OK",
    "EXIT_USAGE",
    "RUN_OPTIONS",
    "add_config_arguments",
    "build_parser",
    "config_from_args",
    "main",
]


def add_bench_parser(sub: argparse._SubParsersAction) -> None:
    """``veritas bench`` (``benchmarks/cli.py``)."""
    from benchmarks.cli import add_parser

    add_parser(sub)


PARSERS = [
    add_run_parser,
    add_sample_parser,
    add_convert_parser,
    add_queue_parsers,
    add_bench_parser,
]


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


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    setup_logging("plain", verbosity(args.verbose))
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
        return EXIT_INTERRUPTED
