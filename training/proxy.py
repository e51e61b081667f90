"""The proxy run: the whole offline path on data made here, in minutes on two CPU cores.

Neither FF++ nor the published detectors can be downloaded here, so this run stands in
for the paper's experiment with everything scaled down — **its numbers are PROXY
results (proxy data, tiny models), not the paper's**:

1. **media** — real clips of the faces scikit-image bundles and self-blended fakes of
   them (:mod:`training.proxy_media`), written as H.264 files in the plain layout; one
   set of identities for training the deepfake detectors, another for the dataset;
2. **detectors** — tiny XceptionNet / EfficientNetB4ST (64 px) trained on real vs
   self-blended face crops, cut by the engine's own face detector and crop;
3. **dataset** — ``python -m training.build_dataset`` on the clips: PGD on the train
   fakes, every registered attack of the paper (PGD, APGD, NES, Square) on the test
   fakes, small budgets; XAI maps of the engine;
4. **finetune** — ``python -m training.finetune``: Detect-ResNet50 (tiny) per XAI method,
   full and head configurations, and the no-maps model;
5. **evaluate** — ``python -m training.evaluate --label PROXY``: the tables (Markdown,
   CSV) and ROC plots.

Every stage runs through its command-line entry point; the commands are written to
``OUT/commands.sh`` and the timings to ``OUT/report/RUN.md``.

    python -m training.proxy build/proxy              # full size: < 20 min on 2 cores
    python -m training.proxy build/proxy-ci --size ci  # about a minute (the test suite's)
"""

from __future__ import annotations

import argparse
import dataclasses
import inspect
import json
import logging
import os
import platform
import shlex
import shutil
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from engine.config import load_config
from engine.models import create_model, model_cfg
from engine.models.weights import save_weights
from engine.pipeline import Pipeline
from training import build_dataset, evaluate, finetune
from training.attacks import attack_class, list_attacks
from training.build_dataset import PAPER_TEST_ATTACKS, extract_faces, setup_logging
from training.proxy_media import identities, write_clips
from training.videos import discover, seeded_order

log = logging.getLogger("training.proxy")

LABEL = "PROXY"
ADVERSARIAL = "detect_resnet50_tiny"
SBI_RATIOS = (1.0,)
SBI_STRENGTH = 3.0
"""Proxy fakes are deliberately plain self-blends (full blend, colour ranges tripled), so
that a 64-px detector trained for seconds on a few dozen identities catches them."""


@dataclass(frozen=True)
class ProxySize:
    detector_ids: int
    """Identities whose clips train the deepfake detectors."""
    dataset_ids: int
    """Identities whose clips make the dataset (a real and a fake clip each)."""
    test_groups: int
    frames: int
    """Frames per dataset clip."""
    detector_frames: int
    """Frames per clip of the detectors' identities."""
    detectors: tuple[str, ...]
    detector_steps: int
    xai: tuple[str, ...]
    ig_steps: int
    attack_budgets: dict[str, dict[str, Any]]
    """Options per attack; those an attack does not take are dropped (attacks are being
    added by others; each gets what it understands)."""
    full_epochs: int
    full_max_steps: int
    head_epochs: int
    configs: tuple[str, ...] = ("full", "head")
    always: tuple[str, ...] = ()
    """Identities given to both the detectors and the dataset (the demo's astronaut, so
    that the demo's models have seen the face the demo shows)..."""
    always_copies: int = 1
    """... each as this many clips (``name-1``, ``name-2``, ...: a look and a group each)."""
    extra: dict[str, Any] = field(default_factory=dict)


SIZES: dict[str, ProxySize] = {
    "ci": ProxySize(
        detector_ids=30,
        dataset_ids=12,
        test_groups=3,
        frames=3,
        detector_frames=4,
        detectors=("xception_tiny",),
        detector_steps=100,
        xai=("guided_backprop", "saliency"),
        ig_steps=8,
        attack_budgets={
            "pgd": {"steps": 10},
            "apgd": {"steps": 10, "n_restarts": 1},
            "nes": {"steps": 5, "n_samples": 10, "n_restarts": 1},
            "square": {"n_queries": 40},
        },
        full_epochs=1,
        full_max_steps=3,
        head_epochs=10,
    ),
    "full": ProxySize(
        detector_ids=40,
        dataset_ids=60,
        test_groups=10,
        frames=6,
        detector_frames=6,
        detectors=("xception_tiny", "efficientnet_b4st_tiny"),
        detector_steps=300,
        xai=("guided_backprop", "input_x_gradient", "integrated_gradients", "saliency"),
        ig_steps=16,
        attack_budgets={
            "pgd": {"steps": 30},
            "apgd": {"steps": 30, "n_restarts": 1},
            "nes": {"steps": 20, "n_samples": 20, "n_restarts": 1},
            "square": {"n_queries": 500},
        },
        full_epochs=2,
        full_max_steps=40,
        head_epochs=30,
    ),
}


