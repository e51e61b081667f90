"""training.build_dataset and its format: layouts, split, labels, maps, shards, resume."""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from engine.config import build_config
from engine.frames import FrameBatch
from engine.models import create_model
from engine.pipeline import Pipeline
from engine.sources import open_source
from engine.xai import map_to_uint8
from tests.training.test_proxy import CI_THREADS, ci_proxy_run
from training import build_dataset
from training.attacks import EPS_PAPER, list_attacks
from training.data import ROW_KEYS, Dataset
from training.errors import LayoutError, NoVideosError
from training.videos import discover, split_videos

pytestmark = pytest.mark.numerics  # also run as an AVX2-only CPU would (Makefile)

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def proxy_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return ci_proxy_run(tmp_path_factory)


@pytest.fixture(scope="session")
def dataset(proxy_run: Path) -> Dataset:
    return Dataset(proxy_run / "data/xception_tiny")


@contextmanager
def threads(n: int):
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def build_argv(proxy_run: Path, out: Path) -> list[str]:
    """The proxy's build_dataset command, writing to ``out``."""
    commands = (proxy_run / "commands.sh").read_text().splitlines()
    argv = shlex.split(next(c for c in commands if "training.build_dataset" in c))[3:]
    argv[1] = str(out)
    return argv


# --- the dataset the proxy built ---------------------------------------------------------------


def test_rows_follow_the_schema_and_point_at_their_shard_rows(dataset: Dataset):
    rows = dataset.rows
    assert rows and all(set(r) == set(ROW_KEYS) for r in rows)
    assert len({r["id"] for r in rows}) == len(rows)
    crops = dataset.crops(rows)
    assert crops.dtype == torch.uint8 and crops.shape == (len(rows), 3, 64, 64)
    for method in dataset.xai_methods:
        maps = dataset.reader.read(rows, f"maps.{method}")
        assert maps.dtype == torch.uint8 and maps.shape == (len(rows), 3, 64, 64)
        has = torch.tensor([method in r["maps"] for r in rows])
        assert has.any() and (maps[~has] == 0).all()
        assert (maps[has].flatten(1).amax(1) > 0).all()


def test_split_is_by_video_group(dataset: Dataset, proxy_run: Path):
    groups = {s: {r["group"] for r in dataset.rows if r["split"] == s} for s in ("train", "test")}
    assert groups["train"] and not groups["train"] & groups["test"]
    assert len(groups["test"]) == 3
    splits = json.loads((proxy_run / "data/xception_tiny/splits.json").read_text())
    assert all(splits[r["video"]] == r["split"] for r in dataset.rows)
    for g in groups["test"]:  # a real clip and its fake stay together
        assert {r["video_label"] for r in dataset.rows if r["group"] == g} == {"real", "fake"}


def test_labels_follow_the_detectors_verdicts(dataset: Dataset, proxy_run: Path):
    clean = {(r["video"], r["frame"]): r for r in dataset.rows if r["kind"] != "attacked"}
    for r in dataset.rows:
        assert r["called"] == ("real" if r["p_fake"] < 0.5 else "fake")
        expected = {
            "real": 0 if r["called"] == "real" else None,
            "fake": None,
            "attacked": 1 if r["success"] else None,
        }[r["kind"]]
        assert r["label"] == expected
        assert r["maps"] == (dataset.xai_methods if expected is not None else [])
        if r["kind"] == "attacked":
            source = clean[(r["video"], r["frame"])]
            assert source["kind"] == "fake" and source["called"] == "fake"
            assert r["success"] == (r["called"] == "real")
            assert r["linf"] <= EPS_PAPER + 1e-6 and r["queries"] > 0
            assert r["attack_params"]["eps"] == pytest.approx(EPS_PAPER)
            assert r["attack"] == "pgd" or r["split"] == "test"
    attacked = [r for r in dataset.rows if r["kind"] == "attacked"]
    assert {r["attack"] for r in attacked} == set(dataset.info["attacks"]["test"])
    assert any(r["success"] for r in attacked) and any(r["label"] == 0 for r in dataset.rows)
    # the recorded verdict is the detector's on the stored (8-bit) attacked crop
    detector = create_model(
        "xception_tiny", weights=proxy_run / "weights/xception_tiny.safetensors"
    )
    with torch.no_grad(), threads(CI_THREADS):
        p = detector(dataset.crops(attacked).float() / 255).softmax(1)[:, 1]
    assert torch.allclose(p, torch.tensor([r["p_fake"] for r in attacked]), atol=1e-5)


