"""camal_rl.report: numbers as the report writes them, from hand-made results objects (no bootstrap)."""

import math

from camal_rl import report
from camal_rl.statistics import Aggregates, FoldComparison, Improvement, Interval


def test_mean_std_and_intervals_as_text():
    assert report.mean_std([1.0, 2.0, 3.0, 4.0]) == "2.5 ± 1.3"  # sample std (ddof 1): sqrt(5/3)
    assert report.mean_std([0.9, 0.8], scale=100) == "85.0 ± 7.1"  # std of 90 and 80: sqrt(50)
    assert report.mean_std([0.25], digits=3) == "0.250 ± 0.000"
    assert report.ci95([1.0, 2.0, 3.0, 4.0]) == "[1.2, 3.8]"  # 2.5 ± 1.96 * sqrt(5/3) / 2
    assert report.ci95([0.5]) == "[-]"
    assert report.interval_text(Interval(0.68, 0.5, 0.9)) == "0.680 [0.500, 0.900]"


def fold(metric="test_iou", camal=(0.6, 0.62), other=(0.1, 0.12), p=0.01, better=True, baseline="vanilla"):
    return FoldComparison("resnet18", "decoy_digits", metric, baseline, (0, 1), camal, other, (), p, better)


def test_fold_tables_bold_only_where_better_and_significant():
    tables = report.classification_markdown((
        fold(),  # better, p < 0.05: bold
        fold(metric="test_accuracy", camal=(0.9, 0.9), other=(0.8, 0.8), p=0.2),  # better, not significant
        fold(metric="deletion_auc", camal=(0.4, 0.4), other=(0.3, 0.3), p=0.9, better=False),  # worse: plain
        fold(metric="insertion_auc", p=math.nan),  # one pair: no test
    ))
    iou = tables.split("### test IoU (%): CAMAL vs vanilla")[1].split("###")[0]
    assert "| resnet18 | **61.0 ± 1.4** [59.0, 63.0] (p=0.01) | 11.0 ± 1.4 [9.0, 13.0] |" in iou
    accuracy = tables.split("### test accuracy (%): CAMAL vs vanilla")[1].split("###")[0]
    assert "| resnet18 | <u>90.0 ± 0.0</u> [90.0, 90.0] (p=0.2) | 80.0 ± 0.0 [80.0, 80.0] |" in accuracy
    deletion = tables.split("### deletion AUC (lower is better): CAMAL vs vanilla")[1].split("###")[0]
    assert "| resnet18 | 0.400 ± 0.000 [0.400, 0.400] (p=0.9) | 0.300 ± 0.000 [0.300, 0.300] |" in deletion
    assert "(p=nan)" in tables.split("### insertion AUC: CAMAL vs vanilla")[1]
    assert tables.index("test accuracy") < tables.index("test IoU") < tables.index("deletion AUC")  # the paper's order


def test_a_zero_width_interval_reads_as_it_is_and_results_json_keeps_its_keys():
    degenerate = Interval(0.68, 0.68, 0.68)
    aggregates = Aggregates(5, 1, Interval(0.5, 0.4, 0.6), Interval(0.5, 0.45, 0.55), Interval(0.5, 0.5, 0.5))
    improvement = Improvement(degenerate, 5, "not significant: a zero-width interval, the bootstrap saw no spread")
    rl = report.RLResults(
        runs=10, methods=("camal", "vanilla"), envs=("basic",), steps=(3000,),
        groups=(report.GroupRow("basic", "camal", 5, (80.0,) * 5, (0.8,) * 5, (0.5,) * 5, (0.0,) * 5, 0),),
        metrics=(report.MetricResults("return", ("basic",), {"camal": aggregates}, {"vanilla": improvement}),),
        learning_curves={}, efficiency={})
    comparison = report.Comparison(reps=2000, seed=0, min_runs=5, rl=rl)
    text = report.markdown(comparison)
    assert ("- P(CAMAL > vanilla) on normalised return = 0.680 [0.680, 0.680]: **not significant: a zero-width "
            "interval, the bootstrap saw no spread** (the paper's criterion") in text
    assert "| camal | 5 | 0.500 [0.400, 0.600] | 0.500 [0.450, 0.550] | 0.500 [0.500, 0.500] |" in text
    assert "| basic | camal | 5 | 80.0 ± 0.0 | 0.800 ± 0.000 | 0.500 ± 0.000 | 0% | 0 of 5 |" in text
    assert "![" not in text  # no figures drawn, none linked
    data = report.results_json(comparison)
    assert data["rl"]["return"]["camal"]["IQM"] == {"point": 0.5, "ci": [0.45, 0.55]}
    assert data["rl"]["poi_return"]["camal>vanilla"]["ci"] == [0.68, 0.68]
    assert data["rl"]["per_env"]["basic/camal"]["normalised_return"] == [0.8] * 5
    assert {"setting", "rl", "classification", "notes", "left_out", "min_runs_for_verdict"} <= data.keys()
