"""A bug that repeats every turn of the worker loop is logged, not logged every second."""

from __future__ import annotations

import logging

from engine.queue.errorlog import RepeatingErrors


def fail(message: str) -> BaseException:
    try:
        raise RuntimeError(message)
    except RuntimeError as error:
        return error


def test_a_repeating_error_is_logged_once_per_interval_with_its_count(caplog):
    now = [0.0]
    errors = RepeatingErrors(logging.getLogger("t"), every_s=60.0, clock=lambda: now[0])
    with caplog.at_level(logging.ERROR, logger="t"):
        written = []
        for _ in range(120):  # two minutes of a loop turning every second
            written.append(errors.report(fail("boom"), "loop"))
            now[0] += 1.0
    assert written.count(True) == 2 and written[0] and written[60]
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 2
    assert caplog.records[0].exc_info is not None  # the first one has its traceback
    assert "60 times in the last 60 s" in lines[1]


def test_a_different_error_is_logged_at_once(caplog):
    errors = RepeatingErrors(logging.getLogger("t"), clock=lambda: 0.0)
    with caplog.at_level(logging.ERROR, logger="t"):
        assert errors.report(fail("boom"), "loop")
        assert not errors.report(fail("boom"), "loop")
        assert errors.report(fail("another"), "loop")
    assert len(caplog.records) == 2
