"""What every command shares: the exit codes and the flags that set
configuration keys (one table, used by ``veritas run``, the workers and ``serve``).

Nothing heavy is imported here (the queue commands answer without torch).
"""

from __future__ import annotations

import argparse
import json

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


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


def add_config_arguments(p: argparse.ArgumentParser) -> None:
    """``--config``, ``--set`` and the shortcut flags of :data:`RUN_OPTIONS`."""
    add_config_file_arguments(p)
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
