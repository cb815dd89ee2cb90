"""The ``[run]`` section of each experiment's table config (``configs/<paper>/*.toml``), one settings class per
experiment (:mod:`lmrec.settings`): unknown keys and values of the wrong type are errors naming the key, and
:meth:`check` builds every nested model and training config before anything runs.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any, Literal

from pydantic import Field, PositiveInt

from lmrec.errors import LmrecError
from lmrec.settings import build, settings

DatasetSpec = str | dict[str, str]  # a registered name or path, or {"name", "dataset", "split"}


@settings
class ModelEntry:
    """One ``[run.models]`` entry: a registered ``model`` (default: the entry's name) with settings (``set``),
    training settings (``train``) and a ``grid`` of values to search."""

    model: str | None = None
    set: dict[str, Any] = Field(default_factory=dict)
    train: dict[str, Any] = Field(default_factory=dict)
    grid: dict[str, list[Any]] = Field(default_factory=dict)


@settings
class CompareSettings:
    """Models against each other on datasets (:func:`lmrec.experiments.compare.run_comparison`)."""

    datasets: list[DatasetSpec]
    models: dict[str, ModelEntry]
    train: dict[str, Any] = Field(default_factory=dict)
    train_by_dataset: dict[str, dict[str, Any]] = Field(default_factory=dict)
    focus: str | None = "alpharec"
    seed: int = 2024
    runs_in: str | None = None
    seeds: list[int] = Field(default_factory=list)
    focus_seeds: list[int] = Field(default_factory=list)
    widen: bool = False

    def check(self) -> None:
        from lmrec.experiments.compare import DatasetEntry, grid_specs
        from lmrec.models.base import get_model
        from lmrec.train import TrainConfig

        for dataset in self.datasets:
            _section("[run] datasets", lambda d=dataset: DatasetEntry.of(d, seed=0))
        _section("[run] train", lambda: build(TrainConfig, self.train))
        for name, entry in self.models.items():
            config = _section(f"[run.models] {name!r}", lambda e=entry, n=name: get_model(e.model or n, "cf").Config)
            points = _section(f"[run.models] {name!r}", lambda e=entry, n=name: grid_specs(
                n, e.model or n, e.set, e.train, e.grid))
            for spec in points:
                _section(f"[run.models] {spec.name!r}", lambda s=spec, c=config: build(c, s.model_overrides))
                _section(f"[run.models] {spec.name!r} train", lambda s=spec: build(TrainConfig, s.train_overrides))


@settings
class DensitySettings:
    """One dataset's comparison at thinned training shares (:mod:`lmrec.experiments.density`)."""

    dataset: str
    shares: list[float]
    models: dict[str, ModelEntry]
    split: str | None = None
    train: dict[str, Any] = Field(default_factory=dict)
    focus: str | None = "alpharec"
    seed: int = 2024
    runs_in: str | None = None
    seeds: list[int] = Field(default_factory=list)
    focus_seeds: list[int] = Field(default_factory=list)
    widen: bool = False

    def as_compare(self) -> CompareSettings:
        from lmrec.data.registry import DEFAULT_SPLIT
        from lmrec.experiments import density

        values = {k: v for k, v in _fields(self).items() if k not in ("dataset", "shares", "split")}
        entries = _section("[run]", lambda: density.entries(self.dataset, self.shares, self.split or DEFAULT_SPLIT))
        return build(CompareSettings, {**values, "datasets": entries}, what="[run] setting")

    def check(self) -> None:
        self.as_compare().check()


@settings
class Transfer:
    train: list[str]
    target: str


@settings
class ZeroShotSettings:
    """Zero-shot transfer (:mod:`lmrec.experiments.zeroshot`)."""

    transfers: list[Transfer]
    train: dict[str, Any] = Field(default_factory=dict)
    set: dict[str, Any] = Field(default_factory=dict)
    lightgcn: dict[str, Any] = Field(default_factory=dict)
    seed: int = 2024


@settings
class IntentionWriterSettings:
    """An LLM that writes the intentions from each target's title (:class:`lmrec.experiments.intention.LLMWriter`)."""

    llm: str = "smollm2-135m"  # a registered causal LM (lmrec.llm.CausalLM.load)
    dtype: str = "float32"
    domain: str = "product"  # the request's word for an item: 'A shopper wants this {domain}: "{title}". ...'
    max_new_tokens: PositiveInt = 40
    batch_size: PositiveInt = 16


@settings
class IntentionSettings:
    """Stated intentions on a finished run (:mod:`lmrec.experiments.intention`)."""

    # <table>/<dataset>/<run>; a model family of a comparison table stands for the grid point it selected
    run: str
    alpha: Annotated[float, Field(ge=0, le=1)] | Literal["valid"] = 0.5  # "valid": chosen on validation cases
    alphas: list[float] | None = None
    n_users: PositiveInt | None = None
    seed: int = 2024
    writer: IntentionWriterSettings | None = None  # an LLM writes the intentions; None: by rule from the catalog


@settings
class ConvergenceSettings:
    """Epochs, steps and seconds to the best validation score of another table's runs."""

    runs: str


@settings
class ProbeSettings:
    models: list[str] = Field(default_factory=list)
    modes: list[Literal["mask", "replace"]] = Field(default_factory=lambda: ["mask", "replace"])
    max_samples: PositiveInt | None = None
    seed: int = 2024


@settings
class CRSTableSettings:
    """The RTA table on one conversational dataset (:mod:`lmrec.experiments.rta_table`)."""

    dataset: str
    reindex: dict[str, Any]
    prepare: dict[str, Any] = Field(default_factory=dict)
    baselines: dict[str, dict[str, Any]] = Field(default_factory=dict)
    baseline_train: Literal["all", "prepared", "both"] = "all"
    zero_shot: bool | dict[str, Any] = True  # or the zero_shot_llm options, e.g. {title_match = "nearest"}
    reindex_variants: dict[str, dict[str, Any]] = Field(default_factory=dict)
    adapt: dict[str, dict[str, Any]] = Field(default_factory=dict)
    adapt_base: str = "best"  # the reindex row adapt builds on: "best" on validation, "reindex", or a variant name
    targets: Literal["all", "new"] | list[Literal["all", "new"]] = "all"  # a list: one table per definition
    probe: ProbeSettings = Field(default_factory=ProbeSettings)
    paper_hr10: dict[str, str] = Field(default_factory=dict)  # row name -> the paper's HR@10, a column beside ours

    def check(self) -> None:
        from lmrec.experiments.rta_table import reindex_variants
        from lmrec.inputs.config import PrepareConfig
        from lmrec.models.base import get_model
        from lmrec.train import TrainConfig

        _section("[run.prepare]", lambda: build(PrepareConfig, self.prepare))
        raw = _fields(self)
        models = [(f"[run.reindex_variants] {name!r}" if name else "[run.reindex]", "rta_reindex", options)
                  for name, options in reindex_variants(raw).items()]
        models += [(f"[run.adapt] {name!r}", "rta_adapt", o) for name, o in self.adapt.items()]
        if isinstance(self.zero_shot, dict):
            models.append(("[run.zero_shot]", "zero_shot_llm", self.zero_shot))
        variants = ["best", "reindex", *(name for name in self.reindex_variants)]
        if self.adapt_base not in variants:
            raise LmrecError(f"[run] adapt_base = {self.adapt_base!r}: expected one of {variants}")
        models += [(f"[run.baselines] {name!r}", o.get("model", name), o) for name, o in self.baselines.items()]
        for where, model, options in models:
            values = {k: v for k, v in options.items() if k not in ("train", "model")}
            _section(where, lambda m=model, v=values: build(get_model(m, "crs").Config, v))
            _section(f"{where} train", lambda o=options: build(TrainConfig, o.get("train", {})))


EXPERIMENT_SETTINGS: dict[str, type] = {
    "compare": CompareSettings, "density": DensitySettings, "zeroshot": ZeroShotSettings,
    "intention": IntentionSettings, "convergence": ConvergenceSettings, "crs": CRSTableSettings,
}


def table_settings(experiment: str, values: Mapping[str, Any]) -> Any:
    """The ``[run]`` section as its experiment's settings, every nested config checked (errors name the section)."""
    parsed = build(EXPERIMENT_SETTINGS[experiment], dict(values), what="[run] setting")
    if hasattr(parsed, "check"):
        parsed.check()
    return parsed


def _fields(obj: Any) -> dict[str, Any]:
    """The settings' fields as plain values (nested settings as dicts), for runners written against dicts."""
    from lmrec.settings import as_dict

    return as_dict(obj)


def _section(where: str, make: Any) -> Any:
    """``make()``, its error prefixed with the config section it is about."""
    try:
        return make()
    except (LmrecError, ValueError, TypeError) as exc:
        raise LmrecError(f"{where}: {exc}") from None
