"""camal-compare on made-up runs: rliable CIs, probability of improvement, Wilcoxon tables, plots."""

import json
import re
import subprocess
import sys

import cv2
import numpy as np
import pytest
from torch.utils.tensorboard import SummaryWriter

from camal_rl import analysis
from camal_rl.doom import load_spec


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
                           "eval_return_mean": final, "eval_iou_mean": ious_by_method[method] + 0.01 * rng.standard_normal(),
                           "sps": 100, "wall_time_s": 1.0, "args": {}}
                (run / "summary.json").write_text(json.dumps(summary))


def test_clearly_better_method_is_significant(tmp_path):
    make_runs(tmp_path / "runs", {"camal": 0.8, "vanilla": 0.3}, {"camal": 0.5, "vanilla": 0.1})
    results = analysis.compare([tmp_path / "runs"], tmp_path / "out", reps=300, seed=0)
    for metric in ("poi_return", "poi_iou"):
        poi = results["rl"][metric]["camal>vanilla"]
        assert poi["p"] > 0.5 and poi["ci"][0] > 0.5 and poi["verdict"] == "significant"
    assert results["rl"]["return"]["camal"]["Mean"]["point"] > results["rl"]["return"]["vanilla"]["Mean"]["ci"][1]
    report = (tmp_path / "out" / "report.md").read_text()
    assert "P(CAMAL > vanilla)" in report and "significant" in report
    for name in ("aggregates_return.png", "poi_return.png", "aggregates_iou.png", "sample_efficiency.png"):
        path = tmp_path / "out" / name
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        image = cv2.imread(str(path))
        assert image is not None and image.shape[0] > 50 and image.shape[1] > 50


def test_verdict_needs_the_interval_to_exclude_one_half():
    """P > 0.5 alone is not enough: the CI must leave 0.5 out (the branch a clear win never reaches)."""
    assert analysis.verdict(0.7, (0.45, 0.9)) == "not significant"
    assert analysis.verdict(0.7, (0.55, 0.9)) == "significant"
    assert analysis.verdict(0.3, (0.1, 0.45)) == "not significant"  # significantly worse is not a CAMAL win
    # and from data: a small, noisy edge over 3 seeds gives P > 0.5 with 0.5 inside the CI
    rng = np.random.default_rng(3)
    x = 0.55 + 0.3 * rng.standard_normal((3, 2))
    y = 0.50 + 0.3 * rng.standard_normal((3, 2))
    p, ci = analysis.probability_of_improvement(x, y, reps=500, seed=0)
    assert p > 0.5 and ci[0] <= 0.5 <= ci[1]
    assert analysis.verdict(p, ci) == "not significant"


def test_curves_are_drawn_at_the_evaluation_steps_taken(tmp_path):
    make_runs(tmp_path / "runs", {"camal": 0.8, "vanilla": 0.3}, {"camal": 0.5, "vanilla": 0.1})
    runs = analysis.find_results([tmp_path / "runs"]).runs
    steps, matrices = analysis.sample_efficiency(runs, ["basic", "take_cover"])
    assert list(steps) == [1000, 2000, 3000]  # no point at 0, nothing carried back before the first evaluation
    assert matrices["camal"].shape == (5, 2, 3)
    curves = analysis.learning_curves(runs)
    camal_return = curves["basic"]["camal"]["return"]
    assert camal_return["steps"] == [1000, 2000, 3000] and camal_return["seeds"] == 5
    assert camal_return["low"][2] < camal_return["mean"][2] < camal_return["high"][2]
    results = analysis.compare([tmp_path / "runs"], tmp_path / "out", reps=200, setting={"frames": "60x80 grey", "machine": "test"})
    report = (tmp_path / "out" / "report.md").read_text()
    assert "| frames | 60x80 grey |" in report and "all-zero maps" in report
    assert results["rl"]["learning_curves"]["take_cover"]["vanilla"]["return"]["steps"] == [1000, 2000, 3000]
    assert (tmp_path / "out" / "learning_curves.png").read_bytes()[:4] == b"\x89PNG"


def test_identical_methods_are_not_significant(tmp_path):
    x = np.random.default_rng(1).random((5, 3))
    p, ci = analysis.probability_of_improvement(x, x.copy(), reps=300, seed=0)
    assert p == pytest.approx(0.5)
    assert analysis.verdict(p, ci) == "not significant"


def test_fixed_seed_gives_identical_numbers(tmp_path):
    make_runs(tmp_path / "runs", {"camal": 0.6, "vanilla": 0.5}, {"camal": 0.3, "vanilla": 0.2})
    first = analysis.compare([tmp_path / "runs"], tmp_path / "a", reps=300, seed=7, plots=False)
    second = analysis.compare([tmp_path / "runs"], tmp_path / "b", reps=300, seed=7, plots=False)
    assert first == second
    third = analysis.compare([tmp_path / "runs"], tmp_path / "c", reps=300, seed=8, plots=False)
    assert third["rl"]["return"]["camal"]["Mean"]["ci"] != first["rl"]["return"]["camal"]["Mean"]["ci"]


def test_empty_folder_and_single_method(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(analysis.AnalysisError, match="no results"):
        analysis.compare([tmp_path / "empty"], tmp_path / "out")
    make_runs(tmp_path / "one", {"camal": 0.6}, {"camal": 0.3}, envs=("basic",), seeds=3)
    results = analysis.compare([tmp_path / "one"], tmp_path / "out1", reps=100, plots=False)
    assert any("only one method" in note for note in results["notes"])
    assert "What could not be computed" in (tmp_path / "out1" / "report.md").read_text()


def test_mismatched_seed_counts_are_reported(tmp_path):
    make_runs(tmp_path / "a", {"camal": 0.7}, {"camal": 0.4}, seeds=5)
    make_runs(tmp_path / "b", {"vanilla": 0.3}, {"vanilla": 0.1}, envs=("basic",), seeds=3)
    results = analysis.compare([tmp_path / "a", tmp_path / "b"], tmp_path / "out", reps=100, plots=False)
    assert any("take_cover: only camal" in note for note in results["notes"])
    assert "return" in results["rl"]


def test_cli_no_runs_is_one_line_error(tmp_path):
    (tmp_path / "empty").mkdir()
    result = subprocess.run([sys.executable, "-m", "camal_rl.analysis", str(tmp_path / "empty"), "--out", str(tmp_path / "o")],
                            capture_output=True, text=True)
    assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1


def write_folds(root, method, accuracy, iou, folds=10, model="resnet18", dataset="decoy_digits"):
    rng = np.random.default_rng(len(method))
    for fold in range(folds):
        record = {"task": "classification", "model": model, "dataset": dataset, "method": method, "fold": fold,
                  "test_accuracy": accuracy + 0.01 * rng.standard_normal(), "test_iou": iou + 0.01 * rng.standard_normal(),
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
    assert re.search(r"\| resnet18 \| \*\*(59|60)\.\d ± \d\.\d\*\* \[5\d\.\d, 6\d\.\d\] \(p=", iou_vs_vanilla), iou_vs_vanilla
    accuracy_vs_prior = report.split("### test accuracy (%): CAMAL vs prior")[1].split("###")[0]
    assert "**" not in accuracy_vs_prior.split("|---|")[1]  # equal accuracy: not significant
    assert analysis.wilcoxon_greater([0.9] * 10, [0.8] * 10) < 0.01
    assert analysis.wilcoxon_greater([0.8] * 10, [0.9] * 10) > 0.5
    assert analysis.wilcoxon_greater([0.5] * 10, [0.5] * 10) == 1.0
