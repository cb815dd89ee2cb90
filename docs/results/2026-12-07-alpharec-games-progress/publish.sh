#!/bin/bash
# Keep in git what issue28-chain.sh has finished, before a session ends: a new machine starts from the checkout
# alone, so a finished run that is not published here has to be trained again. Trains nothing. From the checkout's
# root, with the chain's output in $OUT:
#   docs/results/2026-12-07-alpharec-games-progress/publish.sh
# Writes into this folder: reproduction/ (the finished runs of the Games table and the negatives ablation as records,
# with their report: `lmrec reproduce --finished-only`, reusing what was published before), convergence/ (every
# finished Games run), curves.png and hr_by_test_size.json. Commit them afterwards.
set -euo pipefail
HERE=docs/results/2026-12-07-alpharec-games-progress
OUT=${OUT:-/work/longruns}
export LMREC_DATA=${LMREC_DATA:-../shared/data} HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 PYTHONPATH=src
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir "$work/pub" "$work/conv"
ln -s "$(realpath "$OUT/alpharec/games")" "$work/pub/games"  # the chain's Games run folders, read in place
.venv/bin/python -m lmrec reproduce alpharec --only games-contenders,negatives --finished-only \
  --reuse "$HERE/reproduction" --out "$work/pub"
# the convergence of the finished runs (the records just written, reused ones too), in a report of its own
ln -s "$work/pub/records" "$work/conv/records"
.venv/bin/python -m lmrec reproduce alpharec --only games-convergence --out "$work/conv"
# swap in the new report whole (a failed copy leaves the old one)
cp -r "$work/pub/report" "$HERE/reproduction.new"
mv "$HERE/reproduction" "$HERE/reproduction.old" && mv "$HERE/reproduction.new" "$HERE/reproduction"
rm -rf "$HERE/reproduction.old"
cp "$work"/conv/16-games-convergence/convergence{.md,.json,-seeds.json,.png} "$HERE/convergence/"
.venv/bin/python "$HERE/curves.py"
.venv/bin/python "$HERE/hr_by_test_size.py" > /dev/null
echo "published into $HERE; git status $HERE shows what changed"
