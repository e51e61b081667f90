"""Which device the networks run on: ``pipeline.device`` (``auto``, ``cpu``, ``cuda``, ...)."""

from __future__ import annotations

import torch


def resolve_device(device: str) -> torch.device:
    """``auto`` is the first CUDA GPU when there is one, else the CPU; anything else is
    passed to :class:`torch.device` (``cpu``, ``cuda``, ``cuda:1``)."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)
