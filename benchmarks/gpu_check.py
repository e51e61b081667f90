"""``make gpu-check``: one prepared run that turns a bare GPU machine into figures.

    python -m benchmarks.gpu_check --out DIR [--bundle .gpu] [--budget-s 480]
    python -m benchmarks.gpu_check --dry-run --out DIR     # the same steps on a CPU, tiny
    python -m benchmarks.gpu_check bundle .gpu             # the clip and its reference

Made for a GPU machine with no network, on which only the machine's own Python runs (no
virtual environment, no PyAV, no Redis), within a time budget (``--budget-s``, default
8 minutes: a step that would start after it is skipped, saying so). Steps, in order:

``env``      versions, the GPU, which optional packages import, the bf16 matmul peak
``kernels``  each fused Triton kernel against its PyTorch reference: agreement, speed-up
``nvdec``    the bundle's H.264 clip decoded by NVDEC (PyNvVideoCodec) against the frames
             PyAV decoded from it (``bundle``), and NVDEC's frames/s
``e2e``      the full models on 1080p frames through the frame path, eager and then
             compiled (CUDA graphs): frames/s, time per stage, attributions compiled vs
             eager
``baseline`` the paper-style code (eager fp32 NCHW, Captum, one frame at a time) on
             the first frames of the same streams: the ratio, and the agreement
``sync``     one steady-state batch of the compiled pipeline under
             ``torch.cuda.set_sync_debug_mode("warn")``: every synchronizing call, by site
``streams``  the most streams held at 25 fps with decoding included (the bundle's clip,
             decoded by the decoder ``auto`` picks: named in the result)

Each step writes one JSON line to ``DIR/gpu-check.jsonl`` as it ends (``status``: ok,
skipped with a ``reason``, or failed with the ``error``), so a run cut short keeps what
it measured; ``DIR/gpu-check.md`` sums them up. ``--dry-run`` runs every step on the CPU
with tiny models, so the script is tested in CI (steps that need CUDA say why they
skip). Nothing here downloads anything: ``bundle`` (run where PyAV is, ``make
gpu-wheels``) writes the clip and its PyAV frames into the folder that travels.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import platform
import sys
import tempfile
import time
import traceback
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from benchmarks import measure
from benchmarks.settings import BenchSettings, preset
from engine.sources.decoders import installed

STEPS = ("env", "kernels", "nvdec", "e2e", "baseline", "sync", "streams")

CLIP = "clip.mp4"
"""The bundle's H.264 clip (1920×1080, 25 fps)."""
REFERENCE = "clip-pyav.npz"
"""The bundle's reference: the clip's first frames as PyAV decodes them (uint8 RGB)."""
REFERENCE_FRAMES = 4

OPTIONAL = ("av", "PyNvVideoCodec", "nvidia.dali", "captum", "redis", "triton", "timm")
"""Packages whose presence changes what runs; reported by ``env``."""


@dataclass(frozen=True)
class CheckSettings:
    out: Path
    bench: BenchSettings
    """The engine under test (models, sizes, runtime): ``gpu`` or the dry run's."""
    bundle: Path | None = None
    """Folder with :data:`CLIP` and :data:`REFERENCE` (``bundle``)."""
    budget_s: float = 480.0
    steps: tuple[str, ...] = STEPS
    dry_run: bool = False
    decode_seconds: float = 3.0
    """``nvdec``: seconds of repeated decoding for its frames/s."""


def gpu_bench(clip: Path | None) -> BenchSettings:
    """The engine as deployed on one GPU, sized so the check fits its budget: four batch
    buckets (compilation is the largest fixed cost), Guided Backprop, 25 fps."""
    return preset("gpu").replace(
        xai=("guided_backprop",),
        streams=16,
        frames=64,
        batch_size=64,
        fps=(25.0,),
        max_streams=128,
        trial_seconds=5.0,
        baseline_frames=32,
        input="file" if clip else "memory",
        clip=str(clip or ""),
        size_overrides=(
            "faces.score_threshold=0.0",
            "faces.max_faces=1",
            "runtime.batch_buckets=[8, 16, 32, 64]",
        ),
    )


