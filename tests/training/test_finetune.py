"""training.finetune on a small synthetic dataset whose label is in the XAI maps only."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

from engine.models import create_model
from engine.models.weights import save_weights
from training import finetune
from training.data import write_jsonl, write_shard
from training.errors import DatasetNotFoundError, EmptyDatasetError
from training.finetune import FinetuneOptions, Finetuner, mean_validation_metric, split_train_val

ARCH = "detect_resnet50_tiny"
SIZE = 64


def write_dataset(root: Path, groups: int = 10, per_class: int = 4, attacked: bool = True) -> Path:
    """A dataset in the build format: every crop is the same image; a real face's map is
    flat grey, an attacked face's map is high-contrast noise (only the maps tell)."""
    g = torch.Generator().manual_seed(0)
    crop = torch.randint(0, 256, (3, SIZE, SIZE), generator=g, dtype=torch.uint8)
    rows = []
    for k in range(groups):
        split = "test" if k >= groups - 2 else "train"
        labels = [0] * per_class + ([1] * per_class if attacked else [])
        maps = []
        for label in labels:
            if label:
                maps.append(torch.randint(0, 2, (3, SIZE, SIZE), generator=g).to(torch.uint8) * 255)
            else:
                maps.append(torch.full((3, SIZE, SIZE), 128, dtype=torch.uint8))
        shard = f"parts/{split}/g{k}/clean-00000.safetensors"
        write_shard(
            root / shard,
            crop.expand(len(labels), -1, -1, -1).clone(),
            {"guided_backprop": torch.stack(maps)},
            {"video": f"g{k}", "part": "clean"},
        )
        for i, label in enumerate(labels):
            rows.append(
                {
                    "id": f"g{k}#{i}",
                    "shard": shard,
                    "index": i,
                    "split": split,
                    "video": f"{'fake' if label else 'real'}/g{k}",
                    "group": f"g{k}",
                    "kind": "attacked" if label else "real",
                    "attack": "pgd" if label else None,
                    "label": label,
                    "maps": ["guided_backprop"],
                }
            )
    write_jsonl(root / "manifest.jsonl", rows)
    info = {
        "schema": 1,
        "config": {"models": {"detector": "xception_tiny", "detector_weights": ""}},
        "xai_methods": ["guided_backprop"],
        "map_size": SIZE,
        "crop_size": SIZE,
        "adversarial": ARCH,
        "attacks": {"train": {"pgd": {"steps": 10}}, "test": {"pgd": {"steps": 10}}},
    }
    (root / "dataset.json").write_text(json.dumps(info))
    return root


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """One torch thread: two OpenMP threads per process crawl on a busy 2-core machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_dataset(tmp_path_factory.mktemp("synthetic"))


def options(data: Path, out: Path, **kw: object) -> FinetuneOptions:
    kw.setdefault("init", "random")
    return FinetuneOptions(dataset=data, out=out, device="cpu", **kw)  # type: ignore[arg-type]


def test_the_head_learns_from_the_maps_and_the_no_maps_model_cannot(data: Path, tmp_path: Path):
    with_maps = Finetuner(options(data, tmp_path, config="head", epochs=15)).run()
    black = Finetuner(options(data, tmp_path, xai=None, config="head", epochs=15)).run()
    assert with_maps["best"]["val_metric"] == 1.0
    # The no-maps model sees identical inputs (same crop, black maps): it can only guess.
    assert all(h["val_metric"] == 0.5 for h in black["history"])
    assert black["name"] == f"{ARCH}.no-maps.head" and black["maps"] == "zero"


def test_head_training_keeps_the_warm_started_backbone(data: Path, tmp_path: Path):
    donor = create_model(ARCH, seed=5)
    backbone = {k: v for k, v in donor.state_dict().items() if k.startswith("backbone.")}
    init = save_weights(backbone, tmp_path / "resnet50.safetensors", arch=ARCH, complete=False)
    record = Finetuner(options(data, tmp_path, config="head", epochs=2, init=str(init))).run()
    saved = load_file(tmp_path / record["weights"])
    assert all(torch.equal(saved[k], v) for k, v in backbone.items())
    fresh = create_model(ARCH, seed=0).state_dict()
    assert not torch.equal(saved["head.0.weight"], fresh["head.0.weight"])


def test_full_finetune_writes_engine_weights_and_a_record(data: Path, tmp_path: Path):
    assert finetune.main([str(data), str(tmp_path), "--max-steps", "2", "--eval-every", "1",
                          "--init", "random", "--device", "cpu",
                          "-q", "--no-progress"]) == 0  # fmt: skip
    path = tmp_path / f"{ARCH}.guided_backprop.full.safetensors"
    with safe_open(str(path), framework="pt") as f:
        assert f.metadata()["arch"] == ARCH
        assert f.metadata()["source"] == "veritas" and f.metadata()["complete"] == "true"
    assert create_model(ARCH, weights=path).weights_status == "trained"
    record = json.loads((tmp_path / f"{ARCH}.guided_backprop.full.json").read_text())
    assert [h["step"] for h in record["history"]] == [1, 2]
    assert record["options"]["lr"] == 1e-3 and record["options"]["batch_size"] == 16
    assert record["options"]["betas"] == [0.9, 0.999] and record["options"]["adam_eps"] == 1e-8
    assert record["train"]["groups"] + record["val"]["groups"] == 8
    assert not set(record["val_groups"]) & {r for r in ("g8", "g9")}  # test groups unused


def test_the_kept_checkpoint_has_the_best_mean_validation_metric(data: Path, tmp_path: Path):
    tuner = Finetuner(options(data, tmp_path, config="head"))
    model = tuner.make_model()
    labels = tuner.val.labels
    right = labels.float()  # p_attacked = label: balanced accuracy 1
    wrong = 1 - right
    half = torch.where(
        labels == 1, torch.ones_like(right), torch.ones_like(right)
    )  # all "attacked"
    history: list[dict[str, object]] = []
    best = None
    # (probabilities, loss): metrics 0.5, 1.0, 1.0 (higher loss), 0.0
    for k, (p, loss) in enumerate([(half, 0.7), (right, 0.4), (right, 0.5), (wrong, 0.1)]):
        with torch.no_grad():
            model.head[2].bias.fill_(float(k))
        best = tuner._validate(model, lambda p=p, loss=loss: (p, loss), k, k, [], history, best)
    assert [h["val_metric"] for h in history] == [0.5, 1.0, 1.0, 0.0]
    assert best is not None and best.step == 1
    saved = load_file(tmp_path / f"{tuner.name}.safetensors")
    assert torch.equal(saved["head.2.bias"], torch.full((2,), 1.0))


def test_mean_validation_metric_averages_the_attacks():
    rows = [{"label": 0, "attack": None}] * 2 + [
        {"label": 1, "attack": "pgd"},
        {"label": 1, "attack": "pgd"},
        {"label": 1, "attack": "apgd"},
    ]
    p = torch.tensor([0.1, 0.9, 0.8, 0.2, 0.4])  # real: 1 of 2 right; pgd 1 of 2; apgd 0 of 1
    metric, per = mean_validation_metric(p, rows, ["pgd", "apgd", "nes"])
    assert per == {"pgd": 0.5, "apgd": 0.25}
    assert metric == pytest.approx(0.375)


def test_validation_holds_out_whole_groups():
    rows = [{"group": f"g{k}", "i": i} for k in range(10) for i in range(3)]
    train, val = split_train_val(rows, 0.2, seed=1)
    assert len({r["group"] for r in val}) == 2 and len(train) + len(val) == 30
    assert not {r["group"] for r in train} & {r["group"] for r in val}
    assert split_train_val(rows, 0.2, seed=1) == (train, val)


@pytest.mark.parametrize("seed", range(8))
def test_validation_gets_both_classes_whenever_the_groups_allow(seed):
    """Only 2 of 10 groups have real faces called real (the detector called the others'
    real faces fake): whatever the seed, one of them is held out and one trained on."""
    rows = [{"group": f"g{k}", "label": 1} for k in range(10) for _ in range(2)]
    rows += [{"group": "g3", "label": 0}, {"group": "g7", "label": 0}]
    train, val = split_train_val(rows, 0.2, seed=seed)
    assert {r["label"] for r in val} == {0, 1} and {r["label"] for r in train} == {0, 1}
    assert not {r["group"] for r in train} & {r["group"] for r in val}
    assert 2 <= len({r["group"] for r in val}) <= 3
    # With one such group, it stays in training: validation then lacks class 0.
    one = [r for r in rows if not (r["group"] == "g7" and r["label"] == 0)]
    train, val = split_train_val(one, 0.2, seed=seed)
    assert {r["label"] for r in train} == {0, 1} and {r["label"] for r in val} == {1}


def test_bf16_autocast_path_runs_on_cpu(data: Path, tmp_path: Path):
    record = Finetuner(options(data, tmp_path, amp="bf16", max_steps=1)).run()
    assert record["amp"] == "bfloat16"
    weights = load_file(tmp_path / record["weights"])
    assert all(t.dtype in (torch.float32, torch.int64) for t in weights.values())
    with pytest.raises(finetune.BadOptionError, match="fp16 needs CUDA"):
        Finetuner(options(data, tmp_path, amp="fp16"))


def test_bad_inputs_are_clear_errors(data: Path, tmp_path: Path, capsys):
    with pytest.raises(DatasetNotFoundError, match="build one with"):
        Finetuner(options(tmp_path / "nope", tmp_path))
    assert finetune.main([str(data), str(tmp_path), "--xai", "saliency", "--init", "random"]) == 2
    assert "one of the dataset's methods: guided_backprop" in capsys.readouterr().err
    real_only = write_dataset(tmp_path / "real-only", attacked=False)
    with pytest.raises(EmptyDatasetError, match="attacked faces"):
        Finetuner(options(real_only, tmp_path))


def test_the_starting_weights_must_be_named_and_are_recorded(data: Path, tmp_path: Path, capsys):
    """The paper finetunes a pretrained ResNet50: a random start is never implicit."""
    with pytest.raises(SystemExit):
        finetune.main([str(data), str(tmp_path), "--max-steps", "1"])
    assert "--init" in capsys.readouterr().err
    with pytest.raises(finetune.BadOptionError, match="--init"):
        Finetuner(options(data, tmp_path, init=None))
    record = Finetuner(options(data, tmp_path, max_steps=1, epochs=1)).run()
    assert record["init"] == "random"


def test_batchnorm_rules_in_full_finetuning(data: Path, tmp_path: Path):
    """--bn: joint trains with the statistics it is evaluated with (its record's train/eval
    embedding gap is far below the separate passes'), frozen leaves the starting weights'
    running statistics untouched, and an unknown rule is refused with the choices."""
    records = {}
    for rule in finetune.BN_RULES:
        out = tmp_path / rule
        records[rule] = Finetuner(
            options(data, out, config="full", bn=rule, epochs=1, max_steps=6)
        ).run()
        assert records[rule]["bn"] == rule
        assert records[rule]["options"]["bn"] == rule
    shift = {rule: r["bn_shift"] for rule, r in records.items()}
    assert shift["frozen"] == {"crops": 0.0, "maps": 0.0}
    for kind in ("crops", "maps"):
        assert shift["joint"][kind] < shift["separate"][kind]
    start = create_model(ARCH, seed=0).state_dict()
    frozen = load_file(tmp_path / "frozen" / records["frozen"]["weights"])
    joint = load_file(tmp_path / "joint" / records["joint"]["weights"])
    stats = [k for k in start if k.endswith(("running_mean", "running_var"))]
    assert stats and all(torch.equal(frozen[k], start[k]) for k in stats)
    assert any(not torch.equal(joint[k], start[k]) for k in stats)
    with pytest.raises(finetune.BadOptionError, match="--bn"):
        Finetuner(options(data, tmp_path / "x", bn="mixed"))
