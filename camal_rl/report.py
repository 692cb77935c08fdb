"""What ``camal-compare`` shows: ``report.md``'s text, ``results.json``'s data and the PNG plots.

The input is a ``Comparison`` (what ``camal_rl.analysis.compare`` found and ``camal_rl.statistics``
computed); nothing here computes a statistic or finds a run. ``markdown`` and ``results_json``
return text and data; ``draw_figures`` is the one function that writes files (the plots).
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from camal_rl.files import save_figure
from camal_rl.statistics import (
    AGGREGATE_NAMES,
    CLASSIFICATION_METRICS,
    SIGNIFICANCE,
    Aggregates,
    Curve,
    FoldComparison,
    Improvement,
    Interval,
    mean_and_std,
    normal_ci95,
)

METRIC_LABELS = {"return": "normalised return", "iou": "eval IoU (tau 0.7)"}
CLASSIFICATION_TITLES = {
    "test_accuracy": "test accuracy (%)",
    "test_accuracy_matched_decoy": "test accuracy with the decoys still matching the class (%, DecoyDigits)",
    "test_iou": "test IoU (%)",
    "deletion_auc": "deletion AUC (lower is better)",
    "insertion_auc": "insertion AUC",
}
CURVE_LABELS = {"return": "eval return", "iou": "eval IoU (tau 0.7)", "zero_maps": "all-zero maps (share)"}
METHOD_COLOURS = {"camal": "tab:orange", "vanilla": "tab:blue", "suppress": "tab:green"}
CRITERION = "the paper's criterion: P > 0.5 and 0.5 outside the CI, with at least {} runs per method and task"


# ---------------------------------------------------------------------------------------
# What a report shows
# ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class GroupRow:
    """One scenario and method's runs: their final numbers (finite ones only) and how many ended with dead maps."""

    env: str
    method: str
    seeds: int  # runs in the group, whether or not each has every number
    returns: tuple[float, ...]  # final evaluation returns, raw
    normalised: tuple[float, ...]  # the same on the scenario's scale (0 random, 1 reference)
    ious: tuple[float, ...]  # final evaluation IoU with the label mask
    zero_map_fractions: tuple[float, ...]  # share of evaluated frames whose map was all zero
    dead_in_training: int  # runs whose last logged training maps were dead


@dataclass(frozen=True)
class MetricResults:
    """One final metric (``return``: normalised return, or ``iou``) over the tasks every method ran."""

    metric: str
    tasks: tuple[str, ...]
    aggregates: dict[str, Aggregates]
    improvements: dict[str, Improvement]  # baseline -> P(CAMAL > baseline)


@dataclass(frozen=True)
class RLResults:
    runs: int
    methods: tuple[str, ...]
    envs: tuple[str, ...]
    steps: tuple[int, ...]  # the agent steps the runs ended at
    groups: tuple[GroupRow, ...]
    metrics: tuple[MetricResults, ...]
    learning_curves: dict[str, dict[str, dict[str, Curve]]]  # env -> method -> return / iou / zero_maps
    efficiency: dict[str, Curve]  # method -> IQM of normalised return at the evaluation steps all runs took


@dataclass(frozen=True)
class Comparison:
    reps: int
    seed: int
    min_runs: int
    setting: dict = field(default_factory=dict)
    at_step: int | None = None  # --at-step
    compared_at_step: dict = field(default_factory=dict)  # scenario -> the step its runs of different lengths met at
    length_note: str = ""
    rl: RLResults | None = None
    folds: tuple[FoldComparison, ...] | None = None  # None: no fold files
    notes: tuple[str, ...] = ()
    left_out: tuple[str, ...] = ()


# ---------------------------------------------------------------------------------------
# Numbers as text
# ---------------------------------------------------------------------------------------
def mean_std(values, scale: float = 1.0, digits: int = 1) -> str:
    """``mean ± std`` (ddof 1) of ``values`` times ``scale``."""
    mean, std = mean_and_std(np.asarray(values, float) * scale)
    return f"{mean:.{digits}f} ± {std:.{digits}f}"


def ci95(values, scale: float = 1.0, digits: int = 1) -> str:
    """``[low, high]``, the paper's 95 % interval for k-fold results; ``[-]`` below two values."""
    interval = normal_ci95(np.asarray(values, float) * scale)
    return "[-]" if interval is None else f"[{interval.low:.{digits}f}, {interval.high:.{digits}f}]"


def interval_text(estimate: Interval) -> str:
    return f"{estimate.point:.3f} [{estimate.low:.3f}, {estimate.high:.3f}]"


# ---------------------------------------------------------------------------------------
# report.md
# ---------------------------------------------------------------------------------------
def setting_text(value) -> str:
    """A setting's value in a table cell: a per-scenario dict as ``name: value`` pairs."""
    if isinstance(value, dict):
        return ", ".join(f"{key}: {setting_text(item)}" for key, item in value.items())
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    return str(value)


