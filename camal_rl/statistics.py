"""The statistics of ``camal-compare`` (paper section 4, Appendix A) as pure functions.

Each function takes score arrays and returns a small frozen results object; nothing here finds
runs, reads or writes a file, or formats text. What cannot be a result is refused with an
``AnalysisError`` that says what was wrong and what would be right: too few bootstrap
repetitions for a 95 % interval, scores that are not finite numbers, matrices that do not pair.

- ``interval_estimates``: rliable's stratified bootstrap CIs of the mean, IQM and median over tasks;
- ``probability_of_improvement``: P(X > Y) averaged over tasks, its CI and the paper's ``verdict``;
- ``compare_folds`` / ``wilcoxon_greater``: one-tailed Wilcoxon signed-rank tests over paired folds;
- ``seed_band`` / ``iqm_curves``: learning curves over seeds and IQM sample-efficiency curves;
- ``mean_and_std`` / ``normal_ci95``: the spread of a handful of values.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from camal_rl.errors import CamalError

CONFIDENCE = 0.95
# A percentile interval's bounds are the bootstrap draws at the 2.5 % and 97.5 % quantiles. With
# this many repetitions each tail holds 25 draws, so a bound is not one or two draws (and the
# interval zero-width by chance); Efron & Tibshirani ask as many for percentile intervals.
MIN_REPS = 1000
# Fewer runs than this per method and task give intervals but no verdict: rliable's authors
# (Agarwal et al. 2021) show how unreliable point estimates from 3 runs are, and the paper uses 5 seeds.
MIN_RUNS_FOR_VERDICT = 5
TOO_FEW = "too few runs for a verdict"
SIGNIFICANT = "significant"
NOT_SIGNIFICANT = "not significant"
# The one-tailed Wilcoxon tests of the classification tables.
SIGNIFICANCE = 0.05
AGGREGATE_NAMES = ("Mean", "IQM", "Median")
# What a fold file may hold, in the order of the report's tables. All are fractions in [0, 1]:
# accuracies, IoU, and the deletion / insertion AUCs (areas under a class probability over [0, 1]).
CLASSIFICATION_METRICS = ("test_accuracy", "test_accuracy_matched_decoy", "test_iou", "deletion_auc", "insertion_auc")
# Metrics where smaller is better: the one-tailed test looks the other way.
LOWER_IS_BETTER = frozenset({"deletion_auc"})


class AnalysisError(CamalError, ValueError):
    """Nothing (or nothing comparable) to analyse, or a number that cannot be a result; the message says which."""


# ---------------------------------------------------------------------------------------
# Results
# ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Interval:
    """A point estimate and its 95 % interval."""

    point: float
    low: float
    high: float

    @property
    def degenerate(self) -> bool:
        """Zero width: every bootstrap draw gave the same value."""
        return not self.high > self.low


@dataclass(frozen=True)
class Aggregates:
    """One method's mean, IQM and median over its ``[runs, tasks]`` scores, each with its CI."""

    runs: int
    tasks: int
    mean: Interval
    iqm: Interval
    median: Interval

    def named(self) -> dict[str, Interval]:
        """``{"Mean": ..., "IQM": ..., "Median": ...}`` in ``AGGREGATE_NAMES`` order."""
        return dict(zip(AGGREGATE_NAMES, (self.mean, self.iqm, self.median), strict=True))


@dataclass(frozen=True)
class Improvement:
    """P(X > Y) averaged over tasks with its CI, the fewest runs per task of the two, and the verdict."""

    probability: Interval
    runs: int
    verdict: str

    @property
    def significant(self) -> bool:
        return self.verdict == SIGNIFICANT


@dataclass(frozen=True)
class Curve:
    """A statistic at each evaluation step with its 95 % band (``point`` is a mean or an IQM)."""

    steps: tuple[int, ...]
    point: tuple[float, ...]
    low: tuple[float, ...]
    high: tuple[float, ...]
    runs: int


@dataclass(frozen=True)
class FoldComparison:
    """CAMAL against one baseline on one metric, model and data set, over the folds both ran."""

    model: str
    dataset: str
    metric: str
    baseline: str
    folds: tuple[int, ...]
    camal: tuple[float, ...]
    other: tuple[float, ...]
    unpaired: tuple[int, ...]  # folds only one of the two ran
    p: float  # one-tailed Wilcoxon signed-rank; NaN below two paired folds
    better: bool  # CAMAL's mean is the better one

    @property
    def significant(self) -> bool:
        return self.better and self.p < SIGNIFICANCE


# ---------------------------------------------------------------------------------------
# Checks
# ---------------------------------------------------------------------------------------
def check_reps(reps: int) -> None:
    if reps < MIN_REPS:
        raise AnalysisError(f"--reps {reps} is too few bootstrap repetitions for a 95 % interval (each 2.5 % tail "
                            f"needs draws of its own); give --reps {MIN_REPS} or more")


def check_min_runs(min_runs: int) -> None:
    if min_runs < 1:
        raise AnalysisError(f"--min-runs must be >= 1 run per method and task, got {min_runs}")


