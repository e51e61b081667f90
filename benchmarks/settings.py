"""What a benchmark run measures: workloads, sizes and the engine configuration under test.

Three fixed sizes, chosen by ``--quick`` and the device (every value can be overridden
from the command line):

* ``quick`` (a CPU, minutes): tiny models (``xception_tiny``, ``detect_resnet50_tiny``,
  64×64 crops), Haar face detection on 256×256 frames, 2 streams × 16 frames.
* ``cpu`` (full size on a CPU): XceptionNet 299 and Detect-ResNet50 224, Haar on
  384×384 frames, 2 streams × 8 frames; Integrated Gradients on fewer frames (it is 50
  backward passes per face).

  Both CPU sizes run Veritas in bf16 autocast on a CPU with bf16 in hardware
  (AVX512-BF16 or AMX: ``engine.runtime.host.cpu_has_native_bf16``), fp32 elsewhere;
  the baseline is fp32 by definition.
* ``gpu`` (one CUDA GPU): the full models, RetinaFace on 1920×1080 frames decoded from
  H.264 files (DALI when installed), ``torch.compile`` with CUDA graphs, bf16,
  channels-last.

Every workload sets ``pipeline.fake_threshold = 1.0``: every face is called real and takes
the whole path (XAI + Detect-ResNet50). With untrained weights the detector's verdicts are
random, so without this the share of faces checked would be noise.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import torch

WORKLOADS = ("stages", "e2e", "baseline", "realtime", "profile", "kernels")
"""(a) each stage alone; (b) end to end; (d) the paper-style baseline on the same frames;
(c) real time; the per-stage profile; the fused kernels against their references."""

SIZES = ("quick", "cpu", "gpu")


@dataclass(frozen=True)
class BenchSettings:
    size: str = "quick"
    """``quick``, ``cpu`` or ``gpu`` (see the module doc); the defaults below follow it."""
    workloads: tuple[str, ...] = WORKLOADS
    device: str = "cpu"
    detector: str = "xception_tiny"
    adversarial: str = "detect_resnet50_tiny"
    face_detector: str = "haar"
    xai: tuple[str, ...] = ("guided_backprop", "integrated_gradients")
    """XAI methods measured end to end and against the baseline (the first one also in
    the real-time and profile workloads)."""
    runtime: str = "eager"
    precision: str = "fp32"
    channels_last: bool = True
    frame_size: tuple[int, int] = (256, 256)
    """(height, width) of the synthetic frames."""
    streams: int = 2
    """End to end: streams read at once (as fast as possible)."""
    frames: int = 16
    """End to end: frames per stream."""
    ig_frames: int = 16
    """End to end with Integrated Gradients: frames per stream (it costs ``ig_steps``
    backward passes per face)."""
    batch_size: int = 8
    """Frames per batch (``pipeline.batch_size``)."""
    stage_batches: tuple[int, ...] = (1, 8)
    """(a): batch sizes each stage is timed at (``batch_size`` is always added, except
    for Integrated Gradients)."""
    ig_stage_batches: tuple[int, ...] = (1, 8)
    """(a): batch sizes Integrated Gradients is timed at (its overhead target needs
    ``batch_size`` among them)."""
    baseline_frames: int = 16
    """(d): frames the baseline analyses per method: the first frames of the same streams."""
    ig_baseline_frames: int = 8
    fps: tuple[float, ...] = (25.0, 30.0)
    latency_budget_s: float = 1.0
    max_streams: int = 8
    """(c): the search for the most streams stops at this many."""
    trial_seconds: float = 2.0
    """(c): length of one trial (every stream sends ``fps * trial_seconds`` frames)."""
    ig_steps: int = 50
    ig_internal_batch_size: int = 100
    """Rows of the Integrated Gradients batch per pass (a CPU's caches favour ~100 rows;
    0 = all ``ig_steps * faces`` rows at once)."""
    input: str = "file"
    """``file``: each stream is an encoded H.264 file decoded by ``sources.decoder``;
    ``memory``: decoded frames from memory (no decoding cost)."""
    decoder: str = "auto"
    clip: str = ""
    """``input = file``: an encoded clip every stream decodes (the GPU check's bundle);
    empty: synthetic clips of ``frame_size``, encoded with PyAV."""
    threads: int = 0
    """Intra-op CPU threads for PyTorch (``torch.set_num_threads``); 0 keeps its default
    (one per core). On a CPU shared with other work, fewer threads than cores avoids
    OpenMP's spin-waiting against the other processes."""
    stage_seconds: float = 1.0
    """(a): each measurement repeats its call for at least this long (and 3 times)."""
    overrides: tuple[str, ...] = ()
    """Extra ``section.key=value`` config overrides (``--set``)."""
    size_overrides: tuple[str, ...] = field(default=())
    """Config overrides the size adds (RetinaFace's top-1 box, buckets on the GPU)."""

    def __post_init__(self) -> None:
        if self.size not in SIZES:
            raise ValueError(f"bench size {self.size!r}: choose one of {', '.join(SIZES)}")
        unknown = set(self.workloads) - set(WORKLOADS)
        if unknown:
            names = ", ".join(sorted(unknown))
            raise ValueError(f"unknown workloads {names}: choose from {', '.join(WORKLOADS)}")
        if self.input not in ("file", "memory"):
            raise ValueError(f"input {self.input!r}: choose file or memory")
        for name in ("streams", "frames", "batch_size", "max_streams"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")

    def replace(self, **changes: object) -> BenchSettings:
        return dataclasses.replace(self, **changes)  # type: ignore[arg-type]

    @property
    def config_overrides(self) -> list[str]:
        """The engine configuration under test, as ``--set`` overrides."""
        return [
            f'models.detector="{self.detector}"',
            f'models.adversarial="{self.adversarial}"',
            f'models.face_detector="{self.face_detector}"',
            f'pipeline.device="{self.device}"',
            f"pipeline.batch_size={self.batch_size}",
            "pipeline.fake_threshold=1.0",
            f"pipeline.ig_steps={self.ig_steps}",
            f"pipeline.ig_internal_batch_size={self.ig_internal_batch_size}",
            f'runtime.backend="{self.runtime}"',
            f'runtime.precision="{self.precision}"',
            f"runtime.channels_last={'true' if self.channels_last else 'false'}",
            f'sources.decoder="{self.decoder}"',
            # A compiled face detector is built at the warm start for the bench's frames.
            f'faces.warm_frame_sizes=["{self.frame_size[1]}x{self.frame_size[0]}"]',
            *self.size_overrides,
            *self.overrides,
        ]


def cpu_precision() -> str:
    """bf16 where the CPU computes it in hardware (oneDNN's native kernels), else fp32."""
    from engine.runtime.host import cpu_has_native_bf16

    return "bf16" if cpu_has_native_bf16() else "fp32"


def preset(size: str, device: str | None = None) -> BenchSettings:
    """The defaults of a size; ``device`` defaults to CUDA for ``gpu``, else the CPU."""
    if size == "quick":
        device = device or "cpu"
        return BenchSettings(
            size="quick",
            device=device,
            precision=cpu_precision() if device == "cpu" else "fp32",
        )
    if size == "cpu":
        device = device or "cpu"
        return BenchSettings(
            size="cpu",
            device=device,
            precision=cpu_precision() if device == "cpu" else "fp32",
            detector="xception",
            adversarial="detect_resnet50",
            frame_size=(384, 384),
            streams=2,
            frames=8,
            ig_frames=2,
            stage_batches=(1, 8),
            ig_stage_batches=(1,),
            baseline_frames=8,
            ig_baseline_frames=2,
            max_streams=2,
            trial_seconds=4.0,
            ig_internal_batch_size=8,
        )
    if size == "gpu":
        return BenchSettings(
            size="gpu",
            device=device or "cuda",
            detector="xception",
            adversarial="detect_resnet50",
            face_detector="retinaface",
            # Untrained RetinaFace scores are noise: keep its best box, one face per frame.
            size_overrides=(
                "faces.score_threshold=0.0",
                "faces.max_faces=1",
                "runtime.batch_buckets=[1, 2, 4, 8, 16, 32, 64, 128]",
            ),
            runtime="compile",
            precision="bf16",
            frame_size=(1080, 1920),
            streams=32,
            frames=64,
            ig_frames=8,
            batch_size=64,
            stage_batches=(1, 8, 32, 64, 128),
            ig_stage_batches=(1, 8),
            baseline_frames=64,
            ig_baseline_frames=8,
            max_streams=256,
            trial_seconds=10.0,
            ig_internal_batch_size=400,
            stage_seconds=2.0,
        )
    raise ValueError(f"bench size {size!r}: choose one of {', '.join(SIZES)}")


def default_size(quick: bool) -> str:
    """``quick`` when asked, else ``gpu`` on a CUDA machine and ``cpu`` elsewhere."""
    if quick:
        return "quick"
    return "gpu" if torch.cuda.is_available() else "cpu"
