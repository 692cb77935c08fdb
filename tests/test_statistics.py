"""camal_rl.statistics on hand-made scores whose results are known exactly (the way rliable's own
tests are written), with the real rliable bootstrap and scipy's exact Wilcoxon distribution."""

import math

import numpy as np
import pytest
from scipy import stats as scipy_stats

from camal_rl import statistics
from camal_rl.statistics import MIN_REPS, AnalysisError, Interval

REPS = MIN_REPS


# ---------------------------------------------------------------------------------------
# Interval estimates
# ---------------------------------------------------------------------------------------
def test_aggregates_of_a_known_array():
    # 4 runs of 3 tasks. The task means are 1.5, 8 and 30.5: the mean is their mean, the median their
    # median (rliable's aggregates); the IQM drops the 3 lowest and 3 highest of all 12 scores.
    scores = np.array([[0.0, 4.0, 8.0], [1.0, 5.0, 9.0], [2.0, 6.0, 10.0], [3.0, 17.0, 95.0]])
    found = statistics.interval_estimates({"a": scores}, reps=REPS, seed=0)["a"]
    assert (found.runs, found.tasks) == (4, 3)
    assert found.mean.point == pytest.approx(40 / 3)
    assert found.median.point == pytest.approx(8.0)
    assert found.iqm.point == pytest.approx((3 + 4 + 5 + 6 + 8 + 9) / 6)
    for estimate in found.named().values():
        assert 0.0 <= estimate.low < estimate.high <= 95.0  # resampling 4 distinct runs moves every aggregate
    assert list(found.named()) == ["Mean", "IQM", "Median"]


def test_runs_that_agree_give_a_zero_width_interval_at_the_point():
    # 4 identical runs over 4 tasks: the median of the task means is (1 + 2) / 2; of the 16 values the IQM keeps
    # the middle 8 (four 1s, four 2s)
    scores = np.tile([0.0, 1.0, 2.0, 100.0], (4, 1))
    found = statistics.interval_estimates({"a": scores}, reps=REPS, seed=0)["a"]
    assert found.mean == Interval(25.75, 25.75, 25.75) and found.mean.degenerate
    assert found.iqm == Interval(1.5, 1.5, 1.5)
    assert found.median == Interval(1.5, 1.5, 1.5)


def test_a_seed_gives_the_same_intervals_and_another_seed_others():
    scores = {"a": np.arange(10.0).reshape(5, 2) ** 2, "b": np.arange(10.0).reshape(5, 2)}
    first = statistics.interval_estimates(scores, reps=REPS, seed=3)
    assert first == statistics.interval_estimates(scores, reps=REPS, seed=3)
    assert first["a"].mean != statistics.interval_estimates(scores, reps=REPS, seed=4)["a"].mean


# ---------------------------------------------------------------------------------------
# Probability of improvement and the verdict
# ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("x, y, expected", [
    ([[3.0], [1.0]], [[2.0], [0.0]], 3 / 4),  # 3 of the 4 run pairs: X higher
    ([[1.0], [2.0]], [[1.0], [0.0]], 3.5 / 4),  # a tie counts a half
    ([[3.0, 1.0], [1.0, 1.0]], [[2.0, 1.0], [0.0, 1.0]], (3 / 4 + 1 / 2) / 2),  # averaged over tasks; equal task: 1/2
    ([[0.0], [1.0]], [[2.0], [3.0], [4.0]], 0.0),  # unequal run counts
])
def test_probability_of_improvement_of_known_arrays(x, y, expected):
    found = statistics.probability_of_improvement(np.array(x), np.array(y), reps=REPS, seed=0)
    assert found.probability.point == pytest.approx(expected)
    assert found.runs == min(len(x), len(y))
    assert found.verdict.startswith(statistics.TOO_FEW) and "(2 runs per task, at least 5 needed)" in found.verdict


def test_complete_separation_is_significant_and_equal_methods_are_not():
    x = np.arange(10.0).reshape(5, 2) + 100  # every X run beats every Y run on both tasks
    y = np.arange(10.0).reshape(5, 2)
    found = statistics.probability_of_improvement(x, y, reps=REPS, seed=0)
    assert found.probability == Interval(1.0, 1.0, 1.0) and found.significant and found.runs == 5
    same = statistics.probability_of_improvement(y, y.copy(), reps=REPS, seed=0)
    assert same.probability.point == 0.5 and same.verdict == statistics.NOT_SIGNIFICANT
    assert same.probability.low < 0.5 < same.probability.high  # X's and Y's runs are resampled independently


