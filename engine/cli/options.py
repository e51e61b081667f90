"""What every command shares: the exit codes and the flags that set
configuration keys (one table, used by ``veritas run``, the workers and ``serve``).

Nothing heavy is imported here (the queue commands answer without torch).
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Iterable
from typing import NamedTuple

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
EXIT_INTERRUPTED = 130
"""Ctrl-C (128 + SIGINT), as shells report it."""


class Flag(NamedTuple):
    """A shortcut flag for one configuration key."""

    key: str
    """The config key it sets (``section.name``)."""
    type: type
    help: str


# The one flag -> config key table. ``veritas run``, ``worker`` and ``serve``
# take every flag; ``veritas bench`` and the training mains take the ones that apply to
# them, with this type and help (``flags=`` below, or :func:`flag` for bench's settings).
RUN_OPTIONS: dict[str, Flag] = {
    "--detector": Flag("models.detector", str, "deepfake detector (xception, efficientnet_b4st)"),
    "--detector-weights": Flag("models.detector_weights", str, "detector weights (.safetensors)"),
    "--face-detector": Flag("models.face_detector", str, "face detector (haar, retinaface)"),
    "--face-detector-weights": Flag("models.face_detector_weights", str, "face detector weights"),
    "--adversarial": Flag("models.adversarial", str, "adversarial detector (detect_resnet50)"),
    "--adversarial-weights": Flag("models.adversarial_weights", str, "Detect-ResNet50 weights"),
    "--xai": Flag(
        "pipeline.xai_method",
        str,
        "guided_backprop, saliency, input_x_gradient, integrated_gradients",
    ),
    "--device": Flag("pipeline.device", str, "auto, cpu, cuda, cuda:N"),
    "--batch-size": Flag("pipeline.batch_size", int, "frames per batch"),
    "--fake-threshold": Flag("pipeline.fake_threshold", float, "p_fake at or above: fake"),
    "--attacked-threshold": Flag(
        "pipeline.attacked_threshold", float, "p_attacked at or above: attacked"
    ),
    "--ig-steps": Flag("pipeline.ig_steps", int, "Integrated Gradients steps"),
    "--runtime": Flag("runtime.backend", str, "eager, compile, onnx or tensorrt"),
    "--precision": Flag("runtime.precision", str, "fp32, bf16 or fp16"),
    "--fps": Flag("sources.fps", float, "analyse frames at this rate (default: every frame)"),
    "--every": Flag("sources.every", int, "analyse every Nth frame"),
    "--decoder": Flag("sources.decoder", str, "auto, pyav, nvdec or dali"),
}


def flag(name: str) -> Flag:
    """The table's entry for ``name`` (``--detector``)."""
    return RUN_OPTIONS[name]


def dest(name: str) -> str:
    """argparse's attribute for flag ``name``: ``--face-detector`` -> ``face_detector``."""
    return name.lstrip("-").replace("-", "_")


def add_config_file_arguments(
    p: argparse.ArgumentParser, example: str = "pipeline.ig_steps=32"
) -> None:
    """``--config FILE`` and repeatable ``--set KEY=VALUE`` (every command that loads a
    configuration)."""
    p.add_argument("--config", metavar="FILE", help="TOML config file (see README)")
    p.add_argument(
        "--set",
        metavar="KEY=VALUE",
        action="append",
        default=[],
        help=f"override a config value, e.g. --set {example} (repeatable)",
    )


def add_config_arguments(
    p: argparse.ArgumentParser | argparse._ArgumentGroup,
    flags: Iterable[str] | None = None,
    *,
    files: bool = True,
) -> None:
    """``--config`` and ``--set`` (``files``), and the shortcut ``flags`` of
    :data:`RUN_OPTIONS` (default: all of them)."""
    if files:
        add_config_file_arguments(p)
    for name in RUN_OPTIONS if flags is None else flags:
        key, typ, text = RUN_OPTIONS[name]
        p.add_argument(name, type=typ, metavar=typ.__name__.upper(), help=f"{text} [{key}]")


def config_overrides(args: argparse.Namespace, flags: Iterable[str] | None = None) -> list[str]:
    """``--set`` items then one ``key=value`` per shortcut flag given (in table order)."""
    overrides = list(getattr(args, "set", None) or [])
    for name in RUN_OPTIONS if flags is None else flags:
        key, typ, _ = RUN_OPTIONS[name]
        value = getattr(args, dest(name), None)
        if value is not None:
            overrides.append(f"{key}={json.dumps(value) if typ is str else value}")
    return overrides


def config_from_args(args: argparse.Namespace, flags: Iterable[str] | None = None):
    """The :class:`~engine.config.Config` of ``--config``, ``--set`` and the flags
    (engine.config is imported here: it is slow)."""
    from engine.config import load_config

    return load_config(getattr(args, "config", None), config_overrides(args, flags))
