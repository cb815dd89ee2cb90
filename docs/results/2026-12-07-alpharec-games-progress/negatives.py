"""AlphaRec on Amazon Games: the paper's per-row negatives against lmrec's shared ones, the first 60 epochs (issue 28).

Both runs: Games split 4:3:3 (data seed 2024), τ 0.2 (the authors' Games value), 256 negatives, batch 4096, Adam lr
5e-4, fp32, training seed 2024, validation Recall@20 every 5 epochs; ``negatives = "per_row"`` draws 256 for each
row of a batch (AlphaRec's code), ``"shared"`` one set of 256 per batch that every row is scored against (lmrec's
default). Written: negatives.json (each run's validation curve, epoch seconds) and negatives.png (validation
Recall@20 against epochs and against training seconds).

    LMREC_DATA=../shared/data python docs/results/2026-12-07-alpharec-games-progress/negatives.py OUT_DIR
    (trains into OUT_DIR/<negatives>, resumable; about 35 + 20 min alone on a 2-core EPYC)
"""
import json
import statistics
import sys
from pathlib import Path

import lmrec
from lmrec.data.registry import DataRef

EPOCHS = 60
TRAIN = {"epochs": EPOCHS, "eval_every": 5, "patience": 100, "precision": "fp32", "seed": 2024, "progress": False}


def curve(folder: Path) -> dict:
    log = [json.loads(line) for line in (folder / "log.jsonl").read_text().splitlines()]
    return {"valid_recall@20": {e["epoch"]: e["valid"]["recall@20"] for e in log if e.get("valid")},
            "epoch_seconds": [e["seconds"] for e in log]}


def main(out: Path) -> None:
    ref = DataRef.of("amazon-video-games-2018")
    result = {}
    for negatives in ("per_row", "shared"):
        lmrec.fit("alpharec", ref, TRAIN, out=out / negatives, resume=True, tau=0.2, negatives=negatives)
        result[negatives] = curve(out / negatives)
        seconds = result[negatives]["epoch_seconds"]
        print(f"{negatives}: median epoch {statistics.median(seconds):.1f} s; "
              + ", ".join(f"{e}: {r:.4f}" for e, r in result[negatives]["valid_recall@20"].items()))
    (out / "negatives.json").write_text(json.dumps(result, indent=1))
    plot(result, out / "negatives.png")


def plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (by_epoch, by_time) = plt.subplots(1, 2, figsize=(10, 4), sharey=True)
    for negatives, run in result.items():
        epochs = [int(e) for e in run["valid_recall@20"]]
        recall = list(run["valid_recall@20"].values())
        median = statistics.median(run["epoch_seconds"])  # the clean per-epoch cost (validations left out)
        by_epoch.plot(epochs, recall, marker="o", label=negatives)
        by_time.plot([e * median / 60 for e in epochs], recall, marker="o", label=negatives)
    by_epoch.set(xlabel="epoch", ylabel="validation Recall@20", title="AlphaRec on Games, τ 0.2")
    by_time.set(xlabel="training minutes (median epoch × epochs, 2 threads)")
    by_epoch.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)


if __name__ == "__main__":
    main(Path(sys.argv[1]))
