"""The evaluation's Markdown tables, rendered from results given directly (no models)."""

from __future__ import annotations

from types import SimpleNamespace

from training.evaluate import DetectionResult, EvalOptions
from training.tables import Tables, md_table, pct


def result(
    maps: str,
    attack: str,
    accuracy: float,
    detector: str = "xception",
    test_maps: str = "xai",
    balanced: float = 0.0,
) -> DetectionResult:
    return DetectionResult(
        dataset="/nowhere", detector=detector, method="detect_resnet50", config="full",
        maps=maps, test_maps=test_maps, attack=attack, n_real=10, n_attacked=10,
        balanced_accuracy=balanced, accuracy=accuracy, tpr=accuracy, tnr=accuracy, auc=0.9,
    )  # fmt: skip


def cells(line: str) -> list[str]:
    return [c.strip() for c in line.split("|")[1:-1]]


def test_detection_table_is_laid_out_as_the_papers(tmp_path):
    """Table 3 as the paper's: a block per detector with its PGD-B row (the map-trained
    model with black maps, in brackets), a row per attack, the block's Average without
    PGD-B, and the Total Average over detectors; plain accuracy; the no-maps model is an
    extra column, never called PGD-B."""
    options = EvalOptions(out=tmp_path, datasets=[], label="PROXY")
    pgd_trained = SimpleNamespace(
        root="/nowhere", detector="xception", info={"attacks": {"train": {"pgd": {}}}}
    )
    detection = [
        result("saliency", "pgd", 0.875),
        result("saliency", "square", 0.625),
        result("guided_backprop", "pgd", 1.0),
        result("guided_backprop", "pgd", 0.5, test_maps="zero"),
        result("no-maps", "pgd", 0.55, test_maps="zero"),
        result("guided_backprop", "pgd", 0.75, detector="b4st"),
        result("saliency", "pgd", 0.25, detector="b4st"),
    ]
    text = Tables(options, [pgd_trained], [], detection, [], []).markdown()  # type: ignore[list-item]
    assert "**PROXY results.**" in text and "Table 3 — Detect-ResNet50 accuracy" in text
    lines = [cells(x) for x in text.split("## ")[3].splitlines() if x.startswith("|")]
    header, body = lines[0], lines[2:]
    assert header == ["model", "attack", "G-Backprop", "Saliency", "no-maps model"]
    assert body[0] == ["**xception**", "(PGD-B, PGD*)", "(50.00%)", "(–)", "–"]
    assert body[1] == ["", "PGD*", "100.00%", "87.50%", "55.00%"]
    assert body[2] == ["", "Square", "–", "62.50%", "–"]
    assert body[3] == ["", "**Average**", "100.00%", "75.00%", "55.00%"]
    assert body[4][:2] == ["**b4st**", "PGD*"] and body[4][2:4] == ["75.00%", "25.00%"]
    assert body[5][1] == "**Average**"
    assert body[6] == ["", "**Total Average**", "87.50%", "50.00%", "55.00%"]
    assert "Table 4" not in text  # no head-only results: no table
    assert "PGD-B (black maps)" not in text and "PGD-B†" not in text


def test_formatting_helpers():
    assert pct(0.5) == "50.00%" and pct(float("nan")) == "–"
    lines = md_table(["a", "b"], [[1, 2]]).splitlines()
    assert lines == ["| a | b |", "| --- | --- |", "| 1 | 2 |"]