def dry_run_bench(clip: Path | None) -> BenchSettings:
    """The same steps on a CPU in seconds: tiny models, ``aot_eager`` as the compiler."""
    return preset("quick", "cpu").replace(
        xai=("guided_backprop",),
        runtime="compile",
        precision="fp32",
        streams=2,
        frames=4,
        batch_size=2,
        fps=(25.0,),
        max_streams=1,
        trial_seconds=0.5,
        baseline_frames=2,
        frame_size=(96, 96),
        input="file" if clip else "memory",
        clip=str(clip or ""),
        size_overrides=('runtime.compile_backend="aot_eager"', "runtime.batch_buckets=[2]"),
    )


# --- the run ---------------------------------------------------------------------------


class Check:
    """Runs the steps of ``settings`` and writes their lines (module doc)."""

    def __init__(self, settings: CheckSettings, say: Callable[[str], None] | None = None) -> None:
        self.settings = settings
        self.say = say or (lambda m: print(m, file=sys.stderr, flush=True))
        self.device = torch.device(settings.bench.device)
        self.lines: list[dict[str, Any]] = []
        self._bench: Any = None
        self._results: dict[str, Any] = {}
        """Per-face results of the e2e runs (the baseline compares against them)."""
        self._workdir = tempfile.TemporaryDirectory(prefix="veritas-gpu-check-")

    @property
    def clip(self) -> Path | None:
        b = self.settings.bundle
        return b / CLIP if b is not None and (b / CLIP).exists() else None

    def bench(self) -> Any:
        """The shared models and streams (``benchmarks.harness.Bench``), built once."""
        from benchmarks.harness import Bench

        if self._bench is None:
            self._bench = Bench(self.settings.bench, Path(self._workdir.name))
        return self._bench

    def run(self) -> list[dict[str, Any]]:
        s = self.settings
        s.out.mkdir(parents=True, exist_ok=True)
        jsonl = s.out / "gpu-check.jsonl"
        jsonl.write_text("")
        deadline = time.monotonic() + s.budget_s
        try:
            for name in s.steps:
                line = self._step(name, deadline)
                self.lines.append(line)
                with jsonl.open("a") as f:
                    f.write(json.dumps(line, default=_jsonable) + "\n")
                self.say(f"gpu-check: {name}: {line['status']} ({line['seconds']:.1f} s)")
        finally:
            (s.out / "gpu-check.md").write_text(summary(self.lines, s))
            self._workdir.cleanup()
        return self.lines

    def _step(self, name: str, deadline: float) -> dict[str, Any]:
        line: dict[str, Any] = {"step": name}
        start = time.monotonic()
        if start >= deadline:
            line.update(status="skipped", reason="out of time (--budget-s)", seconds=0.0)
            return line
        try:
            result = getattr(self, f"step_{name}")()
        except Exception as error:
            line.update(
                status="failed",
                error=f"{type(error).__name__}: {error}",
                where=traceback.format_exc(limit=-6).splitlines()[-8:],
            )
        else:
            if "skipped" in result:
                line.update(status="skipped", reason=result.pop("skipped"))
            else:
                line["status"] = "ok"
            line.update(result)
        line["seconds"] = round(time.monotonic() - start, 2)
        return line

    # --- the steps ---------------------------------------------------------------------

    def step_env(self) -> dict[str, Any]:
        d = self.device
        out: dict[str, Any] = {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "cuda": torch.version.cuda,
            "device": torch.cuda.get_device_name(d) if d.type == "cuda" else measure._cpu_model(),
            "packages": {m: _version(m) for m in OPTIONAL},
            "dry_run": self.settings.dry_run,
        }
        if d.type == "cuda":
            p = torch.cuda.get_device_properties(d)
            out.update(
                capability=f"{p.major}.{p.minor}",
                memory_gib=round(p.total_memory / 2**30, 1),
                multiprocessors=p.multi_processor_count,
            )
            peak = measure.matmul_peak(d)
            out["bf16_matmul_tflops"] = round(peak / 1e12, 1) if peak else None
        return out

    def step_kernels(self) -> dict[str, Any]:
        from benchmarks.kernels import load_cases

        if self.device.type != "cuda":
            return {"skipped": "compiled Triton kernels need CUDA (CI runs them interpreted)"}
        cases, why = load_cases(self.device)
        if cases is None:
            return {"skipped": why}
        rows = []
        for case in cases:
            inputs = case["make_inputs"]()
            got = case["kernel"](*case["make_inputs"]())  # fresh inputs for each
            want = case["reference"](*case["make_inputs"]())
            t_ref = measure.time_call(lambda c=case, i=inputs: c["reference"](*i), self.device)
            t_kernel = measure.time_call(lambda c=case, i=inputs: c["kernel"](*i), self.device)
            rows.append(
                {
                    "name": case["name"],
                    "max_abs_diff": max_abs_diff(got, want),
                    "kernel_ms": round(1000 * t_kernel, 4),
                    "reference_ms": round(1000 * t_ref, 4),
                    "speedup": round(t_ref / t_kernel, 2),
                }
            )
        return {"cases": rows}

    def step_nvdec(self) -> dict[str, Any]:
        clip = self.clip
        if clip is None:
            return {"skipped": f"no {CLIP} in the bundle (make gpu-wheels writes it)"}
        decoder = "nvdec"
        if self.device.type != "cuda" or not installed("PyNvVideoCodec"):
            if not self.settings.dry_run:
                return {"skipped": "NVDEC needs CUDA and PyNvVideoCodec (make gpu-wheels)"}
            decoder = "pyav"  # the dry run: the same comparison, with PyAV's frames
            if not installed("av"):
                return {"skipped": "dry run: neither PyNvVideoCodec nor PyAV imports"}
        out: dict[str, Any] = {"decoder": decoder}
        reference = self.settings.bundle / REFERENCE  # type: ignore[operator]
        frames = decode_frames(clip, decoder, self.device, REFERENCE_FRAMES)
        if reference.exists():
            with np.load(reference) as ref:
                out["vs_pyav"] = compare_frames(frames, [ref[k] for k in sorted(ref.files)])
        else:
            out["vs_pyav"] = f"no {REFERENCE} in the bundle"
        out.update(decode_rate(clip, decoder, self.device, self.settings.decode_seconds))
        return out

    def step_e2e(self) -> dict[str, Any]:
        from benchmarks.end_to_end import analyse_streams, frames_for

        bench = self.bench()
        method = bench.settings.xai[0]
        compiled = bench.pipeline(method)
        eager = bench.eager_pipeline(method)
        out: dict[str, Any] = {"method": method, "decoder": bench.decoder()}
        batch = self._batch(bench)
        for label, pipeline in (("eager", eager), ("compiled", compiled)):
            warm = pipeline.warm_start()
            pipeline.warmup((bench.settings.batch_size,))
            # warm_start built the face detector for the bench's frame size; one untimed
            # batch of the streams' frames builds what is left to first use (the Triton
            # kernels, the allocator's pools), counted with the warm start.
            start = time.perf_counter()
            pipeline.analyze(batch)
            warm += time.perf_counter() - start
            run = analyse_streams(bench, pipeline, frames_for(bench, method))
            self._results[label] = run.pop("_results")
            out[label] = {"warm_start_s": round(warm, 2), **run}
            out[label]["runtime"] = pipeline.runtime.describe()
        out["compiled_vs_eager"] = agreement(
            eager.analyze(batch, keep_maps=True).faces,
            compiled.analyze(batch, keep_maps=True).faces,
        )
        out["speedup"] = out["compiled"]["frames_per_s"] / out["eager"]["frames_per_s"]
        return out

    def step_baseline(self) -> dict[str, Any]:
        from benchmarks.end_to_end import run_baseline

        if not installed("captum"):
            return {"skipped": "the baseline is Captum's code: captum is not installed"}
        if "compiled" not in self._results:
            return {"skipped": "needs the e2e step's results"}
        bench = self.bench()
        method = bench.settings.xai[0]
        e2e = next((line for line in self.lines if line["step"] == "e2e"), {})
        ours = {method: {**e2e.get("compiled", {}), "_results": self._results["compiled"]}}
        return run_baseline(bench, {"result": ours})[method]

    def step_sync(self) -> dict[str, Any]:
        bench = self.bench()
        pipeline = bench.pipeline(bench.settings.xai[0])
        pipeline.warm_start()
        batch = self._batch(bench)
        for _ in range(2):  # steady state: graphs built and captured
            pipeline.analyze(batch)
        with sync_sites(self.device) as sites:
            pipeline.analyze(batch)
        out: dict[str, Any] = {"frames": len(batch), "synchronizing_calls": sum(sites.values())}
        out["sites"] = dict(sorted(sites.items(), key=lambda kv: -kv[1]))
        if self.device.type != "cuda":
            out["note"] = "no CUDA: sync debug mode does not apply (the batch ran all the same)"
            return out
        # The issue's test as stated: the same batch with synchronizes as errors.
        torch.cuda.set_sync_debug_mode("error")
        try:
            pipeline.analyze(batch)
            out["error_mode"] = "no synchronizing call"
        except RuntimeError as error:
            out["error_mode"] = f"first synchronize: {str(error).splitlines()[0][:200]}"
        finally:
            torch.cuda.set_sync_debug_mode("default")
        return out

    def step_streams(self) -> dict[str, Any]:
        from benchmarks.realtime import run as realtime

        bench = self.bench()
        bench.pipeline(bench.settings.xai[0]).analyze(self._batch(bench))  # detector built
        out = realtime(bench)
        out["decoder"] = bench.decoder()
        out["decode_included"] = bench.settings.input == "file"
        return out

    def _batch(self, bench: Any) -> Any:
        """One full batch of the e2e streams' frames (decoded as the streams decode)."""
        from engine.frames import FrameBatch

        frames = []
        for _, factory in bench.streams(bench.settings.frames):
            for frame in factory():
                frames.append(frame)
                if len(frames) == bench.settings.batch_size:
                    break
            if len(frames) == bench.settings.batch_size:
                break
        return FrameBatch.from_frames(frames, pin_memory=self.device.type == "cuda")