# training.demo's weights: the full size's data and budgets, one detector, the demo's XAI
# method and mode, and a longer finetune.
SIZES["demo"] = dataclasses.replace(
    SIZES["full"],
    test_groups=3,  # the astronaut's group lands in train (the split is seeded)
    detectors=("xception_tiny",),
    xai=("guided_backprop",),
    full_epochs=4,
    full_max_steps=160,
    configs=("full",),
    always=("astronaut",),
    always_copies=6,
)


def supported_options(attack: str, options: dict[str, Any]) -> dict[str, Any]:
    takes = inspect.signature(attack_class(attack).__init__).parameters
    return {k: v for k, v in options.items() if k in takes}


# --- the deepfake detectors ------------------------------------------------------------------


def face_crops(folder: Path, arch: str, frames: int) -> dict[tuple[str, int, int], torch.Tensor]:
    """uint8 crops of every clip under ``folder`` (engine face detector + crop), by
    (clip name, label, frame index)."""
    config = load_config(None, [f'models.detector="{arch}"', 'pipeline.device="cpu"'])
    pipeline = Pipeline.from_config(config)
    crops = {}
    for video in discover(folder, "plain"):
        faces = extract_faces(pipeline, video.path, config, frames, 32)
        for (frame, _), crop in zip(faces.frames, faces.crops, strict=True):
            crops[(video.path.stem, video.label, frame)] = crop
    return crops


def train_detector(
    arch: str, crops: dict[tuple[str, int, int], torch.Tensor], steps: int, seed: int = 0
) -> tuple[torch.nn.Module, float]:
    """A tiny deepfake detector trained on pairs of a real crop and its self-blended
    version (the SBI recipe: the pair differs only by the blend); its training accuracy."""
    pairs = sorted(k for k in crops if k[1] == 0 and (k[0], 1, k[2]) in crops)
    real = torch.stack([crops[k] for k in pairs])
    fake = torch.stack([crops[(k[0], 1, k[2])] for k in pairs])
    model = create_model(arch, kind="deepfake", seed=seed).train()
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    g = torch.Generator().manual_seed(seed)
    half = 16
    labels = torch.cat([torch.zeros(half), torch.ones(half)]).long()
    for _ in range(steps):
        idx = torch.randint(len(pairs), (half,), generator=g)
        x = augment(torch.cat([real[idx], fake[idx]]).float() / 255, g)
        loss = F.cross_entropy(model(x), labels)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    model.eval()
    everything = torch.cat([real, fake])
    truth = torch.cat([torch.zeros(len(real)), torch.ones(len(fake))]).long()
    with torch.no_grad():
        pred = torch.cat(
            [model(everything[s].float() / 255).argmax(1) for s in _chunks(len(truth))]
        )
    return model, (pred == truth).float().mean().item()


