"""Structured logs: key=value and JSON lines with the extra fields, never a password."""

from __future__ import annotations

import json
import logging
import sys

from engine.logs import JsonFormatter, KeyValueFormatter


def make_record(msg: str, *args: object, exc: bool = False, **extra: object) -> logging.LogRecord:
    exc_info = None
    if exc:
        try:
            raise ConnectionError("cannot reach redis://:s3cret@db:6379/0")
        except ConnectionError:
            exc_info = sys.exc_info()
    record = logging.LogRecord(
        "engine.queue.worker", logging.INFO, __file__, 1, msg, args, exc_info
    )
    record.__dict__.update(extra)
    return record


def test_key_value_lines_carry_the_extra_fields_and_quote_what_needs_it():
    line = KeyValueFormatter().format(
        make_record("job %s done", "abc", job="abc", frames=12, source="/a b.mp4")
    )
    assert line.startswith("ts=") and "level=info" in line
    assert 'msg="job abc done"' in line and "job=abc" in line and "frames=12" in line
    assert 'source="/a b.mp4"' in line and "\n" not in line


def test_json_lines_parse_and_carry_the_extra_fields():
    data = json.loads(JsonFormatter().format(make_record("started", job="abc", attempt=2)))
    assert data["msg"] == "started" and data["job"] == "abc" and data["attempt"] == 2
    assert data["level"] == "info" and data["logger"] == "engine.queue.worker"


def test_no_formatter_lets_a_password_through():
    for formatter in (KeyValueFormatter(), JsonFormatter()):
        text = formatter.format(
            make_record(
                "connecting to %s", "rediss://user:s3cret@db:6380", exc=True,
                source="rtsp://cam:s3cret@10.0.0.1/live", url="srt://h:1?passphrase=s3cret",
            )
        )  # fmt: skip
        assert "s3cret" not in text
        assert "***" in text and "ConnectionError" in text


def test_plain_lines_name_the_program_and_mask_passwords():
    from engine.logs import PlainFormatter

    line = PlainFormatter("finetune").format(
        make_record("reading %s", "rtsp://cam:hunter2@10.0.0.5/live")
    )
    assert line == "finetune: info: reading rtsp://cam:***@10.0.0.5/live"


def test_setup_logging_twice_installs_one_handler_and_a_named_logger_stays_apart(capsys):
    from engine.logs import setup_logging

    root = logging.getLogger()
    saved = root.handlers[:], root.level
    named = logging.getLogger("training")
    named_saved = named.handlers[:], named.level, named.propagate
    try:
        setup_logging("plain", logging.INFO, prog="veritas")
        setup_logging("plain", logging.INFO, prog="veritas")
        setup_logging("plain", logging.INFO, prog="build_dataset", logger="training")
        setup_logging("plain", logging.INFO, prog="build_dataset", logger="training")
        logging.getLogger("engine.x").info("engine line")
        logging.getLogger("training.finetune").info("training line")
        err = capsys.readouterr().err.splitlines()
        assert err == ["veritas: info: engine line", "build_dataset: info: training line"]
    finally:
        root.handlers[:] = saved[0]
        root.setLevel(saved[1])
        named.handlers[:] = named_saved[0]
        named.setLevel(named_saved[1])
        named.propagate = named_saved[2]
