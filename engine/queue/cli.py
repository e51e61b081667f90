"""The queue's commands: ``veritas submit | worker | serve | status | results | cancel``.

Every command takes ``--redis URL`` (default ``$VERITAS_REDIS_URL``), ``--cluster``
(Redis Cluster), ``--prefix`` and the configuration options (``--config``, ``--set
queue.key=value``). Exit status: 0 success; 1 a job or Redis problem (no such job,
Redis unreachable, a job that cannot be cancelled); 2 bad usage or configuration;
75 (EX_TEMPFAIL) the queue is full, submit again later.

This module is imported by ``engine.cli`` at start, so it imports nothing heavy at
module level (the shared flags come from the light ``engine.cli.options``).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from typing import Any

from engine.cli.options import (
    RUN_OPTIONS,
    add_config_arguments,
    add_config_file_arguments,
    config_from_args,
    dest,
)

log = logging.getLogger("veritas")

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_QUEUE_FULL = 0, 1, 2, 75


# --- shared options -----------------------------------------------------------------------


def _add_redis_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--redis",
        metavar="URL",
        help="redis://[:password@]host:port/db, rediss://... (TLS) or unix:///path "
        "(default: $VERITAS_REDIS_URL, which keeps the password out of process lists)",
    )
    p.add_argument("--cluster", action="store_true", help="the URL is a Redis Cluster node")
    p.add_argument("--prefix", help="key prefix [queue.prefix] (default veritas:)")


def _add_queue_config(p: argparse.ArgumentParser) -> None:
    add_config_file_arguments(p, example="queue.max_attempts=5")


def _config(args: argparse.Namespace) -> Any:
    from engine.config import load_config

    overrides = list(args.set)
    if getattr(args, "prefix", None):
        overrides.append(f"queue.prefix={json.dumps(args.prefix)}")
    if getattr(args, "concurrency", None) is not None:
        overrides.append(f"queue.concurrency={args.concurrency}")
    if getattr(args, "allow_root", None):
        roots = [os.path.abspath(r) for r in args.allow_root]
        overrides.append(f"queue.allowed_roots={json.dumps(roots)}")
    if all(hasattr(args, dest(f)) for f in RUN_OPTIONS):
        ns = argparse.Namespace(**{**vars(args), "set": overrides})
        return config_from_args(ns)
    return load_config(args.config, overrides)


def _connect(args: argparse.Namespace, name: str | None = None) -> Any:
    from engine.queue.connection import connect, redis_url

    return connect(redis_url(args.redis), cluster=args.cluster, client_name=name)


def _error(message: object) -> None:
    print(f"veritas: error: {message}", file=sys.stderr)


def _queue_command(run: Any) -> Any:
    """Run a command body; map queue and Redis errors to messages and exit statuses."""

    def command(args: argparse.Namespace) -> int:
        import redis

        from engine.queue.connection import redis_url
        from engine.queue.errors import QueueError, QueueFullError, RedisUnavailableError
        from engine.redaction import redact, redact_url

        try:
            return run(args)
        except QueueFullError as e:
            _error(e)
            return EXIT_QUEUE_FULL
        except QueueError as e:
            _error(e)
            return EXIT_FAILED
        except redis.AuthenticationError as e:
            _error(RedisUnavailableError(redact_url(redis_url(args.redis)), f"refused: {e}"))
            return EXIT_FAILED
        except redis.RedisError as e:
            _error(RedisUnavailableError(redact_url(redis_url(args.redis)), redact(str(e))))
            return EXIT_FAILED

    return command


def _setup_logs(args: argparse.Namespace) -> None:
    from engine.logs import setup_logging

    verbose = getattr(args, "verbose", 0)
    setup_logging(args.log_format, logging.DEBUG if verbose > 1 else logging.INFO)


# --- veritas submit -----------------------------------------------------------------------


def cmd_submit(args: argparse.Namespace) -> int:
    from engine.queue.queue import Queue
    from engine.sources.urls import url_scheme

    if args.id and len(args.sources) > 1:
        _error("--id needs exactly one SOURCE")
        return EXIT_USAGE
    config = _config(args)
    queue = Queue(_connect(args, "veritas-submit"), config.queue)
    # Paths are made absolute: the workers do not share our working folder.
    sources = [s if url_scheme(s) is not None else os.path.abspath(s) for s in args.sources]
    job_ids = queue.enqueue_many(  # all or none: a refusal enqueues nothing
        sources,
        mode=args.mode,
        fps=args.fps,
        every=args.every,
        max_duration_s=args.max_duration,
        job_ids=[args.id] * len(sources),
    )
    for source, job_id in zip(sources, job_ids, strict=True):
        if url_scheme(source) is None and not os.path.exists(source):
            log.warning("%s is not on this machine; the workers must see it there", source)
        print(job_id, flush=True)
    return EXIT_OK


def add_submit_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "submit",
        help="enqueue jobs (one per SOURCE), print their ids",
        description="Enqueue one job per SOURCE (a file, folder or live feed URL) on the "
        "Redis queue and print one job id per line. Paths are made absolute: the workers "
        "must see the same files there. Exits 75 when the queue is full.",
    )
    p.add_argument("sources", nargs="+", metavar="SOURCE", help="file, folder or URL")
    p.add_argument(
        "--mode",
        choices=("realtime", "lossless"),
        help="live feeds: drop frames when behind (realtime, default for URLs) or never",
    )
    p.add_argument("--fps", type=float, help="analyse frames at this rate")
    p.add_argument("--every", type=int, help="analyse every Nth frame")
    p.add_argument(
        "--max-duration",
        type=float,
        metavar="SECONDS",
        help="stop after this much stream time (a live feed then ends done)",
    )
    p.add_argument("--id", help="job id to use (one SOURCE only; default: random)")
    _add_redis_arguments(p)
    _add_queue_config(p)
    p.set_defaults(func=_queue_command(cmd_submit))


# --- veritas worker -----------------------------------------------------------------------


def cmd_worker(args: argparse.Namespace) -> int:
    _setup_logs(args)
    import engine.sources.live  # noqa: F401  (registers the live feed schemes)
    from engine.queue.worker import Worker

    config = _config(args)
    client = _connect(args, args.name or "veritas-worker")
    worker = Worker(
        client,
        config,
        name=args.name,
        burst=args.burst,
        metrics_port=args.metrics_port,
    )
    return worker.work()


def _add_worker_options(p: argparse.ArgumentParser) -> None:

    p.add_argument("--concurrency", type=int, help="jobs held at once [queue.concurrency]")
    p.add_argument("--name", help="consumer name (default: host-pid-random)")
    p.add_argument("--burst", action="store_true", help="stop when the queue is empty")
    p.add_argument(
        "--metrics-port",
        type=int,
        metavar="PORT",
        help="serve /metrics and /healthz on this port [queue.metrics_port]",
    )
    p.add_argument(
        "--allow-root",
        action="append",
        metavar="DIR",
        help="let jobs read files under DIR (repeatable) [queue.allowed_roots]",
    )
    p.add_argument(
        "--log-format", choices=("text", "json"), default="text", help="key=value or JSON lines"
    )
    add_config_arguments(p)


def add_worker_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "worker",
        help="consume jobs until stopped (SIGTERM = graceful)",
        description="Take jobs from the Redis queue and analyse them, up to --concurrency "
        "at once in shared batches, until SIGTERM or SIGINT (jobs in hand are handed back "
        "to the queue; a second signal exits at once).",
    )
    _add_redis_arguments(p)
    _add_worker_options(p)
    p.set_defaults(func=_queue_command(cmd_worker))


# --- veritas serve ------------------------------------------------------------------------


def _worker_argv(args: argparse.Namespace, index: int) -> list[str]:
    """The ``worker`` arguments for pool worker ``index`` (the URL goes by environment)."""

    argv: list[str] = []
    if args.cluster:
        argv.append("--cluster")
    for flag in ("prefix", "concurrency", "config"):
        value = getattr(args, flag)
        if value is not None:
            argv += [f"--{flag}", str(value)]
    if args.name:
        argv += ["--name", f"{args.name}-{index}"]
    if args.burst:
        argv.append("--burst")
    if args.metrics_port:
        argv += ["--metrics-port", str(args.metrics_port + index)]
    for root in args.allow_root or []:
        argv += ["--allow-root", os.path.abspath(root)]
    argv += ["--log-format", args.log_format]
    for item in args.set:
        argv += ["--set", item]
    for flag in RUN_OPTIONS:
        value = getattr(args, dest(flag))
        if value is not None:
            argv += [flag, str(value)]
    return argv


def cmd_serve(args: argparse.Namespace) -> int:
    _setup_logs(args)
    from engine.queue.connection import REDIS_URL_ENV
    from engine.queue.pool import WorkerPool
    from engine.queue.server import EmbeddedRedis

    _config(args)  # check the configuration once, before starting anything
    url = args.redis or os.environ.get(REDIS_URL_ENV)
    server = None
    if not url:
        server = EmbeddedRedis(port=args.port or 0, data_dir=args.data_dir).start()
        url = server.url
        print(url, flush=True)  # where to submit: veritas submit --redis URL ...
    try:
        pool = WorkerPool(
            args.workers, url, [_worker_argv(args, i) for i in range(args.workers)], args.grace
        )
        return pool.run()
    finally:
        if server is not None:
            server.stop()
            log.info("embedded redis-server stopped")


def add_serve_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "serve",
        help="run a worker pool (and an embedded redis-server when no --redis is given)",
        description="Run --workers worker processes on this machine. Without --redis (or "
        "$VERITAS_REDIS_URL), first start redis-server on a free local port and print its "
        "URL; it stops when serve exits. SIGTERM/SIGINT stop the workers gracefully.",
    )
    _add_redis_arguments(p)
    p.add_argument("--workers", type=int, default=1, help="worker processes (default 1)")
    p.add_argument("--port", type=int, help="embedded server's port (default: a free one)")
    p.add_argument(
        "--data-dir",
        metavar="DIR",
        help="embedded server: keep the queue in DIR (append-only file) across restarts",
    )
    p.add_argument(
        "--grace",
        type=float,
        default=30.0,
        metavar="SECONDS",
        help="time workers get to hand back their jobs when stopping (default 30)",
    )
    _add_worker_options(p)
    p.set_defaults(func=_queue_command(cmd_serve))


# --- veritas status / results / cancel ----------------------------------------------------


def cmd_status(args: argparse.Namespace) -> int:
    from engine.queue.queue import Queue

    queue = Queue(_connect(args, "veritas-status"), _config(args).queue)
    if args.dead is not None:
        entries = queue.dead_letters(args.dead)
        for e in entries:
            e["job_payload"] = None if e.get("job_payload") is None else "<bytes>"
        _print(entries, args.json, _format_dead)
        return EXIT_OK
    if args.job:
        _print(queue.job(args.job).to_dict(), args.json, _format_job)
        return EXIT_OK
    _print(queue.info(), args.json, _format_info)
    return EXIT_OK


def _print(value: Any, as_json: bool, text: Any) -> None:
    print(json.dumps(value, indent=2, default=str) if as_json else text(value))


def _when(t: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t)) if t else "-"


def _format_job(job: dict[str, Any]) -> str:
    p = job["progress"]
    progress = ", ".join(f"{k} {v}" for k, v in p.items() if v is not None) or "-"
    rows = [
        ("job", job["id"]),
        ("status", job["status"]),
        ("source", job["source"]),
        ("mode", job["mode"] or "-"),
        ("attempts", job["attempts"]),
        ("progress", progress),
        ("worker", job["worker"] or "-"),
        ("error", job["error"] or "-"),
        ("submitted", _when(job["submitted"])),
        ("started", _when(job["started"])),
        ("finished", _when(job["finished"])),
    ]
    return "\n".join(f"{k:<10} {v}" for k, v in rows)


def _format_info(info: dict[str, Any]) -> str:
    rows = [
        f"stream     {info['jobs_stream']}: {info['length']} entries",
        f"waiting    {info['backlog']} (not yet taken: {info['lag']}, "
        f"taken and unfinished: {info['pending']})",
        f"dead       {info['dead']}",
        f"consumers  {len(info['consumers'])}",
    ]
    rows += [
        f"  {c['name']}: {c['pending']} jobs, idle {c['idle_s']:.1f} s" for c in info["consumers"]
    ]
    return "\n".join(rows)


def _format_dead(entries: list[dict[str, Any]]) -> str:
    if not entries:
        return "no dead jobs"
    return "\n".join(
        f"{_when(e.get('failed_at'))}  {e.get('job') or '(no id)'}  entry {e.get('entry')}  "
        f"attempts {e.get('attempts')}: {e.get('reason')}"
        for e in entries
    )


def add_status_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "status",
        help="show a job, or the queue",
        description="Show JOB's status, attempts, progress and error; without JOB, the "
        "queue: waiting jobs, workers (consumers), dead jobs.",
    )
    p.add_argument("job", nargs="?", metavar="JOB")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.add_argument(
        "--dead", type=int, nargs="?", const=20, metavar="N", help="list the last N dead jobs"
    )
    _add_redis_arguments(p)
    _add_queue_config(p)
    p.set_defaults(func=_queue_command(cmd_status))


def cmd_results(args: argparse.Namespace) -> int:
    from engine.queue.queue import Queue

    queue = Queue(_connect(args, "veritas-results"), _config(args).queue)
    try:
        if args.events:
            lines = queue.events(args.job, follow=args.follow)
        else:
            lines = queue.results(args.job, start_frame=args.from_frame, follow=args.follow)
        for line in lines:
            print(json.dumps(line, separators=(",", ":")), flush=args.follow)
    except KeyboardInterrupt:
        return EXIT_OK
    return EXIT_OK


def add_results_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "results",
        help="print a job's frame records (JSON lines)",
        description="Print JOB's frame records, one JSON line each, in frame order. With "
        "--follow, keep printing new records until the job ends.",
    )
    p.add_argument("job", metavar="JOB")
    p.add_argument("--follow", "-f", action="store_true", help="wait for new records")
    p.add_argument(
        "--events",
        action="store_true",
        help="print JOB's verdict events (start, update, end) instead of its frame records",
    )
    p.add_argument("--from-frame", type=int, default=0, metavar="N", help="start at frame N")
    _add_redis_arguments(p)
    _add_queue_config(p)
    p.set_defaults(func=_queue_command(cmd_results))


def cmd_cancel(args: argparse.Namespace) -> int:
    from engine.queue.errors import QueueError
    from engine.queue.queue import Queue

    queue = Queue(_connect(args, "veritas-cancel"), _config(args).queue)
    status = EXIT_OK
    for job_id in args.jobs:
        try:
            was = queue.cancel(job_id)
            print(f"{job_id} cancelled (was {was})")
        except QueueError as e:
            _error(e)
            status = EXIT_FAILED
    return status


def add_cancel_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "cancel",
        help="cancel queued or running jobs",
        description="Cancel each JOB: a queued one never runs, a running one is stopped by "
        "its worker within a second; its records so far are kept.",
    )
    p.add_argument("jobs", nargs="+", metavar="JOB")
    _add_redis_arguments(p)
    _add_queue_config(p)
    p.set_defaults(func=_queue_command(cmd_cancel))


def add_parsers(sub: argparse._SubParsersAction) -> None:
    """Add the queue's commands to ``veritas`` (``engine.cli.PARSERS``). (The live feed
    URL schemes register themselves with ``engine.sources``, which imports them.)"""
    for add in (
        add_submit_parser,
        add_worker_parser,
        add_serve_parser,
        add_status_parser,
        add_results_parser,
        add_cancel_parser,
    ):
        add(sub)
