#!/bin/bash
# Issue 28's long runs in its order, each step resumable (run it again after a restart: finished runs are reused):
#   1. the Games table (configs/alpharec/01-games-contenders.toml) at its three seeds, without the focus pair's extra
#      seeds (a copy of the config with focus_seeds = []; the runs are the same folders);
#   2. RTA's own pipeline on INSPIRED, then on ReDIAL (configs/rta);
#   3. the intention table on Games (configs/alpharec/14-intention-games.toml: SmolLM2 writes the intentions; ~45 min);
#   4. the Games table again, whole: the focus seeds 2027 and 2028.
# Code: the worktree $WT (a detached checkout of lmrec); output under $OUT; logs $OUT/games.log and $OUT/rta.log.
WT=${WT:-/work/wt/run}
OUT=${OUT:-/work/longruns}
MAIN=${MAIN:-/work/main}
GAMES_REUSE=$MAIN/docs/results/2026-12-07-alpharec-games-progress/reproduction
export LMREC_DATA=${LMREC_DATA:-/work/shared/data} HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 OMP_NUM_THREADS=2 PYTHONPATH=src
cd "$WT" || exit 1
say() { local log=$1; shift; echo "[issue28-chain] $(date -u +%FT%TZ) $*" >> "$OUT/$log.log"; }
mkdir -p "$OUT/configs-table-seeds/alpharec"
sed 's/^focus_seeds = \[2027, 2028\]$/focus_seeds = []  # the table seeds first (issue 28: 3 seeds, RTA, focus seeds)/' \
  configs/alpharec/01-games-contenders.toml > "$OUT/configs-table-seeds/alpharec/01-games-contenders.toml"
say games "step 1: the Games table at its three seeds ($(git rev-parse --short HEAD))"
.venv/bin/python -m lmrec reproduce alpharec --configs "$OUT/configs-table-seeds" --only games-contenders \
  --reuse "$GAMES_REUSE" --out "$OUT/alpharec" --jobs 1 >> "$OUT/games.log" 2>&1 || { say games "step 1 failed"; exit 1; }
say rta "step 2: RTA's pipeline on INSPIRED"
.venv/bin/python -m lmrec reproduce rta --only inspired --out "$OUT/rta" >> "$OUT/rta.log" 2>&1 || { say rta "INSPIRED failed"; exit 1; }
say rta "step 2: RTA's pipeline on ReDIAL"
.venv/bin/python -m lmrec reproduce rta --only redial --reuse "$MAIN/docs/results/2026-12-02-rta-redial-epyc-2core" \
  --out "$OUT/rta" >> "$OUT/rta.log" 2>&1 || { say rta "ReDIAL failed"; exit 1; }
say games "step 3: the intention table on Games"
.venv/bin/python -m lmrec reproduce alpharec --only intention-games --reuse "$GAMES_REUSE" --out "$OUT/alpharec" \
  >> "$OUT/games.log" 2>&1 || { say games "the intention table failed"; exit 1; }
say games "step 4: the Games table, whole (the focus seeds)"
exec .venv/bin/python -m lmrec reproduce alpharec --only games-contenders --reuse "$GAMES_REUSE" --out "$OUT/alpharec" \
  --jobs 1 >> "$OUT/games.log" 2>&1
