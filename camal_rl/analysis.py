"""``camal-compare``: find runs and fold results, arrange their scores, compare the methods.

Reinforcement learning runs (``summary.json`` + TensorBoard events written by ``camal_rl.ppo``):
rliable stratified bootstrap CIs (mean, IQM, median; 95 %) of normalised return and of eval IoU,
probability of improvement CAMAL > each baseline with its CI and the paper's verdict, learning and
sample-efficiency curves. Classification results (per-fold JSON files written by
``camal_rl.vision.train``): one-tailed Wilcoxon signed-rank tests of CAMAL vs each baseline over
paired folds, in the shape of the paper's Tables 1/2.

This module finds and checks what is compared and arranges it into score arrays; the numbers
come from ``camal_rl.statistics`` (pure), the text and plots from ``camal_rl.report``.
``camal-compare RUNS... --out DIR`` writes ``report.md``, ``results.json`` and PNG plots into DIR.
"""

from __future__ import annotations

import json
import math
import warnings
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import tyro

from camal_rl import report, schema
from camal_rl import runs as run_folder
from camal_rl import statistics as stats
from camal_rl.doom import ScenarioSpec, SpecError, load_spec
from camal_rl.errors import CamalError, run_cli
from camal_rl.files import strict_json_value, write_json, write_text_atomic
from camal_rl.statistics import MIN_REPS, MIN_RUNS_FOR_VERDICT, AnalysisError


@dataclass
class Found:
    """What ``find_results`` found: RL run records, classification folds, and what was left out (with why)."""

    runs: list[dict]
    folds: list[dict]
    left_out: list[str]


# ---------------------------------------------------------------------------------------
# Finding and reading
# ---------------------------------------------------------------------------------------
def _run_folders(root: Path) -> list[Path]:
    """Folders under ``root`` (itself included) that hold a run: events, a checkpoint or a summary."""
    marks = ["events.out.tfevents.*", run_folder.CHECKPOINT, run_folder.SUMMARY]
    folders = {path.parent for mark in marks for path in ([*root.rglob(mark)] if root.is_dir() else [])}
    return sorted(folders)


def find_results(paths: Iterable[str | Path], *, at_step: int | None = None, skip_broken: bool = False) -> Found:
    """Every RL run and classification fold under ``paths``. A run folder or fold file that cannot be
    read, or holds a number that cannot be a result, is an ``AnalysisError`` naming the file and why,
    or with ``skip_broken`` is left out and listed.

    RL runs are their final summary, or with ``at_step`` their evaluation at that agent step (runs
    that a time limit stopped later are included; a run folder then needs no summary if it is named
    ``<env>__<method>__<seed>``)."""
    found = Found([], [], [])

    def broken(where: Path, why: str) -> None:
        if not skip_broken:
            raise AnalysisError(f"{where}: {why}; fix or remove it, or pass --skip-broken to leave such runs out "
                                f"(the report lists them)")
        found.left_out.append(f"{where}: {why}")

    for root in map(Path, paths):
        if not root.exists():
            raise AnalysisError(f"{root} does not exist")
        for folder in _run_folders(root):
            try:
                record = load_run(folder, at_step)
            except (CamalError, OSError) as error:
                broken(folder, str(error).removeprefix(f"{folder}: "))
                continue
            if record is not None:
                found.runs.append(record)
        for path in [root] if root.is_file() else sorted(root.rglob(run_folder.FOLD_RESULTS)):
            try:
                found.folds.append(read_fold(path))
            except CamalError as error:
                broken(path, str(error).removeprefix(f"{path}: "))
    check_unique_seeds(found.runs)
    check_unique_folds(found.folds)
    check_same_settings(found.runs)
    return found


def read_fold(path: Path) -> dict:
    """One ``camal-classify`` fold result, checked against its schema (``runs.read_fold``); metrics that
    were not measured (null) are left out."""
    record = {key: value for key, value in run_folder.read_fold(path).items() if value is not None}
    return {**record, "_path": str(path)}