def score_matrix(scores, what: str, *, ndim: int = 2) -> np.ndarray:
    """``scores`` as a float array of ``ndim`` dimensions (runs first), at least one run and task,
    every value finite; ``AnalysisError`` naming ``what`` otherwise."""
    matrix = np.asarray(scores, dtype=float)
    if matrix.ndim != ndim or 0 in matrix.shape:
        raise AnalysisError(f"{what}: scores of shape {matrix.shape}; expected {ndim} dimensions, runs first, with at "
                            f"least one run and one task")
    check_finite(matrix, what)
    return matrix


def check_finite(values: np.ndarray, what: str) -> None:
    bad = values[~np.isfinite(values)]
    if bad.size:
        raise AnalysisError(f"{what}: a score is {bad[0]}, not a finite number; leave out the runs that have no "
                            f"finite score")


# ---------------------------------------------------------------------------------------
# Reinforcement learning: rliable
# ---------------------------------------------------------------------------------------
def _bootstrap(scores: Mapping, statistic, *, reps: int, seed: int) -> tuple[dict, dict]:
    """rliable's stratified bootstrap percentile CIs, the same for a seed."""
    from rliable import library as rly

    check_reps(reps)
    # rliable's random_state alone does not make its CIs reproducible (its resampling draws from
    # numpy's global stream): seed numpy too.
    np.random.seed(seed)
    return rly.get_interval_estimates(dict(scores), statistic, reps=reps, confidence_interval_size=CONFIDENCE,
                                      random_state=np.random.RandomState(seed))


def _aggregates(scores: np.ndarray) -> np.ndarray:
    from rliable import metrics

    return np.array([metrics.aggregate_mean(scores), metrics.aggregate_iqm(scores), metrics.aggregate_median(scores)])


def interval_estimates(scores: Mapping[str, np.ndarray], *, reps: int, seed: int) -> dict[str, Aggregates]:
    """Per method, rliable's aggregates of its ``[runs, tasks]`` scores: the mean and the median over
    tasks of each task's mean over runs, and the IQM (25 % trimmed mean) of all scores; each with its
    stratified bootstrap 95 % CI (runs resampled within each task)."""
    matrices = {method: score_matrix(matrix, method) for method, matrix in scores.items()}
    points, intervals = _bootstrap(matrices, _aggregates, reps=reps, seed=seed)
    results = {}
    for method, matrix in matrices.items():
        estimates = [Interval(float(points[method][i]), float(intervals[method][0][i]), float(intervals[method][1][i]))
                     for i in range(len(AGGREGATE_NAMES))]
        results[method] = Aggregates(matrix.shape[0], matrix.shape[1], *estimates)
    return results


def verdict(probability: Interval, *, runs: int, min_runs: int = MIN_RUNS_FOR_VERDICT) -> str:
    """The paper's Neyman-Pearson criterion: significant when P > 0.5 and 0.5 lies outside the CI,
    given at least ``min_runs`` runs per method and task. A zero-width CI is no interval and gives no
    verdict of significance, but for P = 1: every run of X beat every run of Y on every task, so every
    resample of them does too."""
    check_min_runs(min_runs)
    if runs < min_runs:
        return f"{TOO_FEW} ({runs} runs per task, at least {min_runs} needed)"
    if not probability.point > 0.5 or probability.low <= 0.5 <= probability.high:
        return NOT_SIGNIFICANT
    if probability.degenerate and probability.point < 1:
        return f"{NOT_SIGNIFICANT}: a zero-width interval, the bootstrap saw no spread to judge"
    return SIGNIFICANT


def probability_of_improvement(x: np.ndarray, y: np.ndarray, *, reps: int, seed: int,
                               min_runs: int = MIN_RUNS_FOR_VERDICT) -> Improvement:
    """P(X > Y): per task the Mann-Whitney share of run pairs where X scores higher (ties count a
    half), averaged over tasks; its stratified bootstrap 95 % CI (X's and Y's runs resampled
    independently) and the ``verdict``. ``x`` and ``y`` are ``[runs, tasks]`` over the same tasks."""
    from rliable import metrics

    x, y = score_matrix(x, "X"), score_matrix(y, "Y")
    if x.shape[1] != y.shape[1]:
        raise AnalysisError(f"X has {x.shape[1]} tasks and Y {y.shape[1]}: a probability of improvement pairs "
                            f"the same tasks; give both the same task columns")
    points, intervals = _bootstrap({"pair": (x, y)}, metrics.probability_of_improvement, reps=reps, seed=seed)
    low, high = np.asarray(intervals["pair"], float).reshape(2)
    estimate = Interval(float(np.asarray(points["pair"]).reshape(())), float(low), float(high))
    runs = min(x.shape[0], y.shape[0])
    return Improvement(estimate, runs, verdict(estimate, runs=runs, min_runs=min_runs))


