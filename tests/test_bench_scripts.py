"""The benchmark scripts still run against the trainer they measure, and their shared harness
(scripts/benchkit.py) pairs and orders runs as it says. Their figures are not tested: speed is
measured by the scripts themselves, never by tests."""

import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SCRIPTS = REPO / "scripts"
sys.path.insert(0, str(SCRIPTS))  # the bench scripts import benchkit from their own folder

import benchkit  # noqa: E402

from camal_rl import doom  # noqa: E402


def test_odd_rounds_run_the_grid_backwards():
    assert benchkit.alternating(["a", "b", "c"], 3) == [(0, "a"), (0, "b"), (0, "c"), (1, "c"), (1, "b"), (1, "a"),
                                                         (2, "a"), (2, "b"), (2, "c")]
    order = []
    results = benchkit.interleave(("x", "y"), 4, lambda kind: order.append(kind) or f"{kind}{len(order)}")
    assert order == ["x", "y", "y", "x", "x", "y", "y", "x"]
    assert results == {"x": ["x1", "x4", "x5", "x8"], "y": ["y2", "y3", "y6", "y7"]}  # index r: round r's pair


def test_ratios_are_taken_within_rounds_not_between_medians():
    # a machine 2x slower in round 2: the median of the rounds' own ratios (0.2, 0.3, 0.15 -> 0.2)
    # is not the ratio of the medians (10 / 60)
    new, old = [10.0, 30.0, 9.0], [50.0, 100.0, 60.0]
    ratios = benchkit.round_ratios(new, old)
    assert ratios == pytest.approx([0.15, 0.2, 0.3])
    assert benchkit.median(ratios) == pytest.approx(0.2)
    assert benchkit.median(new) / benchkit.median(old) == pytest.approx(10 / 60)
    assert benchkit.ratio_summary(ratios, "x") == "0.20x (0.15-0.30, 3 rounds)"
    # a failed run (None) pairs with nothing; rounds must line up
    assert benchkit.round_ratios([90.0, None, 40.0], [100.0, 210.0, 50.0]) == pytest.approx([0.8, 0.9])
    assert benchkit.median([None, 3.0, 1.0]) == 2.0 and benchkit.median([None]) is None
    assert benchkit.ratio_summary([]) == "-"
    with pytest.raises(ValueError):
        benchkit.round_ratios([1.0, 2.0], [1.0])


def test_a_child_reads_its_tree_first_and_answers_in_one_line(tmp_path):
    revision = subprocess.run(["git", "-C", str(REPO), "rev-parse", "HEAD~1"], capture_output=True, text=True,
                              check=True).stdout.strip()
    old = benchkit.old_tree(revision, tmp_path)
    assert (old / "camal_rl" / "ppo.py").is_file() and (old / "envs" / "basic.toml").is_file()
    assert not (tmp_path / "old.tar").exists()
    for root in (old, REPO):
        result = benchkit.run_child("benchkit:package_root", {"echo": [1, 2]}, root=root, timeout=60)
        assert result == {"camal_rl": str(root.resolve() / "camal_rl"), "config": {"echo": [1, 2]}}
    failed = benchkit.run_child("benchkit:no_such_function", {}, timeout=60)
    assert failed == {"error": "AttributeError: module 'benchkit' has no attribute 'no_such_function'"}
    with pytest.raises(benchkit.BenchError, match="is not a commit"):
        benchkit.old_tree("no-such-revision", tmp_path)


def test_the_machine_line_names_what_a_figure_depends_on():
    line = benchkit.machine_line()
    assert re.match(r"machine: .+, \d+ CPU cores, .*Python 3\.\d+.*, (torch \S+|no torch); \d{4}-\d\d-\d\d$", line)