def load_run(folder: Path, at_step: int | None) -> dict | None:
    """One run's record: its summary (with the scenario it trained on), or its evaluation at ``at_step``
    (marked ``_no_eval_at_step`` when it has none there: said in the report by the caller)."""
    summary_path = folder / run_folder.SUMMARY
    if at_step is None:
        return {**run_folder.read_summary(summary_path), "_path": str(folder)}
    if summary_path.exists():
        record = run_folder.read_summary(summary_path)
    else:
        parts = folder.name.split("__")
        if len(parts) < 3 or not parts[2].isdigit():
            raise AnalysisError(f"{folder}: no {run_folder.SUMMARY} and not named <env>__<method>__<seed>")
        record = {"env": parts[0], "method": parts[1], "seed": int(parts[2]), "unfinished": True}
        checkpoint = folder / run_folder.CHECKPOINT
        if checkpoint.exists():  # the scenario a run trained on, for normalising its return
            saved = run_folder.load_checkpoint(folder, purpose="camal-compare --at-step")
            if run_folder.SCENARIO_KEY in saved:
                record[run_folder.SCENARIO_KEY] = saved[run_folder.SCENARIO_KEY]
    values = {key: dict(read_scalars(folder, tag)).get(at_step) for key, tag in run_folder.EVAL_SUMMARY_TAGS.items()}
    if values["eval_return_mean"] is None:
        return {**record, "_path": str(folder), "_no_eval_at_step": True}
    return check_run_values(folder, {**record, **values, "global_step": at_step, "_path": str(folder)})


def check_run_values(folder: Path, record: dict) -> dict:
    """The evaluation numbers of a run read from its TensorBoard events, held to the summary's schema."""
    values = {key: record.get(key) for key in run_folder.EVAL_SUMMARY_TAGS}
    try:
        schema.check_record(values, {key: schema.SUMMARY[key] for key in values}, f"{folder}'s evaluation")
    except schema.SchemaError as error:
        raise AnalysisError(str(error)) from None
    return record


def check_unique_seeds(found_runs: list[dict]) -> None:
    seen: dict[tuple, str] = {}
    for run in found_runs:
        key = (run["env"], run["method"], run["seed"])
        if key in seen:
            raise AnalysisError(f"seed {run['seed']} of {run['method']} on {run['env']} appears twice ({seen[key]} and "
                                f"{run['_path']}); a seed counts once: remove one of them or compare them separately")
        seen[key] = run["_path"]


def check_unique_folds(folds: list[dict]) -> None:
    seen: dict[tuple, str] = {}
    for record in folds:
        key = (record["model"], record["dataset"], record["method"], record["fold"])
        if key in seen:
            raise AnalysisError(f"fold {record['fold']} of {record['method']} {record['model']} on {record['dataset']} "
                                f"appears twice ({seen[key]} and {record['_path']}); a fold counts once: remove one "
                                f"of them or compare them separately")
        seen[key] = record["_path"]


# What may differ between runs compared on one scenario: the method, the seed, how a run ran, and
# its length (runs of different lengths are compared at an evaluation step they share).
MAY_DIFFER = run_folder.HOW_A_RUN_RUNS | {"seed", "camal_coef", "regularizer", "total_timesteps", "eval_interval",
                                          "eval_episodes"}


def check_same_settings(found_runs: list[dict]) -> None:
    """Runs of one scenario trained with other hyperparameters (a recipe, frames, attention) would
    confound the methods' comparison without a word: refuse, naming two runs and what differs."""
    first: dict[str, dict] = {}
    for run in found_runs:
        args = run.get("args")
        if not isinstance(args, dict):
            continue  # an unfinished run compared --at-step: its checkpoint's settings are not read here
        reference = first.setdefault(run["env"], run)
        differ = [f"{name} {reference['args'][name]!r} vs {args[name]!r}"
                  for name in sorted(set(args) & set(reference["args"]))
                  if name not in MAY_DIFFER and args[name] != reference["args"][name]]
        if differ:
            raise AnalysisError(f"runs on {run['env']} were trained with different settings, so their methods cannot "
                                f"be compared: {reference['_path']} and {run['_path']} differ in "
                                f"{', '.join(differ[:5])}{' and more' if len(differ) > 5 else ''}; compare runs of one "
                                f"setting at a time")


