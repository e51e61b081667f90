"""The TensorRT runtime (optional extra): an engine built from the ONNX export.

Only when the ``tensorrt`` Python package is importable and the device is a CUDA GPU.
Neither holds on the development machines (the registry's ``tensorrt`` wheels are stubs
whose libraries cannot be downloaded there), so this module has never been run: it is
kept small on purpose, and ``runtime.backend = "compile"`` is the verified compiled path.

Each forward-only pass is exported to ONNX (:func:`engine.runtime.onnx.export_onnx`),
parsed and built with one optimization profile spanning ``runtime.batch_buckets``
(fp16 kernels allowed when ``runtime.precision`` is not fp32), checked against eager
like the ONNX backend, and executed on the current CUDA stream with the torch
tensors' memory bound as I/O. Gradient passes (XAI) stay in PyTorch eager.
"""

from __future__ import annotations

import importlib.util
import logging
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from engine.runtime.base import register_runtime
from engine.runtime.errors import ExportError
from engine.runtime.onnx import OnnxRuntime, check_agreement, export_onnx

log = logging.getLogger(__name__)


@register_runtime
class TensorRTRuntime(OnnxRuntime):
    """TensorRT engines for forward-only passes; PyTorch eager for gradient passes."""

    name = "tensorrt"
    builds_per_shape = True
    differentiable = False

    @classmethod
    def availability(cls) -> str | None:
        if importlib.util.find_spec("tensorrt") is None:
            return (
                "the tensorrt package is not importable (an optional extra: it needs NVIDIA's "
                "TensorRT libraries and a GPU); use runtime.backend = 'compile' or 'onnx'"
            )
        if not torch.cuda.is_available():
            return "TensorRT needs a CUDA GPU and none is visible; use 'compile' or 'onnx'"
        return OnnxRuntime.availability()

    def forward_pass(self, model: nn.Module, example: Sequence[Tensor], label: str) -> nn.Module:
        model = model.to(self.device).eval()
        onnx_path = export_onnx(model, example, self.export_dir, label)
        plan = onnx_path.with_suffix(f".{self.settings.precision}.plan")
        if not plan.is_file():
            plan.write_bytes(self._build(onnx_path, example, label))
        built = TensorRTPass(plan.read_bytes(), self.device)
        check_agreement(model, built, example, label, self.name, self.settings.check_tolerance)
        return built

    def _build(self, onnx_path: Any, example: Sequence[Tensor], label: str) -> bytes:
        import tensorrt as trt

        logger = trt.Logger(trt.Logger.WARNING)
        builder = trt.Builder(logger)
        network = builder.create_network(0)  # explicit batch (the only mode of TensorRT 10)
        parser = trt.OnnxParser(network, logger)
        if not parser.parse(onnx_path.read_bytes()):
            errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
            raise ExportError(label, self.name, f"ONNX parser: {errors}")
        config = builder.create_builder_config()
        if self.settings.precision != "fp32":
            config.set_flag(trt.BuilderFlag.FP16)
        buckets = self.settings.batch_buckets
        profile = builder.create_optimization_profile()
        for i, x in enumerate(example):
            shape = tuple(x.shape[1:])
            name = network.get_input(i).name
            profile.set_shape(
                name, (1, *shape), (buckets[len(buckets) // 2], *shape), (buckets[-1], *shape)
            )
        config.add_optimization_profile(profile)
        serialized = builder.build_serialized_network(network, config)
        if serialized is None:
            raise ExportError(label, self.name, "the TensorRT builder returned no engine")
        return bytes(serialized)


class TensorRTPass(nn.Module):
    """A serialized TensorRT engine, called like the module it was built from."""

    def __init__(self, plan: bytes, device: torch.device) -> None:
        super().__init__()
        import tensorrt as trt

        self.engine = trt.Runtime(trt.Logger(trt.Logger.WARNING)).deserialize_cuda_engine(plan)
        self.context = self.engine.create_execution_context()
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        mode = trt.TensorIOMode.INPUT
        self.inputs = [n for n in names if self.engine.get_tensor_mode(n) == mode]
        self.output = next(n for n in names if self.engine.get_tensor_mode(n) != mode)
        self.device = device
        self.eval()

    def forward(self, *inputs: Tensor) -> Tensor:
        xs = [x.detach().float().contiguous() for x in inputs]
        for name, x in zip(self.inputs, xs, strict=True):
            self.context.set_input_shape(name, tuple(x.shape))
            self.context.set_tensor_address(name, x.data_ptr())
        out = torch.empty(xs[0].shape[0], 2, device=self.device)
        self.context.set_tensor_address(self.output, out.data_ptr())
        stream = torch.cuda.current_stream(self.device)
        if not self.context.execute_async_v3(stream.cuda_stream):
            raise RuntimeError("TensorRT execution failed")
        return out
