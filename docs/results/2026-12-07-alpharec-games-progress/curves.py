"""Validation Recall@20 on Amazon Games against epochs: AlphaRec with the paper's sampler (per-row negatives, τ 0.2,
training seed 2024) beside the published baselines at the authors' settings (LightGCN, XSimGCL, KAR, RLMRec: the seeds
that have finished), from the records of the published reproduction. Written: curves.png.

    python docs/results/2026-12-07-alpharec-games-progress/curves.py
"""
import gzip
import json
from pathlib import Path

HERE = Path(__file__).parent
RECORDS = HERE / "reproduction" / "records" / "games.jsonl.gz"


def curve(log: list[dict]) -> tuple[list[int], list[float]]:
    points = [(e["epoch"], e["valid"]["recall@20"]) for e in log if e.get("valid")]
    return [p[0] for p in points], [p[1] for p in points]


def main() -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    records = [json.loads(line) for line in gzip.decompress(RECORDS.read_bytes()).decode().splitlines() if line.strip()]
    for record in records:
        if record["manifest"]["model"] == "alpharec":
            best = record["manifest"]["fit"]["best_epoch"]
            ax.plot(*curve(record["log"]), color="C0",
                    label=f"AlphaRec, per-row negatives, seed 2024 (best epoch {best}, budget 500)")
    baselines = {"lightgcn": ("C1", "LightGCN, lr 5e-4"), "xsimgcl": ("C2", "XSimGCL, λ 0.01, τ 0.2"),
                 "kar": ("C3", "KAR, λ 0.01, τ 0.2"), "rlmrec": ("C4", "RLMRec, λ 0.01, τ 0.2")}
    seeds: dict[str, list[int]] = {}
    for record in records:
        seeds.setdefault(record["manifest"]["model"], []).append(record["manifest"]["train_config"]["seed"])
    for record in records:
        model = record["manifest"]["model"]
        if model in baselines and record["log"]:
            seed = record["manifest"]["train_config"]["seed"]
            color, label = baselines[model]
            ran = sorted(seeds[model])
            which = f"seeds {ran[0]}-{ran[-1]}" if len(ran) > 1 else f"seed {ran[0]}"
            ax.plot(*curve(record["log"]), color=color, alpha=0.5 + 0.25 * (seed == 2024),
                    label=f"{label}, {which}" if seed == ran[0] else None)
    ax.set(xlabel="epoch (42 optimizer steps each)", ylabel="validation Recall@20",
           title="Amazon Games, full ranking, 2-core AMD EPYC, fp32")
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(HERE / "curves.png", dpi=120)


if __name__ == "__main__":
    main()
