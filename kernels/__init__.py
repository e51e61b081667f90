"""Fused Triton kernels, each beside a plain-PyTorch reference with the same signature.

``kernels`` is Veritas's bottom layer: it imports torch and triton only, and the engine
calls it (``engine.faces.crop``, ``engine.xai.maps``, ``engine.xai.attribute``). Each op
is a dispatcher that runs the Triton kernel on CUDA tensors and the reference elsewhere
(:mod:`kernels.backend`); the references are the engine's one implementation on CPU.

* :mod:`kernels.crop_resize` — crop + antialiased resize + normalize faces straight from
  the uint8 frame batch, one launch for all faces.
* :mod:`kernels.xai_map` — the XAI map rule and Detect-ResNet50's stacked, normalized
  ``(2M, 3, S, S)`` input in one launch.
* :mod:`kernels.integrated_gradients` — IG's interpolation batch and weighted sum.
* :func:`bench_cases` — kernel vs reference callables for the benchmark harness.

See ``kernels/README.md`` for the memory traffic of each and why fusing pays.
"""

from kernels.backend import BACKENDS, current_backend, interpreting, use_backend, use_triton
from kernels.bench import BenchCase, bench_cases
from kernels.crop_resize import (
    crop_resize_normalize,
    crop_resize_normalize_reference,
    crop_resize_normalize_triton,
    crop_resize_normalize_vectorized,
)
from kernels.errors import KernelBackendError, KernelError, KernelInputError
from kernels.integrated_gradients import (
    ig_accumulate,
    ig_accumulate_reference,
    ig_accumulate_triton,
    ig_interpolate,
    ig_interpolate_reference,
    ig_interpolate_triton,
)
from kernels.nv12 import nv12_to_rgb, nv12_to_rgb_reference, nv12_to_rgb_triton
from kernels.resample import resize_images
from kernels.xai_map import (
    detect_resnet_inputs,
    detect_resnet_inputs_reference,
    detect_resnet_inputs_triton,
    xai_maps,
    xai_maps_reference,
    xai_maps_triton,
)

__all__ = [
    "BACKENDS",
    "BenchCase",
    "KernelBackendError",
    "KernelError",
    "KernelInputError",
    "bench_cases",
    "crop_resize_normalize",
    "crop_resize_normalize_reference",
    "crop_resize_normalize_triton",
    "crop_resize_normalize_vectorized",
    "current_backend",
    "detect_resnet_inputs",
    "detect_resnet_inputs_reference",
    "detect_resnet_inputs_triton",
    "ig_accumulate",
    "ig_accumulate_reference",
    "ig_accumulate_triton",
    "ig_interpolate",
    "ig_interpolate_reference",
    "ig_interpolate_triton",
    "interpreting",
    "nv12_to_rgb",
    "nv12_to_rgb_reference",
    "nv12_to_rgb_triton",
    "resize_images",
    "use_backend",
    "use_triton",
    "xai_maps",
    "xai_maps_reference",
    "xai_maps_triton",
]
