"""The paper's tables, ROC curves and the input-transformation baselines, from built data.

For each dataset (one per deepfake detector, from ``training.build_dataset``) and the
Detect-ResNet50 checkpoints finetuned on it (``training.finetune`` records), on the
test split:

* **Table 1** — the deepfake detector's per-class accuracy ("precision" in the paper)
  on clean real and fake faces, per video (Vid, majority vote) and per frame (F2F).
* **Table 2** — the same on fake faces after each attack: a fake video's frames with
  their attacked version where the attack ran (frames the detector already missed
  are not attacked and count as missed).
* **Tables 3 and 4** — Detect-ResNet50's accuracy per attack × XAI method, full finetune
  and frozen backbone: the accuracy at threshold 0.5 on the test faces called real:
  real faces (class 0) and the faces the attack fooled (class 1), in the paper's
  real/attacked pairs, so each set is balanced (the CSV also has the balanced accuracy,
  TPR, TNR and AUC). The PGD-B row, as in the paper, is each XAI model tested with its
  maps blacked out; the no-maps model (trained and tested with black maps) is an extra
  column.
* **Table 5** — the same test sets judged by the input-transformation defenses of the
  comparative study (median, Gaussian, average 3×3; JPEG 70/80/90): the crop is
  transformed, the deepfake detector judges it again, "fake" counts as "attacked";
  next to every Detect-ResNet50 model, as comparison rows, with the AUC per attack.
* **Table 6** — each defense's cost and effect: per-class accuracy on clean test faces
  after the transform, and the share of fooled faces it turns back to "fake".
* **ROC curves** per attack, one PNG per dataset and configuration (a panel per XAI
  method and the no-maps model).

Written to OUT: ``tables.md``, ``detector_precision.csv``, ``attack_detection.csv``,
``defenses.csv`` and ``roc_<detector>_<config>.png``. ``--label PROXY`` puts the label
in every title (the proxy run's numbers are not the paper's).

    python -m training.evaluate report --dataset data/xception --models models/xception
"""

from __future__ import annotations

import argparse
import csv
import logging
import sys
import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from engine.device import resolve_device
from engine.errors import VeritasError
from engine.models import create_model
from engine.stages.classify import FAKE
from training.build_dataset import file_digest
from training.data import Dataset, Row, atomic_write_text, batches, in_set, predict_attacked
from training.defenses import apply_defense, list_defenses
from training.errors import BadOptionError, EmptyDatasetError
from training.finetune import CONFIGS, NO_MAPS, THRESHOLD, iter_records
from training.metrics import auc, balanced_accuracy, rate, roc_curve, video_rate
from training.tables import (
    ATTACK_ORDER,
    CONFIG_TITLES,
    XAI_ORDER,
    XAI_TITLES,
    Tables,
    attack_title,
    ordered,
)

log = logging.getLogger("training.evaluate")


@dataclass
class EvalOptions:
    out: Path
    datasets: Sequence[Path]
    models: Sequence[Path] = ()
    defenses: Sequence[str] | None = None
    """None: all registered defenses."""
    label: str = ""
    split: str = "test"
    device: str = "auto"
    batch_size: int = 64
    progress: bool = False


@dataclass
class DetectionResult:
    """One detector of attacks (a Detect-ResNet50 model or a defense) on one test set."""

    dataset: str
    detector: str
    method: str
    """``detect_resnet50`` or ``defense``."""
    config: str
    maps: str
    """XAI method, ``no-maps``, or the defense's name."""
    test_maps: str
    """``xai``, ``zero`` (maps blacked out at test) or ``-`` for defenses."""
    attack: str
    n_real: int
    n_attacked: int
    balanced_accuracy: float
    accuracy: float
    tpr: float
    tnr: float
    auc: float
    init: str = "-"
    """Detect-ResNet50's starting weights (``--init``: a file, or ``random``); ``-`` for
    defenses."""
    scores: np.ndarray = field(repr=False, default_factory=lambda: np.zeros(0))
    labels: np.ndarray = field(repr=False, default_factory=lambda: np.zeros(0))

    def row(self) -> dict[str, Any]:
        keys = (
            "dataset detector method config init maps test_maps attack n_real n_attacked "
            "balanced_accuracy accuracy tpr tnr auc"
        ).split()
        return {k: getattr(self, k) for k in keys}


