"""Shared fixtures: small real media (encoded by the tests) and tiny-model configurations."""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.config import Config, load_config
from tests.media import encode_video, face_frames

TINY = [
    'models.detector="xception_tiny"',
    'models.adversarial="detect_resnet50_tiny"',
    'pipeline.device="cpu"',
    "pipeline.batch_size=4",
]
TINY_FLAGS = [
    "--detector",
    "xception_tiny",
    "--adversarial",
    "detect_resnet50_tiny",
    "--device",
    "cpu",
    "--no-progress",
]


def tiny_config(*overrides: str) -> Config:
    """The default configuration with tiny models on the CPU, plus ``overrides``."""
    return load_config(None, [*TINY, *overrides])


@pytest.fixture(scope="session")
def face_clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """12 frames (192x192, H.264, 25 fps) of a real face photo, moving a little."""
    path = tmp_path_factory.mktemp("media") / "face.mp4"
    return encode_video(path, face_frames(12, size=192), fps=25)
