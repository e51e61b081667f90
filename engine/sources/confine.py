"""Holding every file a source opens to a set of folders (the worker's ``allowed_roots``).

The queue's policy checks the path a job names; a folder's listing can still hold links
that lead elsewhere. A source given a :class:`Confinement` checks each file it is about
to open, after resolving every link and ``..``, and raises
:class:`~engine.errors.OutsideAllowedRootsError` for one outside the roots. ``veritas
run`` opens sources unconfined (``None``): its user names the files.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from engine.errors import OutsideAllowedRootsError


class Confinement:
    """The folders files may resolve into."""

    def __init__(self, roots: Iterable[str | os.PathLike[str]]) -> None:
        self.roots = [Path(os.path.realpath(r)) for r in roots]

    def contains(self, path: str | os.PathLike[str]) -> bool:
        real = Path(os.path.realpath(path))
        return any(real == root or real.is_relative_to(root) for root in self.roots)

    def check(self, source: str, path: str | os.PathLike[str]) -> None:
        """Raise OutsideAllowedRootsError when ``path`` resolves outside the roots."""
        if not self.contains(path):
            raise OutsideAllowedRootsError(source, str(path), [str(r) for r in self.roots])

    def __repr__(self) -> str:
        return f"Confinement({[str(r) for r in self.roots]})"
