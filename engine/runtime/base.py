"""The runtime interface: a network in, a *pass* out, computed by one backend.

A :class:`Runtime` turns an ``nn.Module`` into passes the pipeline calls:

* :meth:`Runtime.forward_pass` — outputs only, no autograd graph (classification,
  Detect-ResNet50);
* :meth:`Runtime.gradient_pass` — outputs that are differentiable with respect to the
  inputs (the XAI backward; with ``fuse_classify_xai`` also classification).

A pass is an ``nn.Module`` whose ``forward(*inputs)`` equals ``model(*inputs)`` up to
float rounding and returns float32 outputs on the inputs' device; it accepts any
batch size. Backends are registered by name (:func:`register_runtime`) and built
with :func:`create_runtime`; what the stages compute never depends on the backend.

Precision (autocast) and channels-last apply to the PyTorch passes of every backend;
:class:`BucketedPass` pads batches up to fixed sizes for backends that need fixed
shapes (CUDA graphs, TensorRT profiles).
"""

from __future__ import annotations

import contextlib
import logging
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Sequence
from typing import ClassVar

import torch
from torch import Tensor, nn

from engine.config import RuntimeConfig
from engine.registry import Registry
from engine.runtime.errors import RuntimeUnavailableError, UnknownRuntimeError

log = logging.getLogger(__name__)

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
"""``runtime.precision`` -> the autocast dtype."""


class Runtime(ABC):
    """A backend that runs the engine's networks; subclasses override :meth:`forward_pass`."""

    name: ClassVar[str]
    builds_per_shape: ClassVar[bool] = False
    """Whether a pass is built per batch shape on first use (compiled graphs, TensorRT
    profiles): :meth:`engine.pipeline.Pipeline.warm_start` then builds every bucket."""
    differentiable: ClassVar[bool] = True
    """Whether its forward passes can also be differentiated (so classification and the
    XAI backward can share one forward). False for exported engines (ONNX, TensorRT)."""

    def __init__(self, settings: RuntimeConfig, device: torch.device) -> None:
        self.settings = settings
        self.device = torch.device(device)
        if self.device.type == "cuda":
            # Fixed shapes (per bucket): let cuDNN time its algorithms once per shape.
            torch.backends.cudnn.benchmark = True

    @classmethod
    def availability(cls) -> str | None:
        """None when usable on this machine, else why not (and what to do)."""
        return None

    @abstractmethod
    def forward_pass(self, model: nn.Module, example: Sequence[Tensor], label: str) -> nn.Module:
        """A forward-only pass of ``model``; ``example`` shows the inputs' shapes.

        ``label`` names the pass in logs, errors and exported file names.
        """

    def gradient_pass(self, model: nn.Module, example: Sequence[Tensor], label: str) -> nn.Module:
        """A pass whose outputs can be differentiated with respect to its inputs.

        Default: PyTorch eager (with the runtime's precision and memory format), which
        is what exported engines fall back to for the XAI backward.
        """
        return TorchPass(self.prepare(model), self.settings, grad=True)

    def prepare(self, model: nn.Module) -> nn.Module:
        """Put ``model`` on the device, in eval mode and in the configured memory format.

        Channels-last converts the parameters in place, so a guided twin (which shares
        the parameter dicts, ``engine.xai.guided``) sees the same weights. Parameters
        are frozen (``requires_grad`` False): the passes differentiate with respect to
        their inputs only, and a compiled backward would otherwise compute every
        weight's gradient as well. Idempotent (the pipeline prepares its networks when
        it is made, and each pass again).
        """
        model = model.to(self.device).eval()
        if self.settings.channels_last:
            model = model.to(memory_format=torch.channels_last)
        model.requires_grad_(False)
        return model

    def begin_step(self) -> None:  # noqa: B027  (a hook; most runtimes need nothing)
        """Called once per frame batch before its first pass (CUDA graphs mark steps)."""

    def describe(self) -> dict[str, object]:
        """What the benchmark report says about this runtime."""
        s = self.settings
        return {
            "backend": self.name,
            "precision": s.precision,
            "channels_last": s.channels_last,
            "device": str(self.device),
        }


