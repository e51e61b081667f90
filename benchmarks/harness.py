"""The benchmark run: shared models and synthetic streams, the workloads, the report.

    >>> from benchmarks import BenchSettings, run_bench
    >>> report = run_bench(preset("quick"))
    >>> print(format_report(report))

Every workload uses the same models (built once), the same synthetic streams and the
same engine configuration (:attr:`BenchSettings.config_overrides`); peak host and GPU
memory are recorded per workload and for the whole run.
"""

from __future__ import annotations

import copy
import logging
import shlex
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from benchmarks import measure
from benchmarks.settings import BenchSettings
from benchmarks.synthetic import file_stream, memory_stream, stream_frames, write_clips
from engine.config import Config, RuntimeConfig, load_config
from engine.device import resolve_device
from engine.faces import FaceDetector, create_face_detector
from engine.frames import Frame
from engine.models import create_model
from engine.pipeline import Pipeline

log = logging.getLogger(__name__)

SCHEMA = 1
"""Version of the JSON report's layout."""


class Bench:
    """What the workloads share: settings, device, models, pipelines and streams."""

    def __init__(self, settings: BenchSettings, workdir: Path) -> None:
        self.settings = settings
        self.config: Config = load_config(None, settings.config_overrides)
        self.device = resolve_device(self.config.pipeline.device)
        self.workdir = workdir
        m = self.config.models

        def make_face_detector() -> FaceDetector:
            return create_face_detector(
                m.face_detector, settings=self.config.faces, device=self.device
            )

        face_detector = make_face_detector()
        detector = create_model(m.detector, kind="deepfake")
        adversarial = create_model(m.adversarial, kind="adversarial")
        self.base = Pipeline(
            face_detector,
            detector,
            adversarial,
            self.config.pipeline,
            self.device,
            self.config.runtime,
            face_detector_factory=make_face_detector,
        )
        self._eager: Pipeline | None = None
        self._paper: Pipeline | None = None
        self._clips: dict[int, list[Path]] = {}
        self._images: dict[tuple[int, int], list[np.ndarray]] = {}

    def pipeline(self, method: str) -> Pipeline:
        """The pipeline under test with XAI ``method`` (models and passes shared)."""
        return self.base.with_settings(xai_method=method)

    def paper_pipeline(self, method: str) -> Pipeline:
        """The paper's way of running the models: copies of them (the same weights) in
        eager float32 and PyTorch's default NCHW memory format."""
        if self._paper is None:
            b = self.base
            detector, adversarial = (
                copy.deepcopy(m).to(memory_format=torch.contiguous_format)
                for m in (b.detector, b.adversarial)
            )
            plain = RuntimeConfig(channels_last=False)
            self._paper = Pipeline(
                b.face_detector, detector, adversarial, b.settings, self.device, plain
            )
        return self._paper.with_settings(xai_method=method)

    def eager_pipeline(self, method: str) -> Pipeline:
        """The same models on the eager runtime (FLOP counting sees its operators)."""
        if self._eager is None:
            b = self.base
            self._eager = Pipeline(
                b.face_detector, b.detector, b.adversarial, b.settings, self.device
            )
        return self._eager.with_settings(xai_method=method)

    def images(self, stream: int, frames: int) -> list[np.ndarray]:
        key = (stream, frames)
        if key not in self._images:
            h, w = self.settings.frame_size
            self._images[key] = stream_frames(frames, h, w, stream=stream)
        return self._images[key]

    def clips(self, frames: int) -> list[Path]:
        if self.settings.clip:
            return [Path(self.settings.clip)] * self.settings.streams
        if frames not in self._clips:
            h, w = self.settings.frame_size
            self._clips[frames] = write_clips(
                self.workdir / "clips", self.settings.streams, frames, h, w
            )
        return self._clips[frames]

    def decoder(self) -> str | None:
        """The decoder that reads the streams' clips (None: frames from memory)."""
        if self.settings.input != "file":
            return None
        from engine.sources import open_source

        with open_source(str(self.clips(1)[0]), self.config.sources) as source:
            return getattr(source, "decoder", type(source).__name__)

    def streams(
        self, frames: int, count: int | None = None
    ) -> list[tuple[str, Callable[[], Iterator[Frame]]]]:
        """``count`` streams (default ``settings.streams``) of ``frames`` frames each.

        Names are ``stream<k>``; with ``input = file`` each stream decodes its clip with
        the configured decoder, else it replays decoded frames from memory.
        """
        count = self.settings.streams if count is None else count
        out: list[tuple[str, Callable[[], Iterator[Frame]]]] = []
        for k in range(count):
            name = f"stream{k}"
            if self.settings.input == "file":
                clips = self.clips(frames)
                path = clips[k % len(clips)]
                out.append((name, lambda n=name, p=path: file_stream(n, p, self.config.sources)))
            else:
                images = self.images(k % 4, frames)
                out.append((name, lambda n=name, im=images: memory_stream(n, im)))
        return out


