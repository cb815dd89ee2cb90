"""Runs: a fitted model with its data and results, and the one run-folder format of every model.

- :mod:`lmrec.run.folder`: the folder format (manifest, weights, metrics, values per user, the data snapshot),
  claiming a folder, and whether a saved run matches the settings asked for;
- :mod:`lmrec.run.fitting`: :func:`fit`, a model fitted into a run;
- :mod:`lmrec.run.run`: :class:`Run`, loading, evaluating and recommending.
"""

from lmrec.run.fitting import fit, planned_manifest, run_settings, task_of
from lmrec.run.folder import (
    FORMAT,
    MANIFEST,
    METRICS,
    PER_USER,
    TRIAL_ENDS,
    VERSION,
    WEIGHTS,
    claim_folder,
    differences,
    per_user_test_values,
    read_manifest,
    read_metrics,
    settings_differ,
)
from lmrec.run.run import Recommendation, Recommendations, Run

__all__ = ["FORMAT", "MANIFEST", "METRICS", "PER_USER", "TRIAL_ENDS", "VERSION", "WEIGHTS",
           "Recommendation", "Recommendations", "Run", "claim_folder", "differences", "fit", "per_user_test_values",
           "planned_manifest", "read_manifest", "read_metrics", "run_settings", "settings_differ", "task_of"]
