"""A (task, name) -> class registry, filled by a decorator when the packages holding the classes are imported."""

from __future__ import annotations

import importlib
from collections.abc import Callable, Sequence
from typing import Generic, TypeVar

from lmrec.errors import LmrecError

T = TypeVar("T", bound=type)


class Registry(Generic[T]):
    """``@registry.register("name")`` on a class with a ``task`` attribute; ``registry.get("name", task)`` imports
    ``packages`` first. A name may exist for several tasks (``pop``): ``task`` then says which."""

    def __init__(self, kind: str, packages: Sequence[str]):
        self.kind, self.packages = kind, tuple(packages)
        self._classes: dict[tuple[str, str], T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        def decorate(cls: T) -> T:
            cls.name = name
            self._classes[(cls.task, name)] = cls
            return cls

        return decorate

    def _load(self) -> None:
        for package in self.packages:
            importlib.import_module(package)

    def get(self, name: str, task: str | None = None) -> T:
        self._load()
        matches = [cls for (t, n), cls in self._classes.items() if n == name and task in (None, t)]
        if len(matches) == 1:
            return matches[0]
        if matches:
            tasks = sorted(t for t, n in self._classes if n == name)
            raise LmrecError(
                f"{self.kind} {name!r} exists for several tasks ({', '.join(tasks)}): say which (task=...)"
            )
        known = self.names(task)
        where = f" for task {task!r}" if task else ""
        raise LmrecError(f"unknown {self.kind} {name!r}{where}: expected one of {', '.join(known)}")

    def names(self, task: str | None = None) -> list[str]:
        self._load()
        return sorted({n for t, n in self._classes if task in (None, t)})

    def entries(self) -> list[tuple[str, str, T]]:
        """(task, name, class) of every registered class, sorted by task then name."""
        self._load()
        return [(t, n, cls) for (t, n), cls in sorted(self._classes.items())]
