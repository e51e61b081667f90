"""NV12 → RGB for NVDEC's pictures: one pass instead of a dozen elementwise launches.

NVDEC gives each decoded picture as NV12: ``H`` rows of luma, then ``H / 2`` rows of
interleaved chroma (U, V) at half resolution. The conversion is BT.601 limited range
with each chroma sample covering its 2×2 block, what PyAV's ``rgb24`` conversion
(swscale) gives, so frames decoded by NVDEC and by PyAV reach the models alike
(``engine.sources.nvdec``).

* :func:`nv12_to_rgb_reference` — plain PyTorch (about 15 launches, each reading or
  writing a float32 copy of the picture: ~250 MB of traffic for a 1080p frame);
* :func:`nv12_to_rgb_triton` — one launch: reads the 3 MB NV12 picture, writes the 6 MB
  RGB one, with the same float32 operations in the same order (no FMA contraction) and
  the same round-half-to-even, so its output equals the reference's bit for bit.

:func:`nv12_to_rgb` picks the kernel for CUDA tensors (``kernels.backend``).
"""

from __future__ import annotations

import torch
from torch import Tensor

from kernels.backend import check_launchable, jit, tl, triton, use_triton
from kernels.errors import KernelInputError
from kernels.tl_utils import rint

__all__ = ["nv12_to_rgb", "nv12_to_rgb_reference", "nv12_to_rgb_triton"]

Y_SCALE = 255.0 / 219.0
C_SCALE = 255.0 / 224.0
R_CR, G_CB, G_CR, B_CB = 1.402, 0.344136, 0.714136, 1.772
"""BT.601 coefficients of R = Y + 1.402 Cr, G = Y - 0.344136 Cb - 0.714136 Cr, B = Y + 1.772 Cb."""


def nv12_to_rgb(nv12: Tensor, height: int, width: int) -> Tensor:
    """uint8 RGB ``(height, width, 3)`` of a uint8 NV12 picture ``(height * 3 // 2, width)``
    on its device (see the module doc)."""
    impl = nv12_to_rgb_triton if use_triton(nv12) else nv12_to_rgb_reference
    return impl(nv12, height, width)


def _check(nv12: Tensor, height: int, width: int) -> None:
    if height % 2 or width % 2 or height < 2 or width < 2:
        raise KernelInputError("height, width", f"{height}x{width}", "even sizes of at least 2")
    if nv12.dtype != torch.uint8 or tuple(nv12.shape) != (height * 3 // 2, width):
        raise KernelInputError(
            "nv12",
            f"{nv12.dtype} {tuple(nv12.shape)}",
            f"an NV12 picture of {width}x{height}: uint8 ({height * 3 // 2}, {width})",
        )


def nv12_to_rgb_reference(nv12: Tensor, height: int, width: int) -> Tensor:
    """Plain PyTorch: the conversion as separate tensor operations."""
    _check(nv12, height, width)
    y = (nv12[:height].float() - 16.0) * Y_SCALE
    uv = nv12[height:].reshape(height // 2, width // 2, 2).float() - 128.0
    uv = uv.repeat_interleave(2, dim=0).repeat_interleave(2, dim=1) * C_SCALE
    cb, cr = uv[..., 0], uv[..., 1]
    rgb = torch.stack((y + R_CR * cr, y - G_CB * cb - G_CR * cr, y + B_CB * cb), dim=-1)
    return rgb.round_().clamp_(0, 255).to(torch.uint8)


def nv12_to_rgb_triton(nv12: Tensor, height: int, width: int, *, block: int = 256) -> Tensor:
    """One launch over ``(height, ceil(width / block))``; same result as the reference."""
    _check(nv12, height, width)
    check_launchable(nv12)
    src = nv12.contiguous()
    out = torch.empty(height, width, 3, dtype=torch.uint8, device=nv12.device)
    grid = (height, triton.cdiv(width, block))
    _nv12_kernel[grid](src, out, height, width, BLOCK=block, enable_fp_fusion=False)
    return out


@jit
def _nv12_kernel(src, out, height, width, BLOCK: tl.constexpr):
    row = tl.program_id(0)
    cols = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    inside = cols < width
    luma = tl.load(src + row * width + cols, mask=inside, other=16).to(tl.float32)
    chroma = src + (height + row // 2) * width + (cols // 2) * 2
    u = tl.load(chroma, mask=inside, other=128).to(tl.float32)
    v = tl.load(chroma + 1, mask=inside, other=128).to(tl.float32)
    y = (luma - 16.0) * 1.1643835616438356  # 255 / 219, as float32
    cb = (u - 128.0) * 1.1383928571428572  # 255 / 224
    cr = (v - 128.0) * 1.1383928571428572
    r = y + 1.402 * cr
    g = (y - 0.344136 * cb) - 0.714136 * cr
    b = y + 1.772 * cb
    base = out + (row * width + cols) * 3
    tl.store(base, rint(tl.minimum(tl.maximum(r, 0.0), 255.0)).to(tl.uint8), mask=inside)
    tl.store(base + 1, rint(tl.minimum(tl.maximum(g, 0.0), 255.0)).to(tl.uint8), mask=inside)
    tl.store(base + 2, rint(tl.minimum(tl.maximum(b, 0.0), 255.0)).to(tl.uint8), mask=inside)
