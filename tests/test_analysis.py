"""camal-compare on made-up runs: rliable CIs, probability of improvement, Wilcoxon tables, plots,
and the runs and fold files it refuses. The statistics themselves: test_statistics.py."""

import json
import math
import re
import signal
import subprocess
import sys

import cv2
import numpy as np
import pytest
from torch.utils.tensorboard import SummaryWriter

from camal_rl import analysis, statistics
from camal_rl.doom import load_spec

REPS = statistics.MIN_REPS


def make_runs(root, returns_by_method, ious_by_method, envs=("basic", "take_cover"), seeds=5):
    rng = np.random.default_rng(0)
    for method, level in returns_by_method.items():
        for env in envs:
            spec = load_spec(env)
            for seed in range(seeds):
                run = root / f"{env}__{method}__{seed}"
                run.mkdir(parents=True)
                fraction = level + 0.02 * rng.standard_normal()
                final = spec.random_score + fraction * (spec.reference_score - spec.random_score)
                writer = SummaryWriter(str(run))
                for step in (1000, 2000, 3000):
                    writer.add_scalar("eval/return_mean", final * step / 3000, step)
                writer.close()
                summary = {"env": env, "method": method, "seed": seed, "global_step": 3000,
                           "eval_return_mean": final,
                           "eval_iou_mean": ious_by_method[method] + 0.01 * rng.standard_normal(),
                           "sps": 100, "wall_time_s": 1.0, "args": {}}
                (run / "summary.json").write_text(json.dumps(summary))


def test_clearly_better_method_is_significant(tmp_path):
    make_runs(tmp_path / "runs", {"camal": 0.8, "vanilla": 0.3}, {"camal": 0.5, "vanilla": 0.1})
    results = analysis.compare([tmp_path / "runs"], tmp_path / "out", reps=REPS, seed=0)
    for metric in ("poi_return", "poi_iou"):
        poi = results["rl"][metric]["camal>vanilla"]
        # every CAMAL run beats every Vanilla run: P = 1 in every resample, a zero-width CI that is still a win
        assert poi == {"p": 1.0, "ci": [1.0, 1.0], "verdict": "significant", "runs": 5}
    assert results["rl"]["return"]["camal"]["Mean"]["point"] > results["rl"]["return"]["vanilla"]["Mean"]["ci"][1]
    report = (tmp_path / "out" / "report.md").read_text()
    assert "P(CAMAL > vanilla)" in report and "significant" in report
    for name in ("aggregates_return.png", "poi_return.png", "aggregates_iou.png", "sample_efficiency.png"):
        path = tmp_path / "out" / name
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        image = cv2.imread(str(path))
        assert image is not None and image.shape[0] > 50 and image.shape[1] > 50


def test_curves_are_drawn_at_the_evaluation_steps_taken(tmp_path):
    make_runs(tmp_path / "runs", {"camal": 0.8, "vanilla": 0.3}, {"camal": 0.5, "vanilla": 0.1})
    runs = analysis.find_results([tmp_path / "runs"]).runs
    steps, matrices = analysis.sample_efficiency(runs, ["basic", "take_cover"])
    assert list(steps) == [1000, 2000, 3000]  # no point at 0, nothing carried back before the first evaluation
    assert matrices["camal"].shape == (5, 2, 3)
    curves = analysis.learning_curves(runs)
    camal_return = curves["basic"]["camal"]["return"]
    assert camal_return.steps == (1000, 2000, 3000) and camal_return.runs == 5
    assert camal_return.low[2] < camal_return.point[2] < camal_return.high[2]
    results = analysis.compare([tmp_path / "runs"], tmp_path / "out", reps=REPS,
                               setting={"frames": "60x80 grey", "machine": "test"})
    report = (tmp_path / "out" / "report.md").read_text()
    assert "| frames | 60x80 grey |" in report and "all-zero maps" in report
    assert results["rl"]["learning_curves"]["take_cover"]["vanilla"]["return"]["steps"] == [1000, 2000, 3000]
    assert (tmp_path / "out" / "learning_curves.png").read_bytes()[:4] == b"\x89PNG"


