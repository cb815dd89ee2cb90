"""The shared trainer: validation-only selection, best-state restore, early stopping, logs, divergence."""

import dataclasses
import json
import math

import numpy as np
import pytest
import scipy.sparse as sp
import torch

import lmrec.eval.ranking as validation_module  # what the trainer's validation ranks with
from helpers import make_split, planted_data, single_thread  # noqa: F401
from lmrec import clock
from lmrec.clock import ManualClock
from lmrec.data.interactions import SplitData
from lmrec.errors import LmrecError
from lmrec.eval.ranking import evaluate
from lmrec.models.cf.alpharec import AlphaRec
from lmrec.models.cf.lightgcn import MF, LightGCN
from lmrec.models.queries import user_scorer
from lmrec.models.torch_base import TorchRecommender
from lmrec.settings import SettingsError
from lmrec.train import TrainConfig

FAST = dict(epochs=6, lr=0.05, batch_size=256, eval_every=2, patience=20, progress=False)


class Scripted(TorchRecommender):
    """A CF model whose validation quality follows a script, one value per epoch; ``fit`` runs the shared
    trainer with the CF validation of :class:`TorchRecommender` (full ranking of ``data.valid``).

    score = quality * (valid targets) + fixed noise: quality 2 ranks targets first, -1 last.
    """

    name = "scripted"

    def __init__(self, data: SplitData, qualities, loss=lambda w: (w - 1) ** 2):
        super().__init__()
        self.truth = torch.from_numpy(data.valid.toarray())
        self.noise = torch.from_numpy(np.random.default_rng(0).random(self.truth.shape).astype(np.float32))
        self.w = torch.nn.Parameter(torch.zeros(()))
        self.qualities, self.quality, self.epoch, self._loss = list(qualities), 0.0, 0, loss
        self.loaded: list[float] = []

    def build(self, data):
        return torch.nn.Module()

    def parameters(self):
        return iter([self.w])

    def batches(self, rng, batch_size):
        self.quality = self.qualities[self.epoch]
        self.epoch += 1
        yield None

    def loss(self, batch):
        return self._loss(self.w)

    def score_users(self, query):
        users = torch.as_tensor(query.users, dtype=torch.long)
        return self.quality * self.truth[users] + self.noise[users]

    def state(self):
        return {"quality": self.quality}

    def load_state(self, state):
        self.quality = state["quality"]
        self.loaded.append(state["quality"])

    def set_training(self, training):
        pass


def valid_score(model, data, seed, metric="recall@20"):
    name, k = metric.split("@")
    result = evaluate(user_scorer(model.score), data, "valid", ks=(int(k),), metrics=(name,), seed=seed)
    return result.summary()[metric].mean


def with_other_test(data: SplitData) -> SplitData:
    """Same train and valid, a different test split (each user's test items replaced by other unseen items)."""
    seen = (data.train + data.valid + data.test).toarray() > 0
    rng = np.random.default_rng(9)
    test = np.zeros(seen.shape, np.float32)
    for u in range(data.n_users):
        test[u, rng.choice(np.flatnonzero(~seen[u]), 3, replace=False)] = 1
    return SplitData(data.name, data.user_ids, data.catalog, data.train, data.valid, sp.csr_matrix(test))


# -- selection on validation only --------------------------------------------------------------------------
def test_selection_evaluates_only_the_validation_split(monkeypatch):
    calls = []

    def spy(scorer, data, split="test", **kwargs):
        calls.append(split)
        return evaluate(scorer, data, split, **kwargs)

    monkeypatch.setattr(validation_module, "evaluate", spy)
    MF().fit(planted_data(), FAST)
    assert calls == ["valid"] * 3  # epochs 2, 4, 6


def test_test_split_does_not_influence_training():
    data = planted_data()
    other = with_other_test(data)
    assert other.test.nnz and (other.test != data.test).nnz and (other.valid != data.valid).nnz == 0
    runs = []
    for d in (data, other):
        model = LightGCN()
        log = model.fit(d, FAST)
        runs.append((model, log))
    (m1, l1), (m2, l2) = runs
    assert [(r.epoch, r.loss, r.valid) for r in l1.records] == [(r.epoch, r.loss, r.valid) for r in l2.records]
    assert l1.best_epoch == l2.best_epoch
    for key, value in m1.state().items():
        assert torch.equal(value, m2.state()[key]), key


