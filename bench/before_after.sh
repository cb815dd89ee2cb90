#!/usr/bin/env bash
# Before / after: the same bench scripts (these, as checked out) run on lmrec's code at BASE ("before") and on the
# code checked out ("after"), back to back, at 1 and at 2 torch threads:
#   recbole_compare.py  lmrec vs RecBole 1.2.1 LightGCN and MF per epoch and per full-ranking evaluation (ratios to
#                       RecBole from the same run)
#   bench_cf.py         LightGCN and AlphaRec seconds per epoch and per evaluation
# on Amazon Video Games and MovieLens-1M-sized synthetic data (runs/bench-ml1m, written on first use).
# Results: bench/results/before_after/{recbole_compare,bench_cf}-{before,after}-t{1,2}.{md,json}. Run alone
# (about an hour and a half on two cores, 40 min with THREADS=2); needs bench/setup_recbole.sh once and LMREC_DATA
# for Games. THREADS: the torch thread counts to run (default "1 2").
#
#   LMREC_DATA=../shared/data [THREADS=2] bash bench/before_after.sh [BASE] [DATASET ...]
set -euo pipefail
cd "$(dirname "$0")/.."
BASE="${1:-6c169a6}"  # the commit this work started from
shift || true
DATASETS=("$@")
[ ${#DATASETS[@]} -gt 0 ] || DATASETS=(amazon-video-games-2018 synth-ml1m)
PYTHON="${PYTHON:-.venv/bin/python}"
[ -x "$PYTHON" ] || PYTHON=python3
OUT=bench/results/before_after
mkdir -p "$OUT"
BEFORE="$(mktemp -d -t lmrec-before-XXXXXX)"
trap 'rm -rf "$BEFORE"' EXIT
git archive "$BASE" src | tar -x -C "$BEFORE"  # lmrec's code at BASE, no checkout touched
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
for threads in ${THREADS:-1 2}; do
  for side in before after; do
    src="$PWD/src"
    [ "$side" = before ] && src="$BEFORE/src"
    echo "== $side ($BASE for before), $threads thread(s)"
    OMP_NUM_THREADS=$threads PYTHONPATH="$src" "$PYTHON" bench/recbole_compare.py "${DATASETS[@]}" --epochs 5 \
      --budget 0 --threads "$threads" --out "$OUT/recbole_compare-$side-t$threads"
    OMP_NUM_THREADS=$threads PYTHONPATH="$src" "$PYTHON" bench/bench_cf.py --datasets "$(IFS=,; echo "${DATASETS[*]}")" \
      --epochs 2 --threads "$threads" --out "$OUT/bench_cf-$side-t$threads.md"
  done
done
echo "written: $OUT"
