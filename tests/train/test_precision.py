"""Mixed precision (lmrec.train.precision, TrainConfig.precision): the hardware rule, bf16 training on planted data,
what stays fp32, the manifest's record and matching runs recorded before the setting existed."""

import json

import numpy as np
import pytest
import torch

import lmrec
from helpers import planted_data, planted_features, random_level, single_thread  # noqa: F401
from lmrec import environment
from lmrec.errors import LmrecError
from lmrec.eval.ranking import evaluate
from lmrec.llm import resolve_dtype
from lmrec.models.base import get_model
from lmrec.models.cf.alpharec import AlphaRec
from lmrec.models.queries import KnownUsers, user_scorer
from lmrec.run import planned_manifest, settings_differ
from lmrec.train import TrainConfig
from lmrec.train import precision as P
from lmrec.train.trainer import STREAM_SETTINGS

NCE = dict(epochs=10, lr=0.01, eval_every=5, batch_size=256, progress=False)
AMX = "fpu sse avx2 avx512f avx512_bf16 amx_bf16 amx_tile amx_int8"
AVX512_BF16 = "fpu sse avx2 avx512f avx512_bf16 avx512_fp16"


@pytest.fixture
def cpu(monkeypatch, tmp_path):
    """Set this machine's /proc/cpuinfo flags for the test: ``cpu("flag flag ...")``."""

    def set_flags(flags: str, vendor: str = "GenuineIntel") -> None:
        info = tmp_path / "cpuinfo"
        info.write_text(f"processor\t: 0\nvendor_id\t: {vendor}\nmodel name\t: a CPU\nflags\t\t: {flags}\n\n"
                        "processor\t: 1\nvendor_id\t: SomeoneElse\n", "ascii")
        monkeypatch.setattr(environment, "CPUINFO", info)
        monkeypatch.delenv(P.AUTO_ENV, raising=False)  # the suite's pin (conftest) off: the hardware decides

    return set_flags


@pytest.fixture(scope="module")
def data():
    return planted_data()


# -- the rule ----------------------------------------------------------------------------------------------------
def test_auto_takes_bf16_with_amx_or_on_an_amd_cpu_with_avx512_bf16(cpu, monkeypatch):
    cpu(AMX)
    assert P.cpu_flags() >= {"amx_bf16", "avx512_bf16"} and P.cpu_info()["vendor_id"] == "GenuineIntel"
    choice = P.choose("auto", "cpu", bf16_path=True)
    assert (choice.used, choice.auto) == ("bf16", "bf16") and "AMX" in choice.why
    cpu(AVX512_BF16)  # this kind of Xeon: bf16 instructions, no AMX: slower than fp32 (bench/results/precision.md)
    choice = P.choose("auto", "cpu", bf16_path=True)
    assert (choice.used, choice.auto) == ("fp32", "fp32") and "no amx_bf16" in choice.why
    cpu(AVX512_BF16, vendor="AuthenticAMD")  # an EPYC with the same flag: 1.8-2.5x faster (precision-epyc.md)
    choice = P.choose("auto", "cpu", bf16_path=True)
    assert (choice.used, choice.auto) == ("bf16", "bf16") and "AMD" in choice.why
    cpu("fpu sse avx2", vendor="AuthenticAMD")  # no bf16 instructions: emulated
    assert P.choose("auto", "cpu", bf16_path=True).used == "fp32"
    monkeypatch.setenv(P.AUTO_ENV, "fp32")  # the pin wins over the hardware, for the LLM too
    cpu_pinned = P.choose("auto", "cpu", bf16_path=True)
    assert cpu_pinned.used == "fp32" and P.AUTO_ENV in cpu_pinned.why
    monkeypatch.setenv(P.AUTO_ENV, "bf16")
    assert P.choose("auto", "cpu", bf16_path=True).used == "bf16" and resolve_dtype("auto") == torch.bfloat16
    assert P.choose("fp32", "cpu", bf16_path=True).used == "fp32"  # an explicit choice is kept
    monkeypatch.setenv(P.AUTO_ENV, "fp16")
    with pytest.raises(LmrecError, match="LMREC_AUTO_PRECISION='fp16': expected 'fp32' or 'bf16'"):
        P.choose("auto", "cpu", bf16_path=True)


def test_an_explicit_choice_is_kept_and_a_model_without_dense_products_runs_fp32(cpu):
    cpu(AVX512_BF16)
    assert P.choose("bf16", "cpu", bf16_path=True) == P.PrecisionChoice("bf16", "fp32", P.fast_bf16("cpu")[1])
    cpu(AMX)
    assert P.choose("fp32", "cpu", bf16_path=True).used == "fp32"
    choice = P.choose("bf16", "cpu", bf16_path=False, model="lightgcn")
    assert (choice.used, choice.auto) == ("fp32", "fp32") and "lightgcn has no dense product" in choice.why
    with pytest.raises(ValueError, match="'auto', 'fp32' or 'bf16'"):
        P.choose("fp16", "cpu", bf16_path=True)


def test_cuda_counts_when_it_has_bf16(monkeypatch):
    monkeypatch.delenv(P.AUTO_ENV)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    assert P.choose("auto", "cuda", bf16_path=True).used == "bf16"
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    assert P.choose("auto", "cuda", bf16_path=True).used == "fp32"
    assert P.choose("auto", "mps", bf16_path=True).used == "fp32"


