"""Benchmark cases for the fused kernels: each kernel beside its reference, on real shapes.

The benchmark harness (``benchmarks/``) times ``case.reference(*inputs)`` against
``case.kernel(*inputs)`` on a GPU and reports the speed-up (the goal: fused kernels at
least 2x their PyTorch references) and the kernel's bandwidth from ``case.fused_bytes``::

    from kernels import bench_cases
    rows = []
    for case in bench_cases(device="cuda"):
        inputs = case.make_inputs()
        t_ref = time(lambda: case.reference(*inputs))
        t_ker = time(lambda: case.kernel(*inputs))
        rows.append((case.name, case.shapes, t_ref / t_ker, case.fused_bytes / t_ker / 1e9))

The callables call the ``*_reference`` and ``*_triton`` functions directly (no dispatch),
so the comparison holds whatever ``VERITAS_KERNELS`` says. ``ig_accumulate`` adds into its
first input in place: repeated calls keep accumulating, which changes the values but not
the work. :meth:`BenchCase.max_abs_diff` checks a case on fresh inputs.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from kernels.crop_resize import crop_resize_normalize_triton, crop_resize_normalize_vectorized
from kernels.integrated_gradients import (
    ig_accumulate_reference,
    ig_accumulate_triton,
    ig_interpolate_reference,
    ig_interpolate_triton,
)
from kernels.nv12 import nv12_to_rgb_reference, nv12_to_rgb_triton
from kernels.xai_map import (
    detect_resnet_inputs_reference,
    detect_resnet_inputs_triton,
    xai_maps_reference,
    xai_maps_triton,
)

__all__ = ["BenchCase", "bench_cases"]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class BenchCase:
    """One kernel and its reference on one set of shapes."""

    name: str
    """The op, e.g. ``"crop_resize_normalize"``."""
    shapes: str
    """The shapes, for the report."""
    make_inputs: Callable[[], tuple[object, ...]]
    """Fresh inputs on the case's device."""
    reference: Callable[..., Tensor]
    """The plain-PyTorch reference, called as ``reference(*inputs)``."""
    kernel: Callable[..., Tensor]
    """The Triton kernel's host wrapper, called as ``kernel(*inputs)``."""
    fused_bytes: int
    """Bytes the fused kernel must move at least (inputs read once, outputs written once)."""

    def max_abs_diff(self) -> float:
        """Largest ``|kernel - reference|`` on fresh inputs (float32 comparison)."""
        ref = self.reference(*self.make_inputs()).float()
        out = self.kernel(*self.make_inputs()).float()
        if out.shape != ref.shape:
            raise AssertionError(f"{self.name}: kernel {out.shape} vs reference {ref.shape}")
        return float((ref - out).abs().max()) if ref.numel() else 0.0


