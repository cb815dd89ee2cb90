"""One Mult-VAE training step (loss forward and backward, then Adam) with the batch's rows two ways:

    dense    x as a batch × n_items table: dropout drawn over every cell, W₁x̃ and its weight gradient over the whole
             catalog, −Σ x log π as a product with the table (lmrec until 2026-12-07)
    sparse   lmrec.models.cf.multvae.MultVAE.loss: x̃ as CSR rows (dropout on the rows' items only), x̃W₁ᵀ and x̃ᵀg
             through the CSR product, −Σ x log π summed over the rows' items

The settings are the model's defaults (600 / 200, batches of 500 users, dropout 0.5). The trainer's deterministic CPU
kernels, freed memory kept in the process (as training runs). Median of ``--repeats`` steps after one warm-up, the
two ways alternating on the same batch. Run alone.

    LMREC_DATA=../shared/data python bench/multvae_input.py [--datasets ...] [--threads 2]
"""

from __future__ import annotations

import argparse
import datetime
import os
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from common import commit, machine, median_ms, write_lines

RESULTS = Path(__file__).resolve().parent / "results"
DATASETS = ("amazon-video-games-2018", "amazon-industrial-scientific-2018", "movielens-latest-small")


def dense_loss(model, users: torch.Tensor) -> torch.Tensor:
    """The loss as lmrec computed it before 2026-12-07 (the batch's rows as a dense table)."""
    net = model.net
    x = torch.from_numpy(model.data.train[users.numpy()].toarray())
    mu, logvar = net.encode(net.enc_in(net.drop(F.normalize(x, dim=1))))
    z = mu + torch.exp(0.5 * logvar) * torch.randn_like(mu)
    nll = -(F.log_softmax(net.dec_out(net.decoder_hidden(z)), dim=1) * x).sum(dim=1).mean()
    return nll + model.beta() * -0.5 * (1 + logvar - mu.pow(2) - logvar.exp()).sum(dim=1).mean()


def _median_step_ms(model, repeats: int) -> dict[str, float]:
    """Median ms of a training step on one batch, each way."""
    model.set_training(True)
    optimizer = torch.optim.Adam(model.net.parameters(), lr=1e-3)
    users = next(iter(model.batches(np.random.default_rng(0), 500)))

    def step(loss) -> None:
        optimizer.zero_grad()
        loss(users).backward()
        optimizer.step()

    return median_ms({"dense": lambda: step(lambda u: dense_loss(model, u)), "sparse": lambda: step(model.loss)},
                     repeats)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datasets", nargs="+", default=list(DATASETS))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--out", type=Path, default=RESULTS / "multvae_input.md")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    from lmrec.allocator import keep_freed_memory
    from lmrec.data.registry import load_dataset
    from lmrec.models.cf.multvae import MultVAE
    from lmrec.train.determinism import deterministic_kernels

    kept = keep_freed_memory()
    lines = [f"# Mult-VAE's input rows, dense or sparse — {datetime.date.today()}", "",
             f"Machine: {machine()}; torch {torch.__version__}, {args.threads} thread(s); lmrec {commit()}; load "
             f"average (1 min) {os.getloadavg()[0]:.2f}; freed memory kept in the process: {kept}. A step: loss "
             f"forward and backward and an Adam step on a batch of 500 users; median of {args.repeats}, alternating.",
             "", "| dataset | users | items | dense ms | sparse ms | speed-up | epoch (sparse) s |",
             "|---|---|---|---|---|---|---|"]
    for name in args.datasets:
        data = load_dataset(name)
        model = MultVAE()
        model.prepare(data, seed=0)
        with deterministic_kernels(torch.device("cpu")):
            ms = _median_step_ms(model, args.repeats)
        epoch = ms["sparse"] / 1000 * -(-len(model.active) // 500)
        lines.append(f"| {name} | {data.n_users} | {data.n_items} | {ms['dense']:.0f} | {ms['sparse']:.0f} | "
                     f"{ms['dense'] / ms['sparse']:.2f}x | {epoch:.1f} |")
        print(lines[-1], flush=True)
    lines.append("")
    write_lines(args.out, lines)


if __name__ == "__main__":
    main()
