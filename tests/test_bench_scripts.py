"""The benchmark scripts still run against the trainer they measure (their figures are not tested:
speed is measured by the scripts themselves, never by tests)."""

import re
import subprocess
import sys
from pathlib import Path

SCRIPTS = Path(__file__).resolve().parents[1] / "scripts"


def test_bench_host_runs_the_trainer_with_its_stand_ins():
    """bench_host subclasses the trainer's agent: a change to what the update calls on the agent
    must not turn its figure into an error (it exits non-zero if a measurement failed)."""
    result = subprocess.run([sys.executable, str(SCRIPTS / "bench_host.py"), "--frames", "60x80", "--num-envs", "32",
                             "--modes", "in-process", "--iterations", "2"], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    assert re.search(r"host overhead at 32 envs .*: [0-9.]+ us per agent step", result.stdout.splitlines()[-1])


def test_bench_host_takes_medians_over_rounds_and_ratios_within_a_round():
    import importlib.util

    spec = importlib.util.spec_from_file_location("bench_host", SCRIPTS / "bench_host.py")
    bench_host = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench_host)
    # a machine that slows down 2x in round 2: the ratio is the median of the rounds' own ratios
    # (0.2, 0.3, 0.15 -> 0.2), not the ratio of the medians (10 / 60)
    measured = {"old": [{"us_per_step": 50.0, "network_us_per_step": 5.0}, {"us_per_step": 100.0, "network_us_per_step": 9.0},
                        {"us_per_step": 60.0, "network_us_per_step": 6.0}],
                "new": [{"us_per_step": 10.0, "network_us_per_step": 4.0}, {"us_per_step": 30.0, "network_us_per_step": 8.0},
                        {"us_per_step": 9.0, "network_us_per_step": 5.0}]}
    row = bench_host.summarise({"frames": "60x80"}, measured)
    assert row["old"] == 60.0 and row["new"] == 10.0 and row["new network"] == 5.0
    assert row["ratio"] == 0.2 and row["ratio range"] == (0.15, 0.3)
    measured["new"][1] = "error: boom"
    row = bench_host.summarise({"frames": "60x80"}, measured)
    assert row["new"] == "error: boom" and "ratio" not in row


def test_bench_train_pairs_runs_within_rounds():
    import importlib.util

    spec = importlib.util.spec_from_file_location("bench_train", SCRIPTS / "bench_train.py")
    bench_train = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench_train)
    # round 1 ran on a machine 2x slower; round 2's CAMAL failed and pairs with nothing
    speed = {(0, "new", "camal"): 90.0, (0, "new", "vanilla"): 100.0, (1, "new", "camal"): None,
             (1, "new", "vanilla"): 210.0, (2, "new", "camal"): 40.0, (2, "new", "vanilla"): 50.0,
             (3, "new", "camal"): 170.0, (3, "new", "vanilla"): 200.0}
    assert bench_train.within_rounds(speed, 4, ("new", "camal"), ("new", "vanilla")) == [0.8, 0.85, 0.9]
