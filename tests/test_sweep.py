"""camal-sweep: a 2 x 1 x 1 grid locally and through Ray (local cluster, 2 CPUs); reruns skip finished runs."""

import json

import pytest

from camal_rl import sweep

TINY = ["--total-timesteps", "128", "--num-envs", "2", "--num-steps", "64", "--num-minibatches", "2",
        "--update-epochs", "1", "--eval-episodes", "1", "--no-cuda"]
GRID = dict(envs=["basic", "defend_the_line"], methods=["camal"], seeds=[1])


def check_finished(out):
    for env in GRID["envs"]:
        summary = json.loads((out / f"{env}__camal__1" / "summary.json").read_text())
        assert summary["env"] == env and summary["global_step"] == 128


def test_local_sweep_then_skip(tmp_path):
    out = tmp_path / "local"
    result = sweep.sweep(out=out, train_args=TINY, workers=2, reps=100, **GRID)
    assert result["failed"] == [] and len(result["ran"]) == 2
    check_finished(out)
    assert (out / "report" / "report.md").exists()
    again = sweep.sweep(out=out, train_args=TINY, workers=2, reps=100, **GRID)
    assert again["ran"] == [] and sorted(again["skipped"]) == ["basic__camal__1", "defend_the_line__camal__1"]


def test_ray_sweep(tmp_path):
    pytest.importorskip("ray", reason="the ray extra is not installed (pip install -e '.[ray]')")
    out = tmp_path / "ray"
    result = sweep.sweep(out=out, train_args=TINY, workers=2, launcher="ray", compare=False, **GRID)
    assert result["failed"] == [] and len(result["ran"]) == 2
    check_finished(out)
    again = sweep.sweep(out=out, train_args=TINY, workers=2, launcher="ray", compare=False, **GRID)
    assert again["ran"] == [] and len(again["skipped"]) == 2


def test_resumes_a_checkpointed_run(tmp_path):
    job = sweep.Job("basic", "camal", 1, tmp_path / "basic__camal__1")
    job.run_dir.mkdir()
    (job.run_dir / "checkpoint.pt").write_bytes(b"")
    assert job.state() == "resumable" and "--resume" in job.command([], 1)


def test_bad_grid_fails_fast(tmp_path):
    with pytest.raises(Exception, match="available"):
        sweep.sweep(["no_such_env"], ["camal"], [1], tmp_path)
    with pytest.raises(ValueError, match="unknown method"):
        sweep.sweep(["basic"], ["magic"], [1], tmp_path)