def run_bench(
    settings: BenchSettings,
    workdir: Path | None = None,
    command: str | None = None,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Run ``settings.workloads``; return the report (see ``benchmarks/README.md``)."""
    say = progress or (lambda message: log.info("%s", message))
    threads = torch.get_num_threads()
    if settings.threads:
        torch.set_num_threads(settings.threads)
    try:
        return _run(settings, workdir, command, say)
    finally:
        torch.set_num_threads(threads)


def _run(
    settings: BenchSettings, workdir: Path | None, command: str | None, say: Callable[[str], None]
) -> dict[str, Any]:
    from benchmarks import end_to_end, kernels, profile, realtime, report, stages

    with tempfile.TemporaryDirectory(prefix="veritas-bench-") as tmp:
        bench = Bench(settings, Path(workdir or tmp))
        device = bench.device
        started = time.perf_counter()
        out: dict[str, Any] = {
            "schema": SCHEMA,
            "command": command or shlex.join(["veritas", *sys.argv[1:]]),
            "machine": measure.machine(device),
            "revision": measure.git_revision(),
            "settings": _settings_dict(settings),
            "pipeline": {
                "placement": bench.base.placement,
                "runtime": bench.base.runtime.describe(),
            },
            "workloads": {},
        }
        peak = measure.matmul_peak(device)
        out["matmul_peak_flops"] = peak
        results = out["workloads"]
        steps: list[tuple[str, Callable[[], Any]]] = [
            ("stages", lambda: stages.run(bench, peak)),
            ("e2e", lambda: end_to_end.run(bench)),
            ("baseline", lambda: end_to_end.run_baseline(bench, results.get("e2e"))),
            ("realtime", lambda: realtime.run(bench)),
            ("profile", lambda: profile.run(bench)),
            ("kernels", lambda: kernels.run(bench)),
        ]
        for name, step in steps:
            if name not in settings.workloads:
                continue
            say(f"bench: {name} ...")
            measure.reset_peak_memory(device)
            t = time.perf_counter()
            result = step()
            results[name] = {
                "result": result,
                "seconds": round(time.perf_counter() - t, 2),
                "memory": measure.peak_memory(device),
            }
            say(f"bench: {name} done in {results[name]['seconds']:.1f} s")
        out["seconds"] = round(time.perf_counter() - started, 2)
        out["machine"]["load_average_after"] = measure.machine(device)["load_average"]
        out["memory"] = {
            "peak_host_mb": max(
                (w["memory"]["peak_host_mb"] or 0 for w in results.values()), default=None
            ),
            "peak_gpu_mb": max(
                (w["memory"]["peak_gpu_mb"] or 0 for w in results.values()), default=None
            )
            if device.type == "cuda"
            else None,
        }
        out["targets"] = report.targets(out)
        return out


def _settings_dict(settings: BenchSettings) -> dict[str, Any]:
    import dataclasses

    return {
        k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(settings).items()
    }
