"""Kernel tests run the Triton kernels on CPU under Triton's interpreter.

``TRITON_INTERPRET=1`` must be in the environment before ``triton.language`` is first
imported (it decorates its own helpers then; see :mod:`kernels.backend`), and the rest of
the suite must not run under it. So tests marked ``triton`` (they launch a kernel) run
in ONE child pytest process started with ``TRITON_INTERPRET=1``, the first time such a
test is reached; each marked test here then reports its own outcome from the child
(failures carry the child's traceback). Unmarked kernel tests (references, dispatch,
errors) run in this process as usual.

Run ``TRITON_INTERPRET=1 pytest tests/kernels`` to run everything in one process instead.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import pytest

from kernels.backend import interpreting

RESULTS_ENV = "VERITAS_KERNEL_TEST_RESULTS"
"""Set in the child: where it writes ``{nodeid: {"outcome", "text"}}`` as JSON."""

CHILD_TIMEOUT_S = 570  # under pytest-timeout's 600 s for the test that waits for it

_child: dict[str, Any] | None = None
_records: dict[str, dict[str, str]] = {}


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "triton: launches a Triton kernel; runs under TRITON_INTERPRET=1 in a child process "
        "(tests/kernels/conftest.py)",
    )


@pytest.hookimpl(tryfirst=True)
def pytest_pyfunc_call(pyfuncitem: pytest.Function) -> bool | None:
    """In the parent, a ``triton`` test's body is its outcome in the child process."""
    if interpreting() or pyfuncitem.get_closest_marker("triton") is None:
        return None
    child = _run_child(pyfuncitem.session)
    result = child["results"].get(pyfuncitem.nodeid)
    if result is None:
        pytest.fail(
            f"no result from the TRITON_INTERPRET=1 child process (exit {child['rc']}):\n"
            f"{child['output'][-4000:]}",
            pytrace=False,
        )
    if result["outcome"] == "skipped":
        # Not a skip of its own: the child skipped this test (its stated reason, e.g. no
        # Triton build for this platform) and the parent reports that outcome as is.
        pytest.skip(result["text"])
    if result["outcome"] != "passed":
        pytest.fail(f"under TRITON_INTERPRET=1 (child process):\n{result['text']}", pytrace=False)
    return True


def _run_child(session: pytest.Session) -> dict[str, Any]:
    """Run every selected ``triton`` test once in a child with the interpreter on."""
    global _child
    if _child is not None:
        return _child
    nodeids = [item.nodeid for item in session.items if item.get_closest_marker("triton")]
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "results.json"
        env = {**os.environ, "TRITON_INTERPRET": "1", RESULTS_ENV: str(out)}
        cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *nodeids]
        start = time.perf_counter()
        try:
            proc = subprocess.run(
                cmd,
                cwd=session.config.rootpath,
                env=env,
                capture_output=True,
                text=True,
                timeout=CHILD_TIMEOUT_S,
            )
            rc, output = proc.returncode, proc.stdout + proc.stderr
        except subprocess.TimeoutExpired as e:
            rc, output = -1, f"timed out after {CHILD_TIMEOUT_S} s\n{e.stdout or ''}"
        results = json.loads(out.read_text()) if out.exists() else {}
    _child = {
        "rc": rc,
        "output": output,
        "results": results,
        "seconds": time.perf_counter() - start,
    }
    return _child


# --- in the child: record each test's outcome ------------------------------------------


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if RESULTS_ENV not in os.environ:
        return
    record = _records.setdefault(report.nodeid, {"outcome": "passed", "text": ""})
    if report.failed:
        record["outcome"] = "failed"
        record["text"] += f"[{report.when}] {report.longreprtext}\n"
    elif report.skipped and record["outcome"] == "passed":
        record["outcome"] = "skipped"
        longrepr = report.longrepr
        record["text"] = longrepr[2] if isinstance(longrepr, tuple) else str(longrepr)


def pytest_sessionfinish(session: pytest.Session) -> None:
    path = os.environ.get(RESULTS_ENV)
    if path and interpreting():
        Path(path).write_text(json.dumps(_records))


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if _child is not None:
        results = _child["results"].values()
        counts = {k: sum(r["outcome"] == k for r in results) for k in ("passed", "failed")}
        terminalreporter.write_line(
            f"kernel tests under TRITON_INTERPRET=1 (child process): {counts['passed']} passed, "
            f"{counts['failed']} failed in {_child['seconds']:.1f} s"
        )
