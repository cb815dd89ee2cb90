"""A name -> class registry, filled by a decorator when the package holding the classes is imported."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Generic, TypeVar

from lmrec.errors import LmrecError

T = TypeVar("T", bound=type)


class Registry(Generic[T]):
    """``@registry.register("name")`` on a class; ``registry.get("name")`` imports ``package`` first."""

    def __init__(self, kind: str, package: str):
        self.kind, self.package = kind, package
        self._classes: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        def decorate(cls: T) -> T:
            cls.name = name
            self._classes[name] = cls
            return cls

        return decorate

    def get(self, name: str) -> T:
        importlib.import_module(self.package)
        try:
            return self._classes[name]
        except KeyError:
            raise LmrecError(f"unknown {self.kind} {name!r}: expected one of {', '.join(self.names())}") from None

    def names(self) -> list[str]:
        importlib.import_module(self.package)
        return sorted(self._classes)
