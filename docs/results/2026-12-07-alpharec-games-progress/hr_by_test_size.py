"""Why HR@20 falls further below the paper's than Recall@20 does on Games: test Recall@20 and HR@20 of the
published runs by each test user's number of test items. Read from the published records (the packed per-user test
values) and the Games split they were made on (data seed 2024). HR@20 of a user is 1 where Recall@20 > 0 (at least
one test item in the top 20). Written: hr_by_test_size.json, and a Markdown table on stdout.

    LMREC_DATA=../shared/data python docs/results/2026-12-07-alpharec-games-progress/hr_by_test_size.py
"""
import gzip
import json
from pathlib import Path

import numpy as np
from safetensors.numpy import load

from lmrec.data.registry import DataRef

HERE = Path(__file__).parent
RECORDS = HERE / "reproduction" / "records" / "games"
BINS = [(1, 1), (2, 2), (3, 3), (4, 5), (6, 10), (11, None)]  # test items per user, inclusive
PAPER = {"users": 40_834, "interactions": 390_013}  # papers.md 2.5: the paper's Games files


def runs() -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """{model and seed: (test users, their test Recall@20)} for every published Games run."""
    values = load(gzip.decompress(RECORDS.with_name("games.values.safetensors.gz").read_bytes()))
    out = {}
    lines = gzip.decompress(RECORDS.with_name("games.jsonl.gz").read_bytes()).decode().splitlines()
    for record in (json.loads(line) for line in lines if line.strip()):
        manifest, where = record["manifest"], record["where"]
        name = f"{manifest['model']}, seed {manifest['train_config']['seed']}"
        out[name] = (values[f"{where}::users"], values[f"{where}::recall@20"])
    return out


def main() -> None:
    data = DataRef.of("amazon-video-games-2018", seed=2024).load()
    n_test = np.diff(data.test.indptr)
    n_all = n_test + np.diff(data.train.indptr) + np.diff(data.valid.indptr)
    result = {"test_items_per_user": float(n_test.mean()), "interactions_per_user": float(n_all.mean()),
              "paper_interactions_per_user": PAPER["interactions"] / PAPER["users"],
              "share_of_users": {}, "runs": {}}
    labels = [f"{lo}" if hi == lo else f"{lo}-{hi}" if hi else f"{lo}+" for lo, hi in BINS]
    masks = [(n_test >= lo) & (n_test <= (hi or n_test.max())) for lo, hi in BINS]
    result["share_of_users"] = {label: float(m.mean()) for label, m in zip(labels, masks)}
    for name, (users, recall) in sorted(runs().items()):
        hr = (recall > 0).astype(np.float64)
        per_user = {"recall@20": np.full(data.n_users, np.nan), "hr@20": np.full(data.n_users, np.nan)}
        per_user["recall@20"][users], per_user["hr@20"][users] = recall, hr
        by_size = {label: {metric: float(np.nanmean(v[m])) for metric, v in per_user.items()}
                   for label, m in zip(labels, masks)}
        result["runs"][name] = {"recall@20": float(recall.mean()), "hr@20": float(hr.mean()), "by_test_items": by_size}
    (HERE / "hr_by_test_size.json").write_text(json.dumps(result, indent=1) + "\n")
    print(f"test items per user {result['test_items_per_user']:.2f}; interactions per user "
          f"{result['interactions_per_user']:.2f} (the paper's files: {result['paper_interactions_per_user']:.2f})\n")
    print("| run | metric | " + " | ".join(f"{label} test items" for label in labels) + " | all |")
    print("|---|---|" + "---|" * (len(labels) + 1))
    print("| share of users | | " + " | ".join(f"{result['share_of_users'][label]:.1%}" for label in labels) + " | |")
    for name, run in result["runs"].items():
        for metric in ("recall@20", "hr@20"):
            cells = " | ".join(f"{run['by_test_items'][label][metric]:.3f}" for label in labels)
            print(f"| {name} | {metric} | {cells} | {run[metric]:.4f} |")


if __name__ == "__main__":
    main()
