"""Search spaces for ``lmrec tune``: typed ranges of settings, declared once beside each model's Config.

A model declares ``search_space``, a mapping from setting names to ranges; a name is a field of the model's
``Config`` or one of the training settings in :data:`TUNABLE_TRAINING` (fields of :class:`lmrec.train.TrainConfig`)::

    search_space = {"lr": FloatRange(1e-4, 1e-2, log=True), "n_layers": IntRange(1, 3), "views": Choice(("batch",
                    "epoch"))}

:func:`check_space` checks a space against the model: every name is a setting, every value a range can take is a
valid value of it, and the model's default lies in the range (the search starts from the defaults). Nothing here
imports optuna: a range asks a trial for its value through :meth:`suggest` (optuna's ``Trial`` API).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from lmrec.settings import SettingsError, build, field_names

# training settings a search may vary (those that shape learning); the budget (epochs, patience, eval_every), the
# metric and the seed are the same for every trial
TUNABLE_TRAINING = ("lr", "weight_decay", "batch_size", "optimizer", "grad_clip")


@dataclass(frozen=True)
class FloatRange:
    """A float in [low, high]; ``log``: drawn uniformly in log space (low > 0)."""

    low: float
    high: float
    log: bool = False

    def __post_init__(self) -> None:
        if not self.low < self.high:
            raise ValueError(f"FloatRange: expected low < high, got {self.low} and {self.high}")
        if self.log and self.low <= 0:
            raise ValueError(f"FloatRange: a log range needs low > 0, got {self.low}")

    def suggest(self, trial: Any, name: str) -> float:
        return trial.suggest_float(name, self.low, self.high, log=self.log)

    def values(self) -> tuple[float, ...]:
        """The values checked against the setting's type and bounds: the ends."""
        return (self.low, self.high)

    def contains(self, value: Any) -> bool:
        return isinstance(value, (int, float)) and self.low <= value <= self.high

    def __str__(self) -> str:
        return f"{self.low:g}..{self.high:g}{' (log)' if self.log else ''}"


@dataclass(frozen=True)
class IntRange:
    """An integer in [low, high]; ``log``: drawn uniformly in log space (low > 0)."""

    low: int
    high: int
    log: bool = False

    def __post_init__(self) -> None:
        if not self.low < self.high:
            raise ValueError(f"IntRange: expected low < high, got {self.low} and {self.high}")
        if self.log and self.low <= 0:
            raise ValueError(f"IntRange: a log range needs low > 0, got {self.low}")

    def suggest(self, trial: Any, name: str) -> int:
        return trial.suggest_int(name, self.low, self.high, log=self.log)

    def values(self) -> tuple[int, ...]:
        return (self.low, self.high)

    def contains(self, value: Any) -> bool:
        return isinstance(value, int) and not isinstance(value, bool) and self.low <= value <= self.high

    def __str__(self) -> str:
        return f"{self.low}..{self.high}{' (log)' if self.log else ''}"


@dataclass(frozen=True)
class Choice:
    """One of ``options`` (numbers, strings, booleans or None)."""

    options: tuple[Any, ...]

    def __post_init__(self) -> None:
        if not self.options:
            raise ValueError("Choice: expected at least one option")

    def suggest(self, trial: Any, name: str) -> Any:
        return trial.suggest_categorical(name, list(self.options))

    def values(self) -> tuple[Any, ...]:
        return tuple(self.options)

    def contains(self, value: Any) -> bool:
        return value in self.options

    def __str__(self) -> str:
        return "{" + ", ".join(map(str, self.options)) + "}"


Range = FloatRange | IntRange | Choice
Space = Mapping[str, Range]


def defaults(model: type) -> dict[str, Any]:
    """The values a model trains with when nothing is set: its Config's defaults and its paper's training values
    (``train_defaults`` over :class:`TrainConfig`'s)."""
    from lmrec.settings import as_dict

    return {**as_dict(model.train_config()), **as_dict(model.Config())} if getattr(model, "trainable", False) \
        else as_dict(model.Config())


def check_space(model: type, space: Space | None = None) -> None:
    """Raise :class:`SettingsError` unless ``space`` (default: ``model.search_space``) ranges over settings of
    ``model``: fields of its Config or :data:`TUNABLE_TRAINING`, each value a range can take valid for the setting,
    and the model's default value inside the range."""
    from lmrec.train import TrainConfig

    space = model.search_space if space is None else space
    own = set(field_names(model.Config))
    start = defaults(model)
    for name, values in space.items():
        if not isinstance(values, (FloatRange, IntRange, Choice)):
            raise SettingsError(f"{model.name} search space {name}: expected a FloatRange, IntRange or Choice, "
                                f"got {values!r}")
        if name in own:
            cls, what = model.Config, f"{model.name} setting"
        elif name in TUNABLE_TRAINING:
            cls, what = TrainConfig, "training setting"
        else:
            raise SettingsError(f"{model.name} search space: {name!r} is neither a {model.name} setting "
                                f"({', '.join(sorted(own)) or 'none'}) nor a training setting a search may vary "
                                f"({', '.join(TUNABLE_TRAINING)})")
        for value in values.values():
            build(cls, {name: value}, what=what)
        if not values.contains(start[name]):
            raise SettingsError(f"{model.name} search space {name}={values}: the default {start[name]!r} is outside "
                                "it (a search starts from the defaults)")
