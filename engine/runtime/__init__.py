"""Runtimes: how the engine's networks run, behind one interface.

    >>> from engine.runtime import create_runtime
    >>> runtime = create_runtime(config.runtime, device)
    >>> classify = runtime.forward_pass(detector, (example,), "detector")
    >>> p_fake = classify(crops).softmax(1)[:, 1]

============  ===============================================  ===========================
backend       forward passes (classify, Detect-ResNet50)       gradient passes (XAI)
============  ===============================================  ===========================
``eager``     PyTorch                                          PyTorch
``compile``   ``torch.compile`` over fixed batch buckets,      the same, compiled (the
              CUDA graphs on CUDA                              guided twin for GBP)
``onnx``      ONNX Runtime, checked against eager at build     PyTorch eager
``tensorrt``  TensorRT engine from the ONNX file (optional)    PyTorch eager
============  ===============================================  ===========================

Settings are the ``[runtime]`` table (:class:`engine.config.RuntimeConfig`).
"""

from engine.runtime import compiled, eager, onnx, tensorrt  # noqa: F401  (registration)
from engine.runtime.base import (
    BucketedPass,
    Runtime,
    TorchPass,
    autocast,
    bucket_for,
    create_runtime,
    list_runtimes,
    pad_rows,
    plan_chunks,
    register_runtime,
    runtime_availability,
)
from engine.runtime.errors import (
    ExportError,
    RuntimeBackendError,
    RuntimeMismatchError,
    RuntimeUnavailableError,
    UnknownRuntimeError,
)

__all__ = [
    "BucketedPass",
    "ExportError",
    "Runtime",
    "RuntimeBackendError",
    "RuntimeMismatchError",
    "RuntimeUnavailableError",
    "TorchPass",
    "UnknownRuntimeError",
    "autocast",
    "bucket_for",
    "create_runtime",
    "list_runtimes",
    "pad_rows",
    "plan_chunks",
    "register_runtime",
    "runtime_availability",
]