def augment(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """Flips and a global colour cast per image: changes that leave local traces alone."""
    n = len(x)
    flip = torch.rand(n, generator=g) < 0.5
    x = torch.where(flip[:, None, None, None], x.flip(-1), x)
    gain = 1 + (torch.rand(n, 3, 1, 1, generator=g) - 0.5) * 0.2
    offset = (torch.rand(n, 1, 1, 1, generator=g) - 0.5) * 0.1
    return (x * gain + offset).clamp(0, 1)


def _chunks(n: int, size: int = 64) -> list[slice]:
    return [slice(i, min(i + size, n)) for i in range(0, n, size)]


def auto_threads() -> int:
    """Torch's default, or 1 when the 1-minute load average exceeds the core count."""
    cores = os.cpu_count() or 1
    busy = hasattr(os, "getloadavg") and os.getloadavg()[0] > cores
    return 1 if busy else torch.get_num_threads()


# --- the run ---------------------------------------------------------------------------------


class ProxyRun:
    def __init__(self, out: Path, size: str, seed: int = 0, docs: Path | None = None) -> None:
        if size not in SIZES:
            raise SystemExit(f"proxy: --size must be one of {', '.join(SIZES)}")
        self.out, self.size_name, self.s, self.seed = out, size, SIZES[size], seed
        self.docs = docs
        self.invocation = f"python -m training.proxy {out} --size {size}"
        self.commands: list[str] = []
        self.timings: dict[str, float] = {}
        self.crops: dict[int, dict[tuple[str, int, int], torch.Tensor]] = {}
        self.detector_notes: dict[str, dict[str, Any]] = {}
        self.load_at_start = os.getloadavg() if hasattr(os, "getloadavg") else (float("nan"),) * 3

    def stage(self, name: str, fn: Callable[[], Any]) -> Any:
        log.info("proxy: %s", name)
        started = time.perf_counter()
        result = fn()
        self.timings[name] = round(time.perf_counter() - started, 1)
        return result

    def command(self, module: Any, argv: list[str]) -> None:
        """Run a stage's command-line entry point; record the command."""
        self.commands.append(
            f"python -m {module.__name__} " + " ".join(shlex.quote(a) for a in argv)
        )
        code = module.main(argv)
        if code != 0:
            raise RuntimeError(f"proxy: {self.commands[-1]} exited with {code}")

    def run(self) -> Path:
        started = time.perf_counter()
        s, out = self.s, self.out
        self.stage("media", self.make_media)
        weights = {a: self.stage(f"train {a}", lambda a=a: self.train(a)) for a in s.detectors}
        test_attacks = [a for a in PAPER_TEST_ATTACKS if a in list_attacks()]
        for arch in s.detectors:
            self.stage(
                f"dataset {arch}", lambda arch=arch: self.build(arch, weights[arch], test_attacks)
            )
            self.stage(f"finetune {arch}", lambda arch=arch: self.finetune(arch))
        argv = [str(out / "report"), "--label", LABEL, "-q"]
        for arch in s.detectors:
            argv += ["--dataset", str(out / "data" / arch), "--models", str(out / "models" / arch)]
        self.stage("evaluate", lambda: self.command(evaluate, argv))
        total = time.perf_counter() - started
        (out / "commands.sh").write_text("\n".join(self.commands) + "\n", encoding="utf-8")
        self.write_run_notes(total, test_attacks)
        if self.docs is not None:
            self.publish(self.docs)
        return out / "report" / "tables.md"

    def publish(self, docs: Path) -> None:
        """Copy the commit-ready part of the report to ``docs``: the tables (linking one
        ROC plot, the first detector's full finetune), that plot and the run notes."""
        report = self.out / "report"
        plot = f"roc_{self.s.detectors[0]}_full.png"
        docs.mkdir(parents=True, exist_ok=True)
        lines = [
            line
            for line in (report / "tables.md").read_text(encoding="utf-8").splitlines()
            if not line.startswith("![") or f"({plot})" in line
        ]
        (docs / "tables.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
        shutil.copyfile(report / plot, docs / plot)
        shutil.copyfile(report / "RUN.md", docs / "RUN.md")

    def make_media(self) -> None:
        people = identities()
        order = seeded_order([p.name for p in people], self.seed, "proxy")
        by_name = {p.name: p for p in people}
        s = self.s
        chosen = [by_name[n] for n in order if n not in s.always]
        chosen = chosen[: s.detector_ids + s.dataset_ids]
        detectors, dataset = chosen[: s.detector_ids], chosen[s.detector_ids :]
        copies = [
            replace(by_name[n], name=n if s.always_copies == 1 else f"{n}-{i + 1}")
            for n in s.always
            for i in range(s.always_copies)
        ]
        detectors, dataset = detectors + copies, dataset + copies
        fakes = {"ratios": SBI_RATIOS, "strength": SBI_STRENGTH}
        write_clips(
            self.out / "media" / "detectors",
            detectors,
            s.detector_frames,
            self.seed,
            **fakes,
        )
        write_clips(
            self.out / "media" / "dataset",
            dataset,
            s.frames,
            self.seed + 1,
            **fakes,
        )

    def train(self, arch: str) -> Path:
        size = model_cfg(arch).input_size
        if size not in self.crops:  # the face crops depend on the input size only
            self.crops[size] = face_crops(
                self.out / "media" / "detectors", arch, self.s.detector_frames
            )
        crops = self.crops[size]
        model, acc = train_detector(arch, crops, self.s.detector_steps, self.seed)
        log.info("proxy: %s trained on %d crops, training accuracy %.3f", arch, len(crops), acc)
        path = self.out / "weights" / f"{arch}.safetensors"
        save_weights(model.state_dict(), path, arch=arch, source="veritas", complete=True)
        self.detector_notes[arch] = {"crops": len(crops), "train_accuracy": round(acc, 4)}
        return path

    def build(self, arch: str, weights: Path, test_attacks: list[str]) -> None:
        s = self.s
        argv = [
            str(self.out / "media" / "dataset"),
            str(self.out / "data" / arch),
            "--detector", arch,
            "--detector-weights", str(weights),
            "--adversarial", ADVERSARIAL,
            "--device", "cpu",
            "--xai", ",".join(s.xai),
            "--train-attacks", "pgd",
            "--test-attacks", ",".join(test_attacks),
            "--test-groups", str(s.test_groups),
            "--set", f"pipeline.ig_steps={s.ig_steps}",
            "--seed", str(self.seed),
            "--no-progress",
            "-q",
        ]  # fmt: skip
        for attack in sorted({"pgd", *test_attacks}):
            for k, v in supported_options(attack, s.attack_budgets.get(attack, {})).items():
                argv += ["--attack-option", f"{attack}.{k}={json.dumps(v)}"]
        self.command(build_dataset, argv)

    def finetune(self, arch: str) -> None:
        s = self.s
        data, models = str(self.out / "data" / arch), str(self.out / "models" / arch)
        for config in s.configs:
            for maps in [*s.xai, finetune.NO_MAPS]:
                argv = [data, models, "--mode", config, "--device", "cpu"]
                argv += ["--seed", str(self.seed), "--init", finetune.RANDOM_INIT]
                argv += ["--no-maps"] if maps == finetune.NO_MAPS else ["--xai", maps]
                if config == "full":
                    argv += ["--epochs", str(s.full_epochs), "--max-steps", str(s.full_max_steps)]
                else:
                    argv += ["--epochs", str(s.head_epochs)]
                self.command(finetune, [*argv, "--no-progress", "-q"])

    def write_run_notes(self, total: float, test_attacks: list[str]) -> None:
        s = self.s
        load = os.getloadavg() if hasattr(os, "getloadavg") else (float("nan"),) * 3
        lines = [
            f"# {LABEL} run ({self.size_name})",
            "",
            f"* command: `{self.invocation}`",
            f"* finished: {time.strftime('%Y-%m-%d %H:%M:%S %Z')}",
            f"* machine: {platform.machine()}, {os.cpu_count()} CPU cores, torch "
            f"{torch.__version__} ({torch.get_num_threads()} threads); load average at the "
            f"start {self.load_at_start[0]:.2f}, at the end {load[0]:.2f} / {load[1]:.2f} / "
            f"{load[2]:.2f} (1 / 5 / 15 min)",
            f"* wall time: {total:.1f} s",
            f"* data: {s.detector_ids} identities train the deepfake detectors, {s.dataset_ids} "
            f"make the dataset ({s.test_groups} test), {s.frames} frames per clip"
            + (
                f"; {s.always_copies} clips each of {', '.join(s.always)} (other looks) "
                "in both sets"
                if s.always
                else ""
            ),
            f"* detectors: {json.dumps(self.detector_notes)}",
            f"* XAI: {', '.join(s.xai)} (Integrated Gradients with {s.ig_steps} steps)",
            f"* attacks: train pgd; test {', '.join(test_attacks)}; budgets "
            + json.dumps(
                {a: supported_options(a, s.attack_budgets.get(a, {})) for a in test_attacks}
            ),
            f"* finetune: full {s.full_epochs} epochs capped at {s.full_max_steps} steps; head "
            f"{s.head_epochs} epochs; Detect-ResNet50 from a seeded random initialization "
            "(`--init random`), not the paper's ImageNet-pretrained ResNet50",
            "",
            "| stage | seconds |",
            "| --- | --- |",
            *(f"| {k} | {v} |" for k, v in self.timings.items()),
            "",
            "Commands (also in `commands.sh`):",
            "",
            "```sh",
            *self.commands,
            "```",
            "",
        ]
        (self.out / "report" / "RUN.md").write_text("\n".join(lines), encoding="utf-8")


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m training.proxy",
        description="PROXY run: make data, train tiny detectors, build, finetune, evaluate.",
    )
    p.add_argument("out", help="output folder")
    p.add_argument("--size", default="full", choices=sorted(SIZES))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--docs", type=Path, help="also copy the tables, one ROC plot and RUN.md here")
    p.add_argument(
        "--threads",
        type=int,
        help="torch CPU threads (default: torch's choice, or 1 when the machine is busier "
        "than it has cores: OpenMP threads that wait for each other crawl there)",
    )
    args = p.parse_args(argv)
    setup_logging("proxy")
    log.setLevel(logging.INFO)
    previous = torch.get_num_threads()
    threads = args.threads or auto_threads()
    if threads != previous:
        log.info("proxy: %d torch threads", threads)
        torch.set_num_threads(threads)
    started = time.perf_counter()
    try:
        run = ProxyRun(Path(args.out), args.size, args.seed, args.docs)
        given = sys.argv[1:] if argv is None else list(argv)
        run.invocation = "python -m training.proxy " + shlex.join(given)
        tables = run.run()
    finally:
        torch.set_num_threads(previous)
    print(f"{LABEL} run ({args.size}) done in {time.perf_counter() - started:.1f} s: {tables}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
