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
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from camal_rl import runs as run_folder
from camal_rl.doom import SpecError, load_spec
from camal_rl.errors import CamalError, run_cli
from camal_rl.files import save_figure, write_text_atomic

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


# Fewer runs than this per method and task give intervals but no verdict: rliable's authors
# (Agarwal et al. 2021) show how unreliable point estimates from 3 runs are, and the paper uses 5 seeds.
MIN_RUNS_FOR_VERDICT = 5
TOO_FEW = "too few runs for a verdict"


class AnalysisError(CamalError, ValueError):
    """Nothing (or nothing comparable) to analyse; the message says what was found."""


@dataclass
class Found:
    """What ``find_results`` found: RL run records, classification folds, and what was left out (with why)."""

    runs: list[dict]
    folds: list[dict]
    left_out: list[str]


# ---------------------------------------------------------------------------------------
# Loading
# ---------------------------------------------------------------------------------------
def _run_folders(root: Path) -> list[Path]:
    """Folders under ``root`` (itself included) that hold a run: events, a checkpoint or a summary."""
    marks = ["events.out.tfevents.*", run_folder.CHECKPOINT, run_folder.SUMMARY]
    folders = {path.parent for mark in marks for path in ([*root.rglob(mark)] if root.is_dir() else [])}
    return sorted(folders)


def find_results(paths: Iterable[str | Path], *, at_step: int | None = None, skip_broken: bool = False) -> Found:
    """Every RL run and classification fold under ``paths``. A run folder or fold file that cannot be
    read is an ``AnalysisError`` naming the file and why, or with ``skip_broken`` is left out and listed.

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
        fold_files = [root] if root.is_file() else sorted(root.rglob("fold_*.json"))
        for path in fold_files:
            try:
                record = json.loads(path.read_text())
            except (json.JSONDecodeError, UnicodeDecodeError, OSError) as error:
                broken(path, f"not readable JSON ({error})")
                continue
            if not isinstance(record, dict) or record.get("task") != "classification":
                broken(path, "not a camal-classify fold result (no task: classification)")
                continue
            missing = [k for k in ("model", "dataset", "method", "fold") if k not in record]
            if missing:
                broken(path, f"lacks {', '.join(missing)}")
                continue
            found.folds.append({**record, "_path": str(path)})
    check_unique_seeds(found.runs)
    check_same_settings(found.runs)
    return found


def load_run(folder: Path, at_step: int | None) -> dict | None:
    """One run's record: its summary (with the scenario it trained on), or its evaluation at ``at_step``
    (None when it has none there: said in the notes by the caller)."""
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
    return {**record, **values, "global_step": at_step, "_path": str(folder)}


def check_unique_seeds(found_runs: list[dict]) -> None:
    seen: dict[tuple, str] = {}
    for run in found_runs:
        key = (run["env"], run["method"], run["seed"])
        if key in seen:
            raise AnalysisError(f"seed {run['seed']} of {run['method']} on {run['env']} appears twice ({seen[key]} and "
                                f"{run['_path']}); a seed counts once: remove one of them or compare them separately")
        seen[key] = run["_path"]


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
        differ = [f"{name} {reference['args'][name]!r} vs {args[name]!r}" for name in sorted(set(args) & set(reference["args"]))
                  if name not in MAY_DIFFER and args[name] != reference["args"][name]]
        if differ:
            raise AnalysisError(f"runs on {run['env']} were trained with different settings, so their methods cannot be "
                                f"compared: {reference['_path']} and {run['_path']} differ in {', '.join(differ[:5])}"
                                f"{' and more' if len(differ) > 5 else ''}; compare runs of one setting at a time")


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


def read_scalars(run_dir: str | Path, tag: str) -> list[tuple[int, float]]:
    """(step, value) pairs of one TensorBoard scalar; the last value wins for a repeated step."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    accumulator = EventAccumulator(str(run_dir), size_guidance={"scalars": 0})
    accumulator.Reload()
    if tag not in accumulator.Tags().get("scalars", []):
        return []
    by_step = {event.step: event.value for event in accumulator.Scalars(tag)}
    return sorted(by_step.items())