# --- measuring helpers (each tested on the CPU) -----------------------------------------


def clip_decodable(cuda: bool) -> bool:
    """Whether a decoder for the bundle's H.264 clip imports: PyAV, or NVDEC on CUDA."""
    return installed("av") or (cuda and installed("PyNvVideoCodec"))


def max_abs_diff(got: Any, want: Any) -> float:
    """Largest |got - want| over tensors or (nested) tuples of tensors."""
    if isinstance(got, tuple | list):
        return max((max_abs_diff(g, w) for g, w in zip(got, want, strict=True)), default=0.0)
    return float((got.float() - want.float()).abs().max()) if got.numel() else 0.0


def compare_frames(frames: list[np.ndarray], reference: list[np.ndarray]) -> dict[str, Any]:
    """How far decoded frames are from the reference frames (uint8 RGB, in order)."""
    n = min(len(frames), len(reference))
    if n == 0:
        return {"frames": 0}
    diffs = [np.abs(frames[i].astype(np.int16) - reference[i].astype(np.int16)) for i in range(n)]
    same_shape = all(frames[i].shape == reference[i].shape for i in range(n))
    return {
        "frames": n,
        "same_shape": same_shape,
        "mean_abs_diff": round(float(np.mean([d.mean() for d in diffs])), 3),
        "max_abs_diff": int(max(d.max() for d in diffs)),
        "share_over_4": round(float(np.mean([(d > 4).mean() for d in diffs])), 5),
    }


