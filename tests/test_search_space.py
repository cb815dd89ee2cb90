"""Search spaces declared beside each model's Config: typed ranges, checked against the settings they range over."""

import pytest

from lmrec.models.base import MODELS
from lmrec.models.cf.lightgcn import LightGCN
from lmrec.search_space import Choice, FloatRange, IntRange, check_space
from lmrec.settings import SettingsError

TRAINABLE_CF = [name for task, name, cls in MODELS.entries() if task == "cf" and cls.trainable]


@pytest.mark.parametrize("name", TRAINABLE_CF)
def test_every_trainable_cf_model_has_a_valid_space(name):
    cls = MODELS.get(name, "cf")
    assert cls.search_space, f"{name} declares no search space"
    check_space(cls)  # every name a setting, every range value valid, the default inside


def test_models_without_training_search_nothing():
    assert not MODELS.get("pop", "cf").search_space


@pytest.mark.parametrize("space, match", [
    ({"emb_dimension": IntRange(8, 64)}, "'emb_dimension' is neither a lightgcn setting"),
    ({"epochs": IntRange(10, 50)}, "nor a training setting a search may vary"),
    ({"n_layers": IntRange(-1, 3)}, "n_layers=-1"),
    ({"lr": FloatRange(1e-2, 1e-1, log=True)}, r"the default 0.0005 is outside"),
    ({"init": Choice(("xavier", "uniform"))}, "init='uniform'"),
    ({"reg": (0.0, 1.0)}, "expected a FloatRange, IntRange or Choice"),
])
def test_a_bad_space_names_the_setting(space, match):
    with pytest.raises(SettingsError, match=match):
        check_space(LightGCN, space)


def test_ranges_check_their_bounds():
    with pytest.raises(ValueError, match="low < high"):
        FloatRange(0.5, 0.1)
    with pytest.raises(ValueError, match="log range needs low > 0"):
        IntRange(0, 4, log=True)
    with pytest.raises(ValueError, match="at least one option"):
        Choice(())
    assert FloatRange(1e-4, 1e-2, log=True).contains(5e-4) and not IntRange(1, 3).contains(2.5)