def test_fixed_seed_gives_identical_numbers(tmp_path):
    make_runs(tmp_path / "runs", {"camal": 0.6, "vanilla": 0.5}, {"camal": 0.3, "vanilla": 0.2}, envs=("basic",))
    first = analysis.compare([tmp_path / "runs"], tmp_path / "a", reps=REPS, seed=7, plots=False)
    second = analysis.compare([tmp_path / "runs"], tmp_path / "b", reps=REPS, seed=7, plots=False)
    assert first == second
    assert (tmp_path / "a" / "results.json").read_text() == (tmp_path / "b" / "results.json").read_text()
    third = analysis.compare([tmp_path / "runs"], tmp_path / "c", reps=REPS, seed=8, plots=False)
    assert third["rl"]["return"]["camal"]["Mean"]["ci"] != first["rl"]["return"]["camal"]["Mean"]["ci"]


def test_empty_folder_and_single_method(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(analysis.AnalysisError, match="no results"):
        analysis.compare([tmp_path / "empty"], tmp_path / "out")
    make_runs(tmp_path / "one", {"camal": 0.6}, {"camal": 0.3}, envs=("basic",), seeds=3)
    results = analysis.compare([tmp_path / "one"], tmp_path / "out1", reps=REPS, plots=False)
    assert any("only one method" in note for note in results["notes"])
    assert "What could not be computed" in (tmp_path / "out1" / "report.md").read_text()


def test_mismatched_seed_counts_are_reported(tmp_path):
    make_runs(tmp_path / "a", {"camal": 0.7}, {"camal": 0.4}, seeds=5)
    make_runs(tmp_path / "b", {"vanilla": 0.3}, {"vanilla": 0.1}, envs=("basic",), seeds=3)
    results = analysis.compare([tmp_path / "a", tmp_path / "b"], tmp_path / "out", reps=REPS, plots=False)
    assert any("take_cover: only camal" in note for note in results["notes"])
    assert "return" in results["rl"]


def test_cli_no_runs_is_one_line_error(tmp_path):
    (tmp_path / "empty").mkdir()
    result = subprocess.run([sys.executable, "-m", "camal_rl.analysis", str(tmp_path / "empty"), "--out",
                             str(tmp_path / "o")], capture_output=True, text=True)
    assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1


def write_folds(root, method, accuracy, iou, folds=10, model="resnet18", dataset="decoy_digits"):
    rng = np.random.default_rng(len(method))
    for fold in range(folds):
        record = {"task": "classification", "model": model, "dataset": dataset, "method": method, "fold": fold,
                  "test_accuracy": accuracy + 0.01 * rng.standard_normal(),
                  "test_iou": iou + 0.01 * rng.standard_normal(),
                  "deletion_auc": 0.3, "insertion_auc": 0.5}
        path = root / f"{model}__{dataset}__{method}" / f"fold_{fold:02d}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(record))


def test_wilcoxon_tables_bold_where_significant(tmp_path):
    write_folds(tmp_path, "camal", 0.90, 0.60)
    write_folds(tmp_path, "vanilla", 0.80, 0.10)
    write_folds(tmp_path, "prior", 0.90, 0.05)
    analysis.compare([tmp_path], tmp_path / "out", plots=False)
    report = (tmp_path / "out" / "report.md").read_text()
    iou_vs_vanilla = report.split("### test IoU (%): CAMAL vs vanilla")[1].split("###")[0]
    cell = r"\| resnet18 \| \*\*(59|60)\.\d ± \d\.\d\*\* \[5\d\.\d, 6\d\.\d\] \(p="
    assert re.search(cell, iou_vs_vanilla), iou_vs_vanilla
    accuracy_vs_prior = report.split("### test accuracy (%): CAMAL vs prior")[1].split("###")[0]
    assert "**" not in accuracy_vs_prior.split("|---|")[1]  # equal accuracy: not significant


# ---------------------------------------------------------------------------------------
# What cannot be a result is refused, naming where it came from
# ---------------------------------------------------------------------------------------
def test_too_few_bootstrap_repetitions_are_refused_before_anything_is_read(tmp_path):
    make_runs(tmp_path / "runs", {"camal": 0.8, "vanilla": 0.3}, {"camal": 0.5, "vanilla": 0.1}, envs=("basic",))
    with pytest.raises(analysis.AnalysisError, match=f"--reps 1 is too few .* give --reps {REPS} or more"):
        analysis.compare([tmp_path / "runs"], tmp_path / "out", reps=1)
    with pytest.raises(analysis.AnalysisError, match="--min-runs must be >= 1"):
        analysis.compare([tmp_path / "runs"], tmp_path / "out", min_runs=0)
    assert not (tmp_path / "out").exists()


def test_an_infinite_return_is_refused_naming_the_run(tmp_path):
    make_runs(tmp_path / "runs", {"camal": 0.8, "vanilla": 0.3}, {"camal": 0.5, "vanilla": 0.1}, envs=("basic",))
    run = tmp_path / "runs" / "basic__vanilla__2"
    summary = json.loads((run / "summary.json").read_text())
    (run / "summary.json").write_text(json.dumps({**summary, "eval_return_mean": math.inf}))
    why = f"{run / 'summary.json'}: 'eval_return_mean' is inf, not a finite number"
    with pytest.raises(analysis.AnalysisError, match=re.escape(why)):
        analysis.compare([tmp_path / "runs"], tmp_path / "out")
    assert not (tmp_path / "out").exists()
    results = analysis.compare([tmp_path / "runs"], tmp_path / "out", reps=REPS, plots=False, skip_broken=True)
    assert len(results["left_out"]) == 1 and why in results["left_out"][0]
    assert results["rl"]["per_env"]["basic/vanilla"]["seeds"] == 4


def write_fold(path, **record):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"task": "classification", "model": "resnet18", "dataset": "decoy_digits",
                                "method": "camal", "fold": 0, **record}))


