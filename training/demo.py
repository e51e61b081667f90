"""``make demo``: proxy-trained demo weights, and a clip with real, fake and attacked faces.

The demo shows the method on data made here, with weights made by the project's own
training path — **proxy-trained, not for real footage** (real use needs the published
detectors: README, "Bringing real weights"):

``weights``  runs the proxy run at its ``demo`` size (:mod:`training.proxy`: clips of
             scikit-image's faces and self-blended fakes, a tiny XceptionNet trained on
             them, a Detect-ResNet50 (tiny) finetuned on PGD-attacked faces with Guided
             Backprop maps) and copies the two checkpoints to ``demo/weights/`` in float16,
             with ``PROVENANCE.json`` saying how they were made.
``clip``     writes the demo clip, lossless (FFV1 in Matroska, RGB), in three segments
             of the astronaut photo: ``real`` (the photo moving), ``fake`` (each frame
             self-blended, as the proxy's fakes) and ``attacked`` (the fake frames under
             PGD at ε = 16/255 against the demo detector, through the engine's own crop of
             the face: the perturbation is made in the frame, where a video carries it).
             An attack does not survive lossy H.264, hence FFV1. A JSON file next to the
             clip gives each segment's frames.
``score``    reads ``veritas run``'s records of the clip and prints, per segment, how many
             analysed frames got each verdict, and how many attacked frames were caught.

    python -m training.demo weights demo/weights       # make demo-weights (minutes)
    python -m training.demo clip build/demo_clip.mkv
    veritas run build/demo_clip.mkv --config engine/configs/demo.toml --out build/demo.jsonl
    python -m training.demo score build/demo.jsonl build/demo_clip.json
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import sys
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

REPO = Path(__file__).resolve().parents[1]
WEIGHTS = REPO / "demo" / "weights"
DETECTOR = "xception_tiny"
ADVERSARIAL = "detect_resnet50_tiny"
XAI = "guided_backprop"
MODE = "full"
SEGMENTS = ("real", "fake", "attacked")
SEGMENT_FRAMES = 25
"""Frames per segment (one second at 25 fps)."""
SCALE = 1
"""Frames at the proxy's own 112 px (faces of about 64 px, the tiny detectors' input):
enlarged frames would give the face detector boxes that move more from frame to frame."""
FPS = 25
LABEL = "proxy-trained demo weights: made on scikit-image faces, not for real footage"


# --- the weights --------------------------------------------------------------------------------


def make_weights(out: Path, work: Path, seed: int = 0) -> dict[str, Any]:
    """Run the proxy at its demo size in ``work``, copy its checkpoints to ``out`` (fp16)."""
    from engine.models.weights import read_weights, save_weights
    from training.proxy import ProxyRun

    started = time.perf_counter()
    run = ProxyRun(work, "demo", seed=seed)
    tables = run.run()
    sources = {
        DETECTOR: work / "weights" / f"{DETECTOR}.safetensors",
        ADVERSARIAL: work / "models" / DETECTOR / f"{ADVERSARIAL}.{XAI}.{MODE}.safetensors",
    }
    out.mkdir(parents=True, exist_ok=True)
    for arch, path in sources.items():
        state, _ = read_weights(path)
        half = {k: v.half() if v.is_floating_point() else v for k, v in state.items()}
        save_weights(half, out / f"{arch}.safetensors", arch=arch, source="veritas", complete=True)
    record = json.loads((sources[ADVERSARIAL].with_suffix(".json")).read_text(encoding="utf-8"))
    shown = out.relative_to(REPO) if out.is_relative_to(REPO) else out
    provenance = {
        "label": LABEL,
        "command": f"python -m training.demo weights {shown}",
        "made": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "machine": f"{platform.machine()}, torch {torch.__version__}, CPU",
        "seconds": round(time.perf_counter() - started, 1),
        "proxy_size": "demo",
        "detector": {
            "arch": DETECTOR,
            "trained_on": "real and self-blended clips of scikit-image faces; the demo's "
            "astronaut is among them (6 clips of other looks than the demo clip's), in "
            "the detector's set and in Detect-ResNet50's",
            **run.detector_notes.get(DETECTOR, {}),
        },
        "adversarial": {
            "arch": ADVERSARIAL,
            "xai": XAI,
            "mode": MODE,
            "init": record["init"],
            "bn": record.get("bn"),
            "train": record["train"],
            "best": {k: record["best"][k] for k in ("epoch", "step", "val_metric")},
        },
        "stored_as": "float16",
        "proxy_tables": "tables.md",
        "proxy_run_notes": "RUN.md",
    }
    (out / "PROVENANCE.json").write_text(json.dumps(provenance, indent=2) + "\n", encoding="utf-8")
    shutil.copyfile(work / "report" / "RUN.md", out / "RUN.md")
    shutil.copyfile(tables, out / "tables.md")
    return provenance


def provenance(weights: Path = WEIGHTS) -> dict[str, Any]:
    return json.loads((weights / "PROVENANCE.json").read_text(encoding="utf-8"))


def describe(weights: Path = WEIGHTS) -> str:
    p = provenance(weights)
    a = p["adversarial"]
    return (
        f"Demo weights ({p['label']}): {p['detector']['arch']} and {a['arch']} "
        f"({a['xai']} maps, {a['mode']} finetune from {a['init']}), made by "
        f"`{p['command']}` on {p['made']} ({p['machine']})."
    )


# --- the clip ----------------------------------------------------------------------------------


class FrameVerdict(nn.Module):
    """The demo detector's logits for whole frames, through the engine's crop of one face
    box: slice, antialiased bilinear resize to the detector's input (what
    ``kernels.crop_resize`` does), averaged over crop boxes moved by a pixel or two, so
    the perturbation holds when the face detector finds a slightly different box."""

    def __init__(self, detector: nn.Module, boxes: list[tuple[int, int, int, int]], size: int):
        super().__init__()
        self.detector, self.boxes, self.size = detector, boxes, size

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        from kernels.resample import resize_images

        logits = []
        for x1, y1, x2, y2 in self.boxes:
            crops = resize_images(frames[:, :, y1:y2, x1:x2] * 255.0, self.size) / 255.0
            logits.append(self.detector(crops.clamp(0, 1)))
        return torch.stack(logits).mean(0)


def jittered(box: tuple[int, int, int, int], h: int, w: int) -> list[tuple[int, int, int, int]]:
    x1, y1, x2, y2 = box
    out = []
    for dx, dy, ds in ((0, 0, 0), (-2, 0, 0), (2, 0, 0), (0, -2, 0), (0, 2, 0), (-2, -2, 4)):
        a, b = max(0, x1 + dx), max(0, y1 + dy)
        c, d = min(w, x2 + dx + ds), min(h, y2 + dy + ds)
        out.append((a, b, c, d))
    return out


def demo_frames(
    pipeline: Any, frames: int = SEGMENT_FRAMES, seed: int = 0, draws: int = 20
) -> dict[str, list[np.ndarray]]:
    """The clean segments: the astronaut moving (real), and each of those frames
    self-blended as the proxy's fakes are (fake). A self-blend is random; each fake frame
    is the first of up to ``draws`` blends that the engine's detector catches, as the
    attacker in the paper attacks the fakes a detector catches."""
    import cv2

    from training.proxy import SBI_RATIOS, SBI_STRENGTH
    from training.proxy_media import clip_frames, identities
    from training.sbi import self_blend

    astronaut = identities()[0]
    rng = np.random.default_rng([seed, 7])
    real, boxes = clip_frames(astronaut, frames, rng)
    threshold = pipeline.settings.fake_threshold
    fake = []
    for k, (f, b) in enumerate(zip(real, boxes, strict=True)):
        for _ in range(draws):
            blend = self_blend(f, b, rng, SBI_RATIOS, SBI_STRENGTH)[0]
            seen = _engine_view(pipeline, blend, k)
            if seen is not None and seen[1] >= threshold:
                break
        fake.append(blend)

    def big(frames: list[np.ndarray]) -> list[np.ndarray]:
        if SCALE == 1:
            return frames
        side = frames[0].shape[0] * SCALE
        return [cv2.resize(f, (side, side), interpolation=cv2.INTER_CUBIC) for f in frames]

    return {"real": big(real), "fake": big(fake)}


def attack_frames(
    frames: list[np.ndarray], pipeline: Any, steps: int = 40, seed: int = 0, rounds: int = 4
) -> tuple[list[np.ndarray], list[bool]]:
    """PGD (the project's: CW margin, here with a margin of 4 logits, ε = 16/255) on each
    frame's face, in frame space; returns the 8-bit attacked frames and whether the
    engine (its face detector, crop and deepfake detector) calls each stored frame's
    face real.

    The face detector may find a slightly different box on the attacked frame, so each
    round adds the box it finds to those the attack is averaged over, and attacks the
    clean frame again, until the engine is fooled or ``rounds`` are spent."""
    from engine.stages.classify import FAKE
    from training.attacks import EPS_PAPER, create_attack

    detector = pipeline.detector.eval()
    size = detector.cfg.input_size
    threshold = pipeline.settings.fake_threshold
    out, fooled = [], []
    for k, rgb in enumerate(frames):
        found = _engine_view(pipeline, rgb, k)
        if found is None:
            out.append(rgb)
            fooled.append(False)
            continue
        h, w = rgb.shape[:2]
        boxes = jittered(found[0], h, w)
        x = torch.from_numpy(rgb).permute(2, 0, 1)[None].float() / 255
        adv8, hit = rgb, False
        for _ in range(rounds):
            model = FrameVerdict(detector, boxes, size).eval()  # run() restores this mode
            attack = create_attack(
                "pgd", model, seed=seed + k, eps=EPS_PAPER, steps=steps, kappa=4.0
            )
            adv = attack.run(x, torch.full((1,), FAKE, dtype=torch.long)).adv
            adv8 = np.ascontiguousarray(
                (adv[0].detach() * 255).round().clamp(0, 255).byte().permute(1, 2, 0).numpy()
            )
            seen = _engine_view(pipeline, adv8, k)
            if seen is None:
                break
            box, p_fake = seen
            hit = p_fake < threshold
            if hit:
                break
            boxes = [*boxes, *jittered(box, h, w)[:3]]
        out.append(adv8)
        fooled.append(hit)
    return out, fooled


def _engine_view(
    pipeline: Any, rgb: np.ndarray, k: int
) -> tuple[tuple[int, int, int, int], float] | None:
    """The crop box of the frame's best face and the detector's p_fake, as the engine
    computes them (face detector, crop, classify); None when no face is found."""
    from engine.frames import Frame, FrameBatch
    from training.build_dataset import best_faces

    batch = FrameBatch.from_frames([Frame(image=rgb, index=k, pts=k / FPS, source="demo")])
    ids, boxes = pipeline.detect(batch)
    if len(boxes) == 0:
        return None
    keep = best_faces(ids, boxes)
    crop_boxes, crops = pipeline.crop(batch.images, batch.sizes, ids[keep], boxes[keep])
    x1, y1, x2, y2 = crop_boxes[0].tolist()
    return (x1, y1, x2, y2), float(pipeline.classify(crops)[0])


def write_clip(
    path: Path, config_file: Path, steps: int = 40, frames: int = SEGMENT_FRAMES
) -> dict[str, Any]:
    """The demo clip at ``path`` (FFV1, lossless) and its segment map at ``path.json``."""
    from engine.config import load_config
    from engine.pipeline import Pipeline
    from engine.video import VideoWriter

    config = load_config(str(config_file), ['pipeline.device="cpu"'])
    pipeline = Pipeline.from_config(config)
    segments = demo_frames(pipeline, frames)
    segments["attacked"], fooled = attack_frames(segments["fake"], pipeline, steps)
    weights = Path(config.models.adversarial_weights).parent
    info: dict[str, Any] = {"fps": FPS, "segments": {}, "weights": describe(weights)}
    start = 0
    with VideoWriter(path, FPS, lossless=True) as writer:
        for name in SEGMENTS:
            for f in segments[name]:
                writer.write(f)
            n = len(segments[name])
            info["segments"][name] = {"first": start, "last": start + n - 1}
            start += n
    info["attack"] = {
        "name": "pgd",
        "eps": "16/255",
        "steps": steps,
        "frames_fooling_the_detector": f"{sum(fooled)}/{len(fooled)}",
    }
    path.with_suffix(".json").write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
    return info


# --- the score ----------------------------------------------------------------------------------


def score(records: Path, clip_info: Path) -> dict[str, Counter[str]]:
    """Verdicts of the analysed frames per segment (the record's frame verdict: the worst
    of its faces', ``no_face`` when none was found)."""
    info = json.loads(clip_info.read_text(encoding="utf-8"))
    counts: dict[str, Counter[str]] = {name: Counter() for name in info["segments"]}
    for line in records.read_text(encoding="utf-8").splitlines():
        rec = json.loads(line)
        if "frame" not in rec:
            continue
        verdict = rec["verdict"]
        for name, seg in info["segments"].items():
            if seg["first"] <= rec["frame"] <= seg["last"]:
                counts[name][verdict] += 1
    return counts


def format_score(counts: dict[str, Counter[str]]) -> str:
    lines = []
    for name, c in counts.items():
        total = sum(c.values())
        lines.append(
            f"  {name:8s} frames: {total} analysed: "
            + ", ".join(f"{v} {k}" for k, v in c.most_common())
        )
    attacked = counts.get("attacked", Counter())
    caught, total = attacked["attacked"], sum(attacked.values())
    lines.append(f"  attacked frames caught: {caught} of {total}")
    return "\n".join(lines)


# --- command line -------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m training.demo", description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="command", required=True)
    w = sub.add_parser("weights", help="make the proxy-trained demo weights")
    w.add_argument("out", type=Path, nargs="?", default=WEIGHTS)
    w.add_argument("--work", type=Path, default=REPO / "build" / "demo-train")
    c = sub.add_parser("clip", help="write the demo clip (real, fake, attacked segments)")
    c.add_argument("out", type=Path)
    c.add_argument("--config", type=Path, default=REPO / "engine" / "configs" / "demo.toml")
    c.add_argument("--steps", type=int, default=40, help="PGD steps")
    s = sub.add_parser("score", help="verdicts per segment of veritas run's records")
    s.add_argument("records", type=Path)
    s.add_argument("clip_info", type=Path)
    args = p.parse_args(argv)
    from training.build_dataset import setup_logging

    setup_logging("demo", quiet=True)
    if args.command == "weights":
        made = make_weights(args.out.resolve(), args.work)
        print(f"demo weights written to {args.out} in {made['seconds']} s")
        print(describe(args.out))
    elif args.command == "clip":
        info = write_clip(args.out, args.config, args.steps)
        print(
            f"demo clip {args.out}: "
            + ", ".join(f"{k} frames {v['first']}-{v['last']}" for k, v in info["segments"].items())
        )
        print(
            f"PGD fooled the demo detector on {info['attack']['frames_fooling_the_detector']} "
            "attacked frames (checked on the stored 8-bit frames)"
        )
        print(info["weights"])
    else:
        print(f"demo verdicts per segment ({args.records}):")
        print(format_score(score(args.records, args.clip_info)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