def bench_cases(
    device: str | torch.device = "cuda",
    *,
    frames: tuple[int, int, int] = (8, 1080, 1920),
    faces: int = 16,
    face_sizes: tuple[int, int] = (96, 640),
    detector_size: int = 299,
    adversarial_size: int = 224,
    ig_steps: int = 50,
    ig_rows: int = 200,
    seed: int = 0,
) -> list[BenchCase]:
    """The cases, at the pipeline's shapes by default (XceptionNet 299, Detect-ResNet50 224).

    Args:
        device: where the inputs live (``"cuda"``; ``"cpu"`` only under the interpreter).
        frames: ``(N, H, W)`` of the uint8 frame batch.
        faces: M, faces in the batch (crop boxes spread over the frames).
        face_sizes: smallest and largest crop side in pixels (up- and downscaling).
        detector_size: side of the deepfake detector's input (crops, attributions).
        adversarial_size: side of Detect-ResNet50's input.
        ig_steps: integrated gradients' ``n_steps``.
        ig_rows: rows per interpolation chunk (``internal_batch_size``).
        seed: for the random inputs.
    """
    device = torch.device(device)
    n_frames, height, width = frames
    m, s_det, s_adv = faces, detector_size, adversarial_size
    det_elems = 3 * s_det * s_det

    def generator() -> torch.Generator:
        return torch.Generator().manual_seed(seed)

    def crop_inputs() -> tuple[object, ...]:
        g = generator()
        images = torch.randint(0, 256, (n_frames, height, width, 3), generator=g, dtype=torch.uint8)
        lo, hi = face_sizes
        sides = torch.randint(lo, min(hi, height, width) + 1, (m,), generator=g)
        x1 = (torch.rand(m, generator=g) * (width - sides + 1)).long()
        y1 = (torch.rand(m, generator=g) * (height - sides + 1)).long()
        boxes = torch.stack([x1, y1, x1 + sides, y1 + sides], dim=1)
        ids = torch.randint(0, n_frames, (m,), generator=g)
        return images.to(device), boxes, ids, s_det

    def attributions(g: torch.Generator) -> Tensor:
        return (torch.randn(m, 3, s_det, s_det, generator=g) ** 3).to(device)

    def map_inputs() -> tuple[object, ...]:
        return attributions(generator()), True, s_adv, 0.995

    def stacked_inputs() -> tuple[object, ...]:
        g = generator()
        crops = torch.rand(m, 3, s_det, s_det, generator=g).to(device)
        return crops, attributions(g), True, s_adv, IMAGENET_MEAN, IMAGENET_STD, 0.995

    def nodes() -> tuple[Tensor, Tensor]:
        alphas, weights = torch.rand(2, ig_steps, generator=generator()).to(device)
        return alphas, weights

    rows = min(ig_rows, ig_steps * m)

    def interpolate_inputs() -> tuple[object, ...]:
        g = generator()
        x = torch.rand(m, 3, s_det, s_det, generator=g).to(device)
        base = torch.zeros_like(x)
        return base, x - base, nodes()[0], 0, rows

    def accumulate_inputs() -> tuple[object, ...]:
        g = generator()
        total = torch.zeros(m, 3, s_det, s_det, device=device)
        grads = torch.randn(rows, 3, s_det, s_det, generator=g).to(device)
        return total, grads, nodes()[1], 0

    def nv12_inputs() -> tuple[object, ...]:
        h, w = height - height % 2, width - width % 2
        g = generator()
        return (
            torch.randint(0, 256, (h * 3 // 2, w), dtype=torch.uint8, generator=g).to(device),
            h,
            w,
        )

    crop_px = (face_sizes[0] + face_sizes[1]) ** 2 // 4  # mean box area, roughly
    return [
        BenchCase(
            "crop_resize_normalize",
            f"frames {tuple(frames)} uint8, {m} boxes {face_sizes[0]}-{face_sizes[1]} px -> "
            f"({m}, 3, {s_det}, {s_det}) float32",
            crop_inputs,
            crop_resize_normalize_vectorized,  # all faces at once: no Python loop per face
            crop_resize_normalize_triton,
            m * (3 * crop_px + 4 * det_elems),
        ),
        BenchCase(
            "xai_maps",
            f"attributions ({m}, 3, {s_det}, {s_det}) -> maps ({m}, 3, {s_adv}, {s_adv})",
            map_inputs,
            xai_maps_reference,
            xai_maps_triton,
            m * (4 * det_elems + 4 * 3 * s_adv * s_adv),
        ),
        BenchCase(
            "detect_resnet_inputs",
            f"crops and attributions ({m}, 3, {s_det}, {s_det}) -> "
            f"({2 * m}, 3, {s_adv}, {s_adv}) float32",
            stacked_inputs,
            detect_resnet_inputs_reference,
            detect_resnet_inputs_triton,
            m * (8 * det_elems + 8 * 3 * s_adv * s_adv),
        ),
        BenchCase(
            "ig_interpolate",
            f"x ({m}, 3, {s_det}, {s_det}), {ig_steps} steps -> rows [0, {rows})",
            interpolate_inputs,
            ig_interpolate_reference,
            ig_interpolate_triton,
            4 * (2 * m + rows) * det_elems,
        ),
        BenchCase(
            "ig_accumulate",
            f"grads ({rows}, 3, {s_det}, {s_det}) -> sums ({m}, 3, {s_det}, {s_det})",
            accumulate_inputs,
            ig_accumulate_reference,
            ig_accumulate_triton,
            4 * (rows + 2 * m) * det_elems,
        ),
        BenchCase(
            "nv12_to_rgb",
            f"one NV12 picture ({height} x {width}) -> uint8 RGB",
            nv12_inputs,
            nv12_to_rgb_reference,
            nv12_to_rgb_triton,
            (height * width * 3) // 2 + height * width * 3,
        ),
    ]