# -- best state ---------------------------------------------------------------------------------------------
def test_best_state_is_restored_scripted():
    data = planted_data()
    model = Scripted(data, [0.2, 2.0, -1.0, 0.0, 0.3])
    cfg = TrainConfig(epochs=5, eval_every=1, patience=10, progress=False, lr=0.1, metric="ndcg@5")
    log = model.fit(data, cfg)
    scores = [r.valid["ndcg@5"] for r in log.records]
    assert log.best_epoch == 2 and log.best_score == scores[1]
    assert all(s < scores[1] for i, s in enumerate(scores) if i != 1)  # the last epoch was worse
    assert model.quality == 2.0 and model.loaded == [2.0]
    assert valid_score(model, data, cfg.seed, "ndcg@5") == log.best_score
    assert log.stopped == "max epochs"
    assert 0 <= log.seconds_to_best <= log.total_seconds


def test_ties_keep_the_earliest_best_epoch():
    data = planted_data()
    model = Scripted(data, [2.0, 2.0, 2.0])
    log = model.fit(data, TrainConfig(epochs=3, eval_every=1, progress=False))
    assert log.best_epoch == 1


def test_best_state_is_restored_real_model():
    data = planted_data()
    model = LightGCN()
    cfg = dict(FAST, epochs=12, eval_every=3, lr=0.2, metric="ndcg@20")
    log = model.fit(data, cfg)
    by_epoch = {r.epoch: r.valid["ndcg@20"] for r in log.records if r.valid}
    assert set(by_epoch) == {3, 6, 9, 12}
    assert log.best_score == max(by_epoch.values()) == by_epoch[log.best_epoch]
    # (with these seeds the best epoch is 9, not the last one, so this checks the restore)
    assert valid_score(model, data, TrainConfig().seed, "ndcg@20") == pytest.approx(log.best_score, abs=1e-12)


