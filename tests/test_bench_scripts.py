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