def normalized_return(run: dict, value: float) -> float:
    """``value`` on the run's own scenario scale (0 random, 1 reference), from the scenario the run
    recorded; older runs without one are looked up by name."""
    record = run.get(run_folder.SCENARIO_KEY)
    if isinstance(record, dict) and {"random_score", "reference_score"} <= record.keys():
        return (value - record["random_score"]) / (record["reference_score"] - record["random_score"])
    try:
        return load_spec(run["env"]).normalize_return(value)
    except SpecError as error:
        raise AnalysisError(f"{run['_path']}: its return cannot be normalised: the run records no scenario and "
                            f"{error}") from None


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
            value = None if raw is None else normalized_return(run, raw)
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
    # rliable's random_state alone does not make its CIs reproducible (checked): seed numpy too.
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


def learning_curves(runs: list[dict]) -> dict:
    """Per env and method: eval return and eval IoU at the logged evaluation steps, mean and 95 %
    band over seeds (mean +- t * standard error, ddof 1), and the all-zero share of the eval maps."""
    from scipy import stats

    tags = {"return": run_folder.Tag.EVAL_RETURN, "iou": run_folder.Tag.EVAL_IOU, "zero_maps": run_folder.Tag.EVAL_ZERO_MAP_FRACTION}
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
            setting: dict | None = None, at_step: int | None = None, skip_broken: bool = False,
            min_runs: int = MIN_RUNS_FOR_VERDICT) -> dict:
    """Analyse everything under ``paths``; write ``report.md``, ``results.json`` and PNGs into ``out``.

    ``setting`` (frames, budget, seeds, machine, ...) is written at the top of the report.
    ``at_step`` compares the RL runs at their evaluation at that agent step instead of their end; runs
    of different lengths are compared at the last evaluation step they all reached. ``skip_broken``
    leaves unreadable runs out (listed in the report) instead of stopping. ``min_runs``: fewer runs
    per method and task give intervals but no verdict."""
    found = find_results(paths, at_step=at_step, skip_broken=skip_broken)
    left_out = list(found.left_out)
    left_out += [f"{r['_path']}: no evaluation at agent step {at_step:,}" for r in found.runs if r.get("_no_eval_at_step")]
    rl_runs = [r for r in found.runs if not r.get("_no_eval_at_step")]
    if not rl_runs and not found.folds:
        raise AnalysisError(
            f"no results under {', '.join(map(str, paths))}: expected run folders with summary.json "
            f"(camal-train) or per-fold JSON files (camal-classify)" + (f"; left out: {'; '.join(left_out)}" if left_out else "")
        )
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    report = ["# CAMAL comparison report", ""]
    results: dict = {"setting": setting or {}, "rl": {}, "classification": {}, "notes": [], "left_out": left_out,
                     "min_runs_for_verdict": min_runs}
    if at_step is not None:
        report += [f"Runs compared at their evaluation at agent step {at_step:,} (`--at-step`), not at their end.", ""]
    elif rl_runs:
        common_step, sentence = common_length(rl_runs)
        if common_step is not None:
            rl_runs = [{**load_run(Path(r["_path"]), common_step), **{k: r[k] for k in ("env", "method", "seed")}}
                       for r in rl_runs]
            results["compared_at_step"] = common_step
            report += [sentence, ""]
    if setting:
        report += ["| setting | value |", "|---|---|"] + [f"| {k} | {v} |" for k, v in setting.items()] + [""]
    if rl_runs:
        report += rl_section(rl_runs, out, results, reps=reps, seed=seed, plots=plots, min_runs=min_runs)
    if found.folds:
        tables, notes = classification_tables(found.folds)
        results["notes"] += notes
        report += ["## Classification (paired folds, one-tailed Wilcoxon signed-rank)", "", tables or "_no comparable pairs_", ""]
    if left_out:
        report += ["## Left out (`--skip-broken`)", ""] + [f"- {n}" for n in left_out] + [""]
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


