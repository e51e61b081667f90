"""training.evaluate, its metrics and the input-transformation defenses."""

from __future__ import annotations

import csv
import itertools
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from engine.models import create_model
from tests.training.test_proxy import CI_THREADS, ci_proxy_run
from training import evaluate
from training.data import Dataset, in_set, predict_attacked
from training.defenses import apply_defense, list_defenses
from training.errors import BadOptionError
from training.metrics import auc, balanced_accuracy, majority_fake, roc_curve, video_rate

pytestmark = pytest.mark.numerics  # also run as an AVX2-only CPU would (Makefile)


@pytest.fixture(scope="module")
def proxy_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return ci_proxy_run(tmp_path_factory)


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(CI_THREADS)
    yield
    torch.set_num_threads(before)


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


# --- metrics -------------------------------------------------------------------------------------


def test_auc_is_the_mann_whitney_probability_with_ties():
    rng = np.random.default_rng(0)
    scores = rng.integers(0, 6, 40) / 5  # many ties
    labels = rng.integers(0, 2, 40)
    pos, neg = scores[labels == 1], scores[labels == 0]
    pairs = [(p > n) + 0.5 * (p == n) for p, n in itertools.product(pos, neg)]
    assert auc(scores, labels) == pytest.approx(np.mean(pairs))
    fpr, tpr = roc_curve(scores, labels)
    assert (fpr[0], tpr[0], fpr[-1], tpr[-1]) == (0, 0, 1, 1)
    assert np.all(np.diff(fpr) >= 0) and np.all(np.diff(tpr) >= 0)
    assert len(fpr) == len(np.unique(scores)) + 1
    assert auc(np.array([0.9, 0.1]), np.array([1, 0])) == 1.0
    assert np.isnan(auc(np.array([0.5]), np.array([1])))


def test_vid_is_a_strict_majority_of_fake_frames():
    assert majority_fake([True, True, False]) and not majority_fake([True, False])
    videos = {"a": [True, True, False], "b": [True, False], "c": [False]}
    assert video_rate(videos, fake=True) == pytest.approx(1 / 3)
    assert video_rate(videos, fake=False) == pytest.approx(2 / 3)


def test_balanced_accuracy_is_the_mean_of_per_class_accuracies():
    pred = np.array([True, True, True, False, False])
    labels = np.array([1, 1, 0, 0, 0])  # attacked: 2/2, real: 2/3
    assert balanced_accuracy(pred, labels) == pytest.approx((1 + 2 / 3) / 2)
    assert np.isnan(balanced_accuracy(pred[:2], labels[:2]))


# --- defenses ------------------------------------------------------------------------------------


