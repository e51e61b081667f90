"""Shared fixtures: small real media (encoded by the tests) and tiny-model configurations."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

# Inductor's on-disk cache keys its C++ kernels by the CPU it detects, not by the
# instruction set ATen is told to use (ATEN_CPU_CAPABILITY): a run as an AVX2 machine
# after an AVX-512 run on the same machine loaded the other run's kernels and computed
# garbage. One cache per setting, made before torch is imported.
_ISA = "-".join(
    os.environ.get(k, "native")
    for k in ("ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA", "MKL_ENABLE_INSTRUCTIONS")
)
os.environ.setdefault(
    "TORCHINDUCTOR_CACHE_DIR", os.path.join(tempfile.gettempdir(), f"veritas-inductor-{_ISA}")
)

import pytest  # noqa: E402

from engine.config import Config, load_config  # noqa: E402
from tests.media import encode_video, face_frames  # noqa: E402

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