def test_bench_train_runs_a_configuration_in_a_child():
    """A tiny run through the script's own runner: one configuration, two short iterations."""
    result = subprocess.run([sys.executable, str(SCRIPTS / "bench_train.py"), "--paths", "new", "--methods", "vanilla",
                             "--num-envs", "2", "--iterations", "2", "--env-workers", "0"],
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.startswith("machine: ")
    assert re.search(r"60x80 +2 envs +new, workers 0, groups 1 +vanilla +\d+ steps/s +\(rollout [0-9.]+ s \+ update",
                     result.stdout), result.stdout


def test_bench_train_refuses_an_unknown_revision():
    result = subprocess.run([sys.executable, str(SCRIPTS / "bench_train.py"), "--old-rev", "no-such-revision"],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1].endswith("'no-such-revision' is not a commit of " + str(REPO))


def test_bench_host_runs_the_trainer_with_its_stand_ins():
    """bench_host subclasses the trainer's agent: a change to what the update calls on the agent
    must not turn its figure into an error (it exits non-zero if a measurement failed)."""
    result = subprocess.run([sys.executable, str(SCRIPTS / "bench_host.py"), "--frames", "60x80", "--num-envs", "32",
                             "--modes", "in-process", "--iterations", "2"], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    assert re.search(r"host overhead at 32 envs .*: [0-9.]+ us per agent step", result.stdout.splitlines()[-1])


def test_bench_host_takes_medians_over_rounds_and_ratios_within_a_round(load_script):
    bench_host = load_script("bench_host")
    # a machine that slows down 2x in round 2: the ratio is the median of the rounds' own ratios
    # (0.2, 0.3, 0.15 -> 0.2), not the ratio of the medians (10 / 60)
    old = [(50.0, 5.0), (100.0, 9.0), (60.0, 6.0)]
    new = [(10.0, 4.0), (30.0, 8.0), (9.0, 5.0)]
    measured = {name: [{"us_per_step": us, "network_us_per_step": net} for us, net in rounds]
                for name, rounds in (("old", old), ("new", new))}
    row = bench_host.summarise({"frames": "60x80"}, measured)
    assert row["old"] == 60.0 and row["new"] == 10.0 and row["new network"] == 5.0
    assert row["ratio"] == 0.2 and row["ratio range"] == (0.15, 0.3)
    measured["new"][1] = {"error": "boom"}
    row = bench_host.summarise({"frames": "60x80"}, measured)
    assert row["new"] == "boom" and "ratio" not in row


def test_bench_train_reports_within_round_ratios(load_script, capsys):
    bench_train = load_script("bench_train")
    # round 1 ran on a machine 2x slower; round 2's CAMAL failed and pairs with nothing
    speeds = {0: (90.0, 100.0), 1: (None, 210.0), 2: (40.0, 50.0), 3: (170.0, 200.0)}
    rows = [{"round": r, "frames": "60x80", "num_envs": 8, "path": "new", "method": method, "steady_sps": sps}
            for r, pair in speeds.items() for method, sps in zip(("camal", "vanilla"), pair, strict=True)]
    bench_train.report(rows, type("Options", (), {"repeats": 4, "methods": ["vanilla", "camal"]})())
    out = capsys.readouterr().out
    assert "| 60x80 | 8 | new | 210 | 170 | 0.81 |" in out  # best of each
    assert "CAMAL / Vanilla, new, 60x80, 8 envs: within rounds median 0.85 (0.80-0.90, 3 rounds)" in out


def test_camal_step_profile_sorts_ops_by_what_costs_them(load_script):
    profile = load_script("camal_step_profile")
    flat, fc_numel = 1536, 512 * 1536
    assert profile.classify("aten::mm", [[512, 64], [64, flat]], fc_numel, flat) == "fc-size products"
    assert profile.classify("aten::addmm", [[512], [64, flat], [flat, 512]], fc_numel, flat) == "fc-size products"
    assert profile.classify("aten::mm", [[64, 512], [512, 3]], fc_numel, flat) == "small ops and the rest"
    assert profile.classify("aten::mul", [[512, flat], [512, flat]], fc_numel, flat) == "fc-size elementwise passes"
    assert profile.classify("aten::convolution_backward", [[64, 64, 4, 6], []], fc_numel, flat) == "convolutions"
    assert profile.classify("aten::mean", [[64, 64, 4, 6], [], []], fc_numel, flat) == "small ops and the rest"
    # a view of the fc weight moves no data: not a pass over it
    assert profile.classify("aten::t", [[512, flat]], fc_numel, flat) == "small ops and the rest"


def test_camal_step_profile_prints_times_flops_and_classes():
    done = subprocess.run([sys.executable, str(SCRIPTS / "camal_step_profile.py"), "--batch", "8", "--rounds", "1",
                           "--steps", "2", "--profile-rounds", "1", "--threads", "1"],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert re.search(r"minibatch 8, .* CAMAL / Vanilla time [0-9.]+x .*FLOPs 1\.[0-9]{3}x", done.stdout)
    for name in ("fc-size products", "fc-size elementwise passes", "convolutions", "small ops and the rest",
                 "all (profiled self-CPU)"):
        assert re.search(rf"\| {re.escape(name)} \| [0-9,]+ \| [0-9,]+ \| -?[0-9,]+ \| -?[0-9.]+ \|", done.stdout), name


def test_bench_matmul_times_each_product_and_the_step_with_both_libraries():
    from camal_rl import matmul

    if not matmul.onednn_available():
        pytest.skip("this torch build has no oneDNN linear: bench_matmul has nothing to compare")
    done = subprocess.run([sys.executable, str(SCRIPTS / "bench_matmul.py"), "--batch", "8", "--rounds", "1",
                           "--repeats", "2", "--steps", "2", "--threads", "1", "--masks", "20"],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    products = re.findall(r"^\| (.+?) \| [0-9,]+ \([0-9]+\) \| [0-9,]+ \([0-9]+\) \| [0-9.]+x ", done.stdout, re.M)
    assert len(products) == 5 and sum("CAMAL" in name for name in products) == 2, done.stdout
    for library in ("torch default", "oneDNN"):
        assert re.search(rf"^\| {library} \| [0-9.]+ \| [0-9.]+ \| [0-9.]+x ", done.stdout, re.M), library
    assert re.search(r"^camal: oneDNN's step is [0-9.]+x", done.stdout, re.M)
    assert re.search(r"^20 masks .* torch default [0-9.]+, chunks of 64, oneDNN [0-9.]+; speed-up [0-9.]+x",
                     done.stdout, re.M)


def test_bench_train_runs_old_and_new_trees_at_the_frame_skip_the_new_one_resolves(load_script, monkeypatch):
    bench = load_script("bench_train")
    monkeypatch.setattr(sys, "argv", ["bench_train.py", "--env", "defend_the_center", "--recipe", "default",
                                      "--paths", "old", "new", "--methods", "vanilla", "camal"])
    options, parser = bench.parse_options()
    recipe = bench.recipe_sizes(options, parser)
    runs = bench.configurations(options, recipe)
    assert {path for _, path, _ in runs} == {"old", "new"}
    wanted = doom.load_spec("defend_the_center").recipes["neutral"]["frame_skip"]
    assert all(values["frame_skip"] == wanted for _, _, values in runs)  # the old tree's envs/ may say otherwise
    monkeypatch.setattr(sys, "argv", ["bench_train.py", "--env", "basic", "--recipe", "neutral"])
    options, parser = bench.parse_options()
    assert all(values["frame_skip"] == doom.load_spec("basic").frame_skip
               for _, _, values in bench.configurations(options, bench.recipe_sizes(options, parser)))