def test_on_validation_hears_every_validation_and_can_stop_training(tmp_path):
    data = planted_data()
    heard = []
    MF().fit(data, FAST, on_validation=lambda epoch, metrics: heard.append((epoch, metrics["recall@20"])))
    assert [epoch for epoch, _ in heard] == [2, 4, 6]

    class Stop(Exception):
        pass

    def stop_at_4(epoch, metrics):
        if epoch == 4:
            raise Stop

    with pytest.raises(Stop):
        MF().fit(data, FAST, folder=tmp_path / "run", on_validation=stop_at_4)
    logged = [json.loads(line)["epoch"] for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert logged == [1, 2, 3, 4]  # the epoch it stopped at is logged, nothing after


# -- early stopping, time budget, metric --------------------------------------------------------------------
def test_early_stopping_after_patience_evaluations():
    data = planted_data()
    log = MF().fit(data, dict(FAST, lr=0.0, epochs=50, eval_every=1, patience=3))
    assert [r.epoch for r in log.records] == [1, 2, 3, 4]
    assert log.best_epoch == 1 and log.stopped.startswith("early stop")
    # patience counts evaluations, not epochs
    log = MF().fit(data, dict(FAST, lr=0.0, epochs=50, eval_every=2, patience=2))
    assert len(log.records) == 6 and log.best_epoch == 2


def test_no_early_stop_while_improving():
    data = planted_data()
    model = Scripted(data, [-1.0, 0.0, 0.2, 0.5, 2.0])
    log = model.fit(data, TrainConfig(epochs=5, eval_every=1, patience=1, metric="ndcg@5", progress=False))
    scores = [r.valid["ndcg@5"] for r in log.records]
    assert (np.diff(scores) > 0).all()
    assert len(log.records) == 5 and log.stopped == "max epochs" and log.best_epoch == 5


def test_time_budget_stops_after_an_evaluation():
    """Each epoch takes 50 s on lmrec's clock: a 2-minute budget is spent after the third epoch."""
    data = planted_data()
    model = Scripted(data, [1.0] * 10)
    manual, epoch = ManualClock(start=5.0), model.batches  # a machine started 5 s ago

    def fifty_seconds_each(rng, size):
        manual.advance(50)
        yield from epoch(rng, size)

    model.batches = fifty_seconds_each
    with clock.use(manual):
        log = model.fit(data, TrainConfig(epochs=10, eval_every=5, max_minutes=2, progress=False))
    assert len(log.records) == 3 and log.records[-1].valid is not None  # evaluated before it stops
    assert [r.seconds for r in log.records] == [50.0, 50.0, 50.0] and log.total_seconds == 150.0
    assert log.stopped == "time budget of 2.0 minutes" and log.best_epoch == 3


def test_selection_metric_is_used_and_recorded():
    data = planted_data()
    model = Scripted(data, [0.5, 2.0, -1.0])
    log = model.fit(data, TrainConfig(epochs=3, eval_every=1, metric="ndcg@5", progress=False))
    for r in log.records:
        assert {"ndcg@5", "recall@20", "recall@5", "hr@20"} <= set(r.valid)
    assert log.best_score == max(r.valid["ndcg@5"] for r in log.records)
    with pytest.raises(ValueError, match="recall"):
        TrainConfig(metric="recall", progress=False)
    with pytest.raises(SettingsError, match="metric='recall'"):
        Scripted(data, [1.0]).fit(data, dict(metric="recall", progress=False))


def test_small_catalog_with_small_selection_k():
    rng = np.random.default_rng(0)
    pairs = [(u, int(i)) for u in range(8) for i in rng.choice(10, 4, replace=False)]
    data = make_split(pairs[0::4] + pairs[1::4], pairs[2::4], pairs[3::4], 8, 10)
    # epoch 1 ranks by noise only, epoch 2 puts every target first
    log = Scripted(data, [0.0, 2.0]).fit(data, TrainConfig(epochs=2, eval_every=1, metric="recall@5", progress=False))
    assert log.best_epoch == 2
    assert log.records[1].valid["recall@5"] == 1.0 and "recall@10" in log.records[1].valid


# -- log file and divergence ---------------------------------------------------------------------------------
def test_log_jsonl_one_line_per_epoch(tmp_path):
    data = planted_data()
    path = tmp_path / "run" / "log.jsonl"
    log = MF().fit(data, dict(FAST, epochs=5, eval_every=2), folder=tmp_path / "run")
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert [line["epoch"] for line in lines] == [1, 2, 3, 4, 5]
    assert [line["valid"] is not None for line in lines] == [False, True, False, True, True]  # last epoch too
    for line, record in zip(lines, log.records):
        assert line == dataclasses.asdict(record)
        assert math.isfinite(line["loss"]) and line["seconds"] >= 0


@pytest.mark.parametrize("bad", [math.nan, math.inf])
def test_non_finite_loss_raises(bad):
    data = planted_data()
    model = Scripted(data, [1.0] * 3, loss=lambda w: w * 0 + bad)
    with pytest.raises(FloatingPointError, match="epoch 1"):
        model.fit(data, TrainConfig(epochs=3, eval_every=1, progress=False))


def test_optimizer_updates_parameters():
    data = planted_data()
    model = Scripted(data, [1.0] * 3)
    model.fit(data, TrainConfig(epochs=3, eval_every=1, lr=0.1, progress=False))
    assert model.w.item() > 0.1  # moved toward the minimum of (w - 1)^2


def test_train_defaults_are_merged_with_overrides():
    cfg = LightGCN.train_config({"epochs": 3})
    assert cfg.epochs == 3 and cfg.lr == 5e-4 and cfg.eval_every == 5
    assert AlphaRec.train_config(None).lr == 5e-4
    explicit = TrainConfig(lr=0.5, precision="fp32")
    assert AlphaRec.train_config(explicit) is explicit  # taken as is: its precision is a choice already
    auto = AlphaRec.train_config(TrainConfig(lr=0.5))  # "auto" is resolved (lmrec.train.precision), nothing else
    assert auto.precision in ("fp32", "bf16") and dataclasses.replace(auto, precision="auto") == TrainConfig(lr=0.5)



def interrupt_at_epoch(epoch: int, monkeypatch):
    """Make LightGCN raise KeyboardInterrupt when epoch ``epoch`` starts; returns a function undoing it."""
    original, seen = LightGCN.batches, []

    def interrupted(self, rng, batch_size):
        seen.append(1)
        if len(seen) == epoch:
            raise KeyboardInterrupt
        yield from original(self, rng, batch_size)

    monkeypatch.setattr(LightGCN, "batches", interrupted)
    return lambda: monkeypatch.setattr(LightGCN, "batches", original)


def test_resume_from_a_checkpoint_gives_the_unbroken_run(tmp_path, monkeypatch):
    data = planted_data()
    cfg = dict(FAST, epochs=6, eval_every=1, checkpoint_every=2)
    whole = LightGCN()
    log = whole.fit(data, cfg, folder=tmp_path / "whole")
    # the end state is checkpointed too (marked finished), so results lost after training need no retraining
    assert (tmp_path / "whole" / "checkpoint.safetensors").exists()
    undo = interrupt_at_epoch(5, monkeypatch)
    with pytest.raises(KeyboardInterrupt):
        LightGCN().fit(data, cfg, folder=tmp_path / "broken")
    undo()
    assert (tmp_path / "broken" / "checkpoint.safetensors").exists()  # written after epoch 4
    with pytest.raises(LmrecError, match=r"other training settings \(lr\)"):
        LightGCN().fit(data, dict(cfg, lr=0.01), folder=tmp_path / "broken", resume=True)
    resumed = LightGCN()
    log2 = resumed.fit(data, cfg, folder=tmp_path / "broken", resume=True)
    assert log2.resumed_at == 4 and log.resumed_at is None
    assert log.seconds_before_resume == 0 and 0 < log2.seconds_before_resume <= log2.total_seconds
    assert [(r.epoch, r.loss, r.valid) for r in log2.records] == [(r.epoch, r.loss, r.valid) for r in log.records]
    assert (log2.best_epoch, log2.best_score) == (log.best_epoch, log.best_score)
    for key, value in whole.state().items():
        assert torch.equal(value, resumed.state()[key]), key
    lines = [json.loads(line) for line in (tmp_path / "broken" / "log.jsonl").read_text().splitlines()]
    assert [line["epoch"] for line in lines] == [1, 2, 3, 4, 5, 6]  # one line per epoch, none repeated
    # resuming a finished checkpoint restores the best state and trains nothing more
    again = LightGCN()
    log3 = again.fit(data, cfg, folder=tmp_path / "whole", resume=True)
    assert log3.resumed_at == 6 and [r.epoch for r in log3.records] == [1, 2, 3, 4, 5, 6]
    for key, value in whole.state().items():
        assert torch.equal(value, again.state()[key]), key


def test_a_finished_run_goes_on_when_the_epoch_budget_is_raised(tmp_path):
    data = planted_data()
    cfg = dict(FAST, epochs=4, eval_every=1, checkpoint_every=2, patience=50)
    first = LightGCN()
    first.fit(data, cfg, folder=tmp_path / "run")
    longer = LightGCN()
    log = longer.fit(data, dict(cfg, epochs=6), folder=tmp_path / "run", resume=True)
    assert log.resumed_at == 4 and [r.epoch for r in log.records] == [1, 2, 3, 4, 5, 6]
    whole = LightGCN()
    reference = whole.fit(data, dict(cfg, epochs=6), folder=tmp_path / "whole")
    assert [(r.epoch, r.loss) for r in log.records] == [(r.epoch, r.loss) for r in reference.records]


def test_steps_are_logged_per_epoch_and_summed_in_the_run():
    data = planted_data()
    model = Scripted(data, [1.0] * 4)
    log = model.fit(data, TrainConfig(epochs=4, eval_every=1, progress=False))
    assert log.records[0].steps >= 1 and all(r.steps == log.records[0].steps for r in log.records)
    from lmrec.run.fitting import _fit_summary

    summary = _fit_summary(log, 1.0)
    assert summary["steps_run"] == sum(r.steps for r in log.records) > 0


# -- random streams and step budgets ---------------------------------------------------------------------------
def test_each_model_and_grid_point_draws_its_own_stream_unless_shared():
    from lmrec.models.base import get_model

    cfg = TrainConfig(seed=7)
    a, b = get_model("alpharec")(tau=0.15), get_model("alpharec")(tau=0.2)
    seeds = {a.stream_seed(cfg), b.stream_seed(cfg), get_model("linear_map")().stream_seed(cfg)}
    assert len(seeds) == 3 and 7 not in seeds
    assert a.stream_seed(cfg) == get_model("alpharec")(tau=0.15).stream_seed(TrainConfig(seed=7))  # reproducible
    assert a.stream_seed(TrainConfig(seed=8)) != a.stream_seed(cfg)
    assert a.stream_seed(TrainConfig(seed=7, epochs=3, progress=False)) == a.stream_seed(cfg)  # bookkeeping only
    assert a.stream_seed(TrainConfig(seed=7, lr=0.1)) != a.stream_seed(cfg)
    shared = TrainConfig(seed=7, streams="shared")
    assert a.stream_seed(shared) == b.stream_seed(shared) == 7


def test_steps_per_epoch_fixes_the_optimizer_steps_of_an_epoch():
    from lmrec.train.trainer import _epoch_batches

    class Two:
        def batches(self, rng, batch_size):
            yield from (rng.integers(100), rng.integers(100))

    rng = np.random.default_rng(0)
    assert len(list(_epoch_batches(Two(), rng, TrainConfig(steps_per_epoch=5)))) == 5  # passes chained
    assert len(list(_epoch_batches(Two(), rng, TrainConfig(steps_per_epoch=1)))) == 1
    assert len(list(_epoch_batches(Two(), rng, TrainConfig()))) == 2


def test_a_step_budget_run_resumes_exactly(tmp_path):
    from lmrec.models.base import get_model

    data = planted_data()
    train = {"epochs": 4, "eval_every": 1, "batch_size": 16, "steps_per_epoch": 3, "checkpoint_every": 1,
             "progress": False}
    whole = get_model("lightgcn")(emb_dim=8).fit(data, train)
    assert [r.steps for r in whole.records] == [3, 3, 3, 3]
    get_model("lightgcn")(emb_dim=8).fit(data, {**train, "epochs": 2}, folder=tmp_path)  # stopped at 2 of 4
    again = get_model("lightgcn")(emb_dim=8).fit(data, train, folder=tmp_path, resume=True)
    assert again.resumed_at == 2
    assert [r.valid for r in again.records] == [r.valid for r in whole.records]