def test_stored_maps_equal_the_engines_online_maps(dataset: Dataset):
    """Training/serving consistency: the engine's own crop, verdict and map, bit for bit."""
    config = build_config(dataset.info["config"])
    assert config.pipeline.xai_method == dataset.xai_methods[0]
    pipeline = Pipeline.from_config(config)
    rows = [r for r in dataset.rows if r["kind"] == "real" and r["label"] == 0]
    video = rows[0]["video"]
    stored = {r["frame"]: r for r in rows if r["video"] == video}
    path = Path(dataset.info["input"]) / rows[0]["source"]
    with open_source(str(path), config.sources) as source:
        frames = list(source)
    with threads(CI_THREADS):
        result = pipeline.analyze(FrameBatch.from_frames(frames), keep_maps=True)
    faces = result.faces
    checked = 0
    for i, fid in enumerate(faces.frame_ids.tolist()):
        row = stored.get(frames[fid].index)
        if row is None or (faces.frame_ids == fid).sum() != 1:
            continue
        assert faces.crop_boxes[i].tolist() == row["crop_box"]
        assert faces.p_fake[i].item() == pytest.approx(row["p_fake"], abs=1e-6)
        online = map_to_uint8(faces.maps[i : i + 1])
        assert torch.equal(online, dataset.maps([row], dataset.xai_methods[0]))
        checked += 1
    assert checked >= 2


# --- resuming ------------------------------------------------------------------------------------


def _same_datasets(a: Path, b: Path) -> None:
    assert (a / "manifest.jsonl").read_text() == (b / "manifest.jsonl").read_text()
    info_a, info_b = (json.loads((p / "dataset.json").read_text()) for p in (a, b))
    info_a.pop("created"), info_b.pop("created")
    assert info_a == info_b
    shards = sorted(p.relative_to(a) for p in a.rglob("*.safetensors"))
    assert shards == sorted(p.relative_to(b) for p in b.rglob("*.safetensors"))
    for s in shards:
        ta, tb = load_file(a / s), load_file(b / s)
        assert ta.keys() == tb.keys() and all(torch.equal(ta[k], tb[k]) for k in ta), s


