#!/usr/bin/env bash
# The long CPU runs behind reports/recipe_search_neutral/, reports/vs_sample_factory/ and
# reports/drl_master/, in order, each resumable: stop it at any point and run it again to go on
# (a search resumes from its study.db, a sweep skips finished runs and resumes stopped ones).
# Run it on an otherwise quiet machine: the searches score wall-clock time. The study needs each
# search's winner (its best.toml) in the scenario's spec as [recipes.neutral].
#
#   bash scripts/master_study.sh [step ...]     # steps: sf search-basic search-center search-line
#                                               #        search-cover study   (default: all, in order)
set -euo pipefail
cd "$(dirname "$0")/.."
. .venv/bin/activate

search() {  # scenario, minutes per run, hours for the whole search
  python scripts/tune_recipe.py --env "$1" --minutes "$2" --budget-hours "$3" --trials 100 --seeds 101 102 \
    --start-from tuned --out "reports/recipe_search_neutral/$1"
}

run_step() {
  case "$1" in
    sf) python scripts/vs_sample_factory.py --minutes 10 --sf-python .venv-sf/bin/python \
          --out reports/vs_sample_factory ;;
    search-basic) search basic 2 1 ;;
    search-center) search defend_the_center 5 2 ;;
    search-line) search defend_the_line 5 2 ;;
    search-cover) search take_cover 5 2 ;;
    # frame skip 4 as the study ran, before DefendCenter's recipe took 1 (reports/mastery_frame_skip/)
    study) python scripts/reproduce_drl.py --steps budget --seeds 1 2 3 4 5 --recipe neutral --concurrent 2 \
             --runs runs/drl_master --report reports/drl_master --videos videos/master -- --frame-skip 4 ;;
    *) echo "unknown step $1" >&2; exit 2 ;;
  esac
}

steps=("$@")
[ ${#steps[@]} -eq 0 ] && steps=(sf search-basic search-center search-line search-cover study)
for step in "${steps[@]}"; do
  echo "== $(date -u +%FT%TZ) $step"
  run_step "$step"
done
echo "== $(date -u +%FT%TZ) done"