def _source(clip: Path, decoder: str) -> Any:
    from engine.sources import SourceSettings
    from engine.sources.decoders import open_video_file

    return open_video_file(clip, SourceSettings(decoder=decoder))


def decode_frames(clip: Path, decoder: str, device: torch.device, count: int) -> list[np.ndarray]:
    """The first ``count`` frames of ``clip`` with ``decoder``, on the host (uint8 RGB)."""
    out: list[np.ndarray] = []
    with _source(clip, decoder) as source:
        for frame in source:
            image = frame.image
            out.append(image.cpu().numpy() if isinstance(image, torch.Tensor) else image)
            if len(out) == count:
                break
    return out


def decode_rate(clip: Path, decoder: str, device: torch.device, seconds: float) -> dict[str, Any]:
    """Frames/s of one decoding session reading ``clip`` again and again for ``seconds``."""
    frames = 0
    start = time.perf_counter()
    on_device = None
    while time.perf_counter() - start < seconds:
        with _source(clip, decoder) as source:
            for frame in source:
                frames += 1
                on_device = isinstance(frame.image, torch.Tensor)
    measure.synchronize(device)
    elapsed = time.perf_counter() - start
    return {"decode_frames_per_s": round(frames / elapsed, 1), "frames_on_device": on_device}


def agreement(a: Any, b: Any) -> dict[str, Any]:
    """Largest differences between two runs' per-face results (``FaceBatch``)."""
    if len(a.p_fake) != len(b.p_fake):
        return {"faces": [len(a.p_fake), len(b.p_fake)], "same_faces": False}
    out: dict[str, Any] = {"faces": len(a.p_fake), "same_faces": True}
    out["max_diff_p_fake"] = float((a.p_fake - b.p_fake).abs().max()) if len(a.p_fake) else 0.0
    checked = ~(a.p_attacked.isnan() | b.p_attacked.isnan())
    out["max_diff_p_attacked"] = (
        float((a.p_attacked[checked] - b.p_attacked[checked]).abs().max())
        if checked.any()
        else None
    )
    if a.maps is not None and b.maps is not None and len(a.maps):
        out["max_diff_maps"] = float((a.maps - b.maps).abs().max())
        out["mean_diff_maps"] = float((a.maps - b.maps).abs().mean())
    return out


