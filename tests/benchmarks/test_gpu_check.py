"""The GPU check's CPU dry run (so ``make gpu-check`` cannot rot where CI has no GPU), on
the GPU machine's terms: without PyAV, PyNvVideoCodec or DALI importable."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from benchmarks import gpu_check
from benchmarks.gpu_check import Check, CheckSettings, dry_run_bench, write_bundle

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("bundle")
    write_bundle(folder, seconds=0.24, size=(64, 96))
    return folder


def lines(out: Path) -> dict[str, dict]:
    text = (out / "gpu-check.jsonl").read_text()
    return {d["step"]: d for d in map(json.loads, text.splitlines())}


# Run as the GPU machine would be: its Python lacks these; importing one must fail.
ABSENT = ("av", "PyNvVideoCodec", "nvidia.dali", "redis")
CHILD = f"""
import sys
for name in {ABSENT!r}:
    sys.modules[name] = None  # import fails, find_spec says absent
from benchmarks.gpu_check import main
import engine.runner, engine.sources.nvdec, benchmarks.harness  # the GPU path's modules
code = main(sys.argv[1:])
assert sys.modules["av"] is None, "PyAV was imported"
raise SystemExit(code)
"""


def test_the_dry_run_runs_every_step_without_pyav_and_writes_lines_and_summary(
    bundle: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    args = ["--dry-run", "--bundle", str(bundle), "--out", str(out)]
    done = subprocess.run(
        [sys.executable, "-c", CHILD, *args], cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-3000:]
    got = lines(out)
    assert list(got) == list(gpu_check.STEPS)
    for name in ("env", "e2e", "baseline", "sync", "streams"):
        assert got[name]["status"] == "ok", got[name]
    # What needs CUDA or a decoder says why it did not run.
    assert got["kernels"]["status"] == "skipped" and "CUDA" in got["kernels"]["reason"]
    assert got["nvdec"]["status"] == "skipped" and "PyAV" in got["nvdec"]["reason"]
    assert got["env"]["packages"]["av"] is None
    # No decoder for the clip here: the streams come from memory, and say so.
    assert "no decoder" in done.stderr
    assert got["streams"]["decode_included"] is False and got["streams"]["decoder"] is None
    e2e = got["e2e"]
    assert e2e["compiled"]["runtime"]["backend"] == "compile"
    assert e2e["eager"]["runtime"]["backend"] == "eager"
    assert e2e["compiled"]["frames"] == e2e["eager"]["frames"] > 0
    assert e2e["compiled_vs_eager"]["same_faces"]
    assert e2e["compiled_vs_eager"]["max_diff_p_fake"] < 1e-3
    assert got["baseline"]["frames"] > 0 and "speedup" in got["baseline"]
    summary = (out / "gpu-check.md").read_text()
    assert "dry run" in summary and "| streams | ok |" in summary and "| stage |" in summary


def test_nvdec_step_compares_the_decoded_clip_with_the_bundles_pyav_frames(
    bundle: Path, tmp_path: Path
) -> None:
    # On the CPU the step decodes with PyAV: the same comparison NVDEC's frames get.
    settings = CheckSettings(
        out=tmp_path, bench=dry_run_bench(None), bundle=bundle, steps=("nvdec",),
        dry_run=True, decode_seconds=0.1,
    )  # fmt: skip
    (line,) = Check(settings, say=lambda m: None).run()
    assert line["status"] == "ok" and line["decoder"] == "pyav"
    assert line["vs_pyav"]["frames"] == gpu_check.REFERENCE_FRAMES
    assert line["vs_pyav"]["max_abs_diff"] == 0 and line["vs_pyav"]["same_shape"]
    assert line["decode_frames_per_s"] > 0 and line["frames_on_device"] is False


def test_a_failing_step_is_reported_and_the_others_still_run(tmp_path: Path) -> None:
    broken = tmp_path / "bundle"
    broken.mkdir()
    (broken / gpu_check.CLIP).write_text("not a video")
    settings = CheckSettings(
        out=tmp_path / "out", bench=dry_run_bench(None), bundle=broken,
        steps=("nvdec", "env"), dry_run=True,
    )  # fmt: skip
    nvdec, env = Check(settings, say=lambda m: None).run()
    assert nvdec["status"] == "failed" and "NotAVideoError" in nvdec["error"]
    assert env["status"] == "ok"
    assert "| nvdec | failed |" in (tmp_path / "out" / "gpu-check.md").read_text()


def test_steps_past_the_budget_are_skipped_saying_so(tmp_path: Path) -> None:
    settings = CheckSettings(
        out=tmp_path, bench=dry_run_bench(None), budget_s=0.0, steps=("env", "e2e"), dry_run=True
    )
    assert [(d["status"], d["reason"]) for d in Check(settings, say=lambda m: None).run()] == [
        ("skipped", "out of time (--budget-s)")
    ] * 2


@pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is here: the real check would run")
def test_without_a_gpu_the_real_check_refuses_and_points_to_the_dry_run(tmp_path, capsys) -> None:
    with pytest.raises(SystemExit) as stopped:
        gpu_check.main(["--out", str(tmp_path)])
    assert stopped.value.code == 2 and "--dry-run" in capsys.readouterr().err


def test_helpers_measure_what_they_say() -> None:
    import numpy as np

    a = np.zeros((2, 3, 3), np.uint8)
    b = a.copy()
    b[0, 0, 0] = 9
    got = gpu_check.compare_frames([a], [b])
    assert got["max_abs_diff"] == 9 and got["frames"] == 1 and got["share_over_4"] > 0
    t = torch.tensor([1.0, 2.0])
    assert gpu_check.max_abs_diff((t, t + 0.5), (t, t)) == 0.5
