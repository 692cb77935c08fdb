#!/usr/bin/env bash
# Trainer steps/s on a GPU machine, one command (about 4-6 minutes): the old rollout path (the
# landed in-process gymnasium path, git 3e77790) and the new one, Vanilla and CAMAL, paper frames
# (240x320 colour) and 60x80 grey, 8 and 32 envs. It needs the machine's own torch, tensorboard,
# opencv and tqdm, plus wheels in .whl/ for what such a machine lacks (scripts/device_preamble.sh).
#   OUT=results/ bash scripts/device_bench.sh
set -uo pipefail
OUT=${OUT:-runs/device_bench}
source "$(dirname "$0")/device_preamble.sh"
if [ ! -d .bench_old/camal_rl ]; then
    mkdir -p .bench_old && git archive 3e77790 camal_rl | tar -x -C .bench_old || exit 1
fi
cat "$OUT/machine.txt"
# The Table 8 rows first: what comes back if the time runs out matters most.
python3 scripts/bench_train.py --cuda --old-tree .bench_old --frames paper --num-envs 8 --iterations 5 --old-iterations 3 \
    --cuda-graph off on --json "$OUT/bench_paper8.json" 2>&1 | tee "$OUT/bench_paper8.txt"
python3 scripts/bench_train.py --cuda --old-tree .bench_old --frames paper 60x80 --num-envs 32 --iterations 5 --old-iterations 3 \
    --json "$OUT/bench_32.json" 2>&1 | tee "$OUT/bench_32.txt"
python3 scripts/bench_train.py --cuda --old-tree .bench_old --frames 60x80 --num-envs 8 --iterations 5 --old-iterations 3 \
    --json "$OUT/bench_60x80_8.json" 2>&1 | tee "$OUT/bench_60x80_8.txt"
# The GPU-only tests (CUDA graph forward, sample_one's draws on CUDA), where the machine has pytest.
if python3 -c "import pytest" 2>/dev/null; then
    python3 -m pytest -q -rs tests/test_rollout.py 2>&1 | tail -5 | tee "$OUT/gpu_tests.txt"
else
    echo "GPU-only tests not run: this machine has no pytest" | tee "$OUT/gpu_tests.txt"
fi