def read_scalars(run_dir: str | Path, tag: str) -> list[tuple[int, float]]:
    """(step, value) pairs of one TensorBoard scalar; the last value wins for a repeated step."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    accumulator = EventAccumulator(str(run_dir), size_guidance={"scalars": 0})
    accumulator.Reload()
    if tag not in accumulator.Tags().get("scalars", []):
        return []
    by_step = {event.step: event.value for event in accumulator.Scalars(tag)}
    return sorted(by_step.items())


def eval_series(run: dict, tag: str) -> list[tuple[int, float]]:
    """(step, value) of one evaluation scalar of a run as logged; NaN (nothing measured: no frame had a
    mask) is left out, an infinity refused naming the run."""
    pairs = [(step, value) for step, value in read_scalars(run["_path"], tag) if not math.isnan(value)]
    for step, value in pairs:
        if not math.isfinite(value):
            raise AnalysisError(f"{run['_path']}: its {tag} at agent step {step:,} is {value}, not a finite number")
    return pairs


def evaluation_steps(run: dict) -> set[int]:
    return {step for step, _ in read_scalars(run["_path"], run_folder.Tag.EVAL_RETURN)}


def common_length(found_runs: list[dict]) -> tuple[int | None, str]:
    """(None, "") when every run ended at the same agent step; else (the last evaluation step all runs
    took, a sentence saying so); ``AnalysisError`` when they share none."""
    ends = defaultdict(int)
    for run in found_runs:
        ends[run.get("global_step")] += 1
    if len(ends) <= 1:
        return None, ""
    lengths = ", ".join(f"{step:,} ({count} runs)" for step, count in sorted(ends.items(), key=lambda kv: kv[0] or 0))
    shared = set.intersection(*(evaluation_steps(run) for run in found_runs))
    if not shared:
        raise AnalysisError(f"the runs end at different agent steps ({lengths}) and share no evaluation step; compare "
                            f"runs of one length, or give --at-step N for a step every run evaluated")
    step = max(shared)
    return step, (f"The runs end at different agent steps ({lengths}); all are compared at {step:,}, the last "
                  f"evaluation step they all reached.")


def common_lengths(found_runs: list[dict]) -> tuple[dict[str, int], str]:
    """Per scenario, the step its runs are compared at where their lengths differ (``common_length``;
    scenarios may have budgets of their own), and what the report says of it."""
    by_env: dict[str, list[dict]] = defaultdict(list)
    for run in found_runs:
        by_env[run["env"]].append(run)
    steps, sentences = {}, []
    for env, runs_of_env in sorted(by_env.items()):
        step, sentence = common_length(runs_of_env)
        if step is not None:
            steps[env] = step
            sentences.append(f"{env}: {sentence}" if len(by_env) > 1 else sentence)
    return steps, " ".join(sentences)


def normalized_return(run: dict, value: float) -> float:
    """``value`` on the run's own scenario scale (0 random, 1 reference), from the scenario the run
    recorded (checked as every recorded scenario is); a run without one is looked up by name."""
    record = run.get(run_folder.SCENARIO_KEY)
    try:
        spec = ScenarioSpec.from_record(record) if isinstance(record, dict) else load_spec(run["env"])
    except SpecError as error:
        raise AnalysisError(f"{run['_path']}: its return cannot be normalised: {error}") from None
    return spec.normalize_return(value)


def maps_dead_at_end(run: dict, above: float = 0.9) -> bool:
    """Whether the run's last logged rollout maps were all zero on more than ``above`` of the frames."""
    series = [(s, v) for s, v in read_scalars(run["_path"], run_folder.Tag.ZERO_MAP_FRACTION)
              if s <= run.get("global_step", float("inf"))]
    return bool(series) and series[-1][1] > above


# ---------------------------------------------------------------------------------------
# Reinforcement learning: runs arranged as score arrays
# ---------------------------------------------------------------------------------------
@dataclass
class ScoreTable:
    """Per-method ``[runs, tasks]`` score matrices plus what could not be included."""

    scores: dict[str, np.ndarray]
    tasks: list[str]
    notes: list[str]


def _present(value) -> bool:
    return value is not None and not (isinstance(value, float) and math.isnan(value))


def score_matrices(runs: list[dict], metric: str) -> ScoreTable:
    """Arrange one final metric as rliable wants it: ``{method: [runs, tasks]}``.

    ``metric`` is ``"return"`` (normalised by each env's spec) or ``"iou"``. Tasks missing for a
    method, or with unequal seed counts, are reported and trimmed to the common count.
    """
    notes: list[str] = []
    values: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for run in sorted(runs, key=lambda r: (r["method"], r["env"], r["seed"])):
        value = run.get("eval_return_mean" if metric == "return" else "eval_iou_mean")
        if not _present(value):
            notes.append(f"{run['_path']}: no eval {metric}; left out")
            continue
        values[run["method"]][run["env"]].append(normalized_return(run, value) if metric == "return" else float(value))
    if not values:
        return ScoreTable({}, [], notes)
    tasks = sorted(set.intersection(*(set(per_env) for per_env in values.values())))
    for task in sorted(set().union(*(set(per_env) for per_env in values.values())) - set(tasks)):
        have = sorted(m for m in values if task in values[m])
        notes.append(f"env {task}: only {', '.join(have)} ran it; left out of the {metric} comparison")
    if not tasks:
        return ScoreTable({}, [], notes)
    scores = {}
    for method, per_env in values.items():
        counts = {task: len(per_env[task]) for task in tasks}
        if len(set(counts.values())) > 1:
            notes.append(f"{method}: unequal seed counts per env {counts}; using the first {min(counts.values())}")
        keep = min(counts.values())
        scores[method] = np.array([[per_env[task][i] for task in tasks] for i in range(keep)]).reshape(keep, len(tasks))
    return ScoreTable(scores, tasks, notes)


