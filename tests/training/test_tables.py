"""The evaluation's Markdown tables, rendered from results given directly (no models)."""

from __future__ import annotations

from training.evaluate import DetectionResult, EvalOptions
from training.tables import Tables, md_table, pct


def result(maps: str, attack: str, accuracy: float) -> DetectionResult:
    return DetectionResult(
        dataset="/nowhere", detector="xception", method="detect_resnet50", config="full",
        maps=maps, test_maps="xai", attack=attack, n_real=10, n_attacked=10,
        balanced_accuracy=accuracy, accuracy=accuracy, tpr=accuracy, tnr=accuracy, auc=0.9,
    )  # fmt: skip


def test_detection_table_has_a_row_per_attack_a_column_per_map_and_their_average(tmp_path):
    options = EvalOptions(out=tmp_path, datasets=[], label="PROXY")
    detection = [
        result("saliency", "pgd", 0.875),
        result("saliency", "square", 0.625),
        result("guided_backprop", "pgd", 1.0),
    ]
    text = Tables(options, [], [], detection, [], []).markdown()
    assert "**PROXY results.**" in text and "Table 3 — Detect-ResNet50 accuracy" in text
    assert "(PROXY)" in text
    rows = {line.split("|")[1].strip(): line for line in text.splitlines() if line.startswith("|")}
    header = rows["attack"]
    assert header.index("G-Backprop") < header.index("Saliency")  # the paper's column order
    assert [c.strip() for c in rows["PGD"].split("|")[2:4]] == ["100.00%", "87.50%"]
    assert [c.strip() for c in rows["Square"].split("|")[2:4]] == ["–", "62.50%"]
    assert [c.strip() for c in rows["**Average**"].split("|")[2:4]] == ["100.00%", "75.00%"]
    assert "Table 4" not in text  # no head-only results: no table


def test_formatting_helpers():
    assert pct(0.5) == "50.00%" and pct(float("nan")) == "–"
    lines = md_table(["a", "b"], [[1, 2]]).splitlines()
    assert lines == ["| a | b |", "| --- | --- |", "| 1 | 2 |"]
