"""Errors of :mod:`engine.xai`, named after the condition they report.

They subclass :class:`engine.errors.VeritasError` (so the CLI prints them as one line)
and :class:`ValueError` (so plain Python callers can catch them as bad arguments).
"""

from __future__ import annotations

from collections.abc import Iterable

from engine.errors import VeritasError


class XAIError(VeritasError, ValueError):
    """Base class: an explanation could not be computed from the given arguments."""


class UnknownXAIMethodError(XAIError):
    """The attribution method name is not one of :data:`engine.xai.METHODS`."""

    def __init__(self, name: object, known: Iterable[str]) -> None:
        self.name, self.known = name, tuple(known)
        super().__init__(f"unknown XAI method {name!r}: choose one of {', '.join(self.known)}")


class NotAnImageBatchError(XAIError):
    """The inputs (or attributions) are not a floating-point NCHW tensor."""

    def __init__(self, what: str, value: object) -> None:
        self.what = what
        if hasattr(value, "shape") and hasattr(value, "dtype"):
            got = f"{value.dtype} tensor of shape {tuple(value.shape)}"
        else:
            got = type(value).__name__
        super().__init__(
            f"{what}: expected a floating-point tensor of shape (N, C, H, W), got {got}; "
            "pass a batch of float images (add a batch dimension with x[None] for one image)"
        )


class InvalidTargetError(XAIError):
    """The target is neither an int nor an integer tensor of shape () or (N,)."""

    def __init__(self, target: object, batch: int, problem: str) -> None:
        self.target, self.batch = target, batch
        super().__init__(
            f"target {_short(target)} is invalid for a batch of {batch}: {problem}; "
            "give an int (one class for all samples) or an integer tensor of shape (N,)"
        )


class TargetOutOfRangeError(InvalidTargetError):
    """A target class index is not in ``[0, num_classes)``."""

    def __init__(self, target: object, batch: int, num_classes: int) -> None:
        self.num_classes = num_classes
        super().__init__(
            target, batch, f"class indices must lie in [0, {num_classes}) for this model"
        )


class UnexpectedModelOutputError(XAIError):
    """The model did not return logits of shape (N, C) for N inputs."""

    def __init__(self, shape: tuple[int, ...], batch: int) -> None:
        self.shape, self.batch = shape, batch
        super().__init__(
            f"model returned a tensor of shape {shape} for {batch} inputs; expected logits "
            f"of shape ({batch}, num_classes): wrap the model so it returns one row per input"
        )


class InvalidXAIOptionError(XAIError):
    """An option of an attribution method or of :func:`engine.xai.prepare_map` is invalid."""

    def __init__(self, key: str, value: object, expected: str) -> None:
        self.key, self.value, self.expected = key, value, expected
        super().__init__(f"xai option {key} = {_short(value)} is invalid: expected {expected}")


class UnguidableModelError(XAIError):
    """The model cannot be given a guided twin (e.g. a TorchScript module)."""

    def __init__(self, model: object, reason: str) -> None:
        self.model = model
        super().__init__(
            f"cannot build a guided-backprop twin of {type(model).__name__}: {reason}; "
            "pass the eager nn.Module the scripted/exported model was made from"
        )


def _short(value: object) -> str:
    """``repr`` of ``value``, shortened for tensors so messages stay one line."""
    shape = getattr(value, "shape", None)
    if shape is not None and len(shape) > 0 and getattr(value, "numel", lambda: 0)() > 8:
        return f"<{getattr(value, 'dtype', '?')} tensor of shape {tuple(shape)}>"
    return " ".join(repr(value).split())
