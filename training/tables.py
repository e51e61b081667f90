"""The evaluation's tables: rendering computed results as Markdown, apart from computing them.

:class:`Tables` takes what :class:`training.evaluate.Evaluation` computed (detector
precision, Detect-ResNet50 detection results, defenses, plots) and writes the paper's
tables (its Tables 2-5 and the defense comparison) with their definitions.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from training.defenses import defense_title
from training.finetune import NO_MAPS

if TYPE_CHECKING:
    from training.data import Dataset
    from training.evaluate import DetectionResult, EvalOptions

XAI_ORDER = ("guided_backprop", "input_x_gradient", "integrated_gradients", "saliency")
XAI_TITLES = {
    "guided_backprop": "G-Backprop",
    "input_x_gradient": "Inp × Grad",
    "integrated_gradients": "Int-Grad",
    "saliency": "Saliency",
    NO_MAPS: "no-maps model",
}
ATTACK_ORDER = ("pgd", "apgd", "square", "nes")
ATTACK_TITLES = {"pgd": "PGD", "apgd": "APGD", "square": "Square", "nes": "NES"}
CONFIG_TITLES = {"full": "finetuned ResNet50", "head": "frozen backbone, head trained"}


def attack_title(name: str) -> str:
    return ATTACK_TITLES.get(name, name.upper())


def ordered(names: Sequence[str], order: Sequence[str]) -> list[str]:
    return sorted(set(names), key=lambda n: (order.index(n) if n in order else len(order), n))


def pct(x: float) -> str:
    return "–" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{100 * x:.2f}%"


def num(x: float) -> str:
    return "–" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.3f}"


def md_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(" --- " for _ in header) + "|"]
    lines += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(lines)


class Tables:
    """Markdown of one evaluation's results."""

    def __init__(
        self,
        options: EvalOptions,
        datasets: Sequence[Dataset],
        precision: list[dict[str, Any]],
        detection: list[DetectionResult],
        defense_rows: list[dict[str, Any]],
        plots: list[Path],
    ) -> None:
        self.o = options
        self.datasets = datasets
        self.precision = precision
        self.detection = detection
        self.defense_rows = defense_rows
        self.plots = plots

    def title(self, text: str) -> str:
        return f"{text} ({self.o.label})" if self.o.label else text

    def markdown(self) -> str:
        parts = [f"# {self.title('Adversarial-attack detection on deepfake detectors')}", ""]
        if self.o.label:
            parts += [
                f"> **{self.o.label} results.** Computed on the data and models named below; "
                "not comparable with the paper's numbers.",
                "",
            ]
        parts += [
            f"Split: `{self.o.split}`. Datasets: "
            + ", ".join(f"`{ds.root}` ({ds.detector})" for ds in self.datasets)
            + ".",
            "",
        ]
        inits = sorted({d.init for d in self.detection if d.method == "detect_resnet50"})
        if inits:
            named = ", ".join(
                "a seeded random initialization (`--init random`), not the paper's "
                "ImageNet-pretrained ResNet50"
                if i == "random"
                else f"`{i}`"
                for i in inits
            )
            parts += [f"Detect-ResNet50 finetuned from: {named}.", ""]
        parts += self._md_precision()
        for n, config in ((3, "full"), (4, "head")):
            parts += self._md_detection(n, config)
        parts += self._md_comparison()
        parts += self._md_defenses()
        if self.plots:
            parts += [f"## {self.title('ROC curves')}", ""]
            parts += [f"![{p.stem}]({p.name})" for p in self.plots] + [""]
        parts += [
            "## Definitions",
            "",
            "* **Vid / F2F**: share of videos (majority vote of frames; fake when more than "
            "half are called fake) / of frames given the right verdict — the paper's "
            '"precision".',
            "* **Detect-ResNet50 accuracy**: the share of right answers (threshold 0.5) on "
            "the test faces the deepfake detector calls real: real faces and the faces the "
            "attack fooled, in the paper's real/attacked pairs (one fooled face per real "
            "face, per video group and attack), so each set is balanced. `*`: the attack "
            "Detect-ResNet50 was trained on. Averages leave out the PGD-B rows; the Total "
            "Average is the mean of the detectors' Averages.",
            "* **PGD-B** (as in the paper): each model trained with XAI maps, tested on the "
            "train attack's set with its maps blacked out (zeros). **No-maps model** (not in "
            "the paper): a model trained and tested with black maps, i.e. on the crop only.",
            "* **Defenses**: the crop is transformed (median/Gaussian/average 3×3, JPEG "
            'q70/80/90), the deepfake detector judges it again; "fake" counts as attacked. '
            '"detector alone" is the undefended system (50% by construction: it calls '
            "every one of these faces real).",
            "",
        ]
        return "\n".join(parts)

    def _md_precision(self) -> list[str]:
        base = [p for p in self.precision if p["attack"] == "none"]
        lines = [f"## {self.title('Table 1 — deepfake-detector precision before attack')}", ""]
        lines.append(
            md_table(
                [
                    "detector",
                    "Real Vid",
                    "Real F2F",
                    "Fake Vid",
                    "Fake F2F",
                    "frames (real / fake)",
                    "videos (real / fake)",
                ],
                [
                    [
                        p["detector"],
                        pct(p["real_vid"]),
                        pct(p["real_f2f"]),
                        pct(p["fake_vid"]),
                        pct(p["fake_f2f"]),
                        f"{p['real_frames']} / {p['fake_frames']}",
                        f"{p['real_videos']} / {p['fake_videos']}",
                    ]
                    for p in base
                ],
            )
        )
        detectors = list(dict.fromkeys(p["detector"] for p in base))
        attacks = ordered(
            [p["attack"] for p in self.precision if p["attack"] != "none"], ATTACK_ORDER
        )
        lines += [
            "",
            f"## {self.title('Table 2 — deepfake-detector precision on attacked fakes')}",
            "",
        ]
        if attacks:
            header = ["attack"] + [f"{d} {m}" for d in detectors for m in ("Vid", "F2F")]
            header += [f"{d} attack success" for d in detectors]
            rows = []
            for a in attacks:
                cells = [attack_title(a)]
                found = {p["detector"]: p for p in self.precision if p["attack"] == a}
                for d in detectors:
                    p = found.get(d)
                    cells += [pct(p["fake_vid"]), pct(p["fake_f2f"])] if p else ["–", "–"]
                cells += [pct(found[d]["attack_success"]) if d in found else "–" for d in detectors]
                rows.append(cells)
            lines.append(md_table(header, rows))
        else:
            lines.append("No attacked faces in this split.")
        return [*lines, ""]

    def _md_detection(self, number: int, config: str) -> list[str]:
        """The paper's Tables 3 and 4: a block per deepfake detector with its PGD-B row
        (the map-trained models tested with black maps on the train attack, in brackets),
        a row per attack and the block's Average (PGD-B left out), then the Total
        Average over the detectors. The no-maps model (trained with black maps, not in
        the paper) is an extra column."""
        results = [
            d for d in self.detection if d.method == "detect_resnet50" and d.config == config
        ]
        if not results:
            return []
        what = CONFIG_TITLES[config]
        columns = ordered([d.maps for d in results if d.maps != NO_MAPS], XAI_ORDER)
        extra = [NO_MAPS] if any(d.maps == NO_MAPS for d in results) else []
        header = ["model", "attack", *(XAI_TITLES.get(c, c) for c in [*columns, *extra])]
        rows: list[list[str]] = []
        averages: dict[str, list[float]] = defaultdict(list)
        for detector in dict.fromkeys(d.detector for d in results):
            mine = [d for d in results if d.detector == detector]
            trained = set().union(*(set(self._train_attacks(d.dataset)) for d in mine))
            get = {(d.maps, d.attack, d.test_maps): d.accuracy for d in mine}
            attacks = ordered([d.attack for d in mine], ATTACK_ORDER)
            block: list[list[str]] = []
            for a in attacks:
                if a in trained and any((c, a, "zero") in get for c in columns):
                    block.append(
                        [
                            f"(PGD-B, {attack_title(a)}*)",
                            *(f"({pct(get.get((c, a, 'zero'), float('nan')))})" for c in columns),
                            *("–" for _ in extra),
                        ]
                    )
            sums = defaultdict(list)
            for a in attacks:
                cells = [f"{attack_title(a)}{'*' if a in trained else ''}"]
                for c in [*columns, *extra]:
                    v = get.get((c, a, "zero" if c == NO_MAPS else "xai"), float("nan"))
                    sums[c].append(v)
                    cells.append(pct(v))
                block.append(cells)
            block.append(["**Average**", *(pct(_mean(sums[c])) for c in [*columns, *extra])])
            for c in [*columns, *extra]:
                averages[c].append(_mean(sums[c]))
            rows += [[f"**{detector}**" if k == 0 else "", *r] for k, r in enumerate(block)]
        rows.append(
            ["", "**Total Average**", *(pct(_mean(averages[c])) for c in [*columns, *extra])]
        )
        lines = [f"## {self.title(f'Table {number} — Detect-ResNet50 accuracy, {what}')}", ""]
        return [*lines, md_table(header, rows), ""]

    def _train_attacks(self, dataset: str) -> list[str]:
        for ds in self.datasets:
            if str(ds.root) == dataset:
                return list(ds.info["attacks"]["train"])
        return []

    def _md_comparison(self) -> list[str]:
        rows_d = [d for d in self.detection if d.test_maps != "zero" or d.maps == NO_MAPS]
        if not rows_d:
            return []
        attacks = ordered([d.attack for d in rows_d], ATTACK_ORDER)
        lines = [
            f"## {self.title('Table 5 — Detect-ResNet50 vs input-transformation defenses')}",
            "",
            "Accuracy (AUC in brackets) on the same test sets: real faces vs faces the "
            "attack fooled.",
            "",
        ]
        header = ["detector", "method", *(attack_title(a) for a in attacks), "mean"]
        rows = []
        keys = list(dict.fromkeys((d.detector, d.method, d.config, d.maps) for d in rows_d))
        for detector, method, config, maps in keys:
            mine = {
                d.attack: d
                for d in rows_d
                if (d.detector, d.method, d.config, d.maps) == (detector, method, config, maps)
            }
            if method == "defense":
                name = "detector alone" if maps == "none" else f"{defense_title(maps)} + detector"
            else:
                name = f"Detect-ResNet50 {config}, {XAI_TITLES.get(maps, maps)}"
            cells = [detector, name]
            for a in attacks:
                d = mine.get(a)
                cells.append(f"{pct(d.accuracy)} ({num(d.auc)})" if d else "–")
            cells.append(pct(_mean([mine[a].accuracy for a in attacks if a in mine])))
            rows.append(cells)
        return [*lines, md_table(header, rows), ""]

    def _md_defenses(self) -> list[str]:
        if not self.defense_rows:
            return []
        attacks = ordered(
            [
                k[len("restored_") :]
                for r in self.defense_rows
                for k in r
                if k.startswith("restored_")
            ],
            ATTACK_ORDER,
        )
        lines = [
            f"## {self.title('Table 6 — defenses on clean and attacked test faces')}",
            "",
            "Per-class accuracy of the deepfake detector on the clean test faces after the "
            "transform (on the stored 8-bit crops), and the share of fooled faces it calls "
            "fake again.",
            "",
        ]
        header = [
            "detector",
            "defense",
            "clean real F2F",
            "clean fake F2F",
            *(f"restored {attack_title(a)}" for a in attacks),
        ]
        rows = [
            [
                r["detector"],
                "none" if r["defense"] == "none" else defense_title(r["defense"]),
                pct(r["real_f2f"]),
                pct(r["fake_f2f"]),
                *(pct(r.get(f"restored_{a}", float("nan"))) for a in attacks),
            ]
            for r in self.defense_rows
        ]
        return [*lines, md_table(header, rows), ""]


def _mean(values: Sequence[float]) -> float:
    v = [x for x in values if x is not None and not math.isnan(x)]
    return sum(v) / len(v) if v else float("nan")