@pytest.mark.parametrize("record, words", [
    ({"test_accuracy": 1.5}, "'test_accuracy' is 1.5, outside [0, 1]"),
    ({"test_iou": -0.1}, "'test_iou' is -0.1, outside [0, 1]"),
    ({"deletion_auc": math.inf}, "'deletion_auc' is inf, not a finite number"),
    ({"test_accuracy": "0.9"}, "'test_accuracy' is str '0.9', not a number"),
    ({"fold": "first"}, "'fold' is str 'first', not a whole number"),
    ({"model": None}, "'model' is null"),
])
def test_fold_numbers_that_cannot_be_results_are_refused_naming_the_file(tmp_path, record, words):
    write_folds(tmp_path, "camal", 0.90, 0.60, folds=3)
    write_folds(tmp_path, "vanilla", 0.80, 0.10, folds=3)
    bad = tmp_path / "resnet18__decoy_digits__camal" / "fold_01.json"
    write_fold(bad, **{"fold": 1, "test_accuracy": 0.9, **record})
    with pytest.raises(analysis.AnalysisError, match=re.escape(f"{bad}: {words}")):
        analysis.compare([tmp_path], tmp_path / "out", plots=False)
    assert not (tmp_path / "out").exists()


def test_the_same_fold_in_two_folders_is_refused_naming_both(tmp_path):
    write_folds(tmp_path / "a", "camal", 0.90, 0.60, folds=2)
    write_folds(tmp_path / "b", "camal", 0.91, 0.61, folds=2)
    first = tmp_path / "a" / "resnet18__decoy_digits__camal" / "fold_00.json"
    second = tmp_path / "b" / "resnet18__decoy_digits__camal" / "fold_00.json"
    with pytest.raises(analysis.AnalysisError, match=re.escape(f"appears twice ({first} and {second})")):
        analysis.compare([tmp_path / "a", tmp_path / "b"], tmp_path / "out", plots=False)


