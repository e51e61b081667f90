"""Errors of :mod:`engine.runtime`, named after the condition they report."""

from __future__ import annotations

from engine.errors import VeritasError


class RuntimeBackendError(VeritasError):
    """Base class: a runtime could not be created or a pass could not be built."""


class UnknownRuntimeError(RuntimeBackendError):
    def __init__(self, name: str, known: list[str]) -> None:
        self.name = name
        super().__init__(f"unknown runtime {name!r}: choose one of {', '.join(known)}")


class RuntimeUnavailableError(RuntimeBackendError):
    """The backend exists but cannot run on this machine."""

    def __init__(self, name: str, reason: str) -> None:
        self.name, self.reason = name, reason
        super().__init__(f"runtime {name!r} is unavailable: {reason}")


class RuntimeMismatchError(RuntimeBackendError):
    """A built pass (ONNX, TensorRT) disagrees with eager PyTorch beyond the tolerance."""

    def __init__(self, label: str, backend: str, max_diff: float, tolerance: float) -> None:
        self.label, self.backend = label, backend
        self.max_diff, self.tolerance = max_diff, tolerance
        super().__init__(
            f"{backend} pass {label!r} differs from eager PyTorch by {max_diff:.3g} "
            f"(tolerance {tolerance:.3g}); use runtime.backend = 'eager' or 'compile', or "
            "raise runtime.check_tolerance if the difference is acceptable"
        )


class ExportError(RuntimeBackendError):
    """A network could not be exported or built into an engine."""

    def __init__(self, label: str, backend: str, detail: str) -> None:
        self.label, self.backend = label, backend
        super().__init__(
            f"{backend} pass {label!r} could not be built ({detail}); "
            "use runtime.backend = 'eager' or 'compile'"
        )