def sample_efficiency(runs: list[dict], tasks: list[str]):
    """``(steps, {method: [runs, tasks, points]})`` of normalised eval return at the evaluation
    steps every included run actually took (no interpolation, nothing before the first evaluation)."""
    series = []
    for run in runs:
        if run["env"] in tasks:
            pairs = eval_series(run, run_folder.Tag.EVAL_RETURN)
            if len(pairs) >= 2:
                series.append((run, dict(pairs)))
    if not series:
        return None, None
    steps = sorted(set.intersection(*(set(pairs) for _, pairs in series)))
    if len(steps) < 2:
        return None, None
    curves: dict[str, dict[str, list[np.ndarray]]] = defaultdict(lambda: defaultdict(list))
    for run, pairs in series:
        curves[run["method"]][run["env"]].append(np.array([normalized_return(run, pairs[s]) for s in steps]))
    matrices = {}
    for method, per_env in curves.items():
        if set(per_env) != set(tasks):
            continue
        count = min(len(per_env[t]) for t in tasks)
        matrices[method] = np.stack([np.stack([per_env[t][i] for t in tasks]) for i in range(count)])
    return np.array(steps), matrices


CURVE_TAGS = {"return": run_folder.Tag.EVAL_RETURN, "iou": run_folder.Tag.EVAL_IOU,
              "zero_maps": run_folder.Tag.EVAL_ZERO_MAP_FRACTION}


def learning_curves(runs: list[dict]) -> dict[str, dict[str, dict[str, stats.Curve]]]:
    """Per env, method and metric (eval return, eval IoU, all-zero share of the eval maps): the
    curve over seeds at the evaluation steps all its seeds logged (``statistics.seed_band``)."""
    grouped: dict[tuple, list[dict]] = defaultdict(list)
    for run in runs:
        for metric, tag in CURVE_TAGS.items():
            pairs = eval_series(run, tag)
            if pairs:
                grouped[(run["env"], run["method"], metric)].append(dict(pairs))
    curves: dict = {}
    for (env, method, metric), seeds in sorted(grouped.items()):
        steps = sorted(set.intersection(*(set(s) for s in seeds)))
        if not steps:
            continue
        values = np.array([[seed[step] for step in steps] for seed in seeds])
        curves.setdefault(env, {}).setdefault(method, {})[metric] = stats.seed_band(steps, values,
                                                                                    fraction=metric != "return")
    return curves


def group_rows(runs: list[dict]) -> tuple[report.GroupRow, ...]:
    grouped = defaultdict(list)
    for run in runs:
        grouped[(run["env"], run["method"])].append(run)
    rows = []
    for (env, method), group in sorted(grouped.items()):
        normalised = tuple(normalized_return(r, r["eval_return_mean"]) for r in group
                           if _present(r.get("eval_return_mean")))
        rows.append(report.GroupRow(env, method, len(group), _values(group, "eval_return_mean"), normalised,
                                    _values(group, "eval_iou_mean"), _values(group, "eval_zero_map_fraction"),
                                    sum(maps_dead_at_end(r) for r in group)))
    return tuple(rows)


def _values(group: list[dict], key: str) -> tuple[float, ...]:
    return tuple(float(r[key]) for r in group if _present(r.get(key)))


def improvements(scores: dict[str, np.ndarray], *, reps: int, seed: int, min_runs: int) -> dict[str, stats.Improvement]:
    """P(CAMAL > baseline) for each baseline among ``scores``."""
    if "camal" not in scores:
        return {}
    return {baseline: stats.probability_of_improvement(scores["camal"], scores[baseline], reps=reps, seed=seed,
                                                       min_runs=min_runs)
            for baseline in sorted(set(scores) - {"camal"})}


