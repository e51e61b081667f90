"""``veritas run`` / ``sample`` end to end: records, summary, annotation, and every bad input."""

from __future__ import annotations

import base64
import itertools
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import av
import cv2
import numpy as np

from engine.cli import main
from engine.records import validate_record
from engine.sources import open_source
from tests.conftest import TINY_FLAGS
from tests.media import damage_packets, encode_video, face_frames, write_image_folder


def run(capsys, *args: str) -> tuple[int, str, str]:
    code = main(["run", *args, *TINY_FLAGS])
    out, err = capsys.readouterr()
    return code, out, err


def records(path: Path) -> list[dict]:
    return [validate_record(json.loads(line)) for line in path.read_text().splitlines()]


def test_run_writes_a_valid_record_per_frame_and_a_summary(face_clip, tmp_path, capsys):
    out = tmp_path / "r.jsonl"
    code, stdout, err = run(
        capsys, str(face_clip), "--out", str(out), "--summary-json", str(tmp_path / "s.json")
    )
    assert code == 0
    recs = records(out)
    assert [r["frame"] for r in recs] == list(range(12))
    assert all(r["source"] == str(face_clip) and r["weights"] == "untrained" for r in recs)
    assert sum(len(r["faces"]) > 0 for r in recs) >= 10  # Haar finds the real face
    assert len({r["job"] for r in recs}) == 1
    assert "frames 12" in stdout and "per video" in stdout and "UNTRAINED" in stdout
    summary = json.loads((tmp_path / "s.json").read_text())
    assert summary["frames"] == 12 and summary["sources"][str(face_clip)]["error"] is None
    # The untrained warning is said once.
    assert err.count("untrained weights for deepfake detector, Detect-ResNet50") == 1


def test_records_go_to_stdout_without_out_and_summary_to_stderr(face_clip, capsys):
    code, stdout, err = run(capsys, str(face_clip), "--every", "4")
    assert code == 0
    lines = stdout.splitlines()
    assert [validate_record(json.loads(x))["frame"] for x in lines] == [0, 4, 8]
    assert "frames 3" in err


def test_annotated_video_has_every_processed_frame(face_clip, tmp_path, capsys):
    video = tmp_path / "a.mp4"
    code, _, _ = run(
        capsys,
        str(face_clip),
        "--out",
        str(tmp_path / "r.jsonl"),
        "--annotate",
        str(video),
        "--fake-threshold",
        "1.0",
        "--every",
        "2",
    )
    assert code == 0
    with av.open(str(video)) as c:
        frames = [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]
    assert len(frames) == 6
    # Boxes and heat maps were drawn: the annotated frame differs from the source frame.
    with open_source(str(face_clip)) as src:
        original = next(iter(src)).image
    assert np.abs(frames[0].astype(int) - original.astype(int)).mean() > 3


def test_several_sources_each_get_an_annotated_video(face_clip, tmp_path, capsys):
    folder = tmp_path / "imgs"
    write_image_folder(folder, face_frames(2, size=128))
    video = tmp_path / "a.mp4"
    code, _, _ = run(
        capsys,
        str(face_clip),
        str(folder),
        "--out",
        str(tmp_path / "r.jsonl"),
        "--annotate",
        str(video),
        "--every",
        "3",
    )
    assert code == 0
    assert (tmp_path / "a-0.mp4").is_file() and (tmp_path / "a-1.mp4").is_file()
    sources = {r["source"] for r in records(tmp_path / "r.jsonl")}
    assert sources == {str(face_clip), str(folder)}


def test_frames_without_faces_are_recorded_as_no_face(tmp_path, capsys):
    folder = tmp_path / "empty-scenes"
    write_image_folder(folder, [np.full((64, 80, 3), 90, np.uint8)] * 2)
    out = tmp_path / "r.jsonl"
    code, stdout, _ = run(capsys, str(folder), "--out", str(out))
    assert code == 0
    assert [r["verdict"] for r in records(out)] == ["no_face", "no_face"]
    assert "no_face" in stdout