def markdown(comparison: Comparison, figures: Collection[str] = ()) -> str:
    """The whole report; ``figures`` names the PNGs drawn beside it (``draw_figures``), linked where they belong."""
    lines = ["# CAMAL comparison report", ""]
    if comparison.at_step is not None:
        lines += [f"Runs compared at their evaluation at agent step {comparison.at_step:,} (`--at-step`), not at "
                  f"their end.", ""]
    elif comparison.length_note:
        lines += [comparison.length_note, ""]
    if comparison.setting:
        lines += ["| setting | value |", "|---|---|"]
        lines += [f"| {key} | {setting_text(value)} |" for key, value in comparison.setting.items()] + [""]
    if comparison.rl is not None:
        lines += rl_markdown(comparison.rl, comparison, figures)
    if comparison.folds is not None:
        tables = classification_markdown(comparison.folds)
        lines += ["## Classification (paired folds, one-tailed Wilcoxon signed-rank)", "",
                  tables or "_no comparable pairs_", ""]
    if comparison.left_out:
        lines += ["## Left out (`--skip-broken`)", ""] + [f"- {note}" for note in comparison.left_out] + [""]
    if comparison.notes:
        lines += ["## What could not be computed", ""] + [f"- {note}" for note in comparison.notes] + [""]
    return "\n".join(lines)


def _cell(values, digits: int) -> str:
    return mean_std(values, digits=digits) if values else "-"


def rl_markdown(rl: RLResults, comparison: Comparison, figures: Collection[str]) -> list[str]:
    lines = ["## Reinforcement learning", "",
             f"{rl.runs} runs; methods {', '.join(rl.methods)}; envs {', '.join(rl.envs)}; agent steps per run "
             f"{', '.join(f'{step:,}' for step in rl.steps)}. Standard deviations over seeds use ddof 1.", "",
             "| env | method | seeds | eval return | normalised | eval IoU | all-zero maps (eval frames) "
             "| runs whose maps were dead at the end of training |",
             "|---|---|---|---|---|---|---|---|"]
    for row in rl.groups:
        zero = f"{np.mean(row.zero_map_fractions):.0%}" if row.zero_map_fractions else "-"
        lines.append(f"| {row.env} | {row.method} | {row.seeds} | {_cell(row.returns, 1)} | {_cell(row.normalised, 3)} "
                     f"| {_cell(row.ious, 3)} | {zero} | {row.dead_in_training} of {row.seeds} |")
    lines += ["", "A map that is all zero scores IoU 0 by definition: the all-zero column tells \"looks nowhere\" "
              "from \"looks elsewhere\".", ""]
    for results in rl.metrics:
        lines += metric_markdown(results, comparison, figures)
    if "learning_curves.png" in figures:
        lines += ["### Learning curves (evaluation points as taken; mean and 95 % band over seeds)", "",
                  "![learning curves](learning_curves.png)", ""]
    if "sample_efficiency.png" in figures:
        lines += ["### Sample efficiency (IQM of normalised eval return over envs and seeds, 95 % CIs, at the "
                  "evaluation steps taken)", "", "![sample efficiency](sample_efficiency.png)", ""]
    return lines


def metric_markdown(results: MetricResults, comparison: Comparison, figures: Collection[str]) -> list[str]:
    label = METRIC_LABELS[results.metric]
    lines = [f"### {label}: stratified bootstrap 95 % CIs ({comparison.reps} reps, tasks {', '.join(results.tasks)})",
             "", "| method | runs | " + " | ".join(AGGREGATE_NAMES) + " |", "|---|---|---|---|---|"]
    for method, aggregates in sorted(results.aggregates.items()):
        cells = [interval_text(estimate) for estimate in aggregates.named().values()]
        lines.append(f"| {method} | {aggregates.runs} | " + " | ".join(cells) + " |")
    lines.append("")
    if results.improvements:
        for baseline, improvement in sorted(results.improvements.items()):
            lines.append(f"- P(CAMAL > {baseline}) on {label} = {interval_text(improvement.probability)}: "
                         f"**{improvement.verdict}** ({CRITERION.format(comparison.min_runs)})")
        lines.append("")
    for name, alt in ((f"aggregates_{results.metric}.png", f"{label} aggregates"),
                      (f"poi_{results.metric}.png", f"P(CAMAL > baseline), {label}")):
        if name in figures:
            lines += [f"![{alt}]({name})", ""]
    return lines