def crops_of(image: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(image).permute(2, 0, 1)[None].contiguous()


def image_of(crops: torch.Tensor) -> np.ndarray:
    return crops[0].permute(1, 2, 0).numpy()


def test_smoothing_defenses_are_3x3_filters():
    rng = np.random.default_rng(1)
    image = rng.integers(0, 256, (16, 20, 3)).astype(np.uint8)
    x = image.astype(np.float64)
    inner = (slice(1, -1), slice(1, -1))
    box = sum(x[1 + dy : 15 + dy, 1 + dx : 19 + dx] for dy in (-1, 0, 1) for dx in (-1, 0, 1)) / 9
    out = image_of(apply_defense("average3", crops_of(image))).astype(np.float64)
    assert np.abs(out[inner] - box).max() <= 0.5 + 1e-9
    w = {-1: 0.25, 0: 0.5, 1: 0.25}
    gauss = sum(w[dy] * w[dx] * x[1 + dy : 15 + dy, 1 + dx : 19 + dx] for dy in w for dx in w)
    out = image_of(apply_defense("gaussian3", crops_of(image))).astype(np.float64)
    assert np.abs(out[inner] - gauss).max() <= 0.5 + 1e-9
    flat = np.full((9, 9, 3), 100, np.uint8)
    flat[4, 4] = 255  # an impulse: the median removes it, the mean spreads it
    assert (image_of(apply_defense("median3", crops_of(flat))) == 100).all()
    assert image_of(apply_defense("average3", crops_of(flat)))[3, 3, 0] > 100


def test_jpeg_defenses_lose_more_at_lower_quality():
    from skimage import data

    image = cv2.resize(data.astronaut(), (96, 96), interpolation=cv2.INTER_AREA)
    crops = crops_of(image)
    errors = []
    for name in ("jpeg70", "jpeg80", "jpeg90"):
        out = apply_defense(name, crops)
        assert out.dtype == torch.uint8 and out.shape == crops.shape
        errors.append((out.float() - crops.float()).abs().mean().item())
    assert errors[0] > errors[1] > errors[2] > 0
    assert list_defenses() == ["median3", "gaussian3", "average3", "jpeg70", "jpeg80", "jpeg90"]
    with pytest.raises(BadOptionError, match="median3"):
        apply_defense("blur5", crops)


# --- the tables on the proxy's output -------------------------------------------------------------


def test_table_1_and_2_numbers_come_from_the_manifest(proxy_run: Path):
    ds = Dataset(proxy_run / "data/xception_tiny")
    test = ds.select(split="test")
    rows = {r["attack"]: r for r in read_csv(proxy_run / "report/detector_precision.csv")}
    real = [r["called"] == "real" for r in test if r["kind"] == "real"]
    fake = [r["called"] == "fake" for r in test if r["kind"] == "fake"]
    assert float(rows["none"]["real_f2f"]) == pytest.approx(np.mean(real), abs=1e-6)
    assert float(rows["none"]["fake_f2f"]) == pytest.approx(np.mean(fake), abs=1e-6)
    for attack in ds.info["attacks"]["test"]:
        attacked = [r for r in test if r["attack"] == attack]
        hit = {(r["video"], r["frame"]) for r in attacked if r["called"] == "real"}
        still_fake = [
            r["called"] == "fake" and (r["video"], r["frame"]) not in hit
            for r in test
            if r["kind"] == "fake"
        ]
        assert float(rows[attack]["fake_f2f"]) == pytest.approx(np.mean(still_fake), abs=1e-6)
        success = np.mean([r["success"] for r in attacked])
        assert float(rows[attack]["attack_success"]) == pytest.approx(success, abs=1e-6)


def test_attack_detection_rows_match_a_direct_computation(proxy_run: Path):
    ds = Dataset(proxy_run / "data/xception_tiny")
    results = read_csv(proxy_run / "report/attack_detection.csv")
    attacks = sorted(ds.info["attacks"]["test"])
    models = sorted((proxy_run / "models/xception_tiny").glob("*.safetensors"))
    xai_models = [m for m in models if ".no-maps." not in m.name]
    n_defenses = len(list_defenses()) + 1  # and the undefended detector
    # Defenses are scored on the attacks whose test set (real/attacked pairs) is not empty.
    test_rows = ds.select(split="test")
    sets = [a for a in attacks if any(in_set(r, a) for r in test_rows)]
    assert len(results) == len(models) * len(attacks) + n_defenses * len(sets) + len(xai_models)
    alone = [r for r in results if r["maps"] == "none" and int(r["n_attacked"]) > 0]
    assert alone and all(float(r["balanced_accuracy"]) == 0.5 for r in alone)

    name = "detect_resnet50_tiny.guided_backprop.full"
    model = create_model(
        "detect_resnet50_tiny", weights=proxy_run / f"models/xception_tiny/{name}.safetensors"
    )
    test = [r for r in ds.select(split="test") if in_set(r, "pgd")]
    assert test and {r["label"] for r in test} == {0, 1}
    p = predict_attacked(model, ds.crops(test), ds.maps(test, "guided_backprop")).numpy()
    labels = np.array([r["label"] for r in test])
    (row,) = [
        r
        for r in results
        if r["config"] == "full"
        and r["maps"] == "guided_backprop"
        and r["attack"] == "pgd"
        and r["test_maps"] == "xai"
    ]
    assert float(row["balanced_accuracy"]) == pytest.approx(
        balanced_accuracy(p >= 0.5, labels), abs=1e-6
    )
    assert float(row["auc"]) == pytest.approx(auc(p, labels), abs=1e-6)
    assert (
        int(row["n_real"]) == (labels == 0).sum() and int(row["n_attacked"]) == (labels == 1).sum()
    )


def test_evaluate_options_and_errors(proxy_run: Path, tmp_path: Path, capsys):
    data, models = str(proxy_run / "data/xception_tiny"), str(proxy_run / "models/xception_tiny")
    argv = [str(tmp_path / "plain"), "--dataset", data, "--models", models, "-q"]
    assert evaluate.main([*argv, "--defenses", "none", "--device", "cpu"]) == 0
    tables = (tmp_path / "plain/tables.md").read_text()
    assert "PROXY" not in tables and "Table 3 " in tables and "+ detector" not in tables
    assert read_csv(tmp_path / "plain/defenses.csv") == []
    assert evaluate.main([*argv, "--defenses", "median3,blur9"]) == 2
    assert "'blur9'" in capsys.readouterr().err
    assert evaluate.main([str(tmp_path / "x"), "--dataset", str(tmp_path / "nope")]) == 2
    assert "is not a dataset folder" in capsys.readouterr().err
