"""NV12 → RGB: the Triton kernel (under the interpreter) equals its PyTorch reference bit
for bit; the reference's colours and shape checks."""

from __future__ import annotations

import pytest
import torch

from kernels.errors import KernelInputError
from kernels.nv12 import nv12_to_rgb, nv12_to_rgb_reference, nv12_to_rgb_triton


def picture(height: int, width: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (height * 3 // 2, width), dtype=torch.uint8, generator=g)


@pytest.mark.triton
@pytest.mark.parametrize(("height", "width"), [(4, 6), (18, 270), (2, 2)])
def test_kernel_equals_the_reference_bit_for_bit(height: int, width: int) -> None:
    # Full-range random bytes: every clamp, every rounding tie the data reaches; the
    # widths cut blocks of 256 apart (the masked tail).
    nv12 = picture(height, width)
    want = nv12_to_rgb_reference(nv12, height, width)
    got = nv12_to_rgb_triton(nv12, height, width, block=256)
    assert got.dtype == torch.uint8 and got.shape == (height, width, 3)
    assert torch.equal(got, want)


def test_the_reference_gives_known_colours_and_each_chroma_sample_its_2x2_block() -> None:
    nv12 = torch.empty(6, 4, dtype=torch.uint8)
    nv12[:4] = 81  # luma of pure red in BT.601 limited range
    nv12[4:].view(2, 2, 2)[:] = torch.tensor([90, 240])  # its chroma
    nv12[4:].view(2, 2, 2)[1, 1] = torch.tensor([128, 128])  # bottom-right block: grey
    rgb = nv12_to_rgb(nv12, 4, 4).int()
    assert (rgb[:2, :2] - torch.tensor([255, 0, 0])).abs().max() <= 1
    assert (rgb[2:, 2:] - rgb[2, 2]).abs().max() == 0 and rgb[2, 2, 0] == rgb[2, 2, 1]


@pytest.mark.parametrize(
    ("shape", "height", "width"), [((6, 4), 4, 5), ((5, 4), 4, 4), ((6, 4), 3, 4)]
)
def test_a_picture_of_the_wrong_shape_is_a_clear_error(shape, height, width) -> None:
    with pytest.raises(KernelInputError, match=r"NV12|even"):
        nv12_to_rgb_reference(torch.zeros(shape, dtype=torch.uint8), height, width)
