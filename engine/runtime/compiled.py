"""The compiled runtime: ``torch.compile`` over fixed batch-size buckets.

Forward passes and gradient passes (the XAI backward, through the guided twin of
``engine.xai.guided`` for Guided Backprop) both run compiled: AOTAutograd compiles the
backward graph too. Shapes are fixed per bucket (``runtime.batch_buckets``): a batch is
zero-padded up to its bucket, so each bucket compiles once and, on CUDA with
``runtime.cuda_graphs``, is replayed as a CUDA graph (``mode="reduce-overhead"``).
Autocast (``runtime.precision``) and channels-last are applied around the compiled call.

Compilation is lazy: the first batch of each bucket compiles (seconds to minutes);
``Pipeline.warm_start`` (``veritas run`` and workers call it before the first frame)
runs every bucket once. Dynamo's recompile limit is raised so that
every bucket of every pass gets its own graph instead of falling back to eager.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import torch
import torch._dynamo
from torch import Tensor, nn

from engine.runtime.base import BucketedPass, Runtime, register_runtime

log = logging.getLogger(__name__)


@register_runtime
class CompiledRuntime(Runtime):
    """torch.compile (Inductor by default) with CUDA graphs over fixed batch buckets."""

    name = "compile"
    builds_per_shape = True

    @property
    def cuda_graphs(self) -> bool:
        return (
            self.device.type == "cuda"
            and self.settings.cuda_graphs
            and self.settings.compile_backend == "inductor"
        )

    def _compile(self, model: nn.Module, label: str) -> nn.Module:
        # One graph per (pass, bucket, grad mode); room for all of them and some spare.
        limit = 4 * len(self.settings.batch_buckets) + 16
        for name in ("recompile_limit", "cache_size_limit"):
            if getattr(torch._dynamo.config, name, limit) < limit:
                setattr(torch._dynamo.config, name, limit)
        mode = "reduce-overhead" if self.cuda_graphs else None
        log.info(
            "compile: %s with %s%s", label, self.settings.compile_backend, f" ({mode})" * bool(mode)
        )
        return torch.compile(model, backend=self.settings.compile_backend, mode=mode, dynamic=False)

    def forward_pass(self, model: nn.Module, example: Sequence[Tensor], label: str) -> nn.Module:
        model = self.prepare(model)
        return BucketedPass(
            model,
            self.settings,
            grad=False,
            runner=self._compile(model, label),
            clone_outputs=self.cuda_graphs,
        )

    def gradient_pass(self, model: nn.Module, example: Sequence[Tensor], label: str) -> nn.Module:
        model = self.prepare(model)
        return BucketedPass(
            model,
            self.settings,
            grad=True,
            runner=self._compile(model, label),
            clone_outputs=self.cuda_graphs,
        )

    def begin_step(self) -> None:
        if self.cuda_graphs:
            torch.compiler.cudagraph_mark_step_begin()

    def describe(self) -> dict[str, object]:
        return {
            **super().describe(),
            "compile_backend": self.settings.compile_backend,
            "cuda_graphs": self.cuda_graphs,
            "batch_buckets": list(self.settings.batch_buckets),
        }
