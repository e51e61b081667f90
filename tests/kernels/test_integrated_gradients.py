"""kernels.integrated_gradients: IG's interpolation and accumulation kernels."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from engine.xai import attribute, integration_nodes
from kernels import use_backend
from kernels.errors import KernelInputError
from kernels.integrated_gradients import (
    ig_accumulate_reference,
    ig_accumulate_triton,
    ig_interpolate_reference,
    ig_interpolate_triton,
)
from tests.kernels.helpers import TOLERANCE

SHAPE = (3, 3, 13, 17)  # N = 3 samples of 663 elements: blocks end mid-sample
STEPS = 5


def inputs(dtype: torch.dtype, seed: int = 0) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(SHAPE, generator=g)
    base = torch.randn(SHAPE, generator=g) * 0.1
    alphas, weights = (torch.tensor(v) for v in integration_nodes("gausslegendre", STEPS))
    x, base, alphas, weights = (t.to(dtype) for t in (x, base, alphas, weights))
    return x, base, x - base, alphas, weights


@pytest.mark.triton
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("chunk", [15, 4, 7])  # all rows; chunks cutting steps apart
def test_chunks_match_the_reference(dtype: torch.dtype, chunk: int) -> None:
    _, base, diff, alphas, weights = inputs(dtype)
    g = torch.Generator().manual_seed(1)
    rows = STEPS * SHAPE[0]
    total_ref, total_out = torch.zeros(SHAPE, dtype=dtype), torch.zeros(SHAPE, dtype=dtype)
    for start in range(0, rows, chunk):
        stop = min(start + chunk, rows)
        ref = ig_interpolate_reference(base, diff, alphas, start, stop)
        out = ig_interpolate_triton(base, diff, alphas, start, stop, block=256)
        grads = torch.randn(ref.shape, generator=g).to(dtype)
        last = diff if stop == rows else None
        ig_accumulate_reference(total_ref, grads, weights, start, last)
        returned = ig_accumulate_triton(total_out, grads, weights, start, last, block=256)
        assert returned is total_out
        if dtype == torch.float32:  # same roundings in the same order: bit for bit
            assert torch.equal(out, ref)
        else:
            torch.testing.assert_close(out, ref, **TOLERANCE[dtype])
    if dtype == torch.float32:
        assert torch.equal(total_out, total_ref)
    else:  # the kernel sums in float32, the reference in the half type: compare loosely
        scale = total_ref.float().abs().max()
        assert (total_out.float() - total_ref.float()).abs().max() <= 0.02 * scale


class TinyNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.body = nn.Sequential(
            nn.Conv2d(3, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 2)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


@pytest.mark.triton
@pytest.mark.parametrize("internal_batch_size", [None, 4])
def test_engine_integrated_gradients_with_the_kernels(internal_batch_size: int | None) -> None:
    model = TinyNet().eval()
    x, base, *_ = inputs(torch.float32)
    options = {"n_steps": STEPS, "internal_batch_size": internal_batch_size, "baselines": base}
    with use_backend("reference"):
        ref = attribute(model, x, 1, "integrated_gradients", **options)
    with use_backend("triton"):
        out = attribute(model, x, 1, "integrated_gradients", **options)
    assert torch.equal(out, ref)


def test_reference_rows_are_captums_order() -> None:
    x, base, diff, alphas, _ = inputs(torch.float64)
    rows = ig_interpolate_reference(base, diff, alphas, 2, 9)
    for r in range(2, 9):
        step, sample = divmod(r, SHAPE[0])
        torch.testing.assert_close(rows[r - 2], base[sample] + alphas[step] * (x - base)[sample])


def test_accumulation_weights_each_step_and_finishes_with_diff() -> None:
    _, _, diff, _, weights = inputs(torch.float64)
    grads = torch.randn(STEPS * SHAPE[0], *SHAPE[1:], dtype=torch.float64)
    total = torch.zeros(SHAPE, dtype=torch.float64)
    ig_accumulate_reference(total, grads[:4], weights, 0)
    ig_accumulate_reference(total, grads[4:], weights, 4, diff)
    expected = (grads.view(STEPS, *SHAPE) * weights.view(-1, 1, 1, 1, 1)).sum(0) * diff
    torch.testing.assert_close(total, expected)


def test_bad_arguments_are_clear_errors() -> None:
    _, base, diff, alphas, weights = inputs(torch.float32)
    for impl in (ig_interpolate_reference, ig_interpolate_triton):
        with pytest.raises(KernelInputError, match="rows"):
            impl(base, diff, alphas, 4, 16)
        with pytest.raises(KernelInputError, match="baselines"):
            impl(base[:2], diff, alphas, 0, 3)
    for impl in (ig_accumulate_reference, ig_accumulate_triton):
        with pytest.raises(KernelInputError, match="rows"):
            impl(torch.zeros(SHAPE), torch.zeros(4, *SHAPE[1:]), weights, 12)
        with pytest.raises(KernelInputError, match="grads"):
            impl(torch.zeros(SHAPE), torch.zeros(4, 3, 13, 16), weights, 0)
    with pytest.raises(KernelInputError, match="dtype"):
        ig_interpolate_triton(base.double(), diff.double(), alphas.double(), 0, 3)
