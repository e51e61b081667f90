"""Connecting to Redis: URLs with passwords and TLS, retries with back-off, no leaks.

``redis://[[user]:password@]host:port/db`` and ``rediss://...`` (TLS; certificate
options as query parameters, e.g. ``?ssl_ca_certs=/etc/ca.pem&ssl_cert_reqs=required``)
and ``unix:///path/redis.sock`` are accepted, as redis-py reads them. The URL may come
from the environment variable :data:`REDIS_URL_ENV` instead of the command line, which
keeps the password out of process listings. Logs and errors show :func:`redact_url`
of it only.

Every command is retried on connection errors and timeouts with exponential back-off
(:data:`COMMAND_RETRIES` times); longer outages are ridden out by the worker loop
(``engine.queue.worker``).
"""

from __future__ import annotations

import os

import redis
from redis.backoff import ExponentialWithJitterBackoff
from redis.retry import Retry

from engine.errors import ConfigError
from engine.redaction import redact_url

REDIS_URL_ENV = "VERITAS_REDIS_URL"
"""Environment variable read when no ``--redis`` URL is given."""

COMMAND_RETRIES = 3
"""Retries of one command on a connection error, with back-off up to 1 s."""

SOCKET_TIMEOUT_S = 15.0
"""Socket read timeout; longer than any blocking read the queue makes."""

REDIS_ERRORS: tuple[type[Exception], ...] = (redis.ConnectionError, redis.TimeoutError)
"""Errors that mean "Redis is unreachable for now" (retry), not "the request is wrong"."""


def redis_url(url: str | None) -> str:
    """``url``, else ``$VERITAS_REDIS_URL``; ConfigError when neither is set."""
    url = url or os.environ.get(REDIS_URL_ENV, "")
    if not url:
        raise ConfigError("--redis", None, f"a Redis URL (redis://host:6379/0) or ${REDIS_URL_ENV}")
    if not url.startswith(("redis://", "rediss://", "unix://")):
        raise ConfigError("--redis", redact_url(url), "a redis://, rediss:// or unix:// URL")
    return url


def connect(url: str, cluster: bool = False, client_name: str | None = None) -> redis.Redis:
    """A client for ``url`` (bytes responses, retries); ``cluster`` uses RedisCluster."""
    retry = Retry(ExponentialWithJitterBackoff(cap=1.0, base=0.05), COMMAND_RETRIES)
    options = {
        "retry": retry,
        "retry_on_error": list(REDIS_ERRORS),
        "socket_timeout": SOCKET_TIMEOUT_S,
        "socket_connect_timeout": 5.0,
        "socket_keepalive": True,
        "health_check_interval": 30,
        "client_name": client_name,
    }
    try:
        if cluster:
            from redis.cluster import RedisCluster

            return RedisCluster.from_url(url, **options)  # type: ignore[return-value]
        return redis.Redis.from_url(url, **options)
    except (ValueError, TypeError) as error:
        raise ConfigError("--redis", redact_url(url), f"a valid Redis URL ({error})") from None
