"""One small registry: names (or other keys) → entries of one kind, filled at import time.

Every extensible table of the engine and of ``training/`` is one of these: runtimes,
models, face detectors, source URL schemes, weight formats, XAI methods (eager and
differentiable), guided activations, attacks and defenses. A module declares its table
and registers entries with the decorator::

    ATTACKS: Registry[str, type[Attack]] = Registry("attack", unknown=UnknownAttackError)

    @ATTACKS.register("pgd")
    class PGD(Attack): ...

    ATTACKS.get("pgd")       # the class; an unknown name raises the table's own error

What differs between tables stays with them (a model's config, an attack's class
attribute ``name``); the registry only guarantees the same behaviour everywhere: a key is
registered once, lookups of unknown keys fail with the known keys in the message, and the
order of registration is kept.

A table whose entries live in heavy modules names them as ``providers``: they are
imported on the first lookup, not when the table's module is, so reading the table's
neighbours (a config, a settings class) stays cheap.
"""

from __future__ import annotations

import fnmatch
import importlib
from collections.abc import Callable, Hashable, Iterator
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")
E = TypeVar("E")

Unknown = Callable[[K, list[K]], Exception]
"""``unknown(key, known_keys) -> exception``: what a table raises for a key it lacks."""


class UnknownEntryError(LookupError):
    """A registry has no entry under the key (the default error of :meth:`Registry.get`)."""

    def __init__(self, kind: str, key: object, known: list[object]) -> None:
        self.kind, self.key, self.known = kind, key, known
        names = ", ".join(map(str, known)) or "none"
        super().__init__(f"unknown {kind} {key!r} (known: {names})")


class Registry(Generic[K, V]):
    """Keys → entries of one kind, in registration order.

    Args:
        kind: what the entries are, for messages ("runtime", "face detector").
        unknown: builds the exception :meth:`get` raises for a missing key, from the key
            and the known keys; :class:`UnknownEntryError` by default.
        normalize: applied to every key on the way in and on lookup (e.g. ``str.lower``
            for case-insensitive URL schemes).
        providers: modules that register entries here, imported (once, in order) before
            the first lookup or listing.
    """

    def __init__(
        self,
        kind: str,
        *,
        unknown: Unknown | None = None,
        normalize: Callable[[K], K] | None = None,
        providers: tuple[str, ...] = (),
    ) -> None:
        self.kind = kind
        self._providers = providers
        self._unknown = unknown
        self._normalize = normalize or (lambda key: key)
        self._entries: dict[K, V] = {}

    def add(self, key: K, entry: V) -> V:
        """Register ``entry`` under ``key``; a key taken already is a ValueError."""
        key = self._normalize(key)
        if key in self._entries:
            raise ValueError(f"{self.kind} {key!r} is registered twice")
        self._entries[key] = entry
        return entry

    def register(self, *keys: K) -> Callable[[E], E]:
        """Decorator registering the decorated object under each of ``keys``.

        The table holds the object itself, unless :meth:`add` is used with another entry
        (``register`` is for tables whose entry IS the decorated function or class).
        """
        if not keys:
            raise TypeError(f"register a {self.kind} under at least one key")

        def wrap(obj: E) -> E:
            for key in keys:
                self.add(key, obj)  # type: ignore[arg-type]
            return obj

        return wrap

    def _entries_loaded(self) -> dict[K, V]:
        """The entries, once every provider module has been imported."""
        while self._providers:
            provider, *rest = self._providers
            self._providers = tuple(rest)  # before the import: it registers entries here
            importlib.import_module(provider)
        return self._entries

    def remove(self, key: K) -> None:
        """Forget ``key`` (for tests and plugins that unload); a missing key is fine."""
        self._entries.pop(self._normalize(key), None)

    def find(self, key: K) -> V | None:
        """The entry under ``key``, or None."""
        try:
            return self._entries_loaded().get(self._normalize(key))
        except TypeError:  # an unhashable key is simply not there
            return None

    def get(self, key: K) -> V:
        """The entry under ``key``; a missing key raises the table's ``unknown`` error."""
        entry = self.find(key)
        if entry is None:
            known = list(self._entries_loaded())
            if self._unknown is not None:
                raise self._unknown(key, known)
            raise UnknownEntryError(self.kind, key, known)
        return entry

    def keys(self, pattern: str = "*") -> list[K]:
        """The keys in registration order; ``pattern`` (shell-style) filters string keys."""
        entries = self._entries_loaded()
        if pattern == "*":
            return list(entries)
        return [k for k in entries if isinstance(k, str) and fnmatch.fnmatch(k, pattern)]

    def items(self) -> list[tuple[K, V]]:
        return list(self._entries_loaded().items())

    def __contains__(self, key: object) -> bool:
        return self.find(key) is not None  # type: ignore[arg-type]

    def __iter__(self) -> Iterator[K]:
        return iter(list(self._entries_loaded()))

    def __len__(self) -> int:
        return len(self._entries_loaded())

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}, {len(self)} entries)"
