"""scripts/reproduce_drl.py: --steps as a number or each recipe's own budget, and the study it runs."""

import argparse
import json
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from camal_rl import doom, recipes

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "reproduce_drl.py"


@pytest.fixture(scope="module")
def reproduce(load_script):
    return load_script("reproduce_drl")


@given(st.integers(min_value=1, max_value=10**9))
def test_steps_take_a_positive_count(reproduce, steps):
    assert reproduce.steps_option(str(steps)) == steps
    assert reproduce.steps_option(f"{steps:_}") == steps


@given(st.one_of(st.integers(max_value=0).map(str), st.text()))
def test_steps_refuse_what_is_neither_a_count_nor_budget(reproduce, text):
    digits = text.replace("_", "")
    assume(text != reproduce.EACH_BUDGET and not (digits.isascii() and digits.isdigit() and int(digits) > 0))
    with pytest.raises(argparse.ArgumentTypeError, match="positive number of agent steps, or 'budget'"):
        reproduce.steps_option(text)


@pytest.mark.parametrize("env", list(doom.PAPER_SCENARIOS))
def test_each_budget_is_the_recipes_own(reproduce, env):
    spec = doom.load_spec(env)
    for name in ["paper", *spec.recipes]:
        _, values = recipes.resolve(name, spec.recipes)
        expected = spec.recipes.get(name, {}).get(recipes.BUDGET, recipes.PAPER[recipes.BUDGET])
        assert reproduce.recipe_budget(spec, name) == expected == values[recipes.BUDGET]


@pytest.mark.slow
def test_a_study_at_each_budget_trains_each_scenario_to_its_own(tmp_path, short_scenario):
    """Two scenarios whose recipes carry different budgets: one command, each run trains to its own,
    and the one report (with the setting per scenario) compares both."""
    specs = {}
    skips = {}
    for name, steps, skip in (("short_a", 128, ""), ("short_b", 256, "frame_skip = 2\n")):
        path = Path(short_scenario(name=name))
        path.write_text(path.read_text() + f"\n[recipes.small]\nnum_envs = 2\nnum_steps = 32\nnum_minibatches = 2\n"
                                           f"update_epochs = 1\ntotal_timesteps = {steps}\n{skip}")
        specs[str(path)] = steps
        skips[str(path)] = 2 if skip else doom.load_spec(path).frame_skip
    runs, report = tmp_path / "runs", tmp_path / "report"
    done = subprocess.run([sys.executable, str(SCRIPT), "--steps", "budget", "--recipe", "small", "--seeds", "1",
                           "--envs", *specs, "--concurrent", "1", "--evals", "1", "--reps", "1000",
                           "--runs", str(runs), "--report", str(report), "--skip-media", "--",
                           "--eval-episodes", "1", "--no-cuda"],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    setting = json.loads((runs / "setting.json").read_text())
    assert setting["steps_per_run"] == specs
    assert setting["frame_skip"] == ", ".join(f"{path}: {skip}" for path, skip in skips.items())
    for path, steps in specs.items():
        name = doom.load_spec(path).name
        for method in ("camal", "vanilla"):
            summary = json.loads((runs / f"{name}__{method}__1" / "summary.json").read_text())
            assert summary["global_step"] == steps and summary["args"]["frame_skip"] == skips[path]
    text = (report / "report.md").read_text()
    assert all(f"{path}: {steps:,}" in text for path, steps in specs.items())