def rl_results(runs: list[dict], notes: list[str], *, reps: int, seed: int, min_runs: int) -> report.RLResults:
    """Everything the report says about RL runs; what cannot be computed is added to ``notes``."""
    methods = sorted({r["method"] for r in runs})
    if len(methods) < 2:
        notes.append(f"only one method ({methods[0]}) among the runs: no probability of improvement")
    metrics, return_tasks = [], []
    for metric in ("return", "iou"):
        table = score_matrices(runs, metric)
        notes += table.notes
        label = report.METRIC_LABELS[metric]
        if not table.tasks:
            notes.append(f"{label}: no env run by every method; no interval estimates")
            continue
        if metric == "return":
            return_tasks = table.tasks
        if "camal" not in table.scores and len(table.scores) >= 2:
            notes.append(f"{label}: no 'camal' runs; probability of improvement is CAMAL vs the others")
        metrics.append(report.MetricResults(metric, tuple(table.tasks),
                                            stats.interval_estimates(table.scores, reps=reps, seed=seed),
                                            improvements(table.scores, reps=reps, seed=seed, min_runs=min_runs)))
    steps, matrices = sample_efficiency(runs, return_tasks)
    efficiency = {}
    if matrices:
        # a curve bootstraps every evaluation step: a tenth of the repetitions, never below the floor
        efficiency = stats.iqm_curves(matrices, steps, reps=max(MIN_REPS, reps // 10), seed=seed)
    else:
        notes.append("sample-efficiency curves: fewer than two evaluation steps shared by all runs")
    return report.RLResults(
        runs=len(runs), methods=tuple(methods), envs=tuple(sorted({r["env"] for r in runs})),
        steps=tuple(sorted({r["global_step"] for r in runs if r.get("global_step")})), groups=group_rows(runs),
        metrics=tuple(metrics), learning_curves=learning_curves(runs), efficiency=efficiency)


# ---------------------------------------------------------------------------------------
# Classification: folds arranged per model, data set, method and metric
# ---------------------------------------------------------------------------------------
def classification_results(folds: list[dict], notes: list[str]) -> tuple[stats.FoldComparison, ...]:
    """CAMAL against each baseline on each metric, model and data set, over paired folds."""
    values: dict[tuple, dict[int, float]] = defaultdict(dict)
    for record in folds:
        for metric in stats.CLASSIFICATION_METRICS:
            if metric in record:
                values[(record["model"], record["dataset"], record["method"], metric)][record["fold"]] = record[metric]
    methods = sorted({r["method"] for r in folds})
    baselines = [m for m in methods if m != "camal"]
    if "camal" not in methods or not baselines:
        notes.append(f"classification: methods found {methods}; need 'camal' and at least one baseline for "
                     f"Wilcoxon tests")
        return ()
    found = []
    for baseline in baselines:
        for metric in stats.CLASSIFICATION_METRICS:
            for model in sorted({r["model"] for r in folds}):
                for dataset in sorted({r["dataset"] for r in folds}):
                    pair = stats.compare_folds(values.get((model, dataset, "camal", metric), {}),
                                               values.get((model, dataset, baseline, metric), {}),
                                               model=model, dataset=dataset, metric=metric, baseline=baseline)
                    if pair is None:
                        continue
                    if pair.unpaired:
                        notes.append(f"{model}/{dataset}/{metric}: only folds {list(pair.folds)} are paired with "
                                     f"{baseline}")
                    found.append(pair)
    return tuple(found)


# ---------------------------------------------------------------------------------------
# The comparison
# ---------------------------------------------------------------------------------------
def compare(paths: list[str], out: str | Path, *, reps: int = 2000, seed: int = 0, plots: bool = True,
            setting: dict | None = None, at_step: int | None = None, skip_broken: bool = False,
            min_runs: int = MIN_RUNS_FOR_VERDICT) -> dict:
    """Analyse everything under ``paths``; write ``report.md``, ``results.json`` (strict JSON) and PNGs
    into ``out``, and return ``results.json``'s data.

    ``setting`` (frames, budget, seeds, machine, ...) is written at the top of the report.
    ``at_step`` compares the RL runs at their evaluation at that agent step instead of their end; runs
    of different lengths are compared at the last evaluation step they all reached. ``skip_broken``
    leaves unreadable runs out (listed in the report) instead of stopping. ``min_runs``: fewer runs
    per method and task give intervals but no verdict. ``reps``: bootstrap repetitions, at least
    ``MIN_REPS``."""
    if not paths:
        raise AnalysisError("nothing to compare: give run folders, folders holding them, or fold result files")
    stats.check_reps(reps)
    stats.check_min_runs(min_runs)
    schema.check_seed(seed)  # the bootstrap's numpy seed
    if at_step is not None and at_step < 1:
        raise AnalysisError(f"--at-step must be a positive agent step, got {at_step}")
    found = find_results(paths, at_step=at_step, skip_broken=skip_broken)
    left_out = list(found.left_out)
    left_out += [f"{r['_path']}: no evaluation at agent step {at_step:,}"
                 for r in found.runs if r.get("_no_eval_at_step")]
    rl_runs = [r for r in found.runs if not r.get("_no_eval_at_step")]
    if not rl_runs and not found.folds:
        raise AnalysisError(
            f"no results under {', '.join(map(str, paths))}: expected run folders with summary.json "
            f"(camal-train) or per-fold JSON files (camal-classify)"
            + (f"; left out: {'; '.join(left_out)}" if left_out else "")
        )
    compared_at, length_note = {}, ""
    if at_step is None and rl_runs:
        compared_at, length_note = common_lengths(rl_runs)
        rl_runs = [{**load_run(Path(r["_path"]), compared_at[r["env"]]), **{k: r[k] for k in ("env", "method", "seed")}}
                   if r["env"] in compared_at else r for r in rl_runs]
    notes: list[str] = []
    rl = rl_results(rl_runs, notes, reps=reps, seed=seed, min_runs=min_runs) if rl_runs else None
    folds = classification_results(found.folds, notes) if found.folds else None
    comparison = report.Comparison(reps=reps, seed=seed, min_runs=min_runs, setting=setting or {}, at_step=at_step,
                                   compared_at_step=compared_at, length_note=length_note, rl=rl, folds=folds,
                                   notes=tuple(notes), left_out=tuple(left_out))
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    figures = report.draw_figures(out, comparison) if plots else []
    results = report.results_json(comparison)
    write_json(out / "results.json", results)
    write_text_atomic(out / "report.md", report.markdown(comparison, figures))
    return strict_json_value(results)


@dataclass
class CompareArgs:
    """Compare CAMAL and baselines over seeds and tasks: report.md, results.json and PNG plots in --out."""

    runs: tyro.conf.Positional[list[str]]
    """run folders, folders holding them, or fold result files"""
    out: str
    """folder for report.md, results.json and the plots"""
    reps: int = 2000
    """bootstrap repetitions (at least 1000, so each tail of a 95 % interval has draws of its own)"""
    seed: int = 0
    """bootstrap seed (results are reproducible for it)"""
    plots: bool = True
    """draw the PNG plots (--no-plots: only report.md and results.json)"""
    at_step: int | None = None
    """compare RL runs at their evaluation at this agent step"""
    skip_broken: bool = False
    """leave out run folders and fold files that cannot be read (the report lists each and why)"""
    min_runs: int = MIN_RUNS_FOR_VERDICT
    """runs per method and task below which no verdict is given (the paper has 5)"""
    setting: str | None = None
    """a JSON file of the study's setting, shown at the top"""
    table: bool = False
    """also print the report to stdout"""


def read_setting(path: str) -> dict:
    try:
        setting = json.loads(Path(path).read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise AnalysisError(f"--setting {path} is not valid JSON ({error})") from None
    if not isinstance(setting, dict):
        raise AnalysisError(f"--setting {path} holds a {type(setting).__name__}; give a JSON object of names and "
                            f"values")
    return setting


def cli(argv: list[str] | None = None) -> None:
    options = tyro.cli(CompareArgs, args=argv, prog="camal-compare")
    # rliable hands arch a RandomState, which arch now warns about on every bootstrap
    warnings.filterwarnings("ignore", message="random_state is deprecated", category=FutureWarning)

    def main() -> Path:
        compare(options.runs, options.out, reps=options.reps, seed=options.seed, plots=options.plots,
                setting=read_setting(options.setting) if options.setting else None, at_step=options.at_step,
                skip_broken=options.skip_broken, min_runs=options.min_runs)
        return Path(options.out) / "report.md"

    path = run_cli("camal-compare", main)
    print(path.read_text() if options.table else f"wrote {path}")


if __name__ == "__main__":
    cli()
