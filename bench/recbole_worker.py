"""Runs one RecBole 1.2.1 model on pre-split atomic files and prints one JSON line of results.

Runs inside the RecBole virtual environment (bench/setup_recbole.sh); bench/recbole_compare.py writes the
atomic files and starts it. RecBole's own checkpoint reload (``Trainer.evaluate(load_best_model=True)``)
fails on torch >= 2.6, so this script drives ``Trainer._train_epoch`` and ``Trainer.evaluate`` directly,
keeps the best state in memory and reads the results it returns.

With ``--folder`` the run writes ``checkpoint.safetensors`` there at every validation (the model, the best state
and Adam's state as tensors; the epoch, the loop's bookkeeping, the seconds so far and every random stream RecBole
draws from as JSON in the file's metadata: the training loader's generator, numpy's, torch's and Python's) and a
later call goes on from it: a run cut off continues as one never cut, its clock from the checkpoint's.

    python bench/recbole_worker.py --data-path DIR --dataset NAME --model LightGCN --epochs 20 [--folder DIR]
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import random
import resource
import statistics
import sys
import time
from typing import Any

import numpy as np
import torch
from recbole.config import Config
from recbole.data import create_dataset, data_preparation
from recbole.utils import get_model, get_trainer, init_seed
from safetensors import safe_open
from safetensors.torch import save_file

CHECKPOINT = "checkpoint.safetensors"
NOT_RUN_SETTINGS = ("epochs", "progress", "folder", "eval_repeats", "eval_users")  # may differ on resume


def run_settings(args: argparse.Namespace) -> dict[str, Any]:
    """The arguments a checkpoint must have been made under to be resumed (all but the budget and reporting)."""
    return {k: v for k, v in vars(args).items() if k not in NOT_RUN_SETTINGS}


def recbole_config(args: argparse.Namespace) -> dict[str, Any]:
    """The settings shared with lmrec: pre-split files, 64-d, 2 layers, Adam 1e-3, batch 4096, full ranking."""
    return {
        "data_path": args.data_path,
        "benchmark_filename": ["train", "valid", "test"],
        "load_col": {"inter": ["user_id", "item_id"], "item": ["item_id"]},
        "USER_ID_FIELD": "user_id",
        "ITEM_ID_FIELD": "item_id",
        "embedding_size": 64,
        "n_layers": 2,
        "reg_weight": args.reg,
        "require_pow": True,  # reg·Σ‖e⁰‖²/(2b), lmrec's form (RecBole's default is the unsquared norm)
        "learner": "adam",
        "learning_rate": args.lr,
        "weight_decay": 0.0,
        "train_batch_size": 4096,
        "epochs": args.epochs,
        "train_neg_sample_args": {"distribution": "uniform", "sample_num": 1, "alpha": 1.0,
                                  "dynamic": False, "candidate_num": 0},
        "eval_args": {"group_by": "user", "order": "RO", "mode": "full"},
        "metrics": ["Recall", "NDCG"],
        "topk": [20],
        "valid_metric": "Recall@20",
        "metric_decimal_place": 6,
        "seed": args.seed,
        "reproducibility": True,
        "show_progress": False,
        "use_gpu": False,
        "worker": 0,
        "checkpoint_dir": os.path.join(os.getcwd(), "saved"),
        "state": "WARNING",
    }


def clear_cache(model: torch.nn.Module) -> None:
    """Drop LightGCN's cached propagated embeddings so that the next evaluation recomputes them."""
    if hasattr(model, "restore_user_e"):
        model.restore_user_e, model.restore_item_e = None, None


def save_checkpoint(folder: str, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                    generator: torch.Generator, best_state: dict[str, torch.Tensor] | None,
                    loop: dict[str, Any]) -> None:
    """Write the run's whole state to ``folder/checkpoint.safetensors`` through a temporary file and a rename: a
    cut never leaves half a checkpoint."""
    optim = optimizer.state_dict()
    tensors = {f"model.{k}": v for k, v in model.state_dict().items()}
    tensors |= {f"best.{k}": v for k, v in (best_state or {}).items()}
    tensors |= {f"optim.{pid}.{k}": v for pid, state in optim["state"].items() for k, v in state.items()}
    tensors["rng.loader"], tensors["rng.torch"] = generator.get_state(), torch.get_rng_state()
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    version, state, python_gauss = random.getstate()
    meta = {**loop, "param_groups": optim["param_groups"], "optim_ids": sorted(optim["state"]),
            "rng_numpy": [kind, keys.tolist(), pos, has_gauss, gauss], "rng_python": [version, state, python_gauss]}
    tmp = os.path.join(folder, CHECKPOINT + ".tmp")
    save_file({k: v.contiguous() for k, v in tensors.items()}, tmp, metadata={"state": json.dumps(meta)})
    os.replace(tmp, os.path.join(folder, CHECKPOINT))


