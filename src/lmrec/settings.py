"""One way to declare settings: a validated dataclass per component.

Every model config, :class:`lmrec.train.TrainConfig` and every step's options are declared with
:func:`settings` (a pydantic dataclass that forbids unknown keys and validates on construction and assignment)::

    @settings
    class AlphaRecConfig(ModelConfig):
        tau: Annotated[float, Field(gt=0, description="InfoNCE temperature")] = 0.15
        negatives: Literal["shared", "per_row"] = "shared"

Types (``Literal`` choices, ``int``/``float``/``bool``/``str``, tuples, ``X | None``) and ranges (``Field(ge=..)``)
are checked once, when the object is made; :func:`build` turns pydantic's errors into one :class:`SettingsError`
naming each key, the value given and what is allowed. The CLI flags are generated from the same fields
(:mod:`lmrec.cli.flags`), so adding a setting is one line in one class.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from typing import Any, TypeVar

from pydantic import ConfigDict, ValidationError
from pydantic.dataclasses import dataclass as _pydantic_dataclass

from lmrec.errors import Argument, ArgumentError

T = TypeVar("T")
_CONFIG = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)


class SettingsError(ArgumentError):
    """A setting that is unknown, of the wrong type or out of range; the message names the key and what is allowed."""


def settings(cls: type[T]) -> type[T]:
    """Class decorator: a dataclass whose fields are validated (types, ``Literal`` choices, ranges)."""
    return _pydantic_dataclass(cls, config=_CONFIG)  # type: ignore[return-value]


def field_names(cls: type) -> list[str]:
    return [f.name for f in dataclasses.fields(cls)]


def build(cls: type[T], values: Mapping[str, Any] | None = None, base: T | None = None, what: str = "setting") -> T:
    """``cls(**values)`` (or ``base`` with ``values`` replaced); unknown keys and invalid values raise
    :class:`SettingsError` naming every offending key, the value and what is expected."""
    values = dict(values or {})
    known = field_names(cls)
    unknown = sorted(set(values) - set(known))
    if unknown:
        raise SettingsError(f"unknown {what}{'s' if len(unknown) > 1 else ''} {', '.join(unknown)}; "
                            f"the {what}s of {cls.__name__} are: {', '.join(known)}")
    try:
        return dataclasses.replace(base, **values) if base is not None else cls(**values)  # type: ignore[type-var]
    except ValidationError as exc:
        raise SettingsError(*describe(exc, what, cls.__name__, values)) from None


def describe(exc: ValidationError, what: str = "setting", owner: str = "",
             values: Mapping[str, Any] | None = None) -> list[Any]:
    """The parts of a :class:`SettingsError` (text and :class:`~lmrec.errors.Argument`) for a pydantic error, one
    clause per invalid key: ``model setting negatives='per-row': expected 'shared' or 'per_row'``; ``values``: the
    values given, so a clause about an entry of a dict or tuple quotes the whole value."""
    parts: list[Any] = []
    for err in exc.errors():
        loc = err["loc"]
        if err["type"] in ("missing", "missing_argument", "unexpected_keyword_argument", "extra_forbidden"):
            # a key left out or one that does not exist (nested: models.mf.sett)
            kind = "missing" if err["type"].startswith("missing") else "unknown"
            parts += ["; " if parts else "", f"{kind} {what} {'.'.join(str(p) for p in loc if p != '[key]')}"]
            continue
        message = err["msg"].removeprefix("Input should be ").removeprefix("Value error, ")
        where = f" (at {'.'.join(str(p) for p in loc[1:] if p != '[key]')})" if len(loc) > 1 else ""
        parts += ["; " if parts else "", f"{what} "]
        if loc:
            parts.append(Argument(str(loc[0]), (values or {}).get(str(loc[0]), err.get("input"))))
        else:
            parts.append(repr(err.get("input")))
        parts.append(f": expected {message}{where}")
    return [*parts, f" ({owner})" if owner else ""]


def as_dict(obj: Any) -> dict[str, Any]:
    """The fields of a settings object as JSON-ready values (tuples become lists)."""
    return json.loads(json.dumps(dataclasses.asdict(obj), default=str))


def parse_value(text: str) -> Any:
    """A value written on the command line: JSON when it parses (numbers, true/false, null, lists), else the text."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text