@contextmanager
def sync_sites(device: torch.device) -> Iterator[dict[str, int]]:
    """Counts, by ``file:line``, the synchronizing CUDA calls made inside the block
    (``torch.cuda.set_sync_debug_mode("warn")``); nothing to count off CUDA."""
    sites: dict[str, int] = {}
    if device.type != "cuda":
        yield sites
        return
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            yield sites
        finally:
            torch.cuda.set_sync_debug_mode("default")
    for w in caught:
        if "synchroniz" in str(w.message):
            key = f"{Path(w.filename).name}:{w.lineno}"
            sites[key] = sites.get(key, 0) + 1


def _version(module: str) -> str | None:
    if not installed(module):
        return None
    name = {"av": "av", "PyNvVideoCodec": "pynvvideocodec", "nvidia.dali": "nvidia-dali-cuda130"}
    try:
        return importlib.metadata.version(name.get(module, module))
    except importlib.metadata.PackageNotFoundError:
        return "installed"


def _jsonable(value: Any) -> Any:
    if isinstance(value, torch.Tensor | np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, np.generic):
        return value.item()
    return str(value)


# --- the summary -----------------------------------------------------------------------


def summary(lines: list[dict[str, Any]], settings: CheckSettings) -> str:
    """The Markdown summary of the steps' lines."""
    by = {line["step"]: line for line in lines}
    out = ["# Veritas GPU check", ""]
    env = by.get("env", {})
    if env:
        out.append(
            f"{env.get('device')} · torch {env.get('torch')} (CUDA {env.get('cuda')}) · "
            f"Python {env.get('python')}" + (" · **dry run (CPU)**" if settings.dry_run else "")
        )
        if env.get("bf16_matmul_tflops"):
            out.append(f"\nbf16 matmul peak: {env['bf16_matmul_tflops']} TFLOP/s")
        out.append("")
    out += ["| step | status | seconds | result |", "| --- | --- | --- | --- |"]
    for line in lines:
        status = line["status"]
        text = line.get("reason") or line.get("error") or _headline(line)
        out.append(f"| {line['step']} | {status} | {line['seconds']} | {text} |")
    for line in lines:
        if line["step"] == "kernels" and line.get("cases"):
            out += ["", "| kernel | max abs diff | kernel ms | reference ms | speed-up |"]
            out.append("| --- | --- | --- | --- | --- |")
            for c in line["cases"]:
                out.append(
                    f"| {c['name']} | {c['max_abs_diff']:.2e} | {c['kernel_ms']} | "
                    f"{c['reference_ms']} | {c['speedup']} |"
                )
        if line["step"] == "e2e" and line["status"] == "ok":
            out += ["", "| stage | eager ms/face | compiled ms/face |", "| --- | --- | --- |"]
            eager = line["eager"]["stage_ms_per_face"]
            compiled = line["compiled"]["stage_ms_per_face"]
            for stage in eager:
                out.append(f"| {stage} | {eager[stage]:.3f} | {compiled.get(stage, 0):.3f} |")
    return "\n".join(out) + "\n"


