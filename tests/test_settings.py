"""One way to declare settings: validated dataclasses, one error format, CLI flags generated from the fields."""

from __future__ import annotations

import argparse
from typing import Literal

import pytest
from pydantic import PositiveInt

from lmrec.cli import build_parser, main
from lmrec.cli.flags import add_settings, given
from lmrec.models.base import MODELS
from lmrec.settings import SettingsError, build, settings
from lmrec.train import TrainConfig


@settings
class Example:
    size: PositiveInt = 4
    mode: Literal["fast", "exact"] = "fast"
    fields: tuple[str, ...] = ("title",)
    ratio: float | None = None
    on: bool = True
    per_split: dict[str, int] = None  # type: ignore[assignment]


def test_build_validates_types_choices_ranges_and_keys():
    assert build(Example, {"size": "3", "fields": ["a", "b"]}) == Example(size=3, fields=("a", "b"))
    with pytest.raises(SettingsError) as exc:
        build(Example, {"size": 0, "mode": "fats"}, what="model setting")
    message = str(exc.value)
    assert "model setting size=0: expected greater than 0" in message
    assert "model setting mode='fats': expected 'fast' or 'exact'" in message
    with pytest.raises(SettingsError, match="unknown setting sise; the settings of Example are: size, mode"):
        build(Example, {"sise": 3})
    with pytest.raises(SettingsError, match="ratio='x'"):
        build(Example, {"ratio": "x"})


def test_every_model_config_and_train_config_validates_assignment():
    for _, _, cls in MODELS.entries():
        config = cls.Config()
        for field in ("emb_dim", "n_negatives", "dim", "tau"):
            if hasattr(config, field):
                with pytest.raises(ValueError):
                    setattr(config, field, -5)
    config = TrainConfig()
    with pytest.raises(ValueError):
        config.epochs = 0


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_settings(parser, Example, "example")
    return parser.parse_args(list(argv))


def test_flags_are_generated_from_the_fields():
    args = parse("--size", "7", "--mode", "exact", "--fields", "title,genres", "--ratio", "none", "--no-on",
                 "--per-split", '{"train": 3}')
    assert given(args, Example) == {"size": 7, "mode": "exact", "fields": ["title", "genres"], "ratio": None,
                                    "on": False, "per_split": {"train": 3}}
    assert given(parse(), Example) == {}  # flags not given keep the defaults
    with pytest.raises(SystemExit):
        parse("--mode", "fats")  # argparse lists the choices


def test_train_help_lists_the_models_settings_and_its_paper_training_values(capsys):
    with pytest.raises(SystemExit):
        build_parser(["train", "alpharec"]).parse_args(["train", "alpharec", "--help"])
    out = capsys.readouterr().out
    assert "alpharec settings" in out and "--negatives {shared,per_row}" in out and "--mlp-ratio" in out
    assert "--lr LR" in out and "default 0.0005" in out  # AlphaRec's lr, not TrainConfig's 1e-3
    assert "--device {cpu,cuda,mps}" in out and "--checkpoint-every" in out


def test_a_new_training_setting_touches_one_class():
    """Every TrainConfig field is a flag of `lmrec train` and `lmrec compare` without further code."""
    parser = build_parser(["train", "mf"])
    values = {"progress": (), "optimizer": ("adamw",), "device": ("cpu",), "metric": ("ndcg@10",),
              "streams": ("shared",), "precision": ("bf16",)}
    for field in TrainConfig.__dataclass_fields__:
        flag = "--" + field.replace("_", "-")
        args = parser.parse_args(["train", "mf", "--dataset", "d", "--out", "o", flag, *values.get(field, ("1",))])
        assert field in given(args, TrainConfig)


def test_untrained_models_take_the_run_flags_refuse_training_flags_and_the_model_may_follow_options(capsys):
    args = build_parser(["train", "dense"]).parse_args(["train", "dense", "--dataset", "d", "--out", "o",
                                                        "--encode-batch-size", "8", "--seed", "3", "--no-progress"])
    assert args.model == "dense" and given(args, TrainConfig) == {"seed": 3, "progress": False}
    assert main(["train", "pop", "--dataset", "d", "--out", "o", "--epochs", "3", "--seed", "1"]) == 2
    assert capsys.readouterr().err == "lmrec: error: pop does not train: --epochs does not apply\n"
    argv = ["train", "--dataset", "d", "alpharec", "--emb-dim", "3", "--out", "o"]
    assert build_parser(argv).parse_args(argv).model == "alpharec"
