"""lmrec: recommendation with language models (AlphaRec, Reindex-Then-Adapt) with correct evaluation.

The public API::

    import lmrec
    data = lmrec.load_dataset("movielens-latest-small")          # CF (SplitData) or CRS (CRSData) data
    run = lmrec.fit("alpharec", data, {"epochs": 20}, out="runs/ar")   # any registered model, a TrainConfig
    run.metrics["test"]["recall@20"]                               # mean, se, n
    run = lmrec.Run.load("runs/ar")                                # a run folder, moved or not
    run.recommend(user="1", k=10)                                  # known user
    run.recommend(titles=["Toy Story (1995)"], intent="a funny heist movie", alpha=0.5)   # new user, intention
"""

__version__ = "0.2.0"

from lmrec.data.registry import DataRef, list_datasets, load_dataset  # noqa: E402
from lmrec.errors import LmrecError  # noqa: E402
from lmrec.eval.ranking import evaluate  # noqa: E402
from lmrec.models.base import get_model, list_models  # noqa: E402
from lmrec.run import Recommendation, Run, fit  # noqa: E402
from lmrec.settings import SettingsError  # noqa: E402
from lmrec.train import TrainConfig  # noqa: E402

__all__ = ["DataRef", "LmrecError", "Recommendation", "Run", "SettingsError", "TrainConfig", "__version__",
           "evaluate", "fit", "get_model", "list_datasets", "list_models", "load_dataset"]
