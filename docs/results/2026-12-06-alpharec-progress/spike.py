"""The epoch-250 spike, before and after per-model random streams (issue 28).

Before: the 2026-12-03 records on MovieLens latest-small (every run with the same seed drew the same negatives and
batch order: streams "shared"). After: the same models and settings trained again with streams "model" (each run's
streams derived from the seed, the model and its settings). For each validation curve, the deviation of every
validation from the mean of its two neighbours on either side (a ±2-validation local trend) is the epoch-to-epoch
noise; a common-mode effect makes these deviations correlated across runs. Reported: the mean pairwise Pearson
correlation of the deviations over the epochs every run reached, and each run's deviation at epoch 250.

    LMREC_DATA=../shared/data python docs/results/2026-12-06-alpharec-progress/spike.py OUT_DIR
    (trains the 'after' runs into OUT_DIR/runs, resumable; about 35 min on two cores; writes spike.json and
    spike.png into OUT_DIR)
"""
import gzip
import itertools
import json
import sys
from pathlib import Path

import numpy as np

import lmrec
from lmrec.data.registry import load_dataset

HERE = Path(__file__).resolve().parent
RECORDS = HERE.parent / "2026-12-03-alpharec-epyc-2core" / "records" / "01-comparison.jsonl.gz"
RUNS = ["alpharec", "alpharec~tau=0.25", "linear_map", "linear_map~tau=0.1"]
DATASET = "movielens-latest-small"


def curve(log):
    return {e["epoch"]: e["valid"]["recall@20"] for e in log if e.get("valid")}


def deviations(c, epochs):
    v = np.array([c[e] for e in epochs])
    k = np.array([1, 1, 0, 1, 1]) / 4
    trend = np.convolve(v, k, mode="same")
    return (v - trend)[2:-2], epochs[2:-2]


def summary(curves):
    common = sorted(set.intersection(*(set(c) for c in curves.values())))
    devs = {}
    for name, c in curves.items():
        d, kept = deviations(c, common)
        devs[name] = d
    pairs = [np.corrcoef(devs[a], devs[b])[0, 1] for a, b in itertools.combinations(devs, 2)]
    at250 = {n: float(devs[n][kept.index(250)]) if 250 in kept else None for n in devs}
    return {"epochs": [kept[0], kept[-1]], "n_validations": len(kept), "mean_pairwise_r": float(np.mean(pairs)),
            "pairwise_r": [float(p) for p in pairs], "deviation_at_250": at250,
            "sd": {n: float(np.std(d)) for n, d in devs.items()}}


def main():
    out = Path(sys.argv[1])
    records = {json.loads(line)["where"]: json.loads(line) for line in gzip.open(RECORDS)}
    before = {n: curve(records[f"{DATASET}/{n}"]["log"]) for n in RUNS}
    data = load_dataset(DATASET)
    after = {}
    for name in RUNS:
        m = records[f"{DATASET}/{name}"]["manifest"]
        model = m["model"] if "model" in m else name.split("~")[0]
        train = {**m["train_config"], "streams": "model", "progress": False}
        run = lmrec.fit(model, data, train, out=out / "runs" / name.replace("~", "_"), resume=True,
                        **{k: v for k, v in m["model_config"].items()})
        after[name] = {r.epoch: r.valid["recall@20"] for r in run.log.records if r.valid} if run.log else curve(
            [json.loads(x) for x in (out / "runs" / name.replace("~", "_") / "log.jsonl").read_text().splitlines()])
        print(name, "best", run.manifest["fit"]["best_epoch"], flush=True)
    result = {"before": summary(before), "after": summary(after), "curves_before": before, "curves_after": after}
    (out / "spike.json").write_text(json.dumps(result, indent=1))
    print(json.dumps({k: result[k] for k in ("before", "after")}, indent=1))
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6), sharey=True)
    for ax, (label, curves) in zip(axes, (("before: shared streams (2026-12-03)", before),
                                          ("after: per-model streams", after))):
        for name, c in curves.items():
            e = [x for x in sorted(c) if 150 <= x <= 350]
            ax.plot(e, [c[x] for x in e], marker=".", label=name)
        ax.axvline(250, color="grey", lw=0.8, ls="--")
        ax.set_title(label)
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("valid Recall@20")
    axes[1].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "spike.png", dpi=120)


if __name__ == "__main__":
    main()
