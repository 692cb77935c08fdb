"""scripts/vs_sample_factory.py keeps a finished run only where it ran with the settings asked for now
(Sample Factory itself is not installed here: its venv is the script's to make)."""

import subprocess
import sys
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "vs_sample_factory.py"
run_settings = st.fixed_dictionaries({
    "env": st.sampled_from(["basic", "defend_the_center", "defend_the_line", "take_cover"]),
    "seed": st.integers(min_value=0, max_value=2**32 - 1),
    "minutes": st.floats(min_value=0.1, max_value=60, allow_nan=False),
    "recipe": st.sampled_from(["neutral", "tuned", "paper"])})


@settings(max_examples=30, deadline=None)
@given(asked=run_settings, ran=run_settings, started=st.floats(min_value=0, max_value=2e9, allow_nan=False))
def test_a_run_is_kept_only_under_the_settings_it_ran_with(load_script, tmp_path_factory, asked, ran, started):
    versus = load_script("vs_sample_factory")
    folder = tmp_path_factory.mktemp("runs")
    assert versus.started_with(folder, "ours_x", asked) is None  # never ran: run it
    versus.stamp_run(folder, "ours_x", ran, started)
    assert versus.started_with(folder, "ours_x", ran) == started
    assert (versus.started_with(folder, "ours_x", asked) == started) == (asked == ran)


def test_a_stamp_that_does_not_read_is_run_again(load_script, tmp_path, capsys):
    versus = load_script("vs_sample_factory")
    wanted = {"env": "basic", "seed": 1, "minutes": 10.0}
    for text in ("", "[1, 2]", '{"settings": {"env": "basic", "seed": 1, "minutes": 10.0}}', "1712.5"):
        (tmp_path / "sf_basic.json").write_text(text)
        assert versus.started_with(tmp_path, "sf_basic", wanted) is None
        assert "is not a run stamp: running sf_basic again" in capsys.readouterr().out


def test_an_unknown_recipe_is_one_line_before_anything_runs(tmp_path):
    done = subprocess.run([sys.executable, str(SCRIPT), "--envs", "basic", "take_cover", "--recipe", "nope",
                           "--sf-python", sys.executable, "--runs", str(tmp_path / "runs"),
                           "--out", str(tmp_path / "out")], capture_output=True, text=True)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines()[-1].endswith("--recipe nope: basic has default, paper, neutral, tuned")
    assert not (tmp_path / "runs").exists() and not (tmp_path / "out").exists()


def test_a_run_started_again_loses_its_old_stamp_first(load_script, tmp_path, capsys):
    versus = load_script("vs_sample_factory")
    before = {"env": "basic", "seed": 1, "minutes": 10.0, "recipe": "tuned"}
    versus.stamp_run(tmp_path, "ours_basic", before, 5.0)
    versus.forget_run(tmp_path, "ours_basic")  # as a new run under other settings starts, then is killed
    assert versus.started_with(tmp_path, "ours_basic", before) is None
    (tmp_path / "ours_basic.started").write_text("1712.5")  # the stamp older versions wrote
    assert versus.started_with(tmp_path, "ours_basic", before) is None
    assert "ours_basic has no record of its settings: running it again" in capsys.readouterr().out


def test_the_report_says_when_each_run_was_made_and_which_recipe(load_script):
    versus = load_script("vs_sample_factory")
    row = {"at_minutes": [1.0, None], "best": 2.0}
    results = {"machine": "machine: test", "minutes": 2.0, "seed": 1, "recipe": "neutral", "marks_minutes": [1, 2],
               "scenarios": {"basic": {
                   "ours (CAMAL, neutral recipe)": {**row, "started_utc": "2026-12-07 05:00"},
                   "Sample Factory 2.1.1 APPO defaults": {**row, "started_utc": "2026-12-06 09:00"}}}}
    text = versus.report(results)
    assert "--minutes 2 --recipe neutral --sf-python" in text
    assert "| basic | ours (CAMAL, neutral recipe) | 2026-12-07 05:00 | 1.0 | - | 2.0 |" in text
    assert "| basic | Sample Factory 2.1.1 APPO defaults | 2026-12-06 09:00 | 1.0 | - | 2.0 |" in text
    ran = "python scripts/vs_sample_factory.py --envs basic --minutes 2 --out elsewhere"
    assert f"Command: `{ran}`" in versus.report({**results, "command": ran})  # the command as it was given


def test_our_run_is_stamped_with_what_it_learned_with_not_only_a_recipe_name(load_script, tmp_path, monkeypatch):
    versus = load_script("vs_sample_factory")
    folder = tmp_path / "envs"
    folder.mkdir()
    spec = ('config = "basic"\nmask_categories = ["Monster"]\n'
            "[recipes.neutral]\nlearning_rate = {lr}\nframe_skip = {skip}\n")
    monkeypatch.setenv("CAMAL_ENVS", str(folder))
    stamps = []
    for lr, skip in (("1e-3", 4), ("1e-3", 2), ("2e-3", 2)):  # the recipe edited under the same name
        (folder / "mine.toml").write_text(spec.format(lr=lr, skip=skip))
        stamps.append(versus.our_settings("mine", 1, 10.0, "neutral"))
    versus.stamp_run(tmp_path, "ours_mine", stamps[0], 5.0)
    assert versus.started_with(tmp_path, "ours_mine", stamps[0]) == 5.0  # read back equal (tuples as lists)
    assert versus.started_with(tmp_path, "ours_mine", stamps[1]) is None
    assert versus.started_with(tmp_path, "ours_mine", stamps[2]) is None
    assert stamps[1]["args"]["frame_skip"] == 2 and stamps[2]["args"]["learning_rate"] == 2e-3
    assert versus.differing(stamps[0], stamps[2]) == ["args.frame_skip", "args.learning_rate"]
    assert versus.differing({"env": "basic"}, {"minutes": 1}) == ["env", "minutes"]
    assert versus.differing([1], [1]) == [] and versus.differing(1, 2) == ["all"]