class TorchPass(nn.Module):
    """``model(*inputs)`` in PyTorch with autocast and channels-last; float32 outputs.

    ``grad=False`` runs under ``no_grad``; ``grad=True`` keeps the autograd graph to
    the inputs (the caller decides whether gradients are enabled).
    """

    def __init__(self, model: nn.Module, settings: RuntimeConfig, grad: bool) -> None:
        super().__init__()
        self.model = model
        self.precision = settings.precision
        self.channels_last = settings.channels_last
        self.grad = grad
        self.eval()

    def run(self, *inputs: Tensor) -> Tensor:
        return self.model(*inputs)

    def layout(self, x: Tensor) -> Tensor:
        """``x`` in the pass's memory format (channels-last for image batches)."""
        if self.channels_last and x.dim() == 4:
            return x.contiguous(memory_format=torch.channels_last)
        return x

    def forward(self, *inputs: Tensor) -> Tensor:
        inputs = tuple(self.layout(x) for x in inputs)
        with (
            contextlib.nullcontext() if self.grad else torch.no_grad(),
            autocast(inputs[0].device, self.precision),
        ):
            out = self.run(*inputs)
        return out.float()


class BucketedPass(TorchPass):
    """A :class:`TorchPass` over fixed batch sizes: inputs are zero-padded up to the
    smallest bucket that holds them (batches above the largest bucket run in chunks of
    it), and the padding rows are cut from the output.

    Padding rows do not change the real rows' outputs or gradients: the networks run in
    eval mode, where samples are independent. A padded chunk is put back in the pass's
    memory format (``torch.cat`` with zero rows returns a contiguous tensor), so a
    bucket sees the same strides whether it is full or padded: one compiled graph (and
    one CUDA graph) per bucket, not two.
    """

    def __init__(
        self,
        model: nn.Module,
        settings: RuntimeConfig,
        grad: bool,
        runner: Callable[..., Tensor] | None = None,
        clone_outputs: bool = False,
    ) -> None:
        super().__init__(model, settings, grad)
        self.buckets = tuple(settings.batch_buckets)
        self.runner = model if runner is None else runner
        self.clone_outputs = clone_outputs
        self.eval()

    def run(self, *inputs: Tensor) -> Tensor:
        n = inputs[0].shape[0]
        outs = []
        for start, size, bucket in plan_chunks(n, self.buckets):
            chunk = [self.layout(pad_rows(x[start : start + size], bucket)) for x in inputs]
            out = self.runner(*chunk)
            if self.clone_outputs:  # CUDA-graph outputs are overwritten by the next replay
                out = out.clone()
            outs.append(out[:size])
        return outs[0] if len(outs) == 1 else torch.cat(outs)


def plan_chunks(n: int, buckets: Sequence[int]) -> Iterator[tuple[int, int, int]]:
    """``(start, size, bucket)`` for each chunk of ``n`` rows (none for ``n == 0``)."""
    largest = buckets[-1]
    start = 0
    while start < n:
        size = min(largest, n - start)
        yield start, size, bucket_for(size, buckets)
        start += size


def bucket_for(n: int, buckets: Sequence[int]) -> int:
    """The smallest bucket holding ``n`` rows (the largest bucket if none does)."""
    for b in buckets:
        if b >= n:
            return b
    return buckets[-1]


def pad_rows(x: Tensor, rows: int) -> Tensor:
    """``x`` with zero rows appended up to ``rows`` (differentiable; ``x`` if already there)."""
    missing = rows - x.shape[0]
    if missing <= 0:
        return x
    return torch.cat([x, x.new_zeros(missing, *x.shape[1:])])


def autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    """Autocast to ``precision`` on ``device`` (a no-op for fp32)."""
    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=DTYPES[precision])


# --- registry --------------------------------------------------------------------------

RUNTIMES: Registry[str, type[Runtime]] = Registry("runtime", unknown=UnknownRuntimeError)
"""Backend name -> its :class:`Runtime` class."""


def register_runtime(cls: type[Runtime]) -> type[Runtime]:
    """Class decorator: register a :class:`Runtime` under its ``name``."""
    return RUNTIMES.add(cls.name, cls)


def list_runtimes() -> list[str]:
    """Registered backend names, in registration order."""
    return RUNTIMES.keys()


def runtime_availability() -> dict[str, str | None]:
    """Backend name -> None when usable here, else the reason it is not."""
    return {name: cls.availability() for name, cls in RUNTIMES.items()}


def create_runtime(settings: RuntimeConfig, device: torch.device | str) -> Runtime:
    """The runtime ``settings.backend`` on ``device``.

    Raises:
        UnknownRuntimeError: no backend of that name is registered.
        RuntimeUnavailableError: the backend cannot run here (a missing package, no GPU).
    """
    cls = RUNTIMES.get(settings.backend)
    reason = cls.availability()
    if reason is not None:
        raise RuntimeUnavailableError(settings.backend, reason)
    runtime = cls(settings, torch.device(device))
    log.info("runtime: %s", runtime.describe())
    return runtime
