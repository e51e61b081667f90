"""Lazy package exports: a package names what it offers without importing it.

``engine.faces`` and ``engine.sources`` re-export their modules' public names, but
importing the package must stay cheap (``engine.config`` and the queue commands read
their settings classes without torch, OpenCV or PyAV). A package declares its exports
and gets a module ``__getattr__`` (PEP 562) that imports a name's module on first use::

    _EXPORTS = {"crop_faces": "engine.faces.crop", ...}
    __getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
    __all__ = sorted(_EXPORTS)
"""

from __future__ import annotations

import importlib
from collections.abc import Callable


def lazy_exports(
    package: str, exports: dict[str, str]
) -> tuple[Callable[[str], object], Callable[[], list[str]]]:
    """``(__getattr__, __dir__)`` for ``package``, whose ``exports`` map name -> module."""

    def __getattr__(name: str) -> object:
        module = exports.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        return getattr(importlib.import_module(module), name)

    def __dir__() -> list[str]:
        return sorted(exports)

    return __getattr__, __dir__
