#!/usr/bin/env bash
# The DRL study at the paper's frames on a GPU machine, in one call (scripts/reproduce_drl.py):
# 4 scenarios x {CAMAL, Vanilla} x 5 seeds, then a side-by-side video per scenario (Motion JPEG:
# such a machine has no ffmpeg; transcode to H.264 afterwards) and the attention panel. What comes
# back in $OUT: the run folders without checkpoints (two tarballs), the media, the logs.
#   OUT=results STEPS=49152 CONCURRENT=20 bash scripts/device_study.sh
set -uo pipefail
OUT=${OUT:-runs/device_study}
STEPS=${STEPS:-49152}
CONCURRENT=${CONCURRENT:-20}
SEEDS=${SEEDS:-1 2 3 4 5}
FRAMES=${FRAMES---paper-frames}
TRAIN_SECONDS=${TRAIN_SECONDS:-330}
RUNS=${RUNS:-runs/drl_device}
EXTRA=${EXTRA:---eval-episodes 8}  # one round of the 8 eval envs per evaluation
source "$(dirname "$0")/device_preamble.sh"
# shellcheck disable=SC2086
timeout --kill-after=10 "$TRAIN_SECONDS" python3 scripts/reproduce_drl.py --steps "$STEPS" $FRAMES --seeds $SEEDS \
    --concurrent "$CONCURRENT" --runs "$RUNS" --skip-report --skip-media -- $EXTRA 2>&1 | tee "$OUT/train.log"
# shellcheck disable=SC2086
python3 scripts/reproduce_drl.py --steps "$STEPS" $FRAMES --seeds $SEEDS --runs "$RUNS" --report "$RUNS/report" \
    --videos "$RUNS/videos" --video-format avi --skip-train --skip-report 2>&1 | tee "$OUT/media.log"
# At most 8 files come back: logs, two run tarballs (no checkpoints), the report bits, four videos.
mkdir -p "$OUT/logs" && cp "$RUNS"/*.log "$OUT/logs/" 2>/dev/null
mv "$OUT/train.log" "$OUT/media.log" "$OUT/machine.txt" "$OUT/logs/" 2>/dev/null
tar -czf "$OUT/logs.tgz" -C "$OUT" logs && rm -rf "$OUT/logs"
tar -czf "$OUT/runs_a.tgz" --exclude='checkpoint*.pt' -C "$RUNS" setting.json $(cd "$RUNS" && ls -d basic__*[0-9] defend_the_line__*[0-9] 2>/dev/null)
tar -czf "$OUT/runs_b.tgz" --exclude='checkpoint*.pt' -C "$RUNS" $(cd "$RUNS" && ls -d defend_the_center__*[0-9] take_cover__*[0-9] 2>/dev/null)
[ -d "$RUNS/report" ] && tar -czf "$OUT/report.tgz" -C "$RUNS" report
cp "$RUNS"/videos/*.avi "$OUT/" 2>/dev/null
ls -la "$OUT"