def test_a_small_noisy_edge_has_one_half_inside_its_interval():
    rng = np.random.default_rng(3)
    x = 0.55 + 0.3 * rng.standard_normal((5, 2))
    y = 0.50 + 0.3 * rng.standard_normal((5, 2))
    found = statistics.probability_of_improvement(x, y, reps=REPS, seed=0)
    assert found.probability.point > 0.5 and found.probability.low <= 0.5 <= found.probability.high
    assert found.verdict == statistics.NOT_SIGNIFICANT


@pytest.mark.parametrize("point, low, high, runs, expected", [
    (0.7, 0.55, 0.9, 5, "significant"),
    (0.7, 0.45, 0.9, 5, "not significant"),  # P > 0.5 alone is not enough
    (0.7, 0.5, 0.9, 5, "not significant"),  # 0.5 on the bound is inside
    (0.3, 0.1, 0.45, 5, "not significant"),  # significantly worse is not a CAMAL win
    (0.68, 0.68, 0.68, 5, "not significant: a zero-width interval, the bootstrap saw no spread to judge"),
    (1.0, 1.0, 1.0, 5, "significant"),  # complete separation: every resample separates too
    (0.7, 0.55, 0.9, 4, "too few runs for a verdict (4 runs per task, at least 5 needed)"),
])
def test_the_verdict_rule(point, low, high, runs, expected):
    assert statistics.verdict(Interval(point, low, high), runs=runs) == expected


def test_min_runs_moves_the_verdict_floor():
    assert statistics.verdict(Interval(0.7, 0.55, 0.9), runs=3, min_runs=3) == "significant"
    with pytest.raises(AnalysisError, match="--min-runs must be >= 1"):
        statistics.verdict(Interval(0.7, 0.55, 0.9), runs=3, min_runs=0)


# ---------------------------------------------------------------------------------------
# What cannot be a result
# ---------------------------------------------------------------------------------------
def test_too_few_repetitions_are_refused():
    x = np.arange(10.0).reshape(5, 2)
    for call in (lambda reps: statistics.interval_estimates({"a": x}, reps=reps, seed=0),
                 lambda reps: statistics.probability_of_improvement(x, x, reps=reps, seed=0),
                 lambda reps: statistics.iqm_curves({"a": x[..., None]}, [1], reps=reps, seed=0)):
        with pytest.raises(AnalysisError, match=f"--reps 1 is too few .* give --reps {MIN_REPS} or more"):
            call(1)
        with pytest.raises(AnalysisError, match=f"--reps {MIN_REPS - 1} "):
            call(MIN_REPS - 1)
    statistics.check_reps(MIN_REPS)


@pytest.mark.parametrize("scores, words", [
    ([[1.0, math.inf]], "a score is inf, not a finite number"),
    ([[1.0, math.nan]], "a score is nan, not a finite number"),
    ([[1.0, 2.0]][:0], "expected 2 dimensions, runs first, with at least one run and one task"),
    ([1.0, 2.0], "expected 2 dimensions"),
])
def test_scores_that_are_no_scores_are_refused(scores, words):
    with pytest.raises(AnalysisError, match=words):
        statistics.interval_estimates({"camal": np.array(scores)}, reps=REPS, seed=0)


def test_improvement_needs_the_same_tasks():
    with pytest.raises(AnalysisError, match="X has 2 tasks and Y 1"):
        statistics.probability_of_improvement(np.ones((5, 2)), np.ones((5, 1)), reps=REPS, seed=0)


# ---------------------------------------------------------------------------------------
# Curves
# ---------------------------------------------------------------------------------------
def test_seed_band_is_mean_plus_minus_t_standard_errors():
    curve = statistics.seed_band([10, 20], [[1.0, 2.0], [3.0, 4.0]])
    # two seeds: std sqrt(2), standard error 1, t(0.975, 1 degree of freedom)
    t = 12.706204736174694
    assert curve.steps == (10, 20) and curve.runs == 2
    assert curve.point == pytest.approx((2.0, 3.0))
    assert curve.low == pytest.approx((2.0 - t, 3.0 - t)) and curve.high == pytest.approx((2.0 + t, 3.0 + t))
    share = statistics.seed_band([5], [[0.1], [0.3]], fraction=True)
    assert share.low == (0.0,) and share.high == (1.0,)  # a share's band stays in [0, 1]
    one = statistics.seed_band([5], [[0.4]])
    assert one.low == one.point == one.high == (0.4,)


