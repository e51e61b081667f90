"""kernels.bench_cases: kernel and reference callables for the benchmark harness."""

from __future__ import annotations

import pytest

from kernels import BenchCase, bench_cases

TINY = {
    "frames": (2, 40, 50),
    "faces": 2,
    "face_sizes": (5, 30),
    "detector_size": 20,
    "adversarial_size": 16,
    "ig_steps": 3,
    "ig_rows": 4,
}


def test_cases_cover_every_kernel_at_pipeline_shapes_by_default() -> None:
    cases = bench_cases("cpu", faces=2)  # inputs are built lazily: nothing runs here
    assert [c.name for c in cases] == [
        "crop_resize_normalize",
        "xai_maps",
        "detect_resnet_inputs",
        "ig_interpolate",
        "ig_accumulate",
        "nv12_to_rgb",
    ]
    assert all(isinstance(c, BenchCase) and c.fused_bytes > 0 for c in cases)
    assert "299" in cases[0].shapes and "224" in cases[2].shapes


@pytest.mark.triton
def test_each_case_runs_and_its_kernel_matches_its_reference() -> None:
    for case in bench_cases("cpu", **TINY):
        # maps may differ by one quantization level: 1/255, over ImageNet std >= 0.224
        limit = 1 / 255 / 0.224 + 1e-5 if "map" in case.name or "detect" in case.name else 1e-5
        assert case.max_abs_diff() <= limit, case.name