def _fold_cells(found: FoldComparison | None) -> list[str]:
    if found is None:
        return ["-", "-"]
    scale, digits = (100.0, 1) if found.metric.startswith("test_") else (1.0, 3)
    ours = mean_std(found.camal, scale, digits)
    if found.significant:
        ours = f"**{ours}**"
    elif found.better:
        ours = f"<u>{ours}</u>"
    return [f"{ours} {ci95(found.camal, scale, digits)} (p={found.p:.3g})",
            f"{mean_std(found.other, scale, digits)} {ci95(found.other, scale, digits)}"]


def classification_markdown(folds: tuple[FoldComparison, ...]) -> str:
    """One table per baseline and metric: rows models, two columns per data set (CAMAL, the baseline)."""
    models = sorted({found.model for found in folds})
    datasets = sorted({found.dataset for found in folds})
    by_key = {(found.baseline, found.metric, found.model, found.dataset): found for found in folds}
    tables = []
    for baseline in sorted({found.baseline for found in folds}):
        for metric in CLASSIFICATION_METRICS:
            if not any(key[:2] == (baseline, metric) for key in by_key):
                continue
            rows = ["| Model | " + " | ".join(f"{d} CAMAL | {d} {baseline}" for d in datasets) + " |",
                    "|" + "---|" * (1 + 2 * len(datasets))]
            for model in models:
                cells = [cell for dataset in datasets
                         for cell in _fold_cells(by_key.get((baseline, metric, model, dataset)))]
                rows.append(f"| {model} | " + " | ".join(cells) + " |")
            tables.append(f"### {CLASSIFICATION_TITLES[metric]}: CAMAL vs {baseline}\n\nMean ± standard deviation over "
                          f"folds (ddof 1), [95 % CI: mean ± 1.96 SE, as in the paper]. Bold: CAMAL better and "
                          f"one-tailed Wilcoxon signed-rank p < {SIGNIFICANCE}; underlined: better, not "
                          f"significant.\n\n" + "\n".join(rows))
    return "\n\n".join(tables)


# ---------------------------------------------------------------------------------------
# results.json
# ---------------------------------------------------------------------------------------
def _interval_json(estimate: Interval) -> dict:
    return {"point": estimate.point, "ci": [estimate.low, estimate.high]}


def _curve_json(curve: Curve, point: str, count: str) -> dict:
    return {"steps": list(curve.steps), point: list(curve.point), "low": list(curve.low), "high": list(curve.high),
            count: curve.runs}


def rl_json(rl: RLResults) -> dict:
    data: dict = {"per_env": {
        f"{row.env}/{row.method}": {"seeds": row.seeds, "return": list(row.returns),
                                    "normalised_return": list(row.normalised), "iou": list(row.ious),
                                    "zero_map_fraction": list(row.zero_map_fractions),
                                    "dead_in_training": row.dead_in_training}
        for row in rl.groups}}
    for results in rl.metrics:
        data[results.metric] = {
            method: {name: _interval_json(estimate) for name, estimate in aggregates.named().items()}
            for method, aggregates in results.aggregates.items()}
        if results.improvements:
            data[f"poi_{results.metric}"] = {
                f"camal>{baseline}": {"p": found.probability.point, "ci": [found.probability.low,
                                                                          found.probability.high],
                                      "verdict": found.verdict, "runs": found.runs}
                for baseline, found in results.improvements.items()}
    data["learning_curves"] = {
        env: {method: {metric: _curve_json(curve, "mean", "seeds") for metric, curve in by_metric.items()}
              for method, by_metric in by_method.items()}
        for env, by_method in rl.learning_curves.items()}
    if rl.efficiency:
        data["sample_efficiency_steps"] = list(next(iter(rl.efficiency.values())).steps)
        data["sample_efficiency"] = {method: _curve_json(curve, "iqm", "runs")
                                     for method, curve in rl.efficiency.items()}
    return data


def results_json(comparison: Comparison) -> dict:
    """``results.json``'s data (NaN stays NaN here: ``camal_rl.files.write_json`` writes it as null)."""
    data: dict = {"setting": comparison.setting, "rl": rl_json(comparison.rl) if comparison.rl else {},
                  "classification": {}, "notes": list(comparison.notes), "left_out": list(comparison.left_out),
                  "min_runs_for_verdict": comparison.min_runs, "reps": comparison.reps, "seed": comparison.seed}
    if comparison.compared_at_step:
        data["compared_at_step"] = comparison.compared_at_step
    if comparison.at_step is not None:
        data["at_step"] = comparison.at_step
    if comparison.folds:
        data["classification"]["comparisons"] = [
            {"model": found.model, "dataset": found.dataset, "metric": found.metric, "baseline": found.baseline,
             "folds": list(found.folds), "camal": list(found.camal), "other": list(found.other),
             "unpaired": list(found.unpaired), "p": found.p, "better": found.better, "significant": found.significant}
            for found in comparison.folds]
    return data


