"""The recipe check's per-evaluation comparison (scripts/check_recipe.py), without training."""

import json
import os

import pytest

from camal_rl import doom, runs

@pytest.fixture(scope="module")
def check(load_script):
    return load_script("check_recipe")


def test_evaluations_a_few_steps_apart_are_compared_as_one(check):
    spec = doom.load_spec("defend_the_line")  # random 8.3, reference 25
    at = lambda value: spec.random_score + value * (spec.reference_score - spec.random_score)  # noqa: E731
    described = [
        {"recipe": "from_basic", "method": "camal", "evaluations": [(100_352, at(0.8)), (200_704, at(0.9))]},
        {"recipe": "from_basic", "method": "camal", "evaluations": [(100_352, at(1.0)), (200_704, at(0.9))]},
        {"recipe": "paper", "method": "camal", "evaluations": [(100_352, at(0.5)), (200_704, at(0.6)), (300_032, at(0.7))]},
    ]
    curves = check.normalised_by_evaluation(described, spec, 100_000)
    assert list(curves["from_basic/camal"]) == [100_000, 200_000]
    assert curves["from_basic/camal"][100_000] == pytest.approx(0.9)
    assert curves["paper/camal"] == pytest.approx({100_000: 0.5, 200_000: 0.6, 300_000: 0.7})


def test_a_report_is_dated_by_its_runs_not_by_the_redraw(check, tmp_path):
    run = tmp_path / "basic__camal__1"
    run.mkdir()
    (run / runs.SUMMARY).write_text(json.dumps({"env": "basic"}))
    finished = 1_764_504_000  # 2025-11-30 12:00 UTC: still that day from UTC-12 to UTC+11
    os.utime(run / runs.SUMMARY, (finished, finished))
    assert check.finished_on([{"run": str(run)}]) == "2025-11-30"