# --- bad input: one line naming the input and what to do; records already written are kept --


def error_lines(err: str) -> list[str]:
    return [line for line in err.splitlines() if line.startswith("veritas: error:")]


def test_missing_file(tmp_path, capsys):
    code, _, err = run(capsys, str(tmp_path / "nope.mp4"))
    assert code == 1
    assert error_lines(err) == [
        f"veritas: error: {tmp_path / 'nope.mp4'}: no such file or folder; check the path"
    ]


def test_file_that_is_not_video(tmp_path, capsys):
    text = tmp_path / "notes.mp4"
    text.write_text("this is not a video\n" * 50)
    code, _, err = run(capsys, str(text))
    assert code == 1
    (line,) = error_lines(err)
    assert str(text) in line and "not a readable video" in line


def test_empty_folder(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    code, _, err = run(capsys, str(tmp_path / "empty"))
    assert code == 1
    (line,) = error_lines(err)
    assert "empty" in line and "no image files" in line


def test_stream_corrupt_halfway_keeps_the_good_frames(tmp_path, capsys):
    clip = encode_video(tmp_path / "broken.mp4", face_frames(24, size=128), fps=25)
    damage_packets(clip, start=0.5)
    out = tmp_path / "r.jsonl"
    code, _, err = run(capsys, str(clip), "--out", str(out))
    assert code == 1
    (line,) = error_lines(err)
    assert "corrupt after frame" in line and "records up to that frame were kept" in line
    kept = records(out)
    assert 6 <= len(kept) < 24
    assert [r["frame"] for r in kept] == list(range(len(kept)))


def test_8k_frame_is_refused_with_the_setting_to_change(tmp_path, capsys):
    image = tmp_path / "8k.png"
    cv2.imwrite(str(image), np.zeros((4320, 7680, 3), np.uint8))
    code, _, err = run(capsys, str(image))
    assert code == 1
    (line,) = error_lines(err)
    assert "7680x4320" in line and "max_frame_pixels" in line


def test_bad_config_value_exits_2_naming_the_key(face_clip, capsys):
    code, _, err = run(capsys, str(face_clip), "--batch-size", "0")
    assert code == 2
    assert error_lines(err) == [
        "veritas: error: config: pipeline.batch_size = 0 is invalid: expected a value from 1 "
        "to 4096"
    ]


def test_one_bad_source_does_not_stop_the_others(face_clip, tmp_path, capsys):
    out = tmp_path / "r.jsonl"
    code, stdout, err = run(capsys, str(tmp_path / "gone.mp4"), str(face_clip), "--out", str(out))
    assert code == 1
    assert len(records(out)) == 12
    assert "FAILED" in stdout and len(error_lines(err)) == 1


def test_records_survive_a_killed_process(tmp_path):
    """A crash loses at most the frames in flight: every line written is a whole record."""
    clip = encode_video(tmp_path / "long.mp4", face_frames(150, size=128), fps=25)
    out = tmp_path / "r.jsonl"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "engine.cli",
            "run",
            str(clip),
            "--out",
            str(out),
            *TINY_FLAGS,
            "--batch-size",
            "1",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if out.exists() and len(out.read_text().splitlines()) >= 3:
                break
            assert proc.poll() is None, "veritas ended before it could be killed"
            time.sleep(0.05)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
    text = out.read_text()
    lines = text.splitlines()
    assert 3 <= len(lines) < 150
    assert text.endswith("\n")  # flushed whole lines, never a half record
    assert [validate_record(json.loads(x))["frame"] for x in lines] == list(range(len(lines)))


# --- sample and misc ------------------------------------------------------------------------


def test_sample_writes_a_decodable_clip_with_a_face(tmp_path, capsys):
    path = tmp_path / "sample.mp4"
    assert main(["sample", str(path), "--seconds", "0.4", "--size", "160"]) == 0
    assert capsys.readouterr().out.strip() == str(path)
    with open_source(str(path)) as src:
        frames = [f.image for f in src]
    assert len(frames) == 10 and frames[0].shape == (160, 160, 3)
    cascade = cv2.CascadeClassifier(cv2.data.haarcascades + "haarcascade_frontalface_default.xml")
    found = [
        len(cascade.detectMultiScale(cv2.cvtColor(f, cv2.COLOR_RGB2GRAY), 1.1, 5)) > 0
        for f in frames
    ]
    assert sum(found) >= 8


def test_sample_clips_have_a_keyframe_every_second(tmp_path):
    """Stream-friendly: a player or a live server joining mid-way waits at most a second
    for a picture (x264's default is one keyframe in 250 frames, 10 s at 25 fps)."""
    path = tmp_path / "sample.mp4"
    assert main(["sample", str(path), "--seconds", "4", "--size", "96"]) == 0
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        keys = [
            float(p.pts * stream.time_base)
            for p in container.demux(stream)
            if p.is_keyframe and p.pts is not None
        ]
    assert keys[0] == 0.0 and len(keys) >= 4
    assert max(b - a for a, b in itertools.pairwise(keys)) <= 1.0 + 1e-6


def test_sample_rejects_bad_sizes(tmp_path, capsys):
    assert main(["sample", str(tmp_path / "s.mp4"), "--size", "8"]) == 2
    assert "size from 64 to 4096" in capsys.readouterr().err


def test_list_models_names_models_and_weight_formats(capsys):
    assert main(["--list-models"]) == 0
    out = capsys.readouterr().out
    for name in ("xception", "efficientnet_b4st", "detect_resnet50", "haar", "retinaface"):
        assert name in out
    assert "--format ffpp-xception" in out


def test_progress_bar_is_drawn_on_a_terminal(face_clip, tmp_path):
    """On a terminal `veritas run` shows a progress bar (never in pipes or CI logs)."""
    import fcntl
    import pty
    import struct
    import termios

    cmd = [
        sys.executable,
        "-m",
        "engine.cli",
        "run",
        str(face_clip),
        "--out",
        str(tmp_path / "r.jsonl"),
        *[f for f in TINY_FLAGS if f != "--no-progress"],
    ]
    pid, fd = pty.fork()
    if pid == 0:  # the child: stdout and stderr are the pty
        os.execv(cmd[0], cmd)
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))  # a 120-column tty
    output = b""
    while True:
        try:
            chunk = os.read(fd, 4096)
        except OSError:  # the child closed the terminal
            break
        if not chunk:
            break
        output += chunk
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    text = output.decode(errors="replace")
    assert "analysing" in text and "12/12" in text


