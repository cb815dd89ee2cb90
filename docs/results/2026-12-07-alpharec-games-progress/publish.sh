#!/bin/bash
# Keep in git what issue28-chain.sh has finished, before a session ends: a new machine starts from the checkout
# alone, so a finished run that is not published here has to be trained again. Trains nothing. From the checkout's
# root, with the chain's output in $OUT:
#   docs/results/2026-12-07-alpharec-games-progress/publish.sh
# Writes into this folder: reproduction/ (the finished runs of the Games table, the negatives ablation and the chain's
# later comparison tables once they have started, as records with their report: `lmrec reproduce --finished-only`,
# reusing what was published before), convergence/ (every finished Games run), curves.png, hr_by_test_size.json, and
# intention-games/ once that table is done; and RTA's report so far (its LLM answers, finished tables) into
# $RTA_PROGRESS, which the chain's RTA steps go on from (stop a running RTA step with SIGTERM first: it packs its
# answers then). Commit them afterwards.
set -euo pipefail
HERE=docs/results/2026-12-07-alpharec-games-progress
OUT=${OUT:-/work/longruns}
RTA_PROGRESS=docs/results/2026-12-08-rta-progress
export LMREC_DATA=${LMREC_DATA:-../shared/data} HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 PYTHONPATH=src
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
# swap_in SRC DEST: DEST becomes a copy of SRC, swapped in whole (a failed copy leaves the old DEST)
swap_in() {
  rm -rf "$2.new" "$2.old" && cp -r "$1" "$2.new"
  if [ -e "$2" ]; then mv "$2" "$2.old"; fi
  mv "$2.new" "$2" && rm -rf "$2.old"
}
mkdir "$work/pub" "$work/conv"
ln -s "$(realpath "$OUT/alpharec/games")" "$work/pub/games"  # the chain's Games run folders, read in place
tables=games-contenders,negatives
for t in 15-games-all 01-comparison 13-density-steps 12-mlp-width; do  # the chain's later tables, once started
  [ -d "$OUT/alpharec/$t" ] && tables+=",${t#*-}"
done
.venv/bin/python -m lmrec reproduce alpharec --only "$tables" --finished-only \
  --reuse "$HERE/reproduction" --out "$work/pub"
# the convergence of the finished runs (the records just written, reused ones too), in a report of its own
ln -s "$work/pub/records" "$work/conv/records"
.venv/bin/python -m lmrec reproduce alpharec --only games-convergence --out "$work/conv"
swap_in "$work/pub/report" "$HERE/reproduction"
cp "$work"/conv/16-games-convergence/convergence{.md,.json,-seeds.json,.png} "$HERE/convergence/"
.venv/bin/python "$HERE/curves.py"
.venv/bin/python "$HERE/hr_by_test_size.py" > /dev/null
if [ -f "$OUT/alpharec/14-intention-games/intention.json" ]; then  # the table and the LLM's intentions
  mkdir -p "$HERE/intention-games"
  cp "$OUT"/alpharec/14-intention-games/{intention.json,intention.md,alpha.png,intentions-llm.json} "$HERE/intention-games/"
fi
if [ -d "$OUT/rta/report" ]; then  # what RTA's steps have packed (they pack as each table finishes or stops)
  swap_in "$OUT/rta/report" "$RTA_PROGRESS"
fi
echo "published into $HERE; git status $HERE shows what changed"
