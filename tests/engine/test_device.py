"""``pipeline.device``: ``auto`` picks a GPU when there is one; other names pass through."""

from __future__ import annotations

import pytest
import torch

from engine.device import resolve_device


def test_auto_is_the_gpu_when_there_is_one_else_the_cpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve_device("auto") == torch.device("cuda")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto") == torch.device("cpu")


def test_explicit_devices_pass_through_and_nonsense_is_refused():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("cuda:1") == torch.device("cuda", 1)
    with pytest.raises(RuntimeError):
        resolve_device("tpu-ish")
