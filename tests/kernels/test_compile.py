"""The kernels compile for the GPUs the engine targets, with no GPU present.

The interpreter checks what the kernels compute; this checks that Triton's compiler
(front end to PTX and ptxas, which ships with triton) accepts them for sm_90 (H100/H200)
and sm_80 (A100), in the variants the wrappers launch, without FMA contraction and with
IEEE divisions only.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from kernels.backend import interpreting, triton
from kernels.crop_resize import _crop_resize_normalize_kernel
from kernels.integrated_gradients import _ig_accumulate_kernel, _ig_interpolate_kernel
from kernels.nv12 import _nv12_kernel
from kernels.xai_map import _detect_resnet_inputs_kernel

pytestmark = pytest.mark.skipif(
    triton is None or interpreting(), reason="needs Triton's compiler (not the interpreter)"
)

FLOATS = {"mean0", "mean1", "mean2", "std0", "std1", "std2"}


def signature(kernel, pointers: dict[str, str], constexprs: dict[str, object]) -> dict[str, str]:
    sig = {}
    for name in kernel.arg_names:
        if name in constexprs:
            sig[name] = "constexpr"
        elif name in pointers:
            sig[name] = pointers[name]
        else:
            sig[name] = "fp32" if name in FLOATS else "i32"
    return sig


VARIANTS = [
    (
        _crop_resize_normalize_kernel,
        {"out_ptr": "*bf16", "frames_ptr": "*u8", "boxes_ptr": "*i32", "ids_ptr": "*i32"},
        {"stride_c": 1, "BLOCK_Y": 16, "BLOCK_X": 32},
    ),
    (
        _detect_resnet_inputs_kernel,
        {"out_ptr": "*fp32", "crops_ptr": "*fp32", "attr_ptr": "*fp32", "scale_ptr": "*fp32"},
        {"SIGNED": True, "BLOCK_Y": 16, "BLOCK_X": 32},
    ),
    (  # Triton specializes integer arguments equal to 1 (unit strides, one face, one tile)
        _detect_resnet_inputs_kernel,
        {"out_ptr": "*fp16", "crops_ptr": "*fp32", "attr_ptr": "*fp32", "scale_ptr": "*fp32"},
        {"crop_sw": 1, "attr_sw": 1, "n_crops": 1, "tiles_x": 1, "SIGNED": False}
        | {"BLOCK_Y": 16, "BLOCK_X": 32},
    ),
    (
        _ig_interpolate_kernel,
        {name: "*fp16" for name in ("out_ptr", "base_ptr", "diff_ptr", "alpha_ptr")},
        {"BLOCK": 1024},
    ),
    (
        _ig_accumulate_kernel,
        {name: "*fp32" for name in ("total_ptr", "grads_ptr", "weight_ptr", "diff_ptr")},
        {"n": 1, "HAS_DIFF": True, "BLOCK": 1024},
    ),
    (_nv12_kernel, {"src": "*u8", "out": "*u8"}, {"BLOCK": 256}),
]


@pytest.mark.parametrize("arch", [90, 80])
@pytest.mark.parametrize(("kernel", "pointers", "constexprs"), VARIANTS)
def test_kernel_compiles_to_a_cubin(
    kernel, pointers: dict, constexprs: dict, arch: int, tmp_path: Path, monkeypatch
) -> None:
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    monkeypatch.setenv("TRITON_CACHE_DIR", str(tmp_path))
    source = ASTSource(kernel, signature(kernel, pointers, constexprs), constexprs)
    compiled = triton.compile(
        source, target=GPUTarget("cuda", arch, 32), options={"enable_fp_fusion": False}
    )
    ptx = compiled.asm["ptx"]
    assert len(compiled.asm["cubin"]) > 0
    assert "fma.rn.f32" not in ptx and "div.full.f32" not in ptx and "div.approx" not in ptx
