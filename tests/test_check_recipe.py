"""The recipe check's per-evaluation comparison (scripts/check_recipe.py), without training."""

import json
import os
import re
import signal
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from camal_rl import doom, runs


@pytest.fixture(scope="module")
def check(load_script):
    return load_script("check_recipe")


def test_evaluations_a_few_steps_apart_are_compared_as_one(check):
    spec = doom.load_spec("defend_the_line")  # random 8.3, reference 25
    def at(value):
        return spec.random_score + value * (spec.reference_score - spec.random_score)

    described = [
        {"recipe": "from_basic", "method": "camal", "evaluations": [(100_352, at(0.8)), (200_704, at(0.9))]},
        {"recipe": "from_basic", "method": "camal", "evaluations": [(100_352, at(1.0)), (200_704, at(0.9))]},
        {"recipe": "paper", "method": "camal",
         "evaluations": [(100_352, at(0.5)), (200_704, at(0.6)), (300_032, at(0.7))]},
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


SETTINGS = {"recipe": "paper", "learning_rate": 2.5e-4, "frame_skip": 4, "obs_size": [60, 80]}


def same_as_then(recipe, method, seed):
    return {**SETTINGS, "recipe": recipe, "obs_size": (60, 80)}  # a tuple now, a list in the file


def test_an_earlier_check_brings_its_other_recipes_runs_marked(check, tmp_path):
    setting = {"env": "defend_the_center", "steps": 500_000, "seeds": [1, 2, 3], "eval_interval": 100_000,
               "eval_episodes": 10}
    runs_before = [{"recipe": recipe, "method": "camal", "seed": 1, "evaluations": [[100_352, value]],
                    "settings": {**SETTINGS, "recipe": recipe}}
                   for recipe, value in (("paper", 7.0), ("from_basic", 10.0))]
    path = tmp_path / "check.json"
    path.write_text(json.dumps({"setting": {**setting, "date": "2026-11-30"}, "runs": runs_before}))
    trained_now = {("tuned", "camal", 1), ("from_basic", "camal", 1)}
    kept = check.earlier_runs(path, setting, trained_now, same_as_then)
    assert [d["recipe"] for d in kept] == ["paper"]
    assert kept[0]["earlier"] == f"{path} (2026-11-30)"
    assert check.finished_on(kept) == time.strftime("%Y-%m-%d")  # earlier runs do not date this check
    earlier = [{"recipe": "from_basic"}, {"recipe": "paper"}, {"recipe": "from_basic"}]
    assert check.compared_in_order(["tuned"], earlier) == ["tuned", "paper", "from_basic"]  # a new recipe vs Table 8


def test_an_earlier_check_brings_the_seeds_this_one_does_not_train(check, tmp_path):
    """A check that adds seed 3 of a recipe keeps that recipe's seeds 1-2 from the earlier check, and
    the earlier check's own earlier runs keep the mark of the check that trained them."""
    setting = {"env": "defend_the_center", "steps": 500_000, "seeds": [3], "eval_interval": 100_000,
               "eval_episodes": 10}
    runs_before = [{"recipe": "tuned", "method": "camal", "seed": seed, "evaluations": [[100_352, 12.0]],
                    "settings": {**SETTINGS, "recipe": "tuned"}} for seed in (1, 2, 3)]
    runs_before.append({"recipe": "paper", "method": "camal", "seed": 1, "evaluations": [[100_352, 7.0]],
                        "earlier": "first/check.json (2026-11-30)", "settings": SETTINGS})
    path = tmp_path / "check.json"
    path.write_text(json.dumps({"setting": {**setting, "seeds": [1, 2, 3], "date": "2026-12-01"}, "runs": runs_before}))
    kept = check.earlier_runs(path, setting, {("tuned", "camal", 3)}, same_as_then)
    assert [(d["recipe"], d["seed"]) for d in kept] == [("tuned", 1), ("tuned", 2), ("paper", 1)]
    assert [d["earlier"] for d in kept] == [f"{path} (2026-12-01)"] * 2 + ["first/check.json (2026-11-30)"]
    assert check.compared_in_order(["tuned"], kept) == ["tuned", "paper"]  # the recipe once, though in both
    with pytest.raises(ValueError, match="every run in it is trained again"):
        check.earlier_runs(path, setting, {(d["recipe"], "camal", d["seed"]) for d in runs_before}, same_as_then)


@pytest.mark.parametrize("change, says", [({"steps": 100_000}, "its steps is 100000"),
                                          ({"env": "basic"}, "its env is 'basic'")])
def test_an_earlier_check_of_another_setting_is_refused(check, tmp_path, change, says):
    setting = {"env": "defend_the_center", "steps": 500_000, "seeds": [1], "eval_interval": 100_000,
               "eval_episodes": 10}
    path = tmp_path / "check.json"
    path.write_text(json.dumps({"setting": {**setting, **change}, "runs": [{"recipe": "paper"}]}))
    with pytest.raises(ValueError, match=says):
        check.earlier_runs(path, setting, {("tuned", "camal", 1)}, same_as_then)


@pytest.mark.parametrize("recorded, says", [
    ({**SETTINGS, "frame_skip": 1}, "frame_skip 1 then, 4 now"),
    ({**SETTINGS, "learning_rate": 1e-3}, "learning_rate 0.001 then, 0.00025 now"),
    (None, "does not record its trainer settings"),
])
def test_an_earlier_run_trained_with_other_settings_is_refused(check, tmp_path, recorded, says):
    """A recipe edited since the earlier check (a frame skip moved, a learning rate) would hand back a
    result made under other settings under the recipe's name."""
    setting = {"env": "defend_the_center", "steps": 500_000, "seeds": [2], "eval_interval": 100_000,
               "eval_episodes": 10}
    earlier_run = {"recipe": "paper", "method": "camal", "seed": 1, "evaluations": [[100_352, 7.0]]}
    if recorded is not None:
        earlier_run["settings"] = recorded
    path = tmp_path / "check.json"
    path.write_text(json.dumps({"setting": setting, "runs": [earlier_run]}))
    with pytest.raises(ValueError, match=re.escape(says)):
        check.earlier_runs(path, setting, {("tuned", "camal", 2)}, same_as_then)


def test_the_settings_a_check_compares_are_what_camal_train_resolves(check):
    """Today's settings of a run come from camal-train's own resolution: the recipe's frame skip and
    values, the method, and none of how a run runs."""
    options = SimpleNamespace(env="defend_the_center", steps=200_000, eval_interval=50_000, eval_episodes=5)
    resolved = check.settings_now(options, doom.load_spec("defend_the_center"))
    neutral, vanilla = resolved("neutral", "camal", 3), resolved("neutral", "vanilla", 3)
    recipe = doom.load_spec("defend_the_center").recipes["neutral"]
    assert neutral["frame_skip"] == recipe["frame_skip"] and neutral["learning_rate"] == recipe["learning_rate"]
    assert resolved("paper", "camal", 3)["frame_skip"] == doom.load_spec("defend_the_center").frame_skip
    assert vanilla["camal_coef"] == 0 and neutral["camal_coef"] > 0
    assert neutral["total_timesteps"] == 200_000 and neutral["seed"] == 3
    assert not set(neutral) & (runs.HOW_A_RUN_RUNS | {"env"})


def test_an_earlier_check_is_matched_with_what_camal_train_gives_today(check, tmp_path):
    """The real resolution, as a summary records it and a check.json reads it back: today's own runs
    come in; one whose recipe moved its frame skip, or whose recipe is gone, is refused in one line."""
    options = SimpleNamespace(env="defend_the_center", steps=200_000, eval_interval=50_000, eval_episodes=5)
    now = check.settings_now(options, doom.load_spec("defend_the_center"))
    setting = {"env": "defend_the_center", "steps": 200_000, "seeds": [2], "eval_interval": 50_000,
               "eval_episodes": 5}

    def bring_in(recorded, recipe="neutral"):
        earlier_run = {"recipe": recipe, "method": "vanilla", "seed": 1, "evaluations": [[50_176, 3.0]],
                       "settings": json.loads(json.dumps(recorded))}
        path = tmp_path / "check.json"
        path.write_text(json.dumps({"setting": setting, "runs": [earlier_run]}))
        return check.earlier_runs(path, setting, {("neutral", "vanilla", 2)}, now)

    today = now("neutral", "vanilla", 1)
    assert [d["seed"] for d in bring_in(today)] == [1]
    with pytest.raises(ValueError, match=r"neutral/vanilla/1 was trained with other settings: frame_skip 4 then, 1 "
                                         r"now; train it here instead"):
        bring_in({**today, "frame_skip": 4})
    with pytest.raises(ValueError, match=r"its run gone/vanilla/1 cannot be matched .*no such recipe"):
        bring_in(today, recipe="gone")


def test_an_earlier_check_that_is_not_one_is_refused(check, tmp_path):
    setting = {"env": "basic", "steps": 1, "seeds": [1], "eval_interval": 1, "eval_episodes": 1}
    (tmp_path / "broken.json").write_text("{\"setting\": ")
    for path in (tmp_path / "broken.json", tmp_path / "absent.json"):
        with pytest.raises(ValueError, match="not a check.json written by this script"):
            check.earlier_runs(path, setting, {("tuned", "camal", 1)}, same_as_then)


def fake_sweep(finishes):
    """A stand-in for ``camal_rl.sweep``: the runs named in ``finishes`` leave a summary, the others fail
    (``None``: no run leaves a summary and none is reported failed)."""
    def sweep(envs, methods, seeds, out, *, train_args, **launch):
        failed = []
        for method in methods:
            for seed in seeds:
                run = Path(out) / f"{envs[0]}__{method}__{seed}"
                run.mkdir(parents=True, exist_ok=True)
                if finishes is not None and f"{out.name}/{run.name}" in finishes:
                    (run / runs.SUMMARY).write_text(json.dumps({"env": envs[0]}))
                elif finishes is not None:
                    failed.append(run.name)
        return {"ran": [], "skipped": [], "failed": failed}

    return SimpleNamespace(sweep=sweep)


def test_a_check_with_a_failed_run_fails_and_writes_nothing(check, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(check, "sweep", fake_sweep({"tuned/basic__camal__1"}))
    argv = ["--env", "basic", "--recipes", "tuned", "--seeds", "1", "--runs", str(tmp_path / "runs"),
            "--out", str(tmp_path / "out")]
    handler = signal.getsignal(signal.SIGTERM)  # run_cli turns SIGTERM into a stop; give pytest its own back
    try:
        with pytest.raises(SystemExit) as stopped:
            check.cli(argv)
    finally:
        signal.signal(signal.SIGTERM, handler)
    assert stopped.value.code == 2
    assert capsys.readouterr().err.splitlines() == [
        f"check_recipe: error: 1 run(s) did not finish: tuned/basic__vanilla__1 (their .log files are in "
        f"{tmp_path / 'runs'}/<recipe>); no report written. Run the same command to train them again"]
    assert not (tmp_path / "out").exists()


def test_a_run_that_left_no_summary_counts_as_failed(check, tmp_path, monkeypatch):
    """A sweep that reports no failure but whose run left no summary (stopped, lost) fails the check too."""
    monkeypatch.setattr(check, "sweep", fake_sweep(None))
    with pytest.raises(check.CheckError, match=r"^2 run\(s\) did not finish: tuned/basic__camal__3, "
                                               r"tuned/basic__vanilla__3 "):
        check.main(["--env", "basic", "--recipes", "tuned", "--seeds", "3", "--runs", str(tmp_path / "runs"),
                    "--out", str(tmp_path / "out")])
    assert not (tmp_path / "out").exists()


def test_a_check_refuses_flags_that_cannot_run(check, tmp_path, capsys):
    with pytest.raises(SystemExit) as stopped:
        check.parse_options(["--steps", "0", "--runs", str(tmp_path), "--out", str(tmp_path)])
    assert stopped.value.code == 2
    assert capsys.readouterr().err.splitlines()[-1].endswith("error: --steps must be >= 1, got 0")


def test_recipes_are_checked_by_the_names_they_resolve_to_before_anything_trains(check):
    basic = doom.load_spec("basic")
    assert check.recipe_names(None, basic) == ["neutral", "paper"]  # default: what --recipe default takes
    assert check.recipe_names(["default", "neutral", "tuned"], basic) == ["neutral", "tuned"]
    only_neutral = SimpleNamespace(name="mine", recipes={"neutral": {"learning_rate": 1e-3}})
    assert check.recipe_names(None, only_neutral) == ["neutral", "paper"]
    assert check.recipe_names(None, SimpleNamespace(name="plain", recipes={})) == ["paper"]
    with pytest.raises(check.CheckError, match=r"^--recipes tuned: mine has default, paper, neutral$"):
        check.recipe_names(["neutral", "tuned"], only_neutral)


def test_an_unknown_recipe_stops_the_check_before_it_trains(check, tmp_path, monkeypatch):
    monkeypatch.setattr(check, "sweep", fake_sweep(set()))
    with pytest.raises(check.CheckError, match=r"^--recipes nope: basic has default, paper, "):
        check.main(["--env", "basic", "--recipes", "neutral", "nope", "--seeds", "1", "--runs",
                    str(tmp_path / "runs"), "--out", str(tmp_path / "out")])
    assert not (tmp_path / "runs").exists() and not (tmp_path / "out").exists()
