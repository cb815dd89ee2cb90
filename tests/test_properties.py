"""Property-based tests (hypothesis): generated malformed files and setting values never give a traceback or a
silent result. A loader either reads exactly what a reference reading of the file says, or raises a
:class:`~lmrec.errors.LmrecError` naming the file; a setting is either accepted as the validated value or refused
with a :class:`~lmrec.settings.SettingsError` naming the key."""

from __future__ import annotations

import dataclasses
import tempfile
import warnings
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lmrec.cli import main
from lmrec.data.conversations import parse_conversation
from lmrec.data.loaders.lightgcn_txt import load_lightgcn_txt
from lmrec.data.loaders.movielens import load_movielens_100k
from lmrec.errors import LmrecError
from lmrec.models.base import MODELS
from lmrec.settings import SettingsError, build
from lmrec.train import TrainConfig

SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
# tokens a hand-edited or damaged file may hold: ids, negatives, huge numbers, words, punctuation, NUL, unicode
TOKEN = st.one_of(
    st.integers(min_value=0, max_value=50).map(str),
    st.integers(min_value=-5, max_value=2**64).map(str),
    st.sampled_from(["x4", "1.5", "", "\x00", "é", "1e3", "--", "\t", "0x1f", "٣"]),
    st.text(max_size=6),
)
LINE = st.lists(TOKEN, max_size=6).map(" ".join)
FILE = st.lists(LINE, max_size=8).map("\n".join)


def reference_pairs(text: str) -> set[tuple[int, int]] | None:
    """The (user, item) pairs a LightGCN file holds, or None if it is malformed (what lmrec must refuse)."""
    pairs = set()
    for line in text.split("\n"):
        if "\x00" in line:
            return None
        tokens = line.split()
        if not tokens:
            continue
        try:
            values = [int(t) for t in tokens]
        except ValueError:
            return None
        if any(not 0 <= v < 2**63 for v in values):
            return None
        pairs.update((values[0], item) for item in values[1:])
    return pairs


@SETTINGS
@given(train=FILE, test=FILE)
def test_lightgcn_files_load_exactly_or_fail_clearly(train, test):
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        (folder / "train.txt").write_text(train + "\n", encoding="utf-8")
        (folder / "test.txt").write_text(test + "\n", encoding="utf-8")
        expected = [reference_pairs(train), reference_pairs(test)]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                data = load_lightgcn_txt(folder, valid_fraction=0.0)
            except LmrecError as exc:
                assert None in expected or "empty" in str(exc), str(exc)
                assert str(folder) in str(exc) or "empty" in str(exc)
                assert len(str(exc)) < 500
                return
    assert None not in expected
    read = {(int(data.user_ids[u]), int(data.catalog.ids[i])) for u, i in zip(*data.train.nonzero(), strict=True)}
    read_test = {(int(data.user_ids[u]), int(data.catalog.ids[i])) for u, i in zip(*data.test.nonzero(), strict=True)}
    assert read == expected[0] and read_test == expected[1]


ITEM_LINE = st.tuples(st.integers(0, 30).map(str) | TOKEN, st.text(max_size=10).filter(lambda t: "|" not in t
                                                                                        and "\n" not in t))
RATING_LINE = st.lists(st.integers(0, 30).map(str) | TOKEN, min_size=3, max_size=5).map("\t".join)


@SETTINGS
@given(items=st.lists(ITEM_LINE, min_size=1, max_size=5), ratings=st.lists(RATING_LINE, max_size=6))
def test_movielens_100k_files_load_or_fail_clearly(items, ratings):
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        flags = "|".join(["0"] * 19)
        (folder / "u.item").write_text("\n".join(f"{i}|{t}|01-Jan-1995||url|{flags}" for i, t in items) + "\n",
                                       encoding="latin-1", errors="replace")
        (folder / "u.data").write_text("\n".join(ratings) + "\n", encoding="utf-8")
        try:
            data = load_movielens_100k(folder)
        except LmrecError as exc:
            assert "u.item" in str(exc) or "u.data" in str(exc), str(exc)
            assert len(str(exc)) < 500
            return
    good = [r.split("\t") for r in ratings if r.strip()]
    assert len(data) == len(good)  # every rating line became exactly one interaction


def field_values():
    return st.one_of(st.integers(-3, 10**6), st.floats(allow_nan=True, allow_infinity=True), st.booleans(),
                     st.none(), st.text(max_size=8), st.lists(st.text(max_size=4), max_size=3),
                     st.sampled_from(["shared", "per_row", "per-row", "mlp", "gru", "adamw", "hr@10", "recall@20"]))


CONFIGS = sorted({cls.Config for _, _, cls in MODELS.entries()} | {TrainConfig}, key=lambda c: c.__name__)


@SETTINGS
@given(data=st.data())
@pytest.mark.parametrize("config", CONFIGS, ids=lambda c: c.__name__)
def test_any_setting_value_is_validated_or_refused_by_name(config, data):
    names = [f.name for f in dataclasses.fields(config)] or ["anything"]
    key = data.draw(st.sampled_from([*names, "not_a_setting"]))
    value = data.draw(field_values())
    try:
        built = build(config, {key: value})
    except SettingsError as exc:
        assert key in str(exc)
        return
    assert getattr(built, key) == value or getattr(built, key) == (tuple(value) if isinstance(value, list) else value) \
        or isinstance(value, (str, bool, int, float))  # a lax conversion ("5" -> 5, 1 -> 1.0) that validated


