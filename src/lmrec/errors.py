"""Errors raised on bad input; each message names the file, line, id or argument and what was expected."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


class _Unset:
    def __repr__(self) -> str:
        return "UNSET"


UNSET: Any = _Unset()


@dataclass(frozen=True)
class Argument:
    """An argument that an error message names, so that the caller can change it: its Python keyword and, when
    the message quotes it, the value given."""

    keyword: str
    value: Any = UNSET

    def python(self) -> str:
        """How Python names it: ``emb_dim=0``, or ``format=...`` without a value."""
        return f"{self.keyword}=..." if self.value is UNSET else f"{self.keyword}={self.value!r}"


class LmrecError(Exception):
    """Base class of lmrec's own errors (the CLI prints these without a traceback).

    A message that names an argument has it as an :class:`Argument` among its parts, e.g.
    ``LmrecError("pass ", Argument("format"), " one of lightgcn, unisrec")``: ``str(error)`` names the Python
    keyword (``pass format= one of ...``) and :meth:`naming` lets another interface name it its own way (the command
    line: ``pass --format one of ...``).
    """

    def __init__(self, *parts: Any):
        self.parts = parts
        named = any(isinstance(part, Argument) for part in parts)
        joined = named or (len(parts) > 1 and all(isinstance(part, str) for part in parts))
        super().__init__(*((self.naming(Argument.python) if named else "".join(parts),) if joined else parts))

    def naming(self, name: Callable[[Argument], str]) -> str:
        """The message with each :class:`Argument` written by ``name``."""
        if not any(isinstance(part, Argument) for part in self.parts):
            return str(self)
        return "".join(name(part) if isinstance(part, Argument) else str(part) for part in self.parts)


class ArgumentError(LmrecError, ValueError):
    """An argument's value that is not allowed, or one that is missing: the message names the argument."""


class MissingFileError(LmrecError, FileNotFoundError):
    """A file that a dataset's format needs is not in its folder: the message names the folder, the file and the
    format."""


class DataFormatError(LmrecError, ValueError):
    """A data file does not follow its format: the message names the file, the line and what was expected."""

    def __init__(self, path: object, line: int | None, message: str):
        where = f"{path}" if line is None else f"{path}, line {line}"
        super().__init__(f"{where}: {message}")
        self.path = path
        self.line = line


class UnknownIdError(LmrecError, KeyError):
    """An external user or item id that the dataset does not know."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0])


class EmptyUserError(LmrecError, ValueError):
    """A user with no training interactions where the model needs some."""


class EmbeddingError(LmrecError, ValueError):
    """Embeddings with the wrong shape or non-finite values."""
