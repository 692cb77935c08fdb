#!/usr/bin/env bash
# The paper's DRL study: 4 scenarios x {CAMAL, Vanilla} x 5 seeds at a given step budget, then
# the rliable report (SBCI of mean IoU and normalised return, POI CAMAL > Vanilla).
# Usage: scripts/reproduce_drl.sh STEPS [OUT=runs/drl] [WORKERS=2] [extra camal-sweep flags, e.g. --launcher ray]
set -euo pipefail
STEPS=${1:?give the step budget per run, e.g. 10000000 (the paper)}
OUT=${2:-runs/drl}
WORKERS=${3:-2}
shift $(( $# < 3 ? $# : 3 ))
camal-sweep --envs basic defend_the_line defend_the_center take_cover --methods camal vanilla \
  --seeds 1 2 3 4 5 --workers "$WORKERS" --out "$OUT" "$@" -- --total-timesteps "$STEPS"