@settings(max_examples=60, deadline=None)
@given(flag=st.sampled_from(["--epochs", "--lr", "--emb-dim", "--n-layers", "--metric", "--device", "--init-std",
                             "--patience", "--optimizer", "--batch-size"]),
       value=st.one_of(st.integers(-3, 3).map(str), st.sampled_from(["abc", "", "1e-3", "-0.5", "nan", "inf", "[1]",
                                                                     "{}", "null", "cuda", "ndcg@0"])))
def test_cli_settings_never_give_a_traceback(flag, value):
    with tempfile.TemporaryDirectory() as tmp:  # an invalid value stops before any data is read
        code, _, err = run_cli(["train", "lightgcn", "--dataset", str(Path(tmp) / "missing"), flag, value,
                                "--out", str(Path(tmp) / "out")])
    assert_a_cli_error(code, err)
    assert flag in err or "missing" in err, err
    assert f"{flag[2:].replace('-', '_')}=" not in err  # the flag, never the Python keyword


@settings(max_examples=200, deadline=None)
@given(st.lists(st.text(max_size=30), max_size=6))
def test_conversation_parser_returns_turns_or_names_the_line(lines):
    try:
        turns = parse_conversation(lines, "<test>")
    except LmrecError as exc:
        assert "<test>" in str(exc)
        return
    assert turns and all(t.role in ("user", "system") and t.text for t in turns)


FIXTURES = Path(__file__).resolve().parent / "data" / "fixtures"
FOLDERS = sorted(str(p) for p in [*FIXTURES.iterdir(), *(FIXTURES / "crs").iterdir()] if p.is_dir() and p.name != "crs")
FORMAT_NAMES = ["lightgcn", "movielens-100k", "movielens-latest", "movielens-1m", "amazon-2014", "amazon-2018",
                "unisrec", "lcrec", "inspired", "redial"]
PYTHON_KEYWORDS = ("format=", "split=", "min_rating=", "max_samples=", "max_generate=", "generate_splits=", "q_mode=")


def run_cli(argv: list[str]) -> tuple[int, str, str]:
    """(exit status, stdout, stderr) of ``lmrec argv``; the parser's refusals included."""
    import contextlib
    import io

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            code = main(argv)
        except SystemExit as exc:
            code = exc.code
    return code, out.getvalue(), err.getvalue()


def assert_a_cli_error(code: int, err: str) -> None:
    """Exit status 2 and one ``lmrec: error:`` line that names flags, never Python keywords."""
    assert code == 2 and err.startswith("lmrec: error: ") and err.count("\n") == 1, (code, err)
    assert "Traceback" not in err and not any(keyword in err for keyword in PYTHON_KEYWORDS), err


@settings(max_examples=80, deadline=None)
@given(folder=st.sampled_from(FOLDERS), fmt=st.sampled_from([*FORMAT_NAMES, "csv", ""]),
       split=st.sampled_from([None, "fixed", "loo", "ratio:0.5", "ratio:0.4,0.3,0.3+thin:0.5", "bogus"]))
def test_data_stats_of_any_folder_in_any_format_counts_or_names_the_problem(folder, fmt, split):
    """Every fixture folder read as every format: the stats, or one line naming the folder or the flag."""
    code, out, err = run_cli(["data", "stats", folder, "--format", fmt, *(["--split", split] if split else [])])
    if code == 0:
        assert "checksum" in out and not err, err
        return
    assert_a_cli_error(code, err)
    assert folder in err or "--format" in err or "--split" in err, err


MAPPING_VALUES = st.one_of(
    st.lists(st.tuples(st.sampled_from(["train", "valid", "test", "later", ""]),
                       st.sampled_from(["0", "2", "-1", "none", "x", "1.5", ""])), max_size=3)
    .map(lambda pairs: ",".join(f"{k}={v}" for k, v in pairs)),
    st.sampled_from(["train:2", "{bad", '{"train": 2}', '{"train": -2}', "[1]", "=", "train=2,,valid=1", "none"]),
)


@settings(max_examples=80, deadline=None)
@given(flag=st.sampled_from(["--max-samples", "--max-generate", "--generate-splits", "--q-mode", "--max-length",
                             "--seed", "--dtype", "--device", "--n-titles", "--item-prompt"]),
       value=st.one_of(MAPPING_VALUES, st.sampled_from(["train,test", "later", "completion", "0", "-3", "abc", ""])))
def test_crs_prepare_options_are_read_or_named_before_any_work(flag, value):
    """A value is refused naming its flag, or accepted; either way nothing is loaded (the dataset is missing)."""
    with tempfile.TemporaryDirectory() as tmp:
        code, _, err = run_cli(["crs", "prepare", "--dataset", str(Path(tmp) / "missing"), flag, value,
                                "--out", str(Path(tmp) / "out")])
        assert not (Path(tmp) / "out").exists()
    assert_a_cli_error(code, err)
    assert flag in err or "missing" in err, err
