"""The ONNX runtime: forward passes exported to ONNX and run by ONNX Runtime.

Each forward-only network (the deepfake detector's classification, Detect-ResNet50) is
exported once with a dynamic batch axis (PyTorch's TorchScript-based exporter:
``onnxscript``, which the newer exporter needs, is not a dependency), checked against
eager PyTorch on the example inputs (``runtime.check_tolerance`` on the logits), and
run by an ``onnxruntime.InferenceSession``: on the CPU provider, or on the CUDA
provider with I/O bound to the torch tensors' device memory when the installed
onnxruntime has it.

The XAI backward needs gradients, which ONNX Runtime inference does not give: gradient
passes stay in PyTorch (:meth:`Runtime.gradient_pass`, eager), so with this backend
classification and XAI are two passes (``fuse_classify_xai`` does not apply).
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import tempfile
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from engine.runtime.base import Runtime, register_runtime
from engine.runtime.errors import ExportError, RuntimeMismatchError

log = logging.getLogger(__name__)

OPSET = 17
"""ONNX opset of the exported files (onnxruntime 1.31 runs opsets up to 23)."""


@register_runtime
class OnnxRuntime(Runtime):
    """ONNX Runtime for forward-only passes; PyTorch eager for gradient passes."""

    name = "onnx"
    differentiable = False

    def __init__(self, settings, device) -> None:  # type: ignore[no-untyped-def]
        super().__init__(settings, device)
        self._tmp: tempfile.TemporaryDirectory[str] | None = None

    @classmethod
    def availability(cls) -> str | None:
        missing = [m for m in ("onnx", "onnxruntime") if importlib.util.find_spec(m) is None]
        if missing:
            return f"{' and '.join(missing)} not installed; pip install onnx onnxruntime"
        return None

    @property
    def export_dir(self) -> Path:
        if self.settings.export_dir:
            path = Path(self.settings.export_dir)
            path.mkdir(parents=True, exist_ok=True)
            return path
        if self._tmp is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="veritas-onnx-")
        return Path(self._tmp.name)

    def forward_pass(self, model: nn.Module, example: Sequence[Tensor], label: str) -> nn.Module:
        model = model.to(self.device).eval()
        path = export_onnx(model, example, self.export_dir, label)
        ort_pass = OnnxPass(path, len(example), self.device)
        check_agreement(model, ort_pass, example, label, self.name, self.settings.check_tolerance)
        return ort_pass


class OnnxPass(nn.Module):
    """An ONNX file run by ONNX Runtime, called like the module it was exported from."""

    def __init__(self, path: Path, num_inputs: int, device: torch.device) -> None:
        super().__init__()
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = torch.get_num_threads()
        providers = ["CPUExecutionProvider"]
        self.on_cuda = (
            device.type == "cuda" and "CUDAExecutionProvider" in ort.get_available_providers()
        )
        if self.on_cuda:
            providers.insert(0, ("CUDAExecutionProvider", {"device_id": device.index or 0}))
        elif device.type == "cuda":
            log.warning(
                "onnxruntime has no CUDA provider here: %s runs on the CPU (copies each batch)",
                path.name,
            )
        self.session = ort.InferenceSession(str(path), options, providers=providers)
        self.input_names = [i.name for i in self.session.get_inputs()][:num_inputs]
        self.output_name = self.session.get_outputs()[0].name
        self.path = path
        self.eval()

    def forward(self, *inputs: Tensor) -> Tensor:
        device = inputs[0].device
        if self.on_cuda:
            return self._run_bound(inputs)
        feeds = {
            name: x.detach().float().contiguous().cpu().numpy()
            for name, x in zip(self.input_names, inputs, strict=True)
        }
        (out,) = self.session.run([self.output_name], feeds)
        return torch.from_numpy(out).to(device)

    def _run_bound(self, inputs: Sequence[Tensor]) -> Tensor:
        """Run on device memory: inputs and the output bound to torch CUDA tensors."""
        binding = self.session.io_binding()
        xs = [x.detach().float().contiguous() for x in inputs]
        for name, x in zip(self.input_names, xs, strict=True):
            binding.bind_input(
                name, "cuda", x.device.index or 0, np.float32, tuple(x.shape), x.data_ptr()
            )
        out = torch.empty(xs[0].shape[0], 2, device=xs[0].device)
        device = out.device.index or 0
        shape = tuple(out.shape)
        binding.bind_output(self.output_name, "cuda", device, np.float32, shape, out.data_ptr())
        torch.cuda.current_stream(out.device).synchronize()  # inputs written before ORT reads
        self.session.run_with_iobinding(binding)
        return out


def export_onnx(model: nn.Module, example: Sequence[Tensor], folder: Path, label: str) -> Path:
    """Export ``model`` with a dynamic batch axis to ``folder``; reuse an identical export.

    The file name holds a fingerprint of the weights and input shapes, so a file from
    another model or other weights is never reused.
    """
    names = _input_names(len(example))
    path = folder / f"{label}-{fingerprint(model, example)}.onnx"
    if path.is_file():
        log.info("onnx: reusing %s", path)
        return path
    axes = {name: {0: "batch"} for name in [*names, "logits"]}
    tmp = path.with_suffix(".tmp")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notices
            torch.onnx.export(
                model,
                tuple(x.detach().float() for x in example),
                str(tmp),
                dynamo=False,
                input_names=names,
                output_names=["logits"],
                dynamic_axes=axes,
                opset_version=OPSET,
                do_constant_folding=True,
            )
    except Exception as error:  # the exporter raises many types
        tmp.unlink(missing_ok=True)
        raise ExportError(label, "onnx", f"{type(error).__name__}: {error}") from error
    tmp.replace(path)
    log.info("onnx: exported %s", path)
    return path


def check_agreement(
    model: nn.Module,
    built: nn.Module,
    example: Sequence[Tensor],
    label: str,
    backend: str,
    tolerance: float,
) -> float:
    """Max |eager - built| over the outputs on ``example``; raise if over ``tolerance``."""
    with torch.no_grad():
        expected = model(*example).float()
        got = built(*example).float()
    diff = float((expected - got).abs().max()) if expected.numel() else 0.0
    if not diff <= tolerance:  # NaN fails too
        raise RuntimeMismatchError(label, backend, diff, tolerance)
    log.info("%s: %s agrees with eager within %.2g", backend, label, diff)
    return diff


def fingerprint(model: nn.Module, example: Sequence[Tensor]) -> str:
    """A short hash of the model's class, parameters, buffers and per-sample input shapes."""
    h = hashlib.sha1(type(model).__qualname__.encode())
    for x in example:
        h.update(str(tuple(x.shape[1:])).encode())
    for name, t in [*model.state_dict().items()]:
        h.update(name.encode())
        h.update(t.detach().float().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:12]


def _input_names(n: int) -> list[str]:
    return ["images"] if n == 1 else ["crops", "maps"] if n == 2 else [f"x{i}" for i in range(n)]