def rl_section(runs: list[dict], out: Path, results: dict, *, reps: int, seed: int, plots: bool,
               min_runs: int = MIN_RUNS_FOR_VERDICT) -> list[str]:
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
        norm = [normalized_return(r, r["eval_return_mean"]) for r in group if r.get("eval_return_mean") is not None
                and math.isfinite(r["eval_return_mean"])]
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
                fewest = min(x.shape[0], y.shape[0])
                decision = verdict(p, ci) if fewest >= min_runs else \
                    f"{TOO_FEW} ({fewest} runs per task, at least {min_runs} needed)"
                results["rl"].setdefault(f"poi_{metric}", {})[f"camal>{baseline}"] = {"p": p, "ci": list(ci), "verdict": decision}
                lines.append(f"- P(CAMAL > {baseline}) on {label} = {_fmt_ci(p, ci)}: **{decision}** "
                             f"(the paper's criterion: P > 0.5 and 0.5 outside the CI, with at least {min_runs} runs "
                             f"per method and task)")
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
    save_figure(fig, out / name, bbox_inches="tight", dpi=120)
    plt.close(fig)
    lines = [f"![{label} aggregates]({name})", ""]
    if poi_points:
        ax = plot_utils.plot_probability_of_improvement(poi_points, poi_intervals, figsize=(5, 1.6))
        ax.set_title(label, fontsize=11)
        name = f"poi_{metric}.png"
        save_figure(ax.figure, out / name, bbox_inches="tight", dpi=120)
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
    save_figure(fig, out / "learning_curves.png", dpi=110)
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
    save_figure(fig, out / "sample_efficiency.png", bbox_inches="tight", dpi=120)
    plt.close(fig)
    return ["### Sample efficiency (IQM of normalised eval return over envs and seeds, 95 % CIs, at the evaluation steps taken)",
            "", "![sample efficiency](sample_efficiency.png)", ""]


def cli(argv: list[str] | None = None) -> None:
    import argparse

    parser = argparse.ArgumentParser(prog="camal-compare", description="Compare CAMAL and baselines over seeds and tasks.")
    parser.add_argument("runs", nargs="+", help="run folders, or folders holding them, or result files")
    parser.add_argument("--out", required=True, help="folder for report.md, results.json and the plots")
    parser.add_argument("--reps", type=int, default=2000, help="bootstrap replications")
    parser.add_argument("--seed", type=int, default=0, help="bootstrap seed (results are reproducible for it)")
    parser.add_argument("--no-plots", action="store_true")
    parser.add_argument("--at-step", type=int, default=None, help="compare RL runs at their evaluation at this step")
    parser.add_argument("--skip-broken", action="store_true",
                        help="leave out run folders and fold files that cannot be read (the report lists each and why)")
    parser.add_argument("--min-runs", type=int, default=MIN_RUNS_FOR_VERDICT,
                        help="runs per method and task below which no verdict is given (default 5, as the paper)")
    parser.add_argument("--setting", default=None, help="a JSON file of the study's setting, shown at the top")
    parser.add_argument("--table", action="store_true", help="also print the report to stdout")
    options = parser.parse_args(argv)
    import warnings

    # rliable hands arch a RandomState, which arch now warns about on every bootstrap
    warnings.filterwarnings("ignore", message="random_state is deprecated", category=FutureWarning)

    def main() -> Path:
        if options.reps < 1 or options.min_runs < 1:
            raise AnalysisError("--reps and --min-runs must be >= 1")
        if options.at_step is not None and options.at_step < 1:
            raise AnalysisError(f"--at-step must be a positive agent step, got {options.at_step}")
        setting = None
        if options.setting:
            try:
                setting = json.loads(Path(options.setting).read_text())
            except (json.JSONDecodeError, UnicodeDecodeError) as error:
                raise AnalysisError(f"--setting {options.setting} is not valid JSON ({error})") from None
        compare(options.runs, options.out, reps=options.reps, seed=options.seed, plots=not options.no_plots,
                setting=setting, at_step=options.at_step, skip_broken=options.skip_broken, min_runs=options.min_runs)
        return Path(options.out) / "report.md"

    report = run_cli("camal-compare", main)
    print(report.read_text() if options.table else f"wrote {report}")


if __name__ == "__main__":
    cli()