def test_a_killed_build_resumes_to_the_same_dataset(proxy_run: Path, tmp_path: Path):
    out = tmp_path / "resumed"
    argv = build_argv(proxy_run, out)
    env = {**os.environ, "OMP_NUM_THREADS": str(CI_THREADS), "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "training.build_dataset", *argv],
        cwd=REPO,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 180
    try:
        while not list(out.glob("parts/*/*/*.jsonl")):
            assert proc.poll() is None, "the build ended before it could be killed"
            assert time.monotonic() < deadline
            time.sleep(0.01)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert not (out / "manifest.jsonl").exists()
    done = {p: p.stat().st_mtime_ns for p in out.glob("parts/*/*/*.jsonl")}
    assert 1 <= len(done) < len(list((proxy_run / "data/xception_tiny").glob("parts/*/*/*.jsonl")))
    with threads(CI_THREADS):
        assert build_dataset.main(argv) == 0
    assert all(p.stat().st_mtime_ns == t for p, t in done.items()), "finished parts were redone"
    _same_datasets(proxy_run / "data/xception_tiny", out)

    # A test attack added later runs on its own: earlier parts stay as they are.
    if "bim" not in list_attacks():
        return
    before = {p: p.stat().st_mtime_ns for p in out.glob("parts/*/*/*.jsonl")}
    tests = argv[argv.index("--test-attacks") + 1]
    more = [*argv, "--test-attacks", f"{tests},bim", "--attack-option", "bim.steps=2"]
    with threads(CI_THREADS):
        assert build_dataset.main(more) == 0
    assert all(p.stat().st_mtime_ns == t for p, t in before.items())
    rows = Dataset(out).rows
    assert any(r["attack"] == "bim" for r in rows)
    assert len(rows) > len(Dataset(proxy_run / "data/xception_tiny").rows)


def test_resuming_with_other_settings_is_refused(proxy_run: Path, capsys):
    data = proxy_run / "data/xception_tiny"
    argv = build_argv(proxy_run, data)
    before = (data / "dataset.json").read_text()
    assert build_dataset.main([*argv, "--seed", "7"]) == 2
    assert "was built with seed = 0, not 7" in capsys.readouterr().err
    assert (data / "dataset.json").read_text() == before


# --- input, options and errors -------------------------------------------------------------------


def test_unknown_attacks_and_options_are_refused_with_the_choices(proxy_run: Path, capsys):
    media, out = str(proxy_run / "media/dataset"), str(proxy_run / "unused")
    assert build_dataset.main([media, out, "--test-attacks", "pgd,nope"]) == 2
    err = capsys.readouterr().err
    assert "'nope'" in err and "registered attacks:" in err and "pgd" in err
    assert build_dataset.main([media, out, "--attack-option", "pgd.bogus=1"]) == 2
    err = capsys.readouterr().err
    assert "pgd.bogus" in err and "steps" in err
    assert build_dataset.main([media, out, "--attack-option", "steps"]) == 2
    assert "ATTACK.KEY=VALUE" in capsys.readouterr().err
    assert not Path(out).exists()


def test_missing_or_empty_input_is_a_clear_error(tmp_path: Path, capsys):
    assert build_dataset.main([str(tmp_path / "nope"), str(tmp_path / "out")]) == 2
    assert "no such folder" in capsys.readouterr().err
    (tmp_path / "empty" / "real").mkdir(parents=True)
    with pytest.raises(NoVideosError, match="no videos found"):
        discover(tmp_path / "empty")
    with pytest.raises(LayoutError, match="neither an FF\\+\\+ tree"):
        discover(tmp_path)


def _touch(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"")


def test_ffpp_layout_groups_swapped_pairs_and_filters(tmp_path: Path):
    for name in ("000", "003", "010"):
        _touch(tmp_path / f"original_sequences/youtube/c23/videos/{name}.mp4")
    for name in ("000_003", "003_000"):
        _touch(tmp_path / f"manipulated_sequences/Deepfakes/c23/videos/{name}.mp4")
    _touch(tmp_path / "manipulated_sequences/Face2Face/c23/videos/000_003.mp4")
    _touch(tmp_path / "manipulated_sequences/Face2Face/c40/videos/010_020.mp4")
    videos = discover(tmp_path)
    assert sorted(v.key for v in videos) == [
        "fake/Deepfakes/000_003",
        "fake/Deepfakes/003_000",
        "fake/Face2Face/000_003",
        "real/youtube/000",
        "real/youtube/003",
        "real/youtube/010",
    ]
    groups = {v.key: v.group for v in videos}
    assert (
        len({groups[k] for k in groups if "010" not in k}) == 1
        and groups["real/youtube/010"] == "010"
    )
    assert {v.method for v in discover(tmp_path, methods=["Deepfakes"]) if v.label} == {"Deepfakes"}
    assert [v.key for v in discover(tmp_path, compression="c40")] == ["fake/Face2Face/010_020"]
    split = split_videos(videos, test_groups=1, seed=3)
    assert split == split_videos(list(reversed(videos)), test_groups=1, seed=3)
    for v in videos:  # a pair's real and fake videos share the split
        assert (
            split[v.key]
            == split["real/youtube/000" if groups[v.key] == "000" else "real/youtube/010"]
        )
    with pytest.raises(build_dataset.BadOptionError, match="--methods"):
        discover(tmp_path, methods=["DeepFaceLab"])


def test_plain_layout_of_image_folders_builds(tmp_path: Path):
    """Folders of images work like videos, with the engine's sampling (``--every``)."""
    from skimage import data

    face = data.astronaut()[30:260, 110:340]
    for kind in ("real", "fake"):
        for name in ("a", "b"):
            folder = tmp_path / "in" / kind / name
            folder.mkdir(parents=True)
            for k in range(4):
                shifted = np.roll(face, 3 * k, axis=1)
                cv2.imwrite(str(folder / f"{k}.png"), cv2.cvtColor(shifted, cv2.COLOR_RGB2BGR))
    argv = [
        str(tmp_path / "in"),
        str(tmp_path / "out"),
        "--detector", "efficientnet_b4st_tiny",
        "--adversarial", "detect_resnet50_tiny",
        "--device", "cpu",
        "--xai", "saliency",
        "--test-attacks", "pgd",
        "--attack-option", "pgd.steps=1",
        "--set", "pipeline.fake_threshold=0.0",  # every face is "fake": attack them all
        "--every", "2",
        "--test-groups", "1",
        "--shard-size", "1",
        "-q",
    ]  # fmt: skip
    with threads(CI_THREADS):
        assert build_dataset.main(argv) == 0
    ds = Dataset(tmp_path / "out")
    clean = [r for r in ds.rows if r["kind"] != "attacked"]
    assert sorted({r["frame"] for r in clean}) == [0, 2]
    assert len(clean) == 8 and all(r["called"] == "fake" for r in clean)
    assert len([r for r in ds.rows if r["attack"] == "pgd"]) == 4  # the two fake videos
    assert all(len(load_file(tmp_path / "out" / r["shard"])["crops"]) == 1 for r in ds.rows)


def test_the_guided_rule_setting_reaches_the_stored_maps(tmp_path: Path):
    """``--set pipeline.guided_rule=...`` shapes the Guided Backprop maps the builder
    stores (XceptionNet: captum and textbook differ) and is recorded in dataset.json."""
    from skimage import data

    face = data.astronaut()[30:260, 110:340]
    for kind in ("real", "fake"):
        for k, name in enumerate(("a", "b")):
            folder = tmp_path / "in" / kind / name
            folder.mkdir(parents=True)
            shifted = np.roll(face, 3 * k, axis=1)
            cv2.imwrite(str(folder / "0.png"), cv2.cvtColor(shifted, cv2.COLOR_RGB2BGR))
    maps = {}
    for rule in ("captum", "textbook"):
        out = tmp_path / rule
        argv = [
            str(tmp_path / "in"), str(out),
            "--detector", "xception_tiny",
            "--adversarial", "detect_resnet50_tiny",
            "--device", "cpu",
            "--xai", "guided_backprop",
            "--test-attacks", "pgd",
            "--attack-option", "pgd.steps=1",
            "--set", "pipeline.fake_threshold=1.0",  # every face is called real
            "--set", f'pipeline.guided_rule="{rule}"',
            "--test-groups", "1",
            "-q",
        ]  # fmt: skip
        with threads(CI_THREADS):
            assert build_dataset.main(argv) == 0
        ds = Dataset(out)
        assert ds.info["config"]["pipeline"]["guided_rule"] == rule
        rows = sorted((r for r in ds.rows if r["kind"] != "attacked"), key=lambda r: r["source"])
        rows = [r for r in rows if r["maps"]]  # the real videos' faces
        assert len(rows) == 2
        maps[rule] = ds.maps(rows, "guided_backprop").float()
    assert (maps["captum"] - maps["textbook"]).abs().max() > 12  # of 255


# --- the paper's real/attacked pairs -------------------------------------------------------------


def _row(i: int, group: str, video: str, label: int | None, attack: str | None) -> dict:
    return {
        "id": f"{video}#{i}:{attack or 'clean'}",
        "split": "train",
        "group": group,
        "video": video,
        "label": label,
        "attack": attack,
    }


def test_pairing_gives_one_fooled_face_per_real_face_per_group_and_attack():
    """FF++-like groups: one real video and three manipulations of it. Pairs balance each
    group and attack, draw fooled faces from every manipulation in turn, and leave rows
    no model sees (label None) out."""
    from training.data import in_set, pair_rows

    rows = [_row(i, "g1", "real/g1", 0, None) for i in range(3)]
    rows += [_row(i, "g1", f"fake/{m}/g1", 1, "pgd") for m in ("A", "B", "C") for i in range(4)]
    rows += [_row(i, "g1", f"fake/{m}/g1", None, None) for m in ("A", "B") for i in range(2)]
    rows += [_row(i, "g2", "real/g2", 0, None) for i in range(5)]  # more real than fooled
    rows += [_row(i, "g2", "fake/A/g2", 1, "pgd") for i in range(2)]
    rows += [_row(i, "g3", "real/g3", 0, None) for i in range(2)]  # no attack succeeded
    pair_rows(rows, "pairs", seed=0)

    def members(group: str, label: int) -> list[dict]:
        return [r for r in rows if r["group"] == group and r["label"] == label and in_set(r, "pgd")]

    assert len(members("g1", 0)) == 3 and len(members("g1", 1)) == 3
    assert {r["video"] for r in members("g1", 1)} == {"fake/A/g1", "fake/B/g1", "fake/C/g1"}
    assert len(members("g2", 0)) == 2 and len(members("g2", 1)) == 2
    assert not members("g3", 0)  # a real face with no partner is outside the pairs
    assert all(r["paired"] == [] for r in rows if r["label"] is None)
    again = [dict(r) for r in rows]
    pair_rows(again, "pairs", seed=0)
    assert [r["paired"] for r in again] == [r["paired"] for r in rows]  # deterministic

    # A test attack added later pairs on its own; the PGD pairs stay as they were.
    with_apgd = [dict(r) for r in rows] + [_row(i, "g1", "fake/A/g1", 1, "apgd") for i in range(2)]
    pair_rows(with_apgd, "pairs", seed=0)
    assert [("pgd" in r["paired"]) for r in with_apgd[: len(rows)]] == [
        ("pgd" in r["paired"]) for r in rows
    ]
    assert sum(1 for r in with_apgd if r["label"] == 0 and "apgd" in r["paired"]) == 2

    everything = [dict(r) for r in rows]
    pair_rows(everything, "all", seed=0)
    assert (
        sum(in_set(r, "pgd") for r in everything)
        == sum(r["label"] is not None for r in everything) - 2
    )  # all labelled rows, except g3's real faces: g3 has no PGD row at all


def test_the_built_dataset_is_the_papers_balanced_pairs(dataset: Dataset, proxy_run: Path):
    """The proxy's dataset (built with the default pairing): every group's set of real +
    fooled faces is balanced for each attack, and finetune trains on exactly those sets."""
    from training.data import in_set
    from training.finetune import training_rows

    assert dataset.info["pairing"] == "pairs"
    fooled = [r for r in dataset.rows if r["label"] == 1]
    assert fooled
    for split in ("train", "test"):
        for attack in dataset.info["attacks"][split]:
            groups = {r["group"] for r in dataset.rows if r["split"] == split}
            for g in groups:
                mine = [r for r in dataset.rows if r["split"] == split and r["group"] == g]
                real = sum(1 for r in mine if r["label"] == 0 and in_set(r, attack))
                hit = sum(1 for r in mine if r["label"] == 1 and in_set(r, attack))
                possible = min(
                    sum(1 for r in mine if r["label"] == 0),
                    sum(1 for r in mine if r["label"] == 1 and r["attack"] == attack),
                )
                assert real == hit == possible
    rows = training_rows(dataset, list(dataset.info["attacks"]["train"]))
    labels = [r["label"] for r in rows]
    assert labels.count(0) == labels.count(1) > 0
