#!/usr/bin/env bash
# The paper's DRL study at a given budget: scripts/reproduce_drl.py with the paper's four
# scenarios, both methods and 5 seeds (sweep, report, videos, attention panel).
# Usage: scripts/reproduce_drl.sh STEPS [more reproduce_drl.py flags, e.g. --paper-frames --concurrent 8]
set -euo pipefail
STEPS=${1:?give the step budget per run, e.g. 10000000 (the paper)}
shift
exec python "$(dirname "$0")/reproduce_drl.py" --steps "$STEPS" "$@"