def _headline(line: dict[str, Any]) -> str:
    step = line["step"]
    if step == "nvdec":
        vs = line.get("vs_pyav")
        diff = (
            f", vs PyAV mean {vs['mean_abs_diff']} max {vs['max_abs_diff']}"
            if isinstance(vs, dict) and vs.get("frames")
            else ""
        )
        return f"{line['decoder']}: {line['decode_frames_per_s']} frames/s{diff}"
    if step == "e2e":
        return (
            f"eager {line['eager']['frames_per_s']:.1f} → compiled "
            f"{line['compiled']['frames_per_s']:.1f} frames/s "
            f"(×{line['speedup']:.2f}); maps max diff "
            f"{line['compiled_vs_eager'].get('max_diff_maps', 'n/a')}"
        )
    if step == "baseline":
        return (
            f"{line['frames_per_s']:.2f} frames/s; Veritas ×{line.get('speedup', 0):.1f}; "
            f"max |Δp_fake| {line.get('max_diff_p_fake', 'n/a')}"
        )
    if step == "sync":
        return f"{line['synchronizing_calls']} synchronizing calls in one batch"
    if step == "streams":
        held = {k: v["max_streams"] for k, v in line.items() if k.endswith("fps")}
        return f"streams held {held}, decoder {line['decoder']}"
    if step == "kernels":
        return f"{len(line.get('cases', []))} kernels"
    if step == "env":
        return ", ".join(f"{k} {v}" for k, v in line.get("packages", {}).items() if v)
    return ""


# --- the bundle ------------------------------------------------------------------------


def write_bundle(
    folder: Path, seconds: float = 4.0, fps: float = 25.0, size: tuple[int, int] = (1080, 1920)
) -> Path:
    """:data:`CLIP` (H.264 of ``size`` = (height, width), encoded with PyAV) and
    :data:`REFERENCE` in ``folder``."""
    from benchmarks.synthetic import stream_frames
    from engine.sources import SourceSettings
    from engine.sources.video import VideoFileSource
    from engine.video import VideoWriter

    folder.mkdir(parents=True, exist_ok=True)
    clip = folder / CLIP
    with VideoWriter(clip, fps) as writer:
        for image in stream_frames(round(seconds * fps), *size):
            writer.write(image)
    frames = []
    with VideoFileSource(clip, SourceSettings()) as source:
        for frame in source:
            frames.append(frame.image)
            if len(frames) == REFERENCE_FRAMES:
                break
    np.savez_compressed(folder / REFERENCE, **{f"frame{i:02d}": f for i, f in enumerate(frames)})
    return clip


# --- command line ----------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["bundle"]:
        b = argparse.ArgumentParser(prog="python -m benchmarks.gpu_check bundle")
        b.add_argument("folder", type=Path, nargs="?", default=Path(".gpu"))
        b.add_argument("--seconds", type=float, default=4.0)
        b.add_argument("--size", default="1080x1920", help="HEIGHTxWIDTH of the clip")
        a = b.parse_args(argv[1:])
        size = tuple(int(x) for x in a.size.lower().split("x"))
        print(f"bundle written: {write_bundle(a.folder, a.seconds, size=size)}")  # type: ignore[arg-type]
        return 0
    p = argparse.ArgumentParser(prog="python -m benchmarks.gpu_check", description=__doc__)
    p.add_argument("--out", type=Path, default=Path("build/gpu-check"))
    p.add_argument("--bundle", type=Path, default=Path(".gpu"))
    p.add_argument("--budget-s", type=float, default=480.0)
    p.add_argument("--steps", default=",".join(STEPS), help="comma-separated subset of steps")
    p.add_argument("--dry-run", action="store_true", help="tiny models on the CPU (CI)")
    args = p.parse_args(argv)
    steps = tuple(s for s in args.steps.split(",") if s)
    unknown = set(steps) - set(STEPS)
    if unknown:
        p.error(f"unknown steps {', '.join(sorted(unknown))}: choose from {', '.join(STEPS)}")
    bundle = args.bundle if args.bundle.is_dir() else None
    if not args.dry_run and not torch.cuda.is_available():
        p.error("no CUDA GPU here: use --dry-run to run the steps on the CPU")
    clip = bundle / CLIP if bundle is not None and (bundle / CLIP).exists() else None
    if clip is not None and not clip_decodable(torch.cuda.is_available()):
        print(f"gpu-check: no decoder for {clip} here: streams from memory", file=sys.stderr)
        clip = None
    bench = dry_run_bench(clip) if args.dry_run else gpu_bench(clip)
    settings = CheckSettings(
        out=args.out,
        bench=bench,
        bundle=bundle,
        budget_s=args.budget_s,
        steps=steps,
        dry_run=args.dry_run,
        decode_seconds=0.5 if args.dry_run else 3.0,
    )
    lines = Check(settings).run()
    print((args.out / "gpu-check.md").read_text())
    return 1 if any(line["status"] == "failed" for line in lines) else 0


if __name__ == "__main__":
    raise SystemExit(main())
