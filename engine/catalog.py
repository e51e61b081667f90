"""The names of the bundled networks, known without importing them.

``engine.config`` checks ``[models]`` names when a configuration is read, and the queue
commands (``veritas submit``, ``status``, ``cancel``, ``results``) read one: they must not
pay torch's import for it. A bundled name is checked here; any other name (a plugin's
model or face detector, or a typo) is looked up in the registries themselves
(``engine.models.model_cfg``, ``engine.faces.face_detector_cfg``), which import the
networks and give the error that lists every known name.

A test checks that this table equals what the registries hold after import.
"""

from __future__ import annotations

BUNDLED_MODELS: dict[str, str] = {
    "xception": "deepfake",
    "xception_tiny": "deepfake",
    "efficientnet_b4st": "deepfake",
    "efficientnet_b4st_tiny": "deepfake",
    "detect_resnet50": "adversarial",
    "detect_resnet50_tiny": "adversarial",
}
"""Model name -> kind (``deepfake`` or ``adversarial``), as ``engine.models`` registers."""

BUNDLED_FACE_DETECTORS: frozenset[str] = frozenset({"haar", "retinaface"})
"""Face detector names ``engine.faces`` registers."""


def is_bundled_model(name: str, kind: str) -> bool:
    return BUNDLED_MODELS.get(name) == kind


def is_bundled_face_detector(name: str) -> bool:
    return name in BUNDLED_FACE_DETECTORS
