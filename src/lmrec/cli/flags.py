"""Command-line flags generated from settings classes (:mod:`lmrec.settings`): one flag per field.

``--emb-dim 32`` for ``emb_dim: PositiveInt``; ``--negatives {shared,per_row}`` for a ``Literal``;
``--pred-norm / --no-pred-norm`` for a ``bool``; ``--text-fields title,genres`` for a tuple; ``none`` for an
optional value; ``--max-samples train=200,valid=50`` for a dict (JSON is read too). Values are checked by the
settings class itself (one validation for the CLI and the Python API), so an error names the flag, the value and
what is allowed.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shlex
import types
import typing
from typing import Any, Literal

from lmrec.errors import LmrecError
from lmrec.settings import parse_value


def _parts(annotation: Any) -> tuple[Any, bool]:
    """(the annotation without ``| None``, whether None is allowed)."""
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        return _parts(typing.get_args(annotation)[0])
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        inner, _ = _parts(args[0]) if len(args) == 1 else (annotation, False)
        return inner, len(args) < len(typing.get_args(annotation))
    return annotation, False


def _kind(annotation: Any) -> str:
    origin = typing.get_origin(annotation)
    if origin is Literal:
        return "choice"
    if origin is tuple or annotation is tuple:
        return "tuple"
    if origin is dict or annotation is dict:
        return "mapping"
    if annotation is bool:
        return "bool"
    if annotation is str:
        return "str"
    return "scalar"  # int, float: given as text, converted by the settings class


def _converter(kind: str, optional: bool) -> Any:
    def convert(text: str) -> Any:
        if optional and text.lower() in ("none", "null"):
            return None
        if kind == "tuple":
            return [part.strip() for part in text.split(",") if part.strip()]
        if kind == "mapping":
            return parse_mapping(text)
        if kind == "scalar":  # numbers as numbers (so errors show 0, not '0'); the settings class checks the type
            return parse_value(text)
        return text

    convert.__name__ = {"tuple": "list", "mapping": "KEY=VALUE list"}.get(kind, "value")
    return convert


def parse_mapping(text: str) -> dict[str, Any]:
    """``train=200,valid=50`` (or the JSON ``{"train": 200, "valid": 50}``) as a dict; each value as
    :func:`~lmrec.settings.parse_value` reads it, ``none`` as None; an empty text is an empty dict."""
    if text.lstrip().startswith("{"):
        try:
            value = json.loads(text)
        except json.JSONDecodeError as exc:
            raise argparse.ArgumentTypeError(f"{text!r} is not valid JSON ({exc})") from None
        if not isinstance(value, dict):
            raise argparse.ArgumentTypeError(f"expected KEY=VALUE pairs, e.g. train=200,valid=50; got {text!r}")
        return value
    mapping: dict[str, Any] = {}
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        key, equals, value = part.partition("=")
        if not equals or not key.strip():
            raise argparse.ArgumentTypeError(f"expected KEY=VALUE pairs separated by commas, e.g. "
                                             f"train=200,valid=50; got {part!r}")
        value = value.strip()
        mapping[key.strip()] = None if value.lower() in ("none", "null") else parse_value(value)
    return mapping


def typed(value: Any) -> str:
    """A value as one types it on the command line: ``0``, ``none``, ``train=200,valid=50``, ``title,genres``."""
    if value is None:
        return "none"
    if isinstance(value, dict):
        return shlex.quote(",".join(f"{k}={typed(v)}" for k, v in value.items()))
    if isinstance(value, (list, tuple)):
        return shlex.quote(",".join(str(v) for v in value))
    return shlex.quote(str(value).lower() if isinstance(value, bool) else str(value))


_BOUNDS = {"Ge": "≥", "Gt": ">", "Le": "≤", "Lt": "<"}


def add_settings(parser: argparse.ArgumentParser, cls: type, title: str, skip: tuple[str, ...] = (),
                 defaults: dict[str, Any] | None = None, only: tuple[str, ...] | None = None,
                 hidden: bool = False) -> None:
    """One flag per field of the settings class ``cls`` (in a group named ``title``; ``only``: just these fields;
    ``hidden``: flags that parse but are not listed by ``--help``); a flag not given keeps the default
    (``defaults``, e.g. a model's paper values, else the class's), so only given flags reach :func:`given`."""
    group = parser.add_argument_group(title)
    fields = getattr(cls, "__pydantic_fields__", {})
    for f in dataclasses.fields(cls):
        if f.name in skip or (only is not None and f.name not in only):
            continue
        info = fields.get(f.name)
        annotation = info.annotation if info is not None and info.annotation is not None else f.type
        metadata = list(info.metadata) if info is not None else []
        inner, optional = _parts(annotation)
        kind = _kind(inner)
        flag = "--" + f.name.replace("_", "-")
        default = f.default if f.default is not dataclasses.MISSING else (
            f.default_factory() if f.default_factory is not dataclasses.MISSING else None)
        default = (defaults or {}).get(f.name, default)
        bounds = " ".join(f"{_BOUNDS[type(m).__name__]} {getattr(m, type(m).__name__.lower())}" for m in metadata
                          if type(m).__name__ in _BOUNDS)
        description = info.description if info is not None and info.description else ""
        shown = typed(default) if default not in ({}, ()) else "none"
        text = "; ".join(p for p in (description, bounds, f"default {shown}") if p)
        options: dict[str, Any] = {"dest": f"{cls.__name__}.{f.name}", "default": argparse.SUPPRESS,
                                   "help": argparse.SUPPRESS if hidden else text}
        if kind == "bool":
            group.add_argument(flag, action=argparse.BooleanOptionalAction, **options)
        elif kind == "choice":
            choices = [str(c) for c in typing.get_args(inner)] + (["none"] if optional else [])
            group.add_argument(flag, choices=choices, type=_converter("str", optional), **options)
        else:
            metavar = "KEY=VALUE,..." if kind == "mapping" else f.name.upper()
            group.add_argument(flag, type=_converter(kind, optional), metavar=metavar, **options)


def given(args: argparse.Namespace, cls: type) -> dict[str, Any]:
    """The fields of ``cls`` given on the command line: ``{field: value}``."""
    prefix = f"{cls.__name__}."
    return {k[len(prefix):]: v for k, v in vars(args).items() if k.startswith(prefix)}


def model_name_in(argv: list[str], command: list[str]) -> str | None:
    """The model named after ``command`` (e.g. ``["train"]``) in ``argv``: the first later argument that is a
    registered model name (options may come first: ``train --dataset d alpharec``), else the one right after."""
    from lmrec.models.base import MODELS

    n = len(command)
    for i in range(len(argv) - n + 1):
        if argv[i : i + n] == command:
            rest = argv[i + n :]
            names = {name for _, name, _ in MODELS.entries()}
            return next((a for a in rest if a in names), rest[0] if rest and not rest[0].startswith("-") else None)
    return None


def model_settings_class(name: str | None, task: str | None = None) -> type | None:
    """The config class of a registered model name (None when the name is unknown: the parser then reports it)."""
    if name is None:
        return None
    from lmrec.models.base import MODELS

    try:
        return MODELS.get(name, task).Config
    except LmrecError:  # unknown, or registered for several tasks (``pop``: no settings either way)
        matches = [cls.Config for _, n, cls in MODELS.entries() if n == name]
        return matches[0] if matches else None
