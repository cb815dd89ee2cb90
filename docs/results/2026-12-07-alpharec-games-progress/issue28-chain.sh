#!/bin/bash
# Issue 28's long runs in its order, each step resumable (run it again after a restart: finished runs are reused):
#   1. the Games table (configs/alpharec/01-games-contenders.toml) at its three seeds, without the focus pair's extra
#      seeds (a copy of the config with focus_seeds = []; the runs are the same folders), one run at a time with both
#      cores: first seed 2024, then AlphaRec at seed 2025,
#   3. the intention table on Games (14-intention-games on AlphaRec seed 2025, SmolLM2 writes the intentions; ~45
#      min), right after that AlphaRec, while its weights are on this machine (a record keeps no weights),
#      then the rest of the three seeds;
#   2. RTA's own pipeline on INSPIRED, then on ReDIAL (configs/rta);
#   4. the Games table again, whole: the focus seeds 2027 and 2028;
#   5. the rest of Games: every other model at three seeds (15-games-all, on the same run folders), and the
#      convergence table of every Games run (16-games-convergence);
#   6. the seeds and the widened grids on the other datasets (01-comparison), and their convergence (06);
#   7. the density table at the full data's step budget (13-density-steps);
#   8. zero-shot (04-zeroshot: MovieLens -> Amazon Industrial and -> Games) and the MLP width (12-mlp-width).
# A machine may not outlive a session (only git does: publish.sh keeps the finished runs and RTA's answers, and
# every step goes on from them with --reuse), so the Games runs of
# steps 1 and 4, each 2.4-4.5 h, run one at a time on both cores: each started early in a session ends in it. The
# tables of short runs run two at once on one thread each (--jobs 2; bench/results/jobs.md: 1.14-2.45x the runs an
# hour on this 2-core CPU; one and two threads trained to the same bits where checked), so their seconds are those
# of a run beside another.
# Code: the worktree $WT (a detached checkout of lmrec); output under $OUT; logs $OUT/games.log and $OUT/rta.log.
WT=${WT:-/work/wt/run}
OUT=${OUT:-/work/longruns}
MAIN=${MAIN:-/work/main}
GAMES_REUSE=$MAIN/docs/results/2026-12-07-alpharec-games-progress/reproduction
export LMREC_DATA=${LMREC_DATA:-/work/shared/data} HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 OMP_NUM_THREADS=2 PYTHONPATH=src
cd "$WT" || exit 1
say() { local log=$1; shift; echo "[issue28-chain] $(date -u +%FT%TZ) $*" >> "$OUT/$log.log"; }
# step LOG WHAT ARGS...: say WHAT, run `lmrec reproduce ARGS...` into LOG, stop the chain where it fails
step() {
  local log=$1 what=$2; shift 2
  say "$log" "$what ($(git rev-parse --short HEAD))"
  .venv/bin/python -m lmrec reproduce "$@" >> "$OUT/$log.log" 2>&1 || { say "$log" "failed: $what"; exit 1; }
}
# seeds_config NAME SEEDS: the Games table's config without the focus seeds, at SEEDS, in $OUT/NAME/alpharec
seeds_config() {
  mkdir -p "$OUT/$1/alpharec"
  sed -e 's/^focus_seeds = \[2027, 2028\]$/focus_seeds = []  # the table seeds first (issue 28)/' \
      -e "s/^seeds = \\[2024, 2025, 2026\\]\$/seeds = $2  # one step of issue 28's chain/" \
    configs/alpharec/01-games-contenders.toml > "$OUT/$1/alpharec/01-games-contenders.toml"
}
seeds_config configs-table-seed-2024 "[2024]"
seeds_config configs-table-seeds-2024-2025 "[2024, 2025]"  # the first seed names the plain folders
seeds_config configs-table-seeds "[2024, 2025, 2026]"
# games WHAT ARGS...: an AlphaRec step into $OUT/alpharec, going on from the published Games runs
games() { step games "$1" alpharec --reuse "$GAMES_REUSE" --out "$OUT/alpharec" "${@:2}"; }
# table WHAT CONFIGS ARGS...: the Games table from the config copy $OUT/CONFIGS, one run at a time
table() { games "$1" --configs "$OUT/$2" --only games-contenders --jobs 1 "${@:3}"; }
table "step 1: the Games table at seed 2024" configs-table-seed-2024
table "step 1: AlphaRec on Games at seed 2025" configs-table-seeds-2024-2025 --models alpharec
games "step 3: the intention table on Games" --only intention-games
table "step 1: the Games table at its three seeds" configs-table-seeds
# RTA goes on from what publish.sh kept of it (LLM answers, finished tables); ReDIAL, until it has answers there, from
# the 2026-12-02 ReDIAL answers
RTA_PROGRESS=$MAIN/docs/results/2026-12-08-rta-progress
inspired_reuse=() redial_reuse=(--reuse "$MAIN/docs/results/2026-12-02-rta-redial-epyc-2core")
[ -d "$RTA_PROGRESS" ] && inspired_reuse=(--reuse "$RTA_PROGRESS")
[ -d "$RTA_PROGRESS/answers/02-redial" ] && redial_reuse=(--reuse "$RTA_PROGRESS")
step rta "step 2: RTA's pipeline on INSPIRED" rta --only inspired "${inspired_reuse[@]}" --out "$OUT/rta"
step rta "step 2: RTA's pipeline on ReDIAL" rta --only redial "${redial_reuse[@]}" --out "$OUT/rta"
games "step 4: the Games table, whole (the focus seeds)" --only games-contenders --jobs 1
games "step 5: the rest of Games (every other model)" --only games-all,games-convergence --jobs 2
games "step 6: seeds and widened grids on the other datasets" --only comparison,convergence --jobs 2
games "step 7: the density table at a step budget" --only density-steps --jobs 2
games "step 8: zero-shot and the MLP width" --only zeroshot,mlp-width --jobs 2
say games "the chain is done"
