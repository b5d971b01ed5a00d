"""A registry of source classes by their `source` name: what a config's `source:` selects.

Each source module registers its classes on import, and its package imports
every module it holds (import_modules), so a new source is a new module; a name
taken twice is refused then, naming both classes, so no source silently
replaces another.
"""

from __future__ import annotations

import importlib
import pkgutil
from typing import Iterable


def import_modules(package: str, path: Iterable[str]) -> None:
    """Import every module of a package (its `__name__` and `__path__`): each source module registers its classes."""
    for module in pkgutil.iter_modules(path):
        importlib.import_module(f"{package}.{module.name}")


class Registry(dict):
    """{source name: class}, filled by the `register` decorator."""

    def __init__(self, kind: str):
        super().__init__()
        self.kind = kind

    def register(self, cls: type) -> type:
        taken = self.get(cls.source)
        if taken is not None and taken is not cls:
            raise ValueError(
                f"{self.kind} source {cls.source!r} is registered twice, by {taken.__module__}.{taken.__qualname__} "
                f"and {cls.__module__}.{cls.__qualname__}; give one of them another `source` name")
        self[cls.source] = cls
        return cls
