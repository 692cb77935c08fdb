"""Compare methods over seeds and tasks with the paper's statistics (section 4, Appendix A).

Reinforcement learning runs (``summary.json`` + TensorBoard events written by ``camal_rl.ppo``):
rliable stratified bootstrap CIs (mean, IQM, median; 95 %) of normalised return and of eval IoU,
probability of improvement CAMAL > each baseline with its CI and the paper's verdict
(significant when P > 0.5 and 0.5 lies outside the CI), sample-efficiency curves.

Classification results (per-fold JSON files written by ``camal_rl.vision.train``): one-tailed
Wilcoxon signed-rank tests of CAMAL vs each baseline over paired folds, mean +- std tables in
the shape of the paper's Tables 1/2, bold where significant.

``camal-compare RUNS... --out DIR`` writes PNG plots and ``report.md`` into DIR.
"""

from __future__ import annotations

import json
import math
import sys
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Optional

import numpy as np

from camal_rl.files import write_text_atomic

CLASSIFICATION_METRICS = {
    "test_accuracy": "test accuracy (%)",
    "test_accuracy_matched_decoy": "test accuracy with the decoys still matching the class (%, DecoyDigits)",
    "test_iou": "test IoU (%)",
    "deletion_auc": "deletion AUC (lower is better)",
    "insertion_auc": "insertion AUC",
}
# Metrics where smaller is better: the one-tailed test looks the other way.
LOWER_IS_BETTER = {"deletion_auc"}
SIGNIFICANCE = 0.05


class AnalysisError(ValueError):
    """Nothing (or nothing comparable) to analyse; the message says what was found."""


# ---------------------------------------------------------------------------------------
# Loading
# ---------------------------------------------------------------------------------------
def find_results(paths: Iterable[str | Path]) -> tuple[list[dict], list[dict]]:
    """(RL run summaries, classification fold results) found under ``paths``."""
    runs, folds = [], []
    for root in map(Path, paths):
        if not root.exists():
            raise AnalysisError(f"{root} does not exist")
        files = [root] if root.is_file() else sorted(root.rglob("*.json"))
        for path in files:
            try:
                record = json.loads(path.read_text())
            except (json.JSONDecodeError, UnicodeDecodeError):
                continue
            if not isinstance(record, dict):
                continue
            if record.get("task") == "classification":
                folds.append({**record, "_path": str(path)})
            elif path.name == "summary.json" and {"env", "method", "seed"} <= record.keys():
                runs.append({**record, "_path": str(path.parent)})
    return runs, folds


EVAL_TAGS = {"eval_return_mean": "eval/return_mean", "eval_iou_mean": "eval/iou_mean",
             "eval_zero_map_fraction": "eval/zero_map_fraction"}


def runs_at_step(paths: Iterable[str | Path], step: int) -> tuple[list[dict], list[str]]:
    """Every run folder under ``paths`` (finished or not) with its evaluation at agent step ``step``.

    Compares runs at a common budget, also runs that a time limit stopped after that evaluation.
    Runs are named ``<env>__<method>__<seed>`` (camal-sweep) or carry a summary.json."""
    runs, notes = [], []
    for root in map(Path, paths):
        for events in sorted(root.rglob("events.out.tfevents.*")):
            folder = events.parent
            if any(r["_path"] == str(folder) for r in runs):
                continue
            summary = folder / "summary.json"
            if summary.exists():
                record = json.loads(summary.read_text())
            else:
                parts = folder.name.split("__")
                if len(parts) < 3 or not parts[2].isdigit():
                    notes.append(f"{folder}: no summary.json and not named env__method__seed; left out")
                    continue
                record = {"env": parts[0], "method": parts[1], "seed": int(parts[2]), "unfinished": True}
            values = {key: dict(read_scalars(folder, tag)).get(step) for key, tag in EVAL_TAGS.items()}
            if values["eval_return_mean"] is None:
                notes.append(f"{folder}: no evaluation at step {step}; left out")
                continue
            runs.append({**record, **values, "global_step": step, "_path": str(folder)})
    return runs, notes


