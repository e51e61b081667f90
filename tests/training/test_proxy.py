"""The CI-sized proxy run, end to end: media, detectors, dataset, finetuning, evaluation.

The run happens once per session (:func:`ci_proxy_run`); the dataset and evaluation
tests inspect the same output.
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import pytest
from safetensors import safe_open

from engine.cli import main as veritas_main
from engine.models import create_model
from training import proxy

pytestmark = pytest.mark.numerics  # also run as an AVX2-only CPU would (Makefile)

ADVERSARIAL = proxy.ADVERSARIAL
_RUNS: dict[str, tuple[Path, float]] = {}


CI_THREADS = 1
"""The CI run uses one thread: on a busy 2-core machine two OpenMP threads per process
slow it down tenfold, and the resume test must repeat its numerics exactly."""


def ci_proxy_run(factory: pytest.TempPathFactory) -> Path:
    """``python -m training.proxy OUT --size ci``, run once per session; returns OUT."""
    if "ci" not in _RUNS:
        out = factory.mktemp("proxy") / "ci"
        started = time.perf_counter()
        argv = [str(out), "--size", "ci", "--threads", str(CI_THREADS), "--docs", str(out / "docs")]
        assert proxy.main(argv) == 0
        _RUNS["ci"] = (out, time.perf_counter() - started)
    return _RUNS["ci"][0]


@pytest.fixture(scope="session")
def proxy_ci(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return ci_proxy_run(tmp_path_factory)


def test_ci_proxy_run_writes_tables_plot_and_run_notes(proxy_ci: Path):
    report = proxy_ci / "report"
    tables = (report / "tables.md").read_text()
    headings = [line for line in tables.splitlines() if line.startswith("#")]
    assert len(headings) >= 6
    assert all("(PROXY)" in h for h in headings if h != "## Definitions"), headings
    for n in (1, 2, 3, 4, 5, 6):
        assert f"Table {n} " in tables
    pngs = sorted(report.glob("roc_*.png"))
    assert [p.name for p in pngs] == ["roc_xception_tiny_full.png", "roc_xception_tiny_head.png"]
    for p in pngs:
        data = p.read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and 5_000 < len(data) < 200_000
    for name in ("detector_precision.csv", "attack_detection.csv", "defenses.csv"):
        assert (report / name).stat().st_size > 100
    notes = (report / "RUN.md").read_text()
    assert re.search(r"wall time: \d+\.\d s", notes)
    assert "python -m training.build_dataset" in notes and "python -m training.finetune" in notes
    assert "(`--init random`), not the paper's ImageNet-pretrained ResNet50" in notes
    assert "Detect-ResNet50 finetuned from: a seeded random initialization" in tables
    commands = (proxy_ci / "commands.sh").read_text().splitlines()
    assert sum(c.startswith("python -m training.finetune") for c in commands) == 6  # 2 XAI + B, x2
    assert (
        commands[-1].startswith("python -m training.evaluate") and "--label PROXY" in commands[-1]
    )


def test_docs_get_the_tables_one_plot_and_the_run_notes(proxy_ci: Path):
    docs = proxy_ci / "docs"
    assert sorted(p.name for p in docs.iterdir()) == [
        "RUN.md",
        "roc_xception_tiny_full.png",
        "tables.md",
    ]
    images = [line for line in (docs / "tables.md").read_text().splitlines() if "![" in line]
    assert images == ["![roc_xception_tiny_full](roc_xception_tiny_full.png)"]
    notes = (docs / "RUN.md").read_text()
    assert f"python -m training.proxy {proxy_ci} --size ci --threads 1 --docs" in notes


def test_ci_proxy_tests_every_registered_paper_attack(proxy_ci: Path):
    info = json.loads((proxy_ci / "data/xception_tiny/dataset.json").read_text())
    registered = [a for a in ("pgd", "apgd", "nes", "square") if a in proxy.list_attacks()]
    assert sorted(info["attacks"]["test"]) == sorted(registered)
    assert list(info["attacks"]["train"]) == ["pgd"]
    assert (
        info["attacks"]["train"]["pgd"]["steps"] == proxy.SIZES["ci"].attack_budgets["pgd"]["steps"]
    )


def test_proxy_checkpoints_are_engine_weights(proxy_ci: Path):
    models = proxy_ci / "models/xception_tiny"
    files = sorted(models.glob("*.safetensors"))
    assert len(files) == 6
    for f in files:
        with safe_open(str(f), framework="pt") as s:
            meta = s.metadata()
        assert meta["arch"] == "detect_resnet50_tiny"
        assert meta["source"] == "veritas" and meta["complete"] == "true"
        assert create_model("detect_resnet50_tiny", weights=f).weights_status == "trained"
    detector = proxy_ci / "weights/xception_tiny.safetensors"
    assert create_model("xception_tiny", weights=detector).weights_status == "trained"


def test_veritas_run_accepts_the_finetuned_weights(proxy_ci: Path, tmp_path: Path):
    clip = sorted((proxy_ci / "media/dataset/real").glob("*.mp4"))[0]
    models, out = proxy_ci / "models/xception_tiny", tmp_path / "records.jsonl"
    argv = [
        "run",
        str(clip),
        "--detector", "xception_tiny",
        "--detector-weights", str(proxy_ci / "weights/xception_tiny.safetensors"),
        "--adversarial", ADVERSARIAL,
        "--adversarial-weights", str(models / f"{ADVERSARIAL}.guided_backprop.full.safetensors"),
        "--device", "cpu",
        "--out", str(out),
        "--no-progress",
    ]  # fmt: skip
    assert veritas_main(argv) == 0
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(records) == proxy.SIZES["ci"].frames
    assert {r["weights"] for r in records} == {"trained"}
