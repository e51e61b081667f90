"""The engine's public functions run the references on CPU and the kernels on CUDA."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
import torch
from torch import nn

import kernels.backend
import kernels.crop_resize
import kernels.integrated_gradients
import kernels.xai_map
from engine.faces import crop_faces
from engine.xai import attribute, prepare_map
from engine.xai.maps import detect_resnet_inputs
from kernels import current_backend, interpreting, use_backend, use_triton
from kernels.errors import KernelBackendError
from tests.kernels.helpers import (
    BOXES,
    FRAME_IDS,
    IMAGENET_MEAN,
    IMAGENET_STD,
    assert_close,
    assert_levels_close,
    heavy_tailed,
    padded_frames,
)

KERNELS = {
    kernels.crop_resize: ["crop_resize_normalize_triton"],
    kernels.xai_map: ["xai_maps_triton", "detect_resnet_inputs_triton"],
    kernels.integrated_gradients: ["ig_interpolate_triton", "ig_accumulate_triton"],
}


class Calls:
    """Counts the calls of every Triton host wrapper; ``raising`` makes them fail."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, *, raising: bool) -> None:
        self.count: dict[str, int] = {}
        for module, names in KERNELS.items():
            for name in names:
                monkeypatch.setattr(module, name, self._spy(name, getattr(module, name), raising))

    def _spy(self, name: str, fn: Callable[..., Any], raising: bool) -> Callable[..., Any]:
        def spy(*args: Any, **kwargs: Any) -> Any:
            self.count[name] = self.count.get(name, 0) + 1
            if raising:
                raise AssertionError(f"{name} was called")
            return fn(*args, **kwargs)

        return spy


class TinyNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.body = nn.Sequential(
            nn.Conv2d(3, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 2)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


def engine_calls() -> Iterator[tuple[str, torch.Tensor]]:
    """Every public engine entry point that dispatches to a kernel, on small CPU inputs."""
    yield "crop", crop_faces(padded_frames(), BOXES[:4], FRAME_IDS[:4], 29)
    a = heavy_tailed(3, 3, 23, 27)
    yield "map", prepare_map(a, "guided_backprop", 29)
    crops = torch.rand(3, 3, 23, 27, generator=torch.Generator().manual_seed(3))
    yield (
        "stack",
        detect_resnet_inputs(crops, a, "guided_backprop", 29, IMAGENET_MEAN, IMAGENET_STD),
    )
    x = torch.rand(2, 3, 9, 11, generator=torch.Generator().manual_seed(4))
    yield "ig", attribute(TinyNet().eval(), x, 1, "integrated_gradients", n_steps=3)


@pytest.mark.parametrize("backend", ["auto", "reference"])
def test_on_cpu_the_engine_runs_the_references(
    monkeypatch: pytest.MonkeyPatch, backend: str
) -> None:
    calls = Calls(monkeypatch, raising=True)
    with use_backend(backend):
        results = dict(engine_calls())
    assert calls.count == {}
    assert set(results) == {"crop", "map", "stack", "ig"}


def test_auto_backend_takes_the_kernels_for_cuda_tensors(monkeypatch: pytest.MonkeyPatch) -> None:
    """With every device reporting CUDA, ``auto`` sends each engine entry to its kernel."""
    monkeypatch.setattr(kernels.backend, "_triton_device", lambda device: True)
    for module, names in KERNELS.items():
        for name in names:
            sentinel = RuntimeError(f"kernel {name}")
            monkeypatch.setattr(module, name, _raiser(sentinel))
    for expected, call in [
        ("crop_resize_normalize_triton", lambda: crop_faces(padded_frames(), BOXES, FRAME_IDS, 8)),
        ("xai_maps_triton", lambda: prepare_map(torch.ones(1, 3, 4, 4), "saliency", 8)),
        (
            "detect_resnet_inputs_triton",
            lambda: detect_resnet_inputs(
                torch.ones(1, 3, 4, 4), torch.ones(1, 3, 4, 4), "saliency", 8, (0,) * 3, (1,) * 3
            ),
        ),
        (
            "ig_interpolate_triton",
            lambda: attribute(TinyNet(), torch.ones(1, 3, 5, 5), 0, "integrated_gradients"),
        ),
    ]:
        with pytest.raises(RuntimeError, match=f"kernel {expected}"):
            call()
    # float64 has no kernel: integrated gradients in double stays on the reference
    ig = attribute(TinyNet().double(), torch.ones(1, 3, 5, 5).double(), 0, "integrated_gradients")
    assert ig.dtype == torch.float64


def _raiser(error: Exception) -> Callable[..., Any]:
    def fail(*args: Any, **kwargs: Any) -> Any:
        raise error

    return fail


@pytest.mark.triton
def test_forced_triton_backend_runs_every_kernel_and_matches_the_references(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with use_backend("reference"):
        ref = dict(engine_calls())
    calls = Calls(monkeypatch, raising=False)
    with use_backend("triton"):
        out = dict(engine_calls())
    assert calls.count == {
        "crop_resize_normalize_triton": 1,
        "xai_maps_triton": 1,
        "detect_resnet_inputs_triton": 1,
        "ig_interpolate_triton": 1,
        "ig_accumulate_triton": 1,
    }
    assert_close(out["crop"], ref["crop"])
    assert_levels_close(out["map"], ref["map"])
    assert_close(out["stack"][:3], ref["stack"][:3])
    assert_levels_close(out["stack"][3:], ref["stack"][3:], std=min(IMAGENET_STD))
    assert torch.equal(out["ig"], ref["ig"])


def test_backend_follows_the_environment_and_the_context(monkeypatch: pytest.MonkeyPatch) -> None:
    cpu = torch.zeros(1)
    monkeypatch.setenv("VERITAS_KERNELS", "triton")
    assert current_backend() == "triton" and use_triton(cpu)
    with use_backend("reference"):
        assert current_backend() == "reference" and not use_triton(cpu)
    monkeypatch.setenv("VERITAS_KERNELS", "auto")
    assert not use_triton(cpu)
    monkeypatch.setenv("VERITAS_KERNELS", "fast")
    with pytest.raises(KernelBackendError, match="VERITAS_KERNELS='fast'"):
        current_backend()
    with pytest.raises(KernelBackendError, match="unknown kernel backend"):
        with use_backend("cuda"):
            pass


@pytest.mark.skipif(interpreting(), reason="under the interpreter CPU tensors are fine")
def test_kernel_on_cpu_tensors_without_the_interpreter_is_a_clear_error() -> None:
    with pytest.raises(KernelBackendError, match="TRITON_INTERPRET=1"):
        kernels.crop_resize.crop_resize_normalize_triton(padded_frames(), BOXES, FRAME_IDS, 8)