def test_no_cpuinfo_means_no_flags(monkeypatch, tmp_path):
    monkeypatch.setattr(environment, "CPUINFO", tmp_path / "absent")
    monkeypatch.delenv(P.AUTO_ENV)
    assert P.cpu_info() == {}
    assert P.cpu_flags() == frozenset() and P.choose("auto", "cpu", bf16_path=True).used == "fp32"


def test_a_models_training_config_holds_the_choice_never_auto(cpu):
    cpu(AMX)
    assert TrainConfig().precision == "auto"
    assert get_model("alpharec").train_config({}).precision == "bf16"
    assert get_model("linear_map").train_config({}).precision == "bf16"
    assert get_model("kar").train_config({}).precision == "bf16"
    assert get_model("lightgcn").train_config({}).precision == "fp32"
    assert get_model("alpharec").train_config(TrainConfig(precision="auto")).precision == "bf16"
    cpu(AVX512_BF16)
    assert get_model("alpharec").train_config({}).precision == "fp32"
    assert get_model("alpharec").train_config({"precision": "bf16"}).precision == "bf16"


def test_precision_is_not_a_stream_setting():
    """The same seed draws the same batches and initial state in fp32 and bf16: their difference is precision."""
    assert "precision" not in STREAM_SETTINGS
    identity = AlphaRec().identity()
    assert TrainConfig(precision="fp32").stream_seed(identity) == TrainConfig(precision="bf16").stream_seed(identity)


# -- bf16 training -----------------------------------------------------------------------------------------------
def test_bf16_runs_the_mlp_in_bf16_and_the_loss_sums_and_vectors_in_fp32(data):
    model = AlphaRec(features=planted_features(dim=512), n_negatives=16)  # wide: users through the items
    model.precision = "bf16"
    model.prepare(data, seed=0)
    assert model.users_via_items
    seen = []
    model.net.f[2].register_forward_hook(lambda module, inputs, out: seen.append(out.dtype))  # the second layer
    batch = next(model.batches(np.random.default_rng(0), 64))
    loss = model.loss(batch)
    assert seen == [torch.bfloat16] * 2 and loss.dtype == torch.float32  # users' rows, items' rows
    loss.backward()
    assert all(p.grad.dtype == torch.float32 and torch.isfinite(p.grad).all() for p in model.net.parameters())
    users, items = model.embed()
    assert users.dtype == items.dtype == torch.float32
    model.users_via_items = False  # the dense way too
    seen.clear()
    assert model.loss(batch).dtype == torch.float32 and seen == [torch.bfloat16, torch.bfloat16]


@pytest.mark.parametrize("name", ["alpharec", "linear_map"])
def test_bf16_training_stays_finite_and_learns_the_planted_structure(name, data, tmp_path):
    runs = {}
    for precision in ("fp32", "bf16"):
        model = get_model(name)(features=planted_features(), n_negatives=32)
        runs[precision] = lmrec.fit(model, data, dict(NCE, precision=precision), out=tmp_path / precision)
    for precision, run in runs.items():
        assert all(np.isfinite(r.loss) for r in run.log.records), precision
        assert run.model.precision == precision
        recall = evaluate(user_scorer(run.model.score), data, "valid", ks=(5,),
                          metrics=("recall",)).summary()["recall@5"].mean
        assert recall > 1.5 * random_level(data, "valid", 5), (precision, recall)
    fp32, bf16 = (runs[p].log.records[0].loss for p in ("fp32", "bf16"))
    assert fp32 != bf16 and abs(fp32 - bf16) < 0.05 * abs(fp32)  # the same batches, the precision apart
    loaded = lmrec.Run.load(tmp_path / "bf16")
    assert loaded.model.precision == "bf16"
    five = KnownUsers(np.arange(5))
    torch.testing.assert_close(loaded.model.score(five), runs["bf16"].model.score(five))


def test_kar_and_rlmrec_train_in_bf16(data):
    for name in ("kar", "rlmrec"):
        model = get_model(name)(features=planted_features(), emb_dim=8)
        log = model.fit(data, dict(NCE, epochs=2, eval_every=2, precision="bf16"))
        assert model.precision == "bf16" and all(np.isfinite(r.loss) for r in log.records), name


# -- the manifest and matching records ---------------------------------------------------------------------------
def test_the_manifest_records_the_choice_and_auto_is_resolved_before_matching(cpu, data):
    cpu(AVX512_BF16)
    here, _ = planned_manifest("alpharec", data, {"epochs": 1})
    assert here["train_config"]["precision"] == "fp32"
    assert here["precision"]["used"] == "fp32" and "AMX" in here["precision"]["why"]
    older = json.loads(json.dumps(here))
    del older["train_config"]["precision"]
    del older["precision"]
    assert settings_differ(older, here) == []  # recorded before the setting: fp32, what auto means here
    cpu(AMX)
    there, _ = planned_manifest("alpharec", data, {"epochs": 1})
    assert there["train_config"]["precision"] == "bf16" and there["precision"]["auto"] == "bf16"
    assert settings_differ(older, there) == ["train_config"]  # a bf16 run never matches an fp32 record
    assert settings_differ(here, there) == ["train_config"]
    fp32, _ = planned_manifest("alpharec", data, {"epochs": 1, "precision": "fp32"})
    assert settings_differ(older, fp32) == [] and fp32["precision"]["auto"] == "bf16"
    lightgcn, _ = planned_manifest("lightgcn", data, {"epochs": 1})
    assert lightgcn["train_config"]["precision"] == "fp32"  # nothing for bf16 to speed up: fp32 on any machine