def test_the_command_line_and_its_parser_import_no_torch_and_no_benchmarks():
    """Control commands must answer fast: building the parser (every command's --help)
    imports neither torch nor the benchmark harness (``bench`` loads it when it runs)."""
    code = (
        "import sys; from engine.cli import build_parser; build_parser(); "
        "heavy = sorted(m for m in ('torch', 'benchmarks.harness', 'engine.pipeline') "
        "if m in sys.modules); print(heavy)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        cwd=Path(__file__).parents[2],
    )
    assert out.stdout.strip() == "[]", out.stdout + out.stderr


def test_every_shortcut_flag_sets_its_config_key_in_run_bench_and_the_dataset_builder():
    """One flag -> config key table: ``veritas run`` takes every flag, and the same flag
    means the same key wherever else it is taken."""
    from benchmarks.cli import OPTIONS as BENCH
    from engine.cli import build_parser
    from engine.cli.options import RUN_OPTIONS, config_from_args
    from training import build_dataset

    values = {
        "--detector": "efficientnet_b4st_tiny",
        "--detector-weights": "d.safetensors",
        "--face-detector": "retinaface",
        "--face-detector-weights": "f.safetensors",
        "--adversarial": "detect_resnet50_tiny",
        "--adversarial-weights": "a.safetensors",
        "--xai": "saliency",
        "--device": "cpu",
        "--batch-size": "3",
        "--fake-threshold": "0.25",
        "--attacked-threshold": "0.75",
        "--ig-steps": "7",
        "--runtime": "compile",
        "--precision": "bf16",
        "--fps": "2.5",
        "--every": "4",
        "--decoder": "pyav",
    }
    assert set(values) == set(RUN_OPTIONS)

    def check(config, names):
        for name in names:
            section, field = RUN_OPTIONS[name].key.split(".")
            got = getattr(getattr(config, section), field)
            assert got == RUN_OPTIONS[name].type(values[name]), name

    def argv(names):
        return [item for name in names for item in (name, values[name])]

    by_rate = [n for n in RUN_OPTIONS if n != "--every"]  # sample by rate or by count
    by_count = [n for n in RUN_OPTIONS if n != "--fps"]
    for names in (by_rate, by_count):
        check(config_from_args(build_parser().parse_args(["run", "x.mp4", *argv(names)])), names)

    taken = (*build_dataset.MODEL_FLAGS, "--every")
    args = build_dataset.build_parser().parse_args(["in", "out", *argv(taken)])
    check(config_from_args(args, (*taken, "--fps")), taken)

    for name, (_, kind, text) in BENCH.items():  # bench's engine flags: the table's type
        if name in RUN_OPTIONS and name not in ("--xai", "--fps"):  # bench takes lists there
            assert kind is RUN_OPTIONS[name].type and RUN_OPTIONS[name].key in text, name