# ---------------------------------------------------------------------------------------
# Plots
# ---------------------------------------------------------------------------------------
def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def draw_figures(out: Path, comparison: Comparison) -> list[str]:
    """Draw the RL plots into ``out``; the names of the files written."""
    rl = comparison.rl
    if rl is None:
        return []
    names = []
    for results in rl.metrics:
        names += _metric_plots(out, results)
    if rl.learning_curves:
        names.append(_learning_curve_plot(out, rl.learning_curves))
    if rl.efficiency:
        names.append(_efficiency_plot(out, rl.efficiency))
    return names


def _metric_plots(out: Path, results: MetricResults) -> list[str]:
    plt = _pyplot()
    from rliable import plot_utils

    label = METRIC_LABELS[results.metric]
    methods = sorted(results.aggregates)
    named = {method: list(results.aggregates[method].named().values()) for method in methods}
    points = {method: np.array([e.point for e in estimates]) for method, estimates in named.items()}
    intervals = {method: np.array([[e.low for e in estimates], [e.high for e in estimates]])
                 for method, estimates in named.items()}
    fig, axes = plot_utils.plot_interval_estimates(points, intervals, metric_names=list(AGGREGATE_NAMES),
                                                   algorithms=methods, xlabel="", subfigure_width=3.4, row_height=0.6)
    axes = np.atleast_1d(axes)
    for axis in axes:
        axis.tick_params(axis="x", labelsize=9)
    axes[len(axes) // 2].set_xlabel(label, fontsize=11, labelpad=6)  # under the tick labels, not on them
    names = [f"aggregates_{results.metric}.png"]
    save_figure(fig, out / names[0], bbox_inches="tight", dpi=120)
    plt.close(fig)
    if results.improvements:
        pairs = {f"camal,{baseline}": found.probability for baseline, found in sorted(results.improvements.items())}
        ax = plot_utils.plot_probability_of_improvement(
            {pair: np.array([p.point]) for pair, p in pairs.items()},
            {pair: np.array([[p.low], [p.high]]) for pair, p in pairs.items()}, figsize=(5, 1.6))
        ax.set_title(label, fontsize=11)
        names.append(f"poi_{results.metric}.png")
        save_figure(ax.figure, out / names[1], bbox_inches="tight", dpi=120)
        plt.close(ax.figure)
    return names


def _learning_curve_plot(out: Path, curves: dict[str, dict[str, dict[str, Curve]]]) -> str:
    """Per env: eval return, eval IoU and the all-zero share against agent steps; mean and 95 % band over seeds."""
    plt = _pyplot()
    envs = sorted(curves)
    rows = list(CURVE_LABELS.items())
    fig, axes = plt.subplots(len(rows), len(envs), figsize=(3.6 * len(envs), 2.6 * len(rows)), squeeze=False)
    for column, env in enumerate(envs):
        for row, (metric, label) in enumerate(rows):
            axis = axes[row, column]
            for method, by_metric in sorted(curves[env].items()):
                curve = by_metric.get(metric)
                if curve is None:
                    continue
                colour = METHOD_COLOURS.get(method)
                axis.plot(curve.steps, curve.point, marker="o", markersize=3, color=colour,
                          label=f"{method} ({curve.runs} seeds)")
                axis.fill_between(curve.steps, curve.low, curve.high, color=colour, alpha=0.2)
            if row == 0:
                axis.set_title(env, fontsize=11)
            if column == 0:
                axis.set_ylabel(label, fontsize=10)
            if row == len(rows) - 1:
                axis.set_xlabel("agent steps", fontsize=10)
            if metric == "zero_maps":
                axis.set_ylim(-0.03, 1.03)  # a share: the full range, so "never dead" reads as a line at 0
            axis.tick_params(labelsize=8)
            axis.ticklabel_format(axis="x", style="sci", scilimits=(3, 3))
            axis.grid(alpha=0.3)
    axes[0, 0].legend(fontsize=8)
    fig.tight_layout()
    save_figure(fig, out / "learning_curves.png", dpi=110)
    plt.close(fig)
    return "learning_curves.png"


def _efficiency_plot(out: Path, curves: dict[str, Curve]) -> str:
    plt = _pyplot()
    from rliable import plot_utils

    methods = sorted(curves)
    steps = np.array(curves[methods[0]].steps)
    points = {method: np.array(curves[method].point) for method in methods}
    intervals = {method: np.array([curves[method].low, curves[method].high]) for method in methods}
    fig, ax = plt.subplots(figsize=(7, 4.5))
    plot_utils.plot_sample_efficiency_curve(steps, points, intervals, algorithms=methods, ax=ax, xlabel="agent steps",
                                            ylabel="IQM normalised return", labelsize=12, ticklabelsize=10)
    ax.legend()
    fig.tight_layout()
    save_figure(fig, out / "sample_efficiency.png", bbox_inches="tight", dpi=120)
    plt.close(fig)
    return "sample_efficiency.png"
