"""``--device cuda`` end to end: training, full ranking, text and LLM encoding, the RTA aggregator, each on the GPU
against the same work on the CPU. Skipped on a machine without a CUDA GPU; `make test-cuda` runs them alone."""

from __future__ import annotations

import warnings

import pytest
import torch

import lmrec
from helpers import planted_data, planted_features, random_level
from lmrec.eval.ranking import evaluate
from lmrec.models.base import Model
from lmrec.models.crs.rta.aggregators import build_aggregator
from lmrec.models.queries import KnownUsers, user_scorer

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU on this machine")

BPR = {"epochs": 60, "lr": 0.05, "eval_every": 10, "batch_size": 256, "progress": False}  # tests/models' settings
NCE = {"epochs": 20, "lr": 0.01, "eval_every": 5, "batch_size": 256, "progress": False}
TRAIN = {"mf": BPR, "lightgcn": BPR, "sgl": BPR, "alpharec": NCE}


def make(name: str) -> Model:
    options = {"features": planted_features(), "n_negatives": 32} if name == "alpharec" else {"emb_dim": 16}
    return lmrec.get_model(name)(**options)


@pytest.fixture(scope="module")
def data():
    return planted_data()


@pytest.mark.parametrize("name", ["mf", "lightgcn", "alpharec", "sgl"])
def test_training_on_cuda_learns_and_the_run_reloads_on_either_device(name, data, tmp_path):
    run = lmrec.fit(make(name), data, {**TRAIN[name], "device": "cuda"}, out=tmp_path / name)
    assert run.model.device.type == "cuda"
    chance = random_level(data, "valid", 5)
    recall = evaluate(user_scorer(run.model.score), data, "valid", ks=(5,),
                      metrics=("recall",)).summary()["recall@5"].mean
    assert recall > chance + 0.08, (name, recall, chance)
    on_cpu = lmrec.Run.load(tmp_path / name, data=data, device="cpu")
    cpu_scores = on_cpu.model.score(KnownUsers(list(range(data.n_users))))
    torch.testing.assert_close(run.model.score(KnownUsers(list(range(data.n_users)))).cpu(), cpu_scores, rtol=1e-4,
                               atol=1e-4)


def test_full_ranking_on_cuda_equals_the_cpu(data, tmp_path):
    lmrec.fit(make("lightgcn"), data, TRAIN["lightgcn"], out=tmp_path / "lightgcn")
    results = {device: lmrec.Run.load(tmp_path / "lightgcn", data=data, device=device).evaluate("test")
               for device in ("cpu", "cuda")}
    cpu, gpu = (results[d].summary() for d in ("cpu", "cuda"))
    for metric in cpu:
        assert gpu[metric].mean == pytest.approx(cpu[metric].mean, abs=1e-6), metric


def test_the_same_seed_trains_alike_on_both_devices(data):
    """Sampling and initialisation come from CPU generators, so only float rounding separates the two runs."""
    cpu = lmrec.fit(make("mf"), data, {**BPR, "epochs": 2})
    gpu = lmrec.fit(make("mf"), data, {**BPR, "epochs": 2, "device": "cuda"})
    for metric, block in cpu.metrics["test"].items():
        assert gpu.metrics["test"][metric]["mean"] == pytest.approx(block["mean"], abs=0.01), metric


def test_text_encoding_on_cuda_matches_the_cpu():
    from lmrec.text import get_encoder

    titles = ["Heat (1995)", "Toy Story (1995)", "The Matrix (1999)", "A movie with a very long title " * 8]
    cpu = torch.as_tensor(get_encoder("minilm", device="cpu").encode(titles))
    gpu = torch.as_tensor(get_encoder("minilm", device="cuda").encode(titles))
    assert torch.nn.functional.cosine_similarity(cpu, gpu).min() > 0.9999


def test_llm_context_encoding_on_cuda_matches_the_cpu():
    from lmrec.llm import CausalLM

    contexts = ["User: I liked Heat (1995). Any thriller?", "User: Something funny please.\nSystem: Try Airplane!"]
    q = {d: CausalLM.load("smollm2-135m", dtype="float32", device=d).encode_texts(contexts) for d in ("cpu", "cuda")}
    assert torch.nn.functional.cosine_similarity(q["cpu"], q["cuda"]).min() > 0.999


def test_gru_aggregator_on_cuda_matches_the_cpu():
    torch.manual_seed(0)
    agg = build_aggregator("gru", 32)
    tokens, lengths = torch.randn(6, 7, 32), torch.tensor([1, 7, 3, 2, 7, 4])
    grads = {}
    for device in ("cpu", "cuda"):
        agg.to(device).zero_grad()
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # e.g. cuDNN copying weights that are "not part of a single chunk"
            out = agg(tokens.to(device), lengths)
        out.sum().backward()
        grads[device] = (out.detach().cpu(), [p.grad.cpu() for p in agg.parameters() if p.grad is not None])
    torch.testing.assert_close(grads["cuda"][0], grads["cpu"][0], rtol=1e-4, atol=1e-5)
    for gpu, cpu in zip(grads["cuda"][1], grads["cpu"][1], strict=True):
        torch.testing.assert_close(gpu, cpu, rtol=1e-4, atol=1e-5)