def read_scalars(run_dir: str | Path, tag: str) -> list[tuple[int, float]]:
    """(step, value) pairs of one TensorBoard scalar; the last value wins for a repeated step."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    accumulator = EventAccumulator(str(run_dir), size_guidance={"scalars": 0})
    accumulator.Reload()
    if tag not in accumulator.Tags().get("scalars", []):
        return []
    by_step = {event.step: event.value for event in accumulator.Scalars(tag)}
    return sorted(by_step.items())


def normalized_return(env: str, value: float) -> float:
    from camal_rl.doom import load_spec

    return load_spec(env).normalize_return(value)


# ---------------------------------------------------------------------------------------
# Reinforcement learning: rliable
# ---------------------------------------------------------------------------------------
@dataclass
class ScoreTable:
    """Per-method ``[runs, tasks]`` score matrices plus what could not be included."""

    scores: dict[str, np.ndarray]
    tasks: list[str]
    notes: list[str]


def score_matrices(runs: list[dict], metric: str) -> ScoreTable:
    """Arrange one final metric as rliable wants it: ``{method: [runs, tasks]}``.

    ``metric`` is ``"return"`` (normalised by each env's spec) or ``"iou"``. Tasks missing for a
    method, or with unequal seed counts, are reported and trimmed to the common count.
    """
    notes: list[str] = []
    values: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for run in sorted(runs, key=lambda r: (r["method"], r["env"], r["seed"])):
        if metric == "return":
            raw = run.get("eval_return_mean")
            value = None if raw is None else normalized_return(run["env"], raw)
        else:
            value = run.get("eval_iou_mean")
        if value is None or (isinstance(value, float) and math.isnan(value)):
            notes.append(f"{run['_path']}: no eval {metric}; left out")
            continue
        values[run["method"]][run["env"]].append(float(value))
    if not values:
        return ScoreTable({}, [], notes)
    tasks = sorted(set.intersection(*(set(per_env) for per_env in values.values())))
    all_tasks = sorted(set().union(*(set(per_env) for per_env in values.values())))
    for task in sorted(set(all_tasks) - set(tasks)):
        have = sorted(m for m in values if task in values[m])
        notes.append(f"env {task}: only {', '.join(have)} ran it; left out of the {metric} comparison")
    scores = {}
    for method, per_env in values.items():
        counts = {task: len(per_env[task]) for task in tasks}
        if tasks and len(set(counts.values())) > 1:
            notes.append(f"{method}: unequal seed counts per env {counts}; using the first {min(counts.values())}")
        keep = min(counts.values()) if tasks else 0
        scores[method] = np.array([[per_env[task][i] for task in tasks] for i in range(keep)]).reshape(keep, len(tasks))
    return ScoreTable(scores, tasks, notes)


def _aggregates(scores: np.ndarray) -> np.ndarray:
    from rliable import metrics

    return np.array([metrics.aggregate_mean(scores), metrics.aggregate_iqm(scores), metrics.aggregate_median(scores)])


AGGREGATE_NAMES = ["Mean", "IQM", "Median"]


def interval_estimates(scores: dict[str, np.ndarray], *, reps: int, seed: int):
    """Stratified bootstrap 95 % CIs of mean, IQM, median per method (reproducible for a seed)."""
    from rliable import library as rly

    usable = {m: s for m, s in scores.items() if s.shape[0] >= 1 and s.shape[1] >= 1}
    # rliable's random_state alone does not make its CIs reproducible (facts.md): seed numpy too.
    np.random.seed(seed)
    return rly.get_interval_estimates(usable, _aggregates, reps=reps, random_state=np.random.RandomState(seed))


def probability_of_improvement(x: np.ndarray, y: np.ndarray, *, reps: int, seed: int) -> tuple[float, tuple[float, float]]:
    """P(X > Y) (Mann-Whitney, averaged over tasks) with its stratified bootstrap 95 % CI."""
    from rliable import library as rly
    from rliable import metrics

    np.random.seed(seed)
    point, interval = rly.get_interval_estimates(
        {"pair": (x, y)}, metrics.probability_of_improvement, reps=reps, random_state=np.random.RandomState(seed)
    )
    low, high = np.asarray(interval["pair"]).reshape(2)
    return float(np.asarray(point["pair"]).reshape(())), (float(low), float(high))


def verdict(probability: float, ci: tuple[float, float]) -> str:
    """The paper's Neyman-Pearson criterion: significant when P > 0.5 and 0.5 is outside the CI."""
    return "significant" if probability > 0.5 and not (ci[0] <= 0.5 <= ci[1]) else "not significant"


def eval_series(run: dict, tag: str) -> list[tuple[int, float]]:
    """(step, value) of one eval scalar of a run, as logged (no interpolation)."""
    return read_scalars(run["_path"], tag)


def sample_efficiency(runs: list[dict], tasks: list[str]):
    """``(steps, {method: [runs, tasks, points]})`` of normalised eval return at the evaluation
    steps every included run actually took (no interpolation, nothing before the first evaluation)."""
    series = []
    for run in runs:
        if run["env"] in tasks:
            pairs = eval_series(run, "eval/return_mean")
            if len(pairs) >= 2:
                series.append((run, dict(pairs)))
    if not series:
        return None, None
    steps = sorted(set.intersection(*(set(pairs) for _, pairs in series)))
    if len(steps) < 2:
        return None, None
    curves: dict[str, dict[str, list[np.ndarray]]] = defaultdict(lambda: defaultdict(list))
    for run, pairs in series:
        curves[run["method"]][run["env"]].append(np.array([normalized_return(run["env"], pairs[s]) for s in steps]))
    matrices = {}
    for method, per_env in curves.items():
        if set(per_env) != set(tasks):
            continue
        count = min(len(per_env[t]) for t in tasks)
        matrices[method] = np.stack([np.stack([per_env[t][i] for t in tasks]) for i in range(count)])
    return np.array(steps), matrices


def learning_curves(runs: list[dict]) -> dict:
    """Per env and method: eval return and eval IoU at the logged evaluation steps, mean and 95 %
    band over seeds (mean +- t * standard error, ddof 1), and the all-zero share of the eval maps."""
    from scipy import stats

    tags = {"return": "eval/return_mean", "iou": "eval/iou_mean", "zero_maps": "eval/zero_map_fraction"}
    grouped: dict[tuple, list[dict]] = defaultdict(list)
    for run in runs:
        for metric, tag in tags.items():
            pairs = eval_series(run, tag)
            if pairs:
                grouped[(run["env"], run["method"], metric)].append(dict(pairs))
    curves: dict = {}
    for (env, method, metric), seeds in sorted(grouped.items()):
        steps = sorted(set.intersection(*(set(s) for s in seeds)))
        if not steps:
            continue
        values = np.array([[seed[step] for step in steps] for seed in seeds])
        mean = values.mean(0)
        if len(seeds) > 1:
            half = stats.t.ppf(0.975, len(seeds) - 1) * values.std(0, ddof=1) / np.sqrt(len(seeds))
        else:
            half = np.zeros_like(mean)
        low, high = mean - half, mean + half
        if metric != "return":  # IoU and shares live in [0, 1]
            low, high = np.clip(low, 0, 1), np.clip(high, 0, 1)
        curves.setdefault(env, {}).setdefault(method, {})[metric] = {
            "steps": steps, "mean": mean.tolist(), "low": low.tolist(), "high": high.tolist(), "seeds": len(seeds)}
    return curves


# ---------------------------------------------------------------------------------------
# Classification: Wilcoxon signed-rank over paired folds
# ---------------------------------------------------------------------------------------
def wilcoxon_greater(camal_values: list[float], baseline_values: list[float], lower_is_better: bool = False) -> float:
    """One-tailed p-value that CAMAL is better than the baseline over paired folds."""
    from scipy.stats import wilcoxon

    differences = np.asarray(camal_values, float) - np.asarray(baseline_values, float)
    if lower_is_better:
        differences = -differences
    if np.allclose(differences, 0):
        return 1.0
    return float(wilcoxon(differences, alternative="greater", zero_method="wilcox").pvalue)


def mean_std(values, scale: float = 1.0, digits: int = 1) -> str:
    """``mean ± std`` with the sample standard deviation (ddof 1), the one convention of all reports."""
    values = np.asarray(values, float) * scale
    spread = values.std(ddof=1) if len(values) > 1 else 0.0
    return f"{values.mean():.{digits}f} ± {spread:.{digits}f}"


def ci95(values, scale: float = 1.0, digits: int = 1) -> str:
    """The paper's 95 % interval for k-fold results: mean ± 1.96 standard errors."""
    values = np.asarray(values, float) * scale
    if len(values) < 2:
        return "[-]"
    half = 1.96 * values.std(ddof=1) / np.sqrt(len(values))
    return f"[{values.mean() - half:.{digits}f}, {values.mean() + half:.{digits}f}]"


def classification_tables(folds: list[dict]) -> tuple[str, list[str]]:
    """Markdown tables (one per metric and baseline) and notes on what was left out."""
    notes: list[str] = []
    by_key: dict[tuple, dict[int, float]] = defaultdict(dict)
    for record in folds:
        for metric in CLASSIFICATION_METRICS:
            if record.get(metric) is not None:
                by_key[(record["model"], record["dataset"], record["method"], metric)][int(record["fold"])] = float(record[metric])
    models = sorted({r["model"] for r in folds})
    datasets = sorted({r["dataset"] for r in folds})
    methods = sorted({r["method"] for r in folds})
    baselines = [m for m in methods if m != "camal"]
    if "camal" not in methods or not baselines:
        notes.append(f"classification: methods found {methods}; need 'camal' and at least one baseline for Wilcoxon tests")
        return "", notes
    out = []
    for baseline in baselines:
        for metric, title in CLASSIFICATION_METRICS.items():
            header = "| Model | " + " | ".join(f"{d} CAMAL | {d} {baseline}" for d in datasets) + " |"
            rows = [header, "|" + "---|" * (1 + 2 * len(datasets))]
            any_value = False
            for model in models:
                cells = []
                for dataset in datasets:
                    ours = by_key.get((model, dataset, "camal", metric), {})
                    theirs = by_key.get((model, dataset, baseline, metric), {})
                    paired = sorted(set(ours) & set(theirs))
                    if not paired:
                        cells += ["-", "-"]
                        continue
                    any_value = True
                    if len(paired) < len(set(ours) | set(theirs)):
                        notes.append(f"{model}/{dataset}/{metric}: only folds {paired} are paired with {baseline}")
                    a = [ours[f] for f in paired]
                    b = [theirs[f] for f in paired]
                    percent = metric.startswith("test_")
                    scale, digits = (100.0, 1) if percent else (1.0, 3)
                    p = wilcoxon_greater(a, b, metric in LOWER_IS_BETTER) if len(paired) >= 2 else float("nan")
                    better = (np.mean(a) < np.mean(b)) if metric in LOWER_IS_BETTER else (np.mean(a) > np.mean(b))
                    text = mean_std(a, scale, digits)
                    if better and p < SIGNIFICANCE:
                        text = f"**{text}**"
                    elif better:
                        text = f"<u>{text}</u>"
                    cells += [f"{text} {ci95(a, scale, digits)} (p={p:.3g})", f"{mean_std(b, scale, digits)} {ci95(b, scale, digits)}"]
                rows.append(f"| {model} | " + " | ".join(cells) + " |")
            if any_value:
                out.append(f"### {title}: CAMAL vs {baseline}\n\nMean ± standard deviation over folds (ddof 1), "
                           f"[95 % CI: mean ± 1.96 SE, as in the paper]. Bold: CAMAL better and one-tailed Wilcoxon "
                           f"signed-rank p < {SIGNIFICANCE}; underlined: better, not significant.\n\n" + "\n".join(rows))
    return "\n\n".join(out), notes


# ---------------------------------------------------------------------------------------
# Report
# ---------------------------------------------------------------------------------------
def _fmt_ci(point: float, ci) -> str:
    return f"{point:.3f} [{ci[0]:.3f}, {ci[1]:.3f}]"


def compare(paths: list[str], out: str | Path, *, reps: int = 2000, seed: int = 0, plots: bool = True,
            setting: Optional[dict] = None, at_step: Optional[int] = None) -> dict:
    """Analyse everything under ``paths``; write ``report.md``, ``results.json`` and PNGs into ``out``.

    ``setting`` (frames, budget, seeds, machine, ...) is written at the top of the report.
    ``at_step`` compares the RL runs at their evaluation at that agent step instead of their end."""
    runs, folds = find_results(paths)
    step_notes: list[str] = []
    if at_step is not None:
        runs, step_notes = runs_at_step(paths, at_step)
    if not runs and not folds:
        raise AnalysisError(
            f"no results under {', '.join(map(str, paths))}: expected run folders with summary.json "
            f"(camal-train) or per-fold JSON files (camal-classify)"
        )
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    report = ["# CAMAL comparison report", ""]
    results: dict = {"setting": setting or {}, "rl": {}, "classification": {}, "notes": step_notes}
    if at_step is not None:
        report += [f"Runs compared at their evaluation at agent step {at_step:,} (`--at-step`), not at their end.", ""]
    if setting:
        report += ["| setting | value |", "|---|---|"] + [f"| {k} | {v} |" for k, v in setting.items()] + [""]
    if runs:
        report += rl_section(runs, out, results, reps=reps, seed=seed, plots=plots)
    if folds:
        tables, notes = classification_tables(folds)
        results["notes"] += notes
        report += ["## Classification (paired folds, one-tailed Wilcoxon signed-rank)", "", tables or "_no comparable pairs_", ""]
    if results["notes"]:
        report += ["## What could not be computed", ""] + [f"- {n}" for n in results["notes"]] + [""]
    write_text_atomic(out / "results.json", json.dumps(results, indent=2, default=float))
    write_text_atomic(out / "report.md", "\n".join(report))
    return results


def maps_dead_at_end(run: dict, above: float = 0.9) -> bool:
    """Whether the run's last logged rollout maps were all zero on more than ``above`` of the frames."""
    series = [(s, v) for s, v in read_scalars(run["_path"], "attention/zero_map_fraction")
              if s <= run.get("global_step", float("inf"))]
    return bool(series) and series[-1][1] > above


def _finite(values) -> list[float]:
    return [float(v) for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))]


