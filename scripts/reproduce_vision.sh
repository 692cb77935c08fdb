#!/usr/bin/env bash
# Image-classification evidence that runs on a CPU: DecoyDigits, 10 stratified folds, Vanilla vs
# CAMAL vs suppress-only (small_cnn, 20 epochs, lambda 0.3), then the Table 1/2/5-shaped report
# (one-tailed Wilcoxon over paired folds, mean +- std and the paper's mean +- 1.96 SE interval).
# Prior needs CLIP weights on disk: PRIOR_WEIGHTS=/path/to/open_clip.bin adds it.
# Usage: scripts/reproduce_vision.sh [OUT=runs/vision] [REPORT=reports/vision] [EPOCHS=20]
set -euo pipefail
OUT=${1:-runs/vision}
REPORT=${2:-reports/vision}
EPOCHS=${3:-20}
methods=(vanilla camal suppress)
prior=()
if [ -n "${PRIOR_WEIGHTS:-}" ]; then methods+=(prior); prior=(--prior-weights "$PRIOR_WEIGHTS"); fi
for method in "${methods[@]}"; do
    camal-classify --model small_cnn --dataset decoy_digits --method "$method" --camal-coef 0.3 --epochs "$EPOCHS" \
        --folds 10 --image-size 40 --out "$OUT" --no-progress "${prior[@]}"
done
mkdir -p "$REPORT"
cat > "$OUT/setting.json" <<JSON
{"data": "DecoyDigits (scikit-learn's 8x8 digits on a 40x40 canvas, a decoy square whose place matches the class in training and not in testing)",
 "model": "small_cnn", "folds": 10, "epochs": $EPOCHS, "lambda": 0.3, "methods": "${methods[*]}",
 "prior": "${PRIOR_WEIGHTS:-not run: no CLIP weights on disk (this machine cannot download them)}",
 "machine": "$(python -c 'import os, platform; print(platform.machine(), os.cpu_count(), "cores")')", "date": "$(date +%F)"}
JSON
camal-compare "$OUT" --out "$REPORT" --setting "$OUT/setting.json"
