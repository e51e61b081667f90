"""``veritas sample``, ``veritas convert-weights`` and ``--list-models``."""

from __future__ import annotations

import argparse

from engine.cli.options import EXIT_OK
from engine.errors import ConfigError


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