def rl_section(runs: list[dict], out: Path, results: dict, *, reps: int, seed: int, plots: bool) -> list[str]:
    lines = ["## Reinforcement learning", ""]
    methods = sorted({r["method"] for r in runs})
    envs = sorted({r["env"] for r in runs})
    steps = sorted({r.get("global_step") for r in runs if r.get("global_step")})
    lines.append(f"{len(runs)} runs; methods {', '.join(methods)}; envs {', '.join(envs)}; agent steps per run "
                 f"{', '.join(f'{s:,}' for s in steps)}. Standard deviations over seeds use ddof 1.")
    lines.append("")
    lines.append("| env | method | seeds | eval return | normalised | eval IoU | all-zero maps (eval frames) | runs whose maps were dead at the end of training |")
    lines.append("|---|---|---|---|---|---|---|---|")
    grouped = defaultdict(list)
    for run in runs:
        grouped[(run["env"], run["method"])].append(run)
    per_group = {}
    for (env, method), group in sorted(grouped.items()):
        returns = _finite(r.get("eval_return_mean") for r in group)
        ious = _finite(r.get("eval_iou_mean") for r in group)
        zero = _finite(r.get("eval_zero_map_fraction") for r in group)
        dead = sum(maps_dead_at_end(r) for r in group)
        norm = [normalized_return(env, v) for v in returns]
        per_group[f"{env}/{method}"] = {"seeds": len(group), "return": returns, "normalised_return": norm, "iou": ious,
                                        "zero_map_fraction": zero, "dead_in_training": dead}
        lines.append(
            f"| {env} | {method} | {len(group)} | " + (mean_std(returns) if returns else "-") + " | "
            + (mean_std(norm, digits=3) if norm else "-") + " | " + (mean_std(ious, digits=3) if ious else "-") + " | "
            + (f"{np.mean(zero):.0%}" if zero else "-") + f" | {dead} of {len(group)} |"
        )
    results["rl"]["per_env"] = per_group
    lines += ["", "A map that is all zero scores IoU 0 by definition: the all-zero column tells \"looks nowhere\" "
              "from \"looks elsewhere\".", ""]
    if len(methods) < 2:
        results["notes"].append(f"only one method ({methods[0]}) among the runs: no probability of improvement")
    for metric, label in [("return", "normalised return"), ("iou", "eval IoU (tau 0.7)")]:
        table = score_matrices(runs, metric)
        results["notes"] += table.notes
        if not table.tasks or not table.scores:
            results["notes"].append(f"{label}: no env run by every method; no interval estimates")
            continue
        points, intervals = interval_estimates(table.scores, reps=reps, seed=seed)
        results["rl"][metric] = {
            m: {name: {"point": float(points[m][i]), "ci": [float(intervals[m][0][i]), float(intervals[m][1][i])]}
                for i, name in enumerate(AGGREGATE_NAMES)}
            for m in points
        }
        lines += [f"### {label}: stratified bootstrap 95 % CIs ({reps} reps, tasks {', '.join(table.tasks)})", "",
                  "| method | runs | " + " | ".join(AGGREGATE_NAMES) + " |", "|---|---|---|---|---|"]
        for m in sorted(points):
            cells = [_fmt_ci(points[m][i], (intervals[m][0][i], intervals[m][1][i])) for i in range(3)]
            lines.append(f"| {m} | {table.scores[m].shape[0]} | " + " | ".join(cells) + " |")
        lines.append("")
        poi_points, poi_intervals = {}, {}
        if "camal" in table.scores:
            for baseline in sorted(set(table.scores) - {"camal"}):
                x, y = table.scores["camal"], table.scores[baseline]
                if x.shape[0] == 0 or y.shape[0] == 0:
                    continue
                p, ci = probability_of_improvement(x, y, reps=reps, seed=seed)
                decision = verdict(p, ci)
                results["rl"].setdefault(f"poi_{metric}", {})[f"camal>{baseline}"] = {"p": p, "ci": list(ci), "verdict": decision}
                lines.append(f"- P(CAMAL > {baseline}) on {label} = {_fmt_ci(p, ci)}: **{decision}** "
                             f"(the paper's criterion: P > 0.5 and 0.5 outside the CI)")
                poi_points[f"camal,{baseline}"] = np.array([p])
                poi_intervals[f"camal,{baseline}"] = np.array([[ci[0]], [ci[1]]])
            lines.append("")
        elif len(table.scores) >= 2:
            results["notes"].append(f"{label}: no 'camal' runs; probability of improvement is CAMAL vs the others")
        if plots:
            lines += _rl_plots(out, metric, label, points, intervals, poi_points, poi_intervals)
    curves = learning_curves(runs)
    results["rl"]["learning_curves"] = curves
    if plots and curves:
        lines += _learning_curve_plot(out, curves)
    tasks = score_matrices(runs, "return").tasks
    grid, matrices = sample_efficiency(runs, tasks)
    if matrices:
        results["rl"]["sample_efficiency_steps"] = [int(s) for s in grid]
        if plots:
            lines += _efficiency_plot(out, grid, matrices, reps=reps, seed=seed)
    else:
        results["notes"].append("sample-efficiency curves: fewer than two evaluation steps shared by all runs")
    return lines


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _rl_plots(out, metric, label, points, intervals, poi_points, poi_intervals) -> list[str]:
    plt = _pyplot()
    from rliable import plot_utils

    methods = sorted(points)
    fig, axes = plot_utils.plot_interval_estimates(
        {m: points[m] for m in methods}, {m: intervals[m] for m in methods}, metric_names=AGGREGATE_NAMES,
        algorithms=methods, xlabel="", subfigure_width=3.4, row_height=0.6,
    )
    axes = np.atleast_1d(axes)
    for axis in axes:
        axis.tick_params(axis="x", labelsize=9)
    axes[len(axes) // 2].set_xlabel(label, fontsize=11, labelpad=6)  # under the tick labels, not on them
    name = f"aggregates_{metric}.png"
    fig.savefig(out / name, bbox_inches="tight", dpi=120)
    plt.close(fig)
    lines = [f"![{label} aggregates]({name})", ""]
    if poi_points:
        ax = plot_utils.plot_probability_of_improvement(poi_points, poi_intervals, figsize=(5, 1.6))
        ax.set_title(label, fontsize=11)
        name = f"poi_{metric}.png"
        ax.figure.savefig(out / name, bbox_inches="tight", dpi=120)
        plt.close(ax.figure)
        lines += [f"![P(CAMAL > baseline), {label}]({name})", ""]
    return lines


METHOD_COLOURS = {"camal": "tab:orange", "vanilla": "tab:blue", "suppress": "tab:green"}


def _learning_curve_plot(out: Path, curves: dict) -> list[str]:
    """Per env: eval return, eval IoU and the all-zero share against agent steps; mean and 95 % band over seeds."""
    plt = _pyplot()
    envs = sorted(curves)
    metrics = [("return", "eval return"), ("iou", "eval IoU (tau 0.7)"), ("zero_maps", "all-zero maps (share)")]
    fig, axes = plt.subplots(len(metrics), len(envs), figsize=(3.6 * len(envs), 2.6 * len(metrics)), squeeze=False)
    for column, env in enumerate(envs):
        for row, (metric, label) in enumerate(metrics):
            axis = axes[row, column]
            for method, by_metric in sorted(curves[env].items()):
                curve = by_metric.get(metric)
                if not curve:
                    continue
                colour = METHOD_COLOURS.get(method)
                axis.plot(curve["steps"], curve["mean"], marker="o", markersize=3, color=colour,
                          label=f"{method} ({curve['seeds']} seeds)")
                axis.fill_between(curve["steps"], curve["low"], curve["high"], color=colour, alpha=0.2)
            if row == 0:
                axis.set_title(env, fontsize=11)
            if column == 0:
                axis.set_ylabel(label, fontsize=10)
            if row == len(metrics) - 1:
                axis.set_xlabel("agent steps", fontsize=10)
            if metric == "zero_maps":
                axis.set_ylim(-0.03, 1.03)  # a share: the full range, so "never dead" reads as a line at 0
            axis.tick_params(labelsize=8)
            axis.ticklabel_format(axis="x", style="sci", scilimits=(3, 3))
            axis.grid(alpha=0.3)
    axes[0, 0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "learning_curves.png", dpi=110)
    plt.close(fig)
    return ["### Learning curves (evaluation points as taken; mean and 95 % band over seeds)", "",
            "![learning curves](learning_curves.png)", ""]


def _efficiency_plot(out, steps, curves, *, reps, seed) -> list[str]:
    plt = _pyplot()
    from rliable import library as rly
    from rliable import metrics, plot_utils

    def iqm_over_time(scores):  # [runs, tasks, points] -> [points]
        return np.array([metrics.aggregate_iqm(scores[..., i]) for i in range(scores.shape[-1])])

    np.random.seed(seed)
    points, intervals = rly.get_interval_estimates(curves, iqm_over_time, reps=max(200, reps // 10),
                                                   random_state=np.random.RandomState(seed))
    fig, ax = plt.subplots(figsize=(7, 4.5))
    plot_utils.plot_sample_efficiency_curve(steps, points, intervals, algorithms=sorted(curves), ax=ax,
                                            xlabel="agent steps", ylabel="IQM normalised return", labelsize=12, ticklabelsize=10)
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / "sample_efficiency.png", bbox_inches="tight", dpi=120)
    plt.close(fig)
    return ["### Sample efficiency (IQM of normalised eval return over envs and seeds, 95 % CIs, at the evaluation steps taken)",
            "", "![sample efficiency](sample_efficiency.png)", ""]


def cli(argv: Optional[list[str]] = None) -> None:
    import argparse

    parser = argparse.ArgumentParser(prog="camal-compare", description="Compare CAMAL and baselines over seeds and tasks.")
    parser.add_argument("runs", nargs="+", help="run folders, or folders holding them, or result files")
    parser.add_argument("--out", required=True, help="folder for report.md, results.json and the plots")
    parser.add_argument("--reps", type=int, default=2000, help="bootstrap replications")
    parser.add_argument("--seed", type=int, default=0, help="bootstrap seed (results are reproducible for it)")
    parser.add_argument("--no-plots", action="store_true")
    parser.add_argument("--at-step", type=int, default=None, help="compare RL runs at their evaluation at this step")
    parser.add_argument("--setting", default=None, help="a JSON file of the study's setting, shown at the top")
    parser.add_argument("--table", action="store_true", help="also print the report to stdout")
    options = parser.parse_args(argv)
    import warnings

    # rliable hands arch a RandomState, which arch now warns about on every bootstrap
    warnings.filterwarnings("ignore", message="random_state is deprecated", category=FutureWarning)
    try:
        setting = json.loads(Path(options.setting).read_text()) if options.setting else None
        compare(options.runs, options.out, reps=options.reps, seed=options.seed, plots=not options.no_plots,
                setting=setting, at_step=options.at_step)
    except AnalysisError as error:
        print(f"camal-compare: error: {error}", file=sys.stderr)
        raise SystemExit(2)
    report = Path(options.out) / "report.md"
    if options.table:
        print(report.read_text())
    else:
        print(f"wrote {report}")


if __name__ == "__main__":
    cli()