def detection_result(
    scores: np.ndarray, labels: np.ndarray, threshold: float, **fields: Any
) -> DetectionResult:
    pred = scores >= threshold
    return DetectionResult(
        n_real=int((labels == 0).sum()),
        n_attacked=int((labels == 1).sum()),
        balanced_accuracy=balanced_accuracy(pred, labels),
        accuracy=rate(pred == labels.astype(bool)),
        tpr=rate(pred[labels == 1]),
        tnr=rate(~pred[labels == 0]),
        auc=auc(scores, labels),
        scores=scores,
        labels=labels,
        **fields,
    )


class Evaluation:
    def __init__(self, options: EvalOptions) -> None:
        self.o = options
        if not options.datasets:
            raise BadOptionError("--dataset", None, "at least one dataset folder")
        self.defenses = list_defenses() if options.defenses is None else list(options.defenses)
        for d in self.defenses:
            if d not in list_defenses():
                raise BadOptionError("--defenses", d, ", ".join(list_defenses()))
        self.device = resolve_device(options.device)
        self.datasets = [Dataset(p) for p in options.datasets]
        self.records: dict[int, list[dict[str, Any]]] = defaultdict(list)
        for folder in options.models:
            if not Path(folder).is_dir():
                raise BadOptionError("--models", str(folder), "a folder of finetune outputs")
            for record in iter_records(Path(folder)):
                k = self._dataset_of(record)
                if k is None:
                    log.warning(
                        "%s: made on %s, which is not evaluated", record["path"], record["dataset"]
                    )
                else:
                    self.records[k].append(record)
        self.precision: list[dict[str, Any]] = []
        self.detection: list[DetectionResult] = []
        self.defense_rows: list[dict[str, Any]] = []
        self.plots: list[Path] = []

    def _dataset_of(self, record: dict[str, Any]) -> int | None:
        target = Path(record["dataset"]).resolve()
        for k, ds in enumerate(self.datasets):
            if ds.root.resolve() == target:
                return k
        matches = [k for k, ds in enumerate(self.datasets) if ds.detector == record["detector"]]
        return matches[0] if len(matches) == 1 else None

    # --- run ------------------------------------------------------------------------------------

    def run(self) -> Path:
        self.o.out.mkdir(parents=True, exist_ok=True)
        for k, ds in enumerate(self.datasets):
            rows = ds.select(split=self.o.split)
            if not rows:
                raise EmptyDatasetError(f"{self.o.split} faces in {ds.root}", "check --split")
            self._precision(ds, rows)
            self._detect_resnet(ds, rows, self.records[k])
            self._defenses(ds, rows)
            self._plots(ds)
        return self._write()

    def _attacks(self, ds: Dataset) -> list[str]:
        names = {r["attack"] for r in ds.rows if r["attack"] and r["split"] == self.o.split}
        return ordered(list(names), ATTACK_ORDER)

    def _precision(self, ds: Dataset, rows: list[Row]) -> None:
        """Tables 1 and 2."""
        by_video: dict[str, dict[str, list[bool]]] = {"real": {}, "fake": {}}
        clean_fake: dict[tuple[str, int], bool] = {}
        for r in rows:
            if r["kind"] in by_video:
                by_video[r["kind"]].setdefault(r["video"], []).append(r["called"] == "fake")
            if r["kind"] == "fake":
                clean_fake[(r["video"], r["frame"])] = r["called"] == "fake"
        real_frames = [f for v in by_video["real"].values() for f in v]
        fake_frames = [f for v in by_video["fake"].values() for f in v]
        self.precision.append(
            {
                "dataset": str(ds.root),
                "detector": ds.detector,
                "attack": "none",
                "real_vid": video_rate(by_video["real"], fake=False),
                "real_f2f": rate([not f for f in real_frames]),
                "fake_vid": video_rate(by_video["fake"], fake=True),
                "fake_f2f": rate(fake_frames),
                "attack_success": float("nan"),
                "real_frames": len(real_frames),
                "fake_frames": len(fake_frames),
                "real_videos": len(by_video["real"]),
                "fake_videos": len(by_video["fake"]),
            }
        )
        for attack in self._attacks(ds):
            verdict = dict(clean_fake)
            attacked = [r for r in rows if r["attack"] == attack]
            for r in attacked:
                verdict[(r["video"], r["frame"])] = r["called"] == "fake"
            videos: dict[str, list[bool]] = defaultdict(list)
            for (video, _), fake in sorted(verdict.items()):
                videos[video].append(fake)
            self.precision.append(
                {
                    "dataset": str(ds.root),
                    "detector": ds.detector,
                    "attack": attack,
                    "real_vid": float("nan"),
                    "real_f2f": float("nan"),
                    "fake_vid": video_rate(videos, fake=True),
                    "fake_f2f": rate(list(verdict.values())),
                    "attack_success": rate([r["success"] for r in attacked]),
                    "real_frames": 0,
                    "fake_frames": len(verdict),
                    "real_videos": 0,
                    "fake_videos": len(videos),
                }
            )

    def _test_set(self, rows: list[Row], attack: str) -> list[Row]:
        """Real faces + faces ``attack`` fooled: the paper's pairs where the dataset has them."""
        return [r for r in rows if in_set(r, attack)]

    def _detect_resnet(self, ds: Dataset, rows: list[Row], records: list[dict[str, Any]]) -> None:
        """Tables 3 and 4 (and Detect-ResNet50's rows of table 5)."""
        labelled = [r for r in rows if r["label"] is not None]
        if not labelled or not records:
            if not records:
                log.warning("%s: no finetuned models to evaluate", ds.root)
            return
        position = {r["id"]: i for i, r in enumerate(labelled)}
        crops = ds.crops(labelled)
        train_attacks = set(ds.info["attacks"]["train"])
        from tqdm import tqdm

        ordered_records = sorted(records, key=lambda r: (r["config"], r["xai"] or "~"))
        for record in tqdm(
            ordered_records,
            desc=f"evaluating {ds.detector}",
            unit="model",
            disable=not self.o.progress,
            file=sys.stderr,
            leave=False,
        ):
            model = create_model(record["arch"], weights=record["path"], kind="adversarial")
            model.to(self.device)
            maps = None if record["xai"] is None else ds.maps(labelled, record["xai"])
            started = time.perf_counter()
            p = predict_attacked(model, crops, maps, self.o.batch_size, self.device).numpy()
            log.info(
                "%s: %d faces in %.1f s",
                record["name"],
                len(labelled),
                time.perf_counter() - started,
            )
            p_zero = None
            if record["xai"] is not None:
                sel = [
                    i
                    for i, r in enumerate(labelled)
                    if r["label"] == 0 or r["attack"] in train_attacks
                ]
                p_zero = np.full(len(labelled), np.nan)
                p_zero[sel] = predict_attacked(
                    model, crops[sel], None, self.o.batch_size, self.device
                ).numpy()
            for attack in self._attacks(ds):
                test = self._test_set(labelled, attack)
                idx = [position[r["id"]] for r in test]
                labels = np.array([r["label"] for r in test])
                common = {
                    "dataset": str(ds.root),
                    "detector": ds.detector,
                    "method": "detect_resnet50",
                    "config": record["config"],
                    "init": record.get("init") or "unrecorded",
                    "maps": record["xai"] or NO_MAPS,
                    "attack": attack,
                }
                self.detection.append(
                    detection_result(
                        p[idx],
                        labels,
                        THRESHOLD,
                        test_maps="xai" if record["xai"] else "zero",
                        **common,
                    )
                )
                if p_zero is not None and attack in train_attacks:
                    self.detection.append(
                        detection_result(p_zero[idx], labels, THRESHOLD, test_maps="zero", **common)
                    )

    def _defenses(self, ds: Dataset, rows: list[Row]) -> None:
        """Table 6 and the defenses' rows of table 5."""
        if not self.defenses:
            return
        weights = ds.info["config"]["models"]["detector_weights"]
        if weights and not Path(weights).is_file():
            log.warning("%s: detector weights %s not found; defenses skipped", ds.root, weights)
            return
        if weights and file_digest(weights) != ds.info.get("detector_weights_sha256"):
            log.warning("%s: %s changed since the dataset was built", ds.root, weights)
        detector = create_model(ds.detector, weights=weights or None, kind="deepfake").to(
            self.device
        )
        threshold = ds.info["config"]["pipeline"]["fake_threshold"]
        labelled = [r for r in rows if r["label"] is not None]
        clean = [r for r in rows if r["kind"] in ("real", "fake")]
        subjects = {r["id"]: r for r in labelled + clean}
        order = list(subjects.values())
        crops = ds.crops(order) if order else torch.zeros(0, 3, 1, 1, dtype=torch.uint8)
        position = {r["id"]: i for i, r in enumerate(order)}
        variants = ["none", *self.defenses]
        for name in variants:
            if name == "none":  # the system's own verdicts, as recorded by the build
                p_fake = np.array([r["p_fake"] for r in order], dtype=np.float64)
            else:  # the transform works on the stored 8-bit crops
                p_fake = self._p_fake(detector, apply_defense(name, crops))
            called_fake = p_fake >= threshold
            real = [position[r["id"]] for r in clean if r["kind"] == "real"]
            fake = [position[r["id"]] for r in clean if r["kind"] == "fake"]
            entry = {
                "dataset": str(ds.root),
                "detector": ds.detector,
                "defense": name,
                "real_f2f": rate(~called_fake[real]),
                "fake_f2f": rate(called_fake[fake]),
            }
            for attack in self._attacks(ds):
                test = self._test_set(labelled, attack)
                if not test:
                    continue
                idx = [position[r["id"]] for r in test]
                labels = np.array([r["label"] for r in test])
                self.detection.append(
                    detection_result(
                        p_fake[idx],
                        labels,
                        threshold,
                        dataset=str(ds.root),
                        detector=ds.detector,
                        method="defense",
                        config="-",
                        maps=name,
                        test_maps="-",
                        attack=attack,
                    )
                )
                entry[f"restored_{attack}"] = rate(called_fake[idx][labels == 1])
            self.defense_rows.append(entry)

    @torch.no_grad()
    def _p_fake(self, detector: torch.nn.Module, crops: torch.Tensor) -> np.ndarray:
        out = []
        for s in batches(len(crops), self.o.batch_size):
            x = crops[s].to(self.device).float() / 255
            out.append(detector(x).float().softmax(1)[:, FAKE].cpu())
        return torch.cat(out).numpy() if out else np.zeros(0)

    # --- plots ------------------------------------------------------------------------------------

    def _plots(self, ds: Dataset) -> None:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        for config in CONFIGS:
            results = [
                d
                for d in self.detection
                if d.dataset == str(ds.root)
                and d.method == "detect_resnet50"
                and d.config == config
                and (d.test_maps == "xai" or d.maps == NO_MAPS)
            ]
            if not results:
                continue
            panels = ordered([d.maps for d in results], (*XAI_ORDER, NO_MAPS))
            fig, axes = plt.subplots(
                1, len(panels), figsize=(2.9 * len(panels), 3.4), squeeze=False
            )
            for ax, maps in zip(axes[0], panels, strict=True):
                for d in results:
                    if d.maps != maps or d.n_real == 0 or d.n_attacked == 0:
                        continue
                    fpr, tpr = roc_curve(d.scores, d.labels)
                    ax.plot(fpr, tpr, lw=1.4, label=f"{attack_title(d.attack)} AUC {d.auc:.3f}")
                ax.plot([0, 1], [0, 1], ls=":", c="grey", lw=0.8)
                ax.set_title(XAI_TITLES.get(maps, maps), fontsize=9)
                ax.set_xlabel("false positive rate", fontsize=8)
                ax.tick_params(labelsize=7)
                ax.set_aspect("equal")
                ax.legend(fontsize=6.5, loc="lower right")
            axes[0][0].set_ylabel("true positive rate", fontsize=8)
            label = f"{self.o.label} — " if self.o.label else ""
            fig.suptitle(
                f"{label}Detect-ResNet50 ROC per attack — {ds.detector}, {CONFIG_TITLES[config]}",
                fontsize=9,
            )
            fig.tight_layout()
            path = self.o.out / f"roc_{ds.detector}_{config}.png"
            fig.savefig(path, dpi=80, bbox_inches="tight")
            plt.close(fig)
            self.plots.append(path)

    # --- output -----------------------------------------------------------------------------------

    def _write(self) -> Path:
        out = self.o.out
        _write_csv(out / "detector_precision.csv", self.precision)
        _write_csv(out / "attack_detection.csv", [d.row() for d in self.detection])
        _write_csv(out / "defenses.csv", self.defense_rows)
        path = out / "tables.md"
        atomic_write_text(path, self.markdown())
        return path

    def markdown(self) -> str:
        """The tables as Markdown (``training.tables``)."""
        return Tables(
            self.o, self.datasets, self.precision, self.detection, self.defense_rows, self.plots
        ).markdown()