def iqm_curves(scores: Mapping[str, np.ndarray], steps: Sequence[int], *, reps: int, seed: int) -> dict[str, Curve]:
    """Sample-efficiency curves: per method, the IQM over runs and tasks of its ``[runs, tasks,
    steps]`` scores at each step, with stratified bootstrap 95 % CIs."""
    from rliable import metrics

    def iqm_per_step(matrix: np.ndarray) -> np.ndarray:
        return np.array([metrics.aggregate_iqm(matrix[..., i]) for i in range(matrix.shape[-1])])

    matrices = {method: score_matrix(matrix, method, ndim=3) for method, matrix in scores.items()}
    for method, matrix in matrices.items():
        if matrix.shape[-1] != len(steps):
            raise AnalysisError(f"{method}: scores at {matrix.shape[-1]} steps for {len(steps)} steps given")
    points, intervals = _bootstrap(matrices, iqm_per_step, reps=reps, seed=seed)
    return {method: Curve(tuple(int(s) for s in steps), _floats(points[method]), _floats(intervals[method][0]),
                          _floats(intervals[method][1]), matrix.shape[0])
            for method, matrix in matrices.items()}


def _floats(values) -> tuple[float, ...]:
    return tuple(float(v) for v in values)


def seed_band(steps: Sequence[int], values, *, fraction: bool = False) -> Curve:
    """A learning curve: the mean over seeds of ``values [seeds, steps]`` and its 95 % band, mean
    ± t(0.975, seeds - 1) standard errors (ddof 1; none for one seed), clipped to [0, 1] for a
    ``fraction``."""
    from scipy import stats

    values = score_matrix(values, "learning curve")
    if values.shape[1] != len(steps):
        raise AnalysisError(f"learning curve: values at {values.shape[1]} steps for {len(steps)} steps given")
    seeds = values.shape[0]
    mean = values.mean(0)
    half = np.zeros_like(mean)
    if seeds > 1:
        half = stats.t.ppf(0.5 + CONFIDENCE / 2, seeds - 1) * values.std(0, ddof=1) / np.sqrt(seeds)
    low, high = mean - half, mean + half
    if fraction:
        low, high = np.clip(low, 0, 1), np.clip(high, 0, 1)
    return Curve(tuple(int(s) for s in steps), _floats(mean), _floats(low), _floats(high), seeds)


# ---------------------------------------------------------------------------------------
# Classification: Wilcoxon signed-rank over paired folds
# ---------------------------------------------------------------------------------------
def wilcoxon_greater(camal_values: Iterable[float], baseline_values: Iterable[float],
                     lower_is_better: bool = False) -> float:
    """One-tailed p-value of the Wilcoxon signed-rank test that CAMAL is better than the baseline
    over paired values (zero differences dropped); 1.0 when every pair is equal."""
    from scipy.stats import wilcoxon

    ours, theirs = np.asarray(list(camal_values), float), np.asarray(list(baseline_values), float)
    if ours.shape != theirs.shape or ours.ndim != 1:
        raise AnalysisError(f"a Wilcoxon test pairs values one to one; got {ours.shape} and {theirs.shape} values")
    check_finite(np.concatenate([ours, theirs]), "paired values")
    differences = theirs - ours if lower_is_better else ours - theirs
    if np.allclose(differences, 0):
        return 1.0
    return float(wilcoxon(differences, alternative="greater", zero_method="wilcox").pvalue)


def compare_folds(camal: Mapping[int, float], other: Mapping[int, float], *, model: str, dataset: str, metric: str,
                  baseline: str) -> FoldComparison | None:
    """CAMAL's folds against the baseline's on one metric: the folds both ran, the one-tailed
    Wilcoxon p-value over them and whether CAMAL's mean is the better; None when no fold pairs."""
    paired = sorted(set(camal) & set(other))
    if not paired:
        return None
    ours, theirs = [float(camal[f]) for f in paired], [float(other[f]) for f in paired]
    lower = metric in LOWER_IS_BETTER
    p = wilcoxon_greater(ours, theirs, lower) if len(paired) >= 2 else math.nan
    better = bool(np.mean(ours) < np.mean(theirs)) if lower else bool(np.mean(ours) > np.mean(theirs))
    return FoldComparison(model, dataset, metric, baseline, tuple(paired), tuple(ours), tuple(theirs),
                          tuple(sorted(set(camal) ^ set(other))), p, better)


# ---------------------------------------------------------------------------------------
# A handful of values
# ---------------------------------------------------------------------------------------
def mean_and_std(values: Iterable[float]) -> tuple[float, float]:
    """The mean and the sample standard deviation (ddof 1; 0 for one value), the one convention of all reports."""
    values = np.asarray(list(values), float)
    if values.size == 0:
        raise AnalysisError("a mean and standard deviation need at least one value")
    return float(values.mean()), (float(values.std(ddof=1)) if values.size > 1 else 0.0)


def normal_ci95(values: Iterable[float]) -> Interval | None:
    """The paper's 95 % interval for k-fold results, mean ± 1.96 standard errors (ddof 1); None below two values."""
    values = np.asarray(list(values), float)
    if values.size < 2:
        return None
    mean, std = mean_and_std(values)
    half = 1.96 * std / math.sqrt(values.size)
    return Interval(mean, mean - half, mean + half)