def load_checkpoint(folder: str, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                    generator: torch.Generator) -> tuple[dict[str, Any], dict[str, torch.Tensor] | None] | None:
    """Restore what :func:`save_checkpoint` wrote (None if there is no checkpoint): the model, Adam, every random
    stream; returns the loop's bookkeeping and the best state."""
    path = os.path.join(folder, CHECKPOINT)
    if not os.path.exists(path):
        return None
    with safe_open(path, "pt") as f:  # one read: the metadata and every tensor
        meta = json.loads(f.metadata()["state"])
        tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (safe_open has keys(), no iteration)
    part = lambda prefix: {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}  # noqa: E731
    model.load_state_dict(part("model."))
    optim = part("optim.")
    optimizer.load_state_dict({"param_groups": meta.pop("param_groups"), "state": {
        pid: {k.split(".", 1)[1]: v for k, v in optim.items() if k.split(".", 1)[0] == str(pid)}
        for pid in meta.pop("optim_ids")}})
    generator.set_state(tensors["rng.loader"])
    torch.set_rng_state(tensors["rng.torch"])
    kind, keys, pos, has_gauss, gauss = meta.pop("rng_numpy")
    np.random.set_state((kind, np.array(keys, dtype=np.uint32), pos, has_gauss, gauss))
    version, state, gauss = meta.pop("rng_python")
    random.setstate((version, tuple(state), gauss))
    return meta, part("best.") or None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-path", required=True, help="folder holding DATASET/DATASET.{train,valid,test}.inter")
    parser.add_argument("--dataset", required=True)
    parser.add_argument("--model", required=True, help="RecBole model name: LightGCN or BPR")
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--eval-every", type=int, default=0, help="validation every N epochs (0: after the last)")
    parser.add_argument("--patience", type=int, default=10, help="stop after N validations without improvement")
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--reg", type=float, default=1e-4)
    parser.add_argument("--seed", type=int, default=2024)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--eval-users", type=int, default=1024, help="users per full-ranking batch")
    parser.add_argument("--eval-repeats", type=int, default=3)
    parser.add_argument("--progress", action="store_true", help="report each validation on stderr")
    parser.add_argument("--folder", help="checkpoint at every validation here, and resume from the one found")
    args = parser.parse_args()
    load_start = os.getloadavg()[0]
    torch.set_num_threads(args.threads)

    config = Config(model=args.model, dataset=args.dataset, config_dict=recbole_config(args))
    init_seed(config["seed"], config["reproducibility"])
    dataset = create_dataset(config)
    # RecBole's eval_batch_size counts (user, item) pairs: give it the same users per batch as lmrec.
    config["eval_batch_size"] = args.eval_users * dataset.item_num
    train_data, valid_data, test_data = data_preparation(config, dataset)
    init_seed(config["seed"], config["reproducibility"])
    model = get_model(config["model"])(config, train_data._dataset).to(config["device"])
    trainer = get_trainer(config["MODEL_TYPE"], config["model"])(config, model)
    torch.set_num_threads(args.threads)

    eval_every = args.eval_every or args.epochs
    loop: dict[str, Any] = {
        "epoch": 0, "seconds": 0.0, "bad": 0, "best": {"score": -1.0, "epoch": 0, "seconds": 0.0},
        "epoch_seconds": [], "epoch_cpu": [],  # process CPU seconds: less distorted than wall time on a loaded machine
        "valid_log": []}
    best_state = None
    resumed_at, seconds_before_resume = None, None
    if args.folder:
        os.makedirs(args.folder, exist_ok=True)
        restored = load_checkpoint(args.folder, model, trainer.optimizer, train_data.generator)
        if restored is not None:
            loop, best_state = restored
            made_under, asked = loop.pop("settings", {}), run_settings(args)
            if made_under != asked:
                differ = sorted(k for k in made_under.keys() | asked.keys() if made_under.get(k) != asked.get(k))
                sys.exit(f"{os.path.join(args.folder, CHECKPOINT)}: made under other settings ({', '.join(differ)}: "
                         f"{[made_under.get(k) for k in differ]}, asked {[asked.get(k) for k in differ]}); "
                         "remove the folder or give its settings")
            resumed_at, seconds_before_resume = loop["epoch"], loop["seconds"]
    epoch_seconds, epoch_cpu, valid_log = loop["epoch_seconds"], loop["epoch_cpu"], loop["valid_log"]
    best, bad = loop["best"], loop["bad"]
    start = time.perf_counter() - loop["seconds"]
    for epoch in range(loop["epoch"], args.epochs):
        if bad >= args.patience:  # a resumed run that had already stopped
            break
        t0, c0 = time.perf_counter(), time.process_time()
        trainer._train_epoch(train_data, epoch, show_progress=False)
        epoch_seconds.append(time.perf_counter() - t0)
        epoch_cpu.append(time.process_time() - c0)
        if (epoch + 1) % eval_every == 0 or epoch + 1 == args.epochs:
            clear_cache(model)
            result = trainer.evaluate(valid_data, load_best_model=False, show_progress=False)
            valid_log.append({"epoch": epoch + 1, **{k: float(v) for k, v in result.items()}})
            if result["recall@20"] > best["score"]:
                best = {"score": float(result["recall@20"]), "epoch": epoch + 1,
                        "seconds": time.perf_counter() - start}
                best_state = copy.deepcopy(model.state_dict())
                bad = 0
            else:
                bad += 1
            if args.folder:
                loop |= {"epoch": epoch + 1, "seconds": time.perf_counter() - start, "bad": bad, "best": best,
                         "settings": run_settings(args)}
                save_checkpoint(args.folder, model, trainer.optimizer, train_data.generator, best_state, loop)
            if args.progress:
                print(f"RecBole {args.model} epoch {epoch + 1}: valid recall@20 {result['recall@20']:.4f}, best "
                      f"{best['score']:.4f} at {best['epoch']}, {time.perf_counter() - start:.0f} s", file=sys.stderr,
                      flush=True)
            if bad >= args.patience:
                break
    total_seconds = time.perf_counter() - start
    if best_state is not None:
        model.load_state_dict(best_state)

    eval_seconds, eval_cpu, test = [], [], {}
    for _ in range(args.eval_repeats):
        clear_cache(model)
        t0, c0 = time.perf_counter(), time.process_time()
        test = trainer.evaluate(test_data, load_best_model=False, show_progress=False)
        eval_seconds.append(time.perf_counter() - t0)
        eval_cpu.append(time.process_time() - c0)

    out = {
        "library": "RecBole", "model": args.model, "dataset": args.dataset,
        "users": dataset.user_num - 1, "items": dataset.item_num - 1,  # without RecBole's padding id 0
        "train_interactions": len(train_data._dataset),
        "test_users": len(test_data.uid_list),
        "epochs_run": len(epoch_seconds),
        "epoch_s": statistics.median(epoch_seconds),
        "epoch_s_all": epoch_seconds,
        "epoch_cpu_s": statistics.median(epoch_cpu),
        "eval_s": statistics.median(eval_seconds),
        "eval_s_all": eval_seconds,
        "eval_cpu_s": statistics.median(eval_cpu),
        "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "recall@20": float(test["recall@20"]), "ndcg@20": float(test["ndcg@20"]),
        "best_epoch": best["epoch"], "best_valid_recall@20": best["score"],
        "seconds_to_best": best["seconds"], "total_seconds": total_seconds,
        "valid_log": valid_log, "resumed_at": resumed_at, "seconds_before_resume": seconds_before_resume,
        "threads": torch.get_num_threads(), "torch": torch.__version__, "precision": "fp32",
        "load_start": load_start, "load_end": os.getloadavg()[0],
    }
    print(json.dumps(out))


if __name__ == "__main__":
    main()