def _write_csv(path: Path, rows: Sequence[dict[str, Any]]) -> None:
    keys = list(dict.fromkeys(k for r in rows for k in r))
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=keys)
        writer.writeheader()
        for r in rows:
            writer.writerow({k: (f"{v:.6f}" if isinstance(v, float) else v) for k, v in r.items()})


# --- command line -------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m training.evaluate",
        description="Write the paper's tables (Markdown + CSV) and ROC plots for built datasets "
        "and finetuned Detect-ResNet50 models, with input-transformation baselines.",
    )
    p.add_argument("out", help="output folder")
    p.add_argument("--dataset", action="append", required=True, help="dataset folder (repeat)")
    p.add_argument("--models", action="append", default=[], help="finetune output folder (repeat)")
    p.add_argument(
        "--defenses",
        help=f"comma-separated, or 'none' (default: all of {','.join(list_defenses())})",
    )
    p.add_argument("--label", default="", help="put this label in every title (e.g. PROXY)")
    p.add_argument("--split", default="test")
    p.add_argument("--device", default="auto")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("-q", "--quiet", action="store_true")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    from training.build_dataset import parse_list, setup_logging

    args = build_parser().parse_args(argv)
    setup_logging("evaluate", args.quiet)
    defenses = None
    if args.defenses is not None:
        defenses = [] if args.defenses == "none" else parse_list(args.defenses)
    options = EvalOptions(
        out=Path(args.out),
        datasets=[Path(d) for d in args.dataset],
        models=[Path(m) for m in args.models],
        defenses=defenses,
        label=args.label,
        split=args.split,
        device=args.device,
        batch_size=args.batch_size,
        progress=not args.no_progress and sys.stderr.isatty(),
    )
    try:
        path = Evaluation(options).run()
    except VeritasError as e:
        print(f"evaluate: error: {e}", file=sys.stderr)
        return 2
    print(f"tables written to {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
