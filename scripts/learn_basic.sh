#!/usr/bin/env bash
# Learning check on Basic: CAMAL and Vanilla, 2 seeds each, on CPU; prints final eval return and IoU.
# Usage: scripts/learn_basic.sh [STEPS=150000] [OUT=runs/learn_basic] [PARALLEL=2] [extra camal-train flags...]
#        SEEDS="1 2" (default) picks the seeds.
set -euo pipefail
STEPS=${1:-150000}
OUT=${2:-runs/learn_basic}
PARALLEL=${3:-2}
shift $(( $# < 3 ? $# : 3 ))
EXTRA=("$@")
mkdir -p "$OUT"
jobs_running=0
for seed in ${SEEDS:-1 2}; do
  for method in camal vanilla; do
    coef=1.0; [ "$method" = vanilla ] && coef=0.0
    dir="$OUT/basic__${method}__${seed}"
    if [ -f "$dir/summary.json" ]; then echo "done already: $dir"; continue; fi
    resume=(); [ -f "$dir/checkpoint.pt" ] && resume=(--resume "$dir")
    # one core per run when runs share the machine
    python -m camal_rl.ppo --env basic --seed "$seed" --camal-coef "$coef" --total-timesteps "$STEPS" \
      --eval-interval 25000 --eval-episodes 10 --threads 1 --no-progress --run-dir "$dir" "${resume[@]}" "${EXTRA[@]}" \
      > "$dir.log" 2>&1 &
    jobs_running=$((jobs_running + 1))
    if [ "$jobs_running" -ge "$PARALLEL" ]; then wait -n; jobs_running=$((jobs_running - 1)); fi
  done
done
wait
python -m camal_rl.analysis "$OUT" --out "$OUT/report" --table
