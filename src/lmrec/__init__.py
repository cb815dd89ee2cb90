"""lmrec: recommendation with language models (AlphaRec, Reindex-Then-Adapt) with correct evaluation.

The public API::

    import lmrec
    data = lmrec.load_dataset("movielens-latest-small")          # CF (SplitData) or CRS (CRSData) data
    run = lmrec.fit("alpharec", data, {"epochs": 20}, out="runs/ar")   # any registered model, a TrainConfig
    run.metrics["test"]["recall@20"]                               # mean, se, n
    run = lmrec.Run.load("runs/ar")                                # a run folder, moved or not
    run.recommend(user="1", k=10)                                  # known user
    run.recommend(titles=["Toy Story (1995)"], intent="a funny heist movie", alpha=0.5)   # new user, intention
    found = lmrec.tune("lightgcn", data, trials=8, fixed={"epochs": 30}, out="runs/tune")   # a search on validation
"""

__version__ = "0.2.0"

_EXPORTS = {
    "DataRef": "lmrec.data.registry", "Dataset": "lmrec.data.frames", "list_datasets": "lmrec.data.registry",
    "load_dataset": "lmrec.data.registry",
    "LmrecError": "lmrec.errors", "evaluate": "lmrec.eval.ranking", "get_model": "lmrec.models.base",
    "list_models": "lmrec.models.base", "Recommendation": "lmrec.run", "Run": "lmrec.run", "fit": "lmrec.run",
    "SettingsError": "lmrec.settings", "TrainConfig": "lmrec.train", "tune": "lmrec.tuning",
}
__all__ = ["__version__", *sorted(_EXPORTS)]


def __getattr__(name: str):  # the public names are imported on first use: `import lmrec` stays light
    if name in _EXPORTS:
        import importlib

        value = getattr(importlib.import_module(_EXPORTS[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'lmrec' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *_EXPORTS})
