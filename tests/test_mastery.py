"""scripts/mastery.py: the mastery table from run summaries, against each scenario's target."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from camal_rl import analysis

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "mastery.py"
returns = st.lists(st.floats(min_value=-500, max_value=3000, allow_nan=False), min_size=1, max_size=6)


def write_runs(root: Path, env: str, method: str, values: list[float], sps: int) -> None:
    for seed, value in enumerate(values, start=1):
        run = root / f"{env}__{method}__{seed}"
        run.mkdir(parents=True)
        (run / "summary.json").write_text(json.dumps({
            "env": env, "method": method, "seed": seed, "global_step": 4096, "eval_return_mean": value,
            "sps": sps, "wall_time_s": 120.0, "args": {"recipe": "neutral", "frame_skip": 2}}))


@settings(max_examples=25, deadline=None)
@given(env=st.sampled_from(["basic", "defend_the_center", "defend_the_line", "take_cover"]),
       camal=returns, vanilla=returns, sps=st.integers(min_value=1, max_value=1000))
def test_each_row_counts_the_seeds_at_target(load_script, tmp_path_factory, env, camal, vanilla, sps):
    mastery = load_script("mastery")
    root = tmp_path_factory.mktemp("runs")
    write_runs(root, env, "camal", camal, sps)
    write_runs(root, env, "vanilla", vanilla, 2 * sps)
    lines = mastery.table(analysis.find_results([root]))
    target = mastery.TARGETS[env]
    rows = {line.split(" | ")[2]: line for line in lines if line.startswith(f"| {env} |")}
    assert all(" | neutral | 2 | " in row for row in rows.values())  # the recipe and the frame skip it ran at
    for method, values in (("camal", camal), ("vanilla", vanilla)):
        assert f"| {sum(v >= target for v in values)} of {len(values)} |" in rows[method]
        assert f"({min(values):.1f}-{max(values):.1f})" in rows[method]
    assert f"CAMAL / Vanilla steps/s (runs two at a time): {env} 0.50." in lines


def test_unfinished_runs_are_listed_not_counted_and_no_run_is_an_error(tmp_path):
    write_runs(tmp_path / "runs", "basic", "camal", [81.0, 79.0], 300)
    (tmp_path / "runs" / "basic__vanilla__1").mkdir()
    (tmp_path / "runs" / "basic__vanilla__1" / "checkpoint.pt").write_bytes(b"")
    out = tmp_path / "report" / "mastery.md"
    done = subprocess.run([sys.executable, str(SCRIPT), str(tmp_path / "runs"), "--out", str(out)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "| basic | 80 | camal | neutral | 2 | 1, 2 | 80.0 +- 1.4 (79.0-81.0) | 1 of 2 |" in out.read_text()
    assert "basic__vanilla__1" in out.read_text().split("Not counted")[1]
    empty = tmp_path / "empty"
    empty.mkdir()
    done = subprocess.run([sys.executable, str(SCRIPT), str(empty)], capture_output=True, text=True, timeout=120)
    assert done.returncode != 0 and done.stderr.strip().count("\n") == 0 and "no finished run" in done.stderr


evaluations = st.lists(st.floats(min_value=-100, max_value=1000, allow_nan=False, width=32), min_size=2, max_size=6)


@settings(max_examples=10, deadline=None)
@given(per_seed=st.lists(evaluations, min_size=1, max_size=3), step=st.integers(min_value=512, max_value=50_000))
def test_the_curve_table_gives_each_evaluation_and_the_second_halfs_gain(load_script, tmp_path_factory, per_seed,
                                                                         step):
    from torch.utils.tensorboard import SummaryWriter

    from camal_rl.runs import Tag

    mastery = load_script("mastery")
    count = min(len(values) for values in per_seed)
    steps = [step * (i + 1) for i in range(count)]
    root = tmp_path_factory.mktemp("runs")
    write_runs(root, "defend_the_line", "camal", [values[-1] for values in per_seed], 300)
    for seed, values in enumerate(per_seed, start=1):
        with SummaryWriter(str(root / f"defend_the_line__camal__{seed}")) as writer:  # real event files
            for at, value in zip(steps, values[:count], strict=True):
                writer.add_scalar(Tag.EVAL_RETURN, value, at)
    means = np.array([values[:count] for values in per_seed], dtype=float).mean(0).tolist()  # as the script
    half = min(range(count - 1), key=lambda i: abs(steps[i] - steps[-1] / 2))
    lines = mastery.curves(analysis.find_results([root]))
    row = next(line for line in lines if line.startswith("| defend_the_line | camal |"))
    assert f"| {len(per_seed)} | " + ", ".join(f"{m:.1f} at {s:,}" for s, m in zip(steps, means, strict=True)) in row
    assert row.endswith(f"| {means[-1] - means[half]:+.1f} since {steps[half]:,} |")


def test_runs_without_evaluations_during_training_give_no_curve_table(load_script, tmp_path):
    write_runs(tmp_path, "basic", "camal", [81.0, 79.0], 300)
    assert load_script("mastery").curves(analysis.find_results([tmp_path])) == []


def test_runs_of_one_scenario_under_two_recipes_are_refused(tmp_path):
    write_runs(tmp_path / "runs", "basic", "camal", [81.0], 300)
    other = tmp_path / "runs" / "basic__vanilla__1"
    other.mkdir()
    (other / "summary.json").write_text(json.dumps({
        "env": "basic", "method": "vanilla", "seed": 1, "global_step": 4096, "eval_return_mean": 80.0, "sps": 300,
        "wall_time_s": 120.0, "args": {"recipe": "tuned"}}))
    done = subprocess.run([sys.executable, str(SCRIPT), str(tmp_path / "runs")], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode != 0 and done.stderr.strip().count("\n") == 0
    assert "trained with different settings" in done.stderr and "recipe 'neutral' vs 'tuned'" in done.stderr
