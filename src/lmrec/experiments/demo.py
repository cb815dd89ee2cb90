"""``lmrec demo``: the main job on the bundled MovieLens latest-small, end to end in a few minutes on a CPU.

Embeds the titles with MiniLM (cached), trains Popularity, LightGCN and AlphaRec with a small epoch budget
(selection on validation), prints test Recall/NDCG/HR@20 with standard errors and the paired difference of
AlphaRec against LightGCN, then recommends titles for one user.
"""

from __future__ import annotations

from pathlib import Path

from lmrec import clock
from lmrec.data.registry import DataRef
from lmrec.eval.report import text_table
from lmrec.eval.stats import paired_test
from lmrec.run import fit

DEMO_MODELS = {
    "pop": {},
    "lightgcn": {"epochs": 60, "eval_every": 10},
    "alpharec": {"epochs": 15, "eval_every": 5},
}


def run_demo(out: Path = Path("runs/demo"), dataset: str = "movielens-latest-small", user: str = "1") -> None:
    start = clock.now()
    ref = DataRef.of(dataset)
    data = ref.load()
    stats = data.stats()
    print(f"dataset {dataset}: {stats['users']} users, {stats['items']} items, "
          f"train/valid/test {stats['train']}/{stats['valid']}/{stats['test']} ({stats['protocol']})")
    rows, results = [], {}
    for name, train in DEMO_MODELS.items():
        run = fit(name, data, {"progress": False, **train}, out=out / name, overwrite=True, ref=ref)
        results[name] = run
        test, fitted = run.metrics["test"], run.manifest["fit"]
        best = "-" if not fitted.get("trained") else f"{fitted['best_epoch']}/{fitted['epochs_run']}" + (
            "" if fitted["converged"] else " †")
        rows.append({"model": name, "best epoch": best, "fit s": f"{fitted['seconds']:.0f}",
                     **{m: test[m] for m in ("recall@20", "ndcg@20", "hr@20")}})
    budgets = ", ".join(f"{m} {t['epochs']} epochs" for m, t in DEMO_MODELS.items() if t)
    print(f"\nTest, full ranking, train+valid items masked, mean ± SE over users (demo budgets: {budgets}; "
          "converged numbers: `lmrec compare`):")
    print(text_table(rows, ["model", "best epoch", "fit s", "recall@20", "ndcg@20", "hr@20"]))
    if any("†" in str(r["best epoch"]) for r in rows):
        print("† best validation epoch = the last epoch run: still improving at the demo budget")
    a, b = (results[m].evaluate("test").per_user["recall@20"] for m in ("lightgcn", "alpharec"))
    test = paired_test(a, b)
    print(f"\nAlphaRec - LightGCN recall@20: {test.diff}  (paired t-test p = {test.t_pvalue:.2g})")
    index = data.user_index(user)
    print(f"\nAlphaRec's top 10 for user {user} (who rated e.g. "
          f"{'; '.join(data.catalog.titles[i] for i in data.train_items(index)[:3])}):")
    for r in results["alpharec"].recommend(user, k=10):
        print(f"{r.rank:3d}. {r.title}  ({r.score:.3f})")
    print(f"\nruns written to {out}/ ; demo took {clock.now() - start:.0f} s")