def test_results_json_is_strict_json(tmp_path):
    """What was not measured (a NaN IoU in a fold file) and a test that cannot be run (one paired fold:
    no p-value) are null in results.json, never NaN."""
    write_fold(tmp_path / "c" / "fold_00.json", test_accuracy=0.9, test_iou=math.nan)
    write_fold(tmp_path / "v" / "fold_00.json", method="vanilla", test_accuracy=0.8, test_iou=0.2)
    results = analysis.compare([tmp_path / "c", tmp_path / "v"], tmp_path / "out", plots=False)

    def refuse(constant):
        raise ValueError(f"{constant} in results.json")

    written = json.loads((tmp_path / "out" / "results.json").read_text(), parse_constant=refuse)
    assert written == results
    (accuracy,) = written["classification"]["comparisons"]  # IoU: no fold pairs, so no comparison
    assert accuracy["metric"] == "test_accuracy" and accuracy["p"] is None and accuracy["better"]
    assert "(p=nan)" in (tmp_path / "out" / "report.md").read_text()


@pytest.fixture
def keeps_sigterm():
    """run_cli turns SIGTERM into Ctrl-C for the process; give pytest's handler back."""
    before = signal.getsignal(signal.SIGTERM)
    yield
    signal.signal(signal.SIGTERM, before)


def test_cli_flags(tmp_path, capsys, keeps_sigterm):
    make_runs(tmp_path / "runs", {"camal": 0.8, "vanilla": 0.3}, {"camal": 0.5, "vanilla": 0.1}, envs=("basic",),
              seeds=3)
    analysis.cli([str(tmp_path / "runs"), "--out", str(tmp_path / "out"), "--no-plots", "--table", "--min-runs", "3",
                  "--reps", str(REPS), "--seed", "4"])
    printed = capsys.readouterr().out
    assert printed.startswith("# CAMAL comparison report") and "**significant**" in printed
    assert not list((tmp_path / "out").glob("*.png"))
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    assert results["min_runs_for_verdict"] == 3 and results["seed"] == 4 and results["reps"] == REPS
    for flags, words in ((["--reps", "1"], f"--reps {REPS} or more"), (["--min-runs", "0"], "--min-runs"),
                         (["--at-step", "0"], "--at-step must be a positive agent step")):
        with pytest.raises(SystemExit) as stop:
            analysis.cli([str(tmp_path / "runs"), "--out", str(tmp_path / "other"), *flags])
        lines = capsys.readouterr().err.strip().splitlines()
        assert stop.value.code == 2 and len(lines) == 1 and words in lines[0], lines
    with pytest.raises(SystemExit) as stop:  # tyro's own parse errors exit 2 as well
        analysis.cli([str(tmp_path / "runs"), "--out", str(tmp_path / "other"), "--reps", "many"])
    assert stop.value.code == 2 and not (tmp_path / "other").exists()


def test_scenarios_with_budgets_of_their_own_are_each_compared_at_their_own_end(monkeypatch):
    """A study at each scenario's budget: runs of one scenario that ended at different steps meet at
    their last common evaluation; another scenario's longer budget does not pull them there."""
    evaluated = {"b1": {100, 200}, "b2": {100, 200, 300}, "c1": {1000, 2000}, "c2": {1000, 2000}}
    monkeypatch.setattr(analysis, "evaluation_steps", lambda run: evaluated[run["_path"]])
    runs = [{"env": "basic", "global_step": 200, "_path": "b1"}, {"env": "basic", "global_step": 300, "_path": "b2"},
            {"env": "take_cover", "global_step": 2000, "_path": "c1"},
            {"env": "take_cover", "global_step": 2000, "_path": "c2"}]
    steps, sentence = analysis.common_lengths(runs)
    assert steps == {"basic": 200} and sentence.startswith("basic: The runs end at different agent steps")