def test_iqm_curves_at_each_step():
    scores = np.zeros((4, 1, 2))
    scores[:, 0, 0] = [0.0, 1.0, 2.0, 100.0]  # IQM of 4 values: the middle two
    scores[:, 0, 1] = 4.0
    curve = statistics.iqm_curves({"camal": scores}, [100, 200], reps=REPS, seed=0)["camal"]
    assert curve.steps == (100, 200) and curve.runs == 4
    assert curve.point == pytest.approx((1.5, 4.0))
    assert 0.0 <= curve.low[0] < curve.high[0] <= 100.0
    assert curve.low[1] == curve.high[1] == 4.0
    with pytest.raises(AnalysisError, match="scores at 2 steps for 3 steps given"):
        statistics.iqm_curves({"camal": scores}, [1, 2, 3], reps=REPS, seed=0)


# ---------------------------------------------------------------------------------------
# Wilcoxon over paired folds
# ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("differences, expected", [
    ([1, 2, 3, 4, 5], 1 / 32),  # all 5 signs positive: 1 of 2^5 sign patterns
    ([1, 2, 3, 4, -5], 10 / 32),  # W+ = 10: 10 of 32 patterns reach it
    ([1, -2, 3, 4, 5, 6], 3 / 64),  # W+ = 19: the complement sums to at most 2
    ([0, 1, 2, 3, 4, 5], 1 / 32),  # a zero difference is dropped
])
def test_wilcoxon_one_tailed_p_values_are_the_exact_ones(differences, expected):
    baseline = np.linspace(0.1, 0.2, len(differences))
    camal = baseline + np.array(differences) / 100
    p = statistics.wilcoxon_greater(camal, baseline)
    assert p == pytest.approx(expected)
    nonzero = [d for d in differences if d]
    assert p == pytest.approx(scipy_stats.wilcoxon(nonzero, alternative="greater", method="exact").pvalue)
    assert statistics.wilcoxon_greater(baseline, camal, lower_is_better=True) == pytest.approx(expected)


def test_wilcoxon_of_equal_or_unpaired_values():
    assert statistics.wilcoxon_greater([0.5] * 10, [0.5] * 10) == 1.0
    assert statistics.wilcoxon_greater([0.8] * 10, [0.9] * 10) == pytest.approx(1.0)
    with pytest.raises(AnalysisError, match="pairs values one to one"):
        statistics.wilcoxon_greater([0.1, 0.2], [0.1])
    with pytest.raises(AnalysisError, match="a score is inf"):
        statistics.wilcoxon_greater([0.1, math.inf], [0.1, 0.2])


def test_compare_folds_pairs_folds_and_judges_the_direction():
    ours = {0: 0.91, 1: 0.92, 2: 0.93, 3: 0.94, 4: 0.95, 7: 0.5}
    theirs = {0: 0.90, 1: 0.90, 2: 0.90, 3: 0.90, 4: 0.90, 9: 0.5}
    found = statistics.compare_folds(ours, theirs, model="m", dataset="d", metric="test_accuracy", baseline="vanilla")
    assert found.folds == (0, 1, 2, 3, 4) and found.unpaired == (7, 9)
    assert found.camal == (0.91, 0.92, 0.93, 0.94, 0.95) and found.other == (0.9,) * 5
    assert found.p == pytest.approx(1 / 32) and found.better and found.significant
    # on a lower-is-better metric the same numbers are CAMAL's loss
    worse = statistics.compare_folds(ours, theirs, model="m", dataset="d", metric="deletion_auc", baseline="vanilla")
    assert worse.p == pytest.approx(1.0) and not worse.better and not worse.significant
    one = statistics.compare_folds({0: 0.9}, {0: 0.1}, model="m", dataset="d", metric="test_iou", baseline="vanilla")
    assert math.isnan(one.p) and one.better and not one.significant  # one pair: no test
    assert statistics.compare_folds({0: 0.9}, {1: 0.1}, model="m", dataset="d", metric="test_iou",
                                    baseline="vanilla") is None


# ---------------------------------------------------------------------------------------
# A handful of values
# ---------------------------------------------------------------------------------------
def test_mean_std_and_the_normal_interval():
    mean, std = statistics.mean_and_std([1.0, 2.0, 3.0, 4.0])
    assert mean == 2.5 and std == pytest.approx(math.sqrt(5 / 3))  # ddof 1
    assert statistics.mean_and_std([7.0]) == (7.0, 0.0)
    interval = statistics.normal_ci95([1.0, 2.0, 3.0, 4.0])
    half = 1.96 * math.sqrt(5 / 3) / 2
    assert interval.point == 2.5
    assert (interval.low, interval.high) == pytest.approx((2.5 - half, 2.5 + half))
    assert statistics.normal_ci95([7.0]) is None
    with pytest.raises(AnalysisError, match="at least one value"):
        statistics.mean_and_std([])