def test_ctrl_c_stops_the_run_with_its_summary(tmp_path):
    """SIGINT (Ctrl-C) mid-run: the records so far are whole, the summary of the frames
    analysed until then is printed and marked interrupted, and the exit status is 130."""
    clip = encode_video(tmp_path / "long.mp4", face_frames(150, size=128), fps=25)
    out, summary = tmp_path / "r.jsonl", tmp_path / "summary.json"
    proc = subprocess.Popen(
        [sys.executable, "-m", "engine.cli", "run", str(clip), "--out", str(out),
         "--summary-json", str(summary), *TINY_FLAGS, "--batch-size", "1"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if out.exists() and len(out.read_text().splitlines()) >= 3:
                break
            assert proc.poll() is None, "veritas ended before it could be interrupted"
            time.sleep(0.05)
        proc.send_signal(signal.SIGINT)
        stdout, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130
    lines = out.read_text().splitlines()
    assert 3 <= len(lines) < 150
    assert [validate_record(json.loads(x))["frame"] for x in lines] == list(range(len(lines)))
    assert "INTERRUPTED" in stdout and f"frames {len(lines)} " in stdout
    written = json.loads(summary.read_text())
    assert written["interrupted"] is True and written["frames"] == len(lines)


def test_events_go_to_the_output_beside_the_records(face_clip, tmp_path, capsys):
    # Every face is called fake (threshold 0), so a fake verdict persists over the clip:
    # one event starts and, at the end of the stream, ends.
    out = tmp_path / "r.jsonl"
    code, _, _ = run(
        capsys, str(face_clip), "--out", str(out), "--events", "--fake-threshold", "0",
        "--set", "events.window_s=0.2", "--set", "events.min_frames=3",
    )  # fmt: skip
    assert code == 0
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    events = [line for line in lines if line.get("type") == "event"]
    recs = [validate_record(line) for line in lines if line.get("type") != "event"]
    assert len(recs) == 12
    assert [(e["event"], e["verdict"]) for e in events] == [("start", "fake"), ("end", "fake")]
    end = events[-1]
    faced = [r for r in recs if r["verdict"] == "fake"]
    assert end["start_pts"] == faced[0]["pts"] and end["end_pts"] == faced[-1]["pts"]
    assert end["counts"]["fake"] == len(faced) and end["source"] == str(face_clip)
    best = max((f["p_fake"], r["frame"]) for r in faced for f in r["faces"])
    assert (end["peak"]["p"], end["peak"]["frame"]) == best
    thumb = cv2.imdecode(np.frombuffer(base64.b64decode(end["peak"]["thumbnail"]), np.uint8), 1)
    assert thumb.shape == (96, 96, 3)  # the face alone: a fake face has no XAI map
