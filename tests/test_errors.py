"""Every way a careless or unlucky user can go wrong, through the real commands: each ends in what
the user wants or in one clear line on stderr with a non-zero exit, and no file of an earlier run
changes. Runs are tiny (two envs, 64 steps) so this stays in CI."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from cli_helpers import TINY, command, copy_of, fingerprint, one_line_error, tiny  # noqa: E402

from camal_rl import errors, files, runs
from camal_rl.statistics import MIN_REPS


# ---------------------------------------------------------------------------------------
# Flags are checked before any engine starts or any file is written
# ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("flags, words", [
    (["--learning-rate", "nan"], ["--learning-rate", "finite"]),
    (["--learning-rate", "inf"], ["--learning-rate", "finite"]),
    (["--learning-rate", "0"], ["--learning-rate", "> 0"]),
    (["--learning-rate", "1e38"], ["--learning-rate", "<= 1.0"]),
    (["--checkpoint-interval", "0"], ["--checkpoint-interval", ">= 1"]),
    (["--update-epochs", "0"], ["--update-epochs", ">= 1"]),
    (["--eval-episodes", "-1"], ["--eval-episodes", ">= 0"]),
    (["--obs-size", "10", "10"], ["--obs-size", "36x36"]),
    (["--gamma", "1.5"], ["--gamma", "<= 1.0"]),
    (["--paper-frames", "--obs-size", "84", "84"], ["--paper-frames", "--obs-size"]),
    (["--resolution", "RES_1X1"], ["--resolution", "RES_160X120"]),
    (["--recipe", "nope"], ["--recipe", "paper"]),
    (["--env", "basik"], ["unknown scenario", "basic"]),
    (["--num-envs", "3", "--num-steps", "5"], ["divisible"]),
])
def test_bad_training_flags_are_one_line_and_write_nothing(tmp_path, flags, words):
    run_dir = tmp_path / "run"
    one_line_error(command("train", "--run-dir", run_dir, *TINY, *flags), *words)
    assert not run_dir.exists()


@pytest.mark.slow
def test_a_scenario_name_too_long_for_a_folder_is_one_line(tmp_path):
    spec = tmp_path / ("x" * 240 + ".toml")
    spec.write_text('config = "basic"\nmask_categories = ["Monster"]\n')
    one_line_error(command("train", "--env", spec, *TINY, cwd=tmp_path), "cannot name a file", "at most 100 characters")
    one_line_error(command("train", "--env", "basic", "--run-dir", tmp_path / ("y" * 300), *TINY, cwd=tmp_path),
                   "too long", "choose a shorter --run-dir")
    assert not (tmp_path / "runs").exists()


def test_an_unwritable_run_folder_is_one_line(tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    one_line_error(command("train", "--run-dir", blocker / "run", *TINY), str(blocker), "not a folder")
    one_line_error(command("train", "--run-dir", "/proc/camal/run", *TINY), "/proc/camal")


def test_a_full_disk_names_the_file(tmp_path):
    """torch.save's own writer says only 'enforce fail at inline_container.cc'; ours names the file."""
    target = tmp_path / runs.CHECKPOINT
    (tmp_path / "checkpoint.partial.pt").symlink_to("/dev/full")  # every write to it: ENOSPC
    with pytest.raises(OSError) as caught:
        files.save_torch({"weights": torch.zeros(1000)}, target)
    described = errors.describe_os_error(caught.value)
    assert "disk is full" in described and "checkpoint" in described
    assert not target.exists()


# ---------------------------------------------------------------------------------------
# One run per folder; --resume keeps the run's settings
# ---------------------------------------------------------------------------------------
@pytest.mark.slow
def test_a_folder_holding_a_run_is_refused_and_left_unchanged(finished_run, tmp_path):
    run_dir = copy_of(finished_run, tmp_path)
    before = fingerprint(run_dir)
    one_line_error(command("train", "--run-dir", run_dir, *TINY), "already holds a run", "--resume")
    (run_dir / runs.CHECKPOINT).unlink()  # as after deleting a corrupt checkpoint: events and summary stay
    one_line_error(command("train", "--run-dir", run_dir, *TINY), "already holds a run")
    assert {k: v for k, v in before.items() if k != runs.CHECKPOINT} == fingerprint(run_dir)


@pytest.mark.slow
def test_after_the_corrupt_checkpoint_advice_a_new_run_holds_only_its_own_curves(finished_run, tmp_path):
    run_dir = copy_of(finished_run, tmp_path)
    (run_dir / runs.CHECKPOINT).write_bytes(b"damaged")
    advice = one_line_error(command("train", "--resume", run_dir, "--no-progress"), "corrupt",
                            "delete it (or its run folder)")
    assert str(run_dir) in advice
    shutil.rmtree(run_dir)  # what the line says to do
    result = command("train", "--run-dir", run_dir, "--seed", "2", *tiny(128))
    assert result.returncode == 0, result.stderr[-2000:]
    from camal_rl.analysis import read_scalars
    steps = [step for step, _ in read_scalars(run_dir, runs.Tag.SPS)]
    assert steps == [128] and json.loads((run_dir / runs.SUMMARY).read_text())["seed"] == 2


@pytest.mark.slow
def test_resume_refuses_flags_that_disagree_and_a_finished_run_stays_as_it_is(finished_run, tmp_path):
    run_dir = copy_of(finished_run, tmp_path)
    before = fingerprint(run_dir)
    learning_rate = json.loads((run_dir / runs.SUMMARY).read_text())["args"]["learning_rate"]  # its recipe's
    line = one_line_error(command("train", "--resume", run_dir, "--num-envs", "4", "--learning-rate", "0.1"),
                          "--num-envs 4 (the run has 2)", f"--learning-rate 0.1 (the run has {learning_rate})")
    assert "--resume keeps" in line
    one_line_error(command("train", "--resume", run_dir, "--env", "take_cover"), "basic", "take_cover")
    finished = command("train", "--resume", run_dir, "--no-progress")
    assert finished.returncode == 0 and "is finished" in finished.stderr
    assert fingerprint(run_dir) == before  # not a byte changed, summary included
    one_line_error(command("train", "--resume", run_dir, "--total-timesteps", "128"), "not beyond")
    assert fingerprint(run_dir) == before


@pytest.mark.slow
def test_resume_with_a_longer_budget_trains_on_and_says_so(finished_run, tmp_path):
    run_dir = copy_of(finished_run, tmp_path)
    result = command("train", "--resume", run_dir, "--total-timesteps", "384", "--no-progress")
    assert result.returncode == 0, result.stderr[-2000:]
    assert "training" in result.stderr and "384" in result.stderr
    assert json.loads((run_dir / runs.SUMMARY).read_text())["global_step"] == 384


@pytest.mark.slow
@pytest.mark.parametrize("damage, words", [
    (lambda c: {k: v for k, v in c.items() if k != "agent"}, ["lacks 'agent'"]),
    (lambda c: {k: v for k, v in c.items() if k != "env_states"}, ["lacks 'env_states'", "--resume needs"]),
    (lambda c: [1, 2, 3], ["not a camal-rl checkpoint"]),
])
def test_a_checkpoint_missing_keys_is_one_line(finished_run, tmp_path, damage, words):
    run_dir = copy_of(finished_run, tmp_path)
    checkpoint = torch.load(run_dir / runs.CHECKPOINT, weights_only=True)
    torch.save(damage(checkpoint), run_dir / runs.CHECKPOINT)
    one_line_error(command("train", "--resume", run_dir, "--total-timesteps", "512"), str(run_dir), *words)


# ---------------------------------------------------------------------------------------
# Stops: a signal says where the run stopped and how to go on; kill -9 leaves no engine
# ---------------------------------------------------------------------------------------
def start_long_run(run_dir: Path, *extra) -> subprocess.Popen:
    """The trainer's stderr goes to a file beside the run: a pipe would stay open as long as any
    process that inherited it (an engine being ended) lives, and a test would wait on that instead."""
    flags = [*tiny(100_000), *extra]
    stderr = open(run_dir.parent / f"{run_dir.name}.stderr", "w")
    # As from a terminal: a test runner started in the background (nohup, `cmd &` without job
    # control) ignores SIGINT, and its children would inherit that and never see the Ctrl-C.
    process = subprocess.Popen([sys.executable, "-m", "camal_rl.ppo", "--run-dir", str(run_dir), *flags],
                               stdout=subprocess.DEVNULL, stderr=stderr, text=True,
                               preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    stderr.close()
    process.stderr_path = run_dir.parent / f"{run_dir.name}.stderr"
    return process


def finish(process: subprocess.Popen, timeout: float) -> str:
    """Wait for the trainer to exit; its stderr. On a timeout, say what it was still doing."""
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        alive = sorted(descendants(process.pid))
        signals = [line.strip() for line in open(f"/proc/{process.pid}/status") if line.startswith(("State", "Sig"))]
        process.kill()
        process.wait()
        raise AssertionError(f"the trainer did not exit within {timeout} s (descendants {alive}, {signals}); "
                             f"stderr: {process.stderr_path.read_text()[-2000:]}") from None
    return process.stderr_path.read_text()


def wait_for_checkpoint(run_dir: Path, process: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.time() + timeout
    while not (run_dir / runs.CHECKPOINT).exists():
        assert process.poll() is None, process.stderr_path.read_text()[-2000:]
        assert time.time() < deadline, "no checkpoint in time"
        time.sleep(0.2)


def descendants(pid: int) -> set[int]:
    found, todo = set(), [pid]
    while todo:
        current = todo.pop()
        for task in Path(f"/proc/{current}/task").glob("*"):
            try:
                children = {int(p) for p in (task / "children").read_text().split()}
            except OSError:
                continue
            todo += list(children - found)
            found |= children
    return found


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_says_where_the_run_stopped_and_how_to_resume(tmp_path, signum, engines):
    run_dir = tmp_path / "run"
    process = start_long_run(run_dir)
    wait_for_checkpoint(run_dir, process)
    ours = descendants(process.pid) & {int(p) for p in engines()}
    process.send_signal(signum)
    stderr = finish(process, timeout=60)
    deadline = time.time() + 10
    while ours & {int(p) for p in engines()} and time.time() < deadline:
        time.sleep(0.2)
    assert not ours & {int(p) for p in engines()}, "ViZDoom engines outlived the stopped trainer"
    assert process.returncode == 128 + signum
    lines = [line for line in stderr.strip().splitlines()
             if line and "resuming" not in line and "stopping after" not in line]
    assert len(lines) == 1 and "Traceback" not in stderr, stderr
    assert f"--resume {run_dir}" in lines[0] and "last checkpoint is iteration" in lines[0]


@pytest.mark.slow
@pytest.mark.parametrize("workers", [0, 2])
def test_kill_9_leaves_no_engine_behind(tmp_path, workers, engines):
    run_dir = tmp_path / "run"
    process = start_long_run(run_dir, "--env-workers", str(workers))
    wait_for_checkpoint(run_dir, process)
    ours = descendants(process.pid) & {int(p) for p in engines()}
    assert len(ours) >= 2  # the training envs' engines (and the evaluation env's)
    process.kill()
    process.wait()
    deadline = time.time() + 10
    while ours & {int(p) for p in engines()} and time.time() < deadline:
        time.sleep(0.2)
    assert not ours & {int(p) for p in engines()}, "ViZDoom engines outlived the killed trainer"


@pytest.mark.slow
def test_an_engine_crash_in_process_is_one_line(tmp_path, engines):
    run_dir = tmp_path / "run"
    process = start_long_run(run_dir, "--env-workers", "0")
    wait_for_checkpoint(run_dir, process)
    for pid in descendants(process.pid) & {int(p) for p in engines()}:
        os.kill(pid, signal.SIGKILL)
    stderr = finish(process, timeout=120)
    assert process.returncode == 2
    lines = [line for line in stderr.strip().splitlines() if line]
    assert len(lines) == 1 and "Traceback" not in stderr, stderr
    assert "ViZDoom engines" in lines[0] and "--resume" in lines[0]


@pytest.mark.slow
def test_a_non_finite_loss_stops_the_run_and_keeps_the_last_good_checkpoint(tmp_path):
    run_dir = tmp_path / "run"
    # a value-loss weight that float32 cannot hold: the first loss is inf
    line = one_line_error(command("train", "--run-dir", run_dir, *TINY, "--vf-coef", "1e308"), "loss became")
    assert "iteration 1" in line and "before that update" in line and "no checkpoint had been written yet" in line
    assert not (run_dir / runs.CHECKPOINT).exists() and not (run_dir / runs.SUMMARY).exists()


# ---------------------------------------------------------------------------------------
# Comparisons: nothing left out silently, verdicts only where the data carries them
# ---------------------------------------------------------------------------------------
def fake_runs(root: Path, finished_run: Path, methods=("camal", "vanilla"), seeds=(1, 2)) -> list[Path]:
    """Copies of the finished run relabelled as other methods and seeds (events and all)."""
    made = []
    for method in methods:
        for seed in seeds:
            run_dir = copy_of(finished_run, root, f"basic__{method}__{seed}")
            summary = json.loads((run_dir / runs.SUMMARY).read_text())
            summary.update(method=method, seed=seed, eval_return_mean=summary["eval_return_mean"] + seed)
            (run_dir / runs.SUMMARY).write_text(json.dumps(summary))
            made.append(run_dir)
    return made


@pytest.mark.slow
def test_an_unreadable_summary_is_an_error_or_listed_with_skip_broken(finished_run, tmp_path):
    made = fake_runs(tmp_path / "runs", finished_run)
    (made[0] / runs.SUMMARY).write_text("{ not json")
    for extra in ([], ["--at-step", "256"]):
        one_line_error(command("compare", tmp_path / "runs", "--out", tmp_path / "out", "--no-plots", *extra),
                       str(made[0]), "--skip-broken")
    result = command("compare", tmp_path / "runs", "--out", tmp_path / "out", "--no-plots", "--skip-broken",
                     "--reps", MIN_REPS)
    assert result.returncode == 0, result.stderr
    report = (tmp_path / "out" / "report.md").read_text()
    assert "3 runs" in report and "## Left out" in report and str(made[0]) in report


@pytest.mark.slow
def test_a_repeated_seed_is_an_error(finished_run, tmp_path):
    fake_runs(tmp_path / "a", finished_run, methods=("camal",), seeds=(1,))
    fake_runs(tmp_path / "b", finished_run, methods=("camal",), seeds=(1,))
    one_line_error(command("compare", tmp_path / "a", tmp_path / "b", "--out", tmp_path / "out"), "appears twice")


@pytest.mark.slow
def test_runs_trained_with_other_settings_are_not_compared(finished_run, tmp_path):
    made = fake_runs(tmp_path / "runs", finished_run)
    summary = json.loads((made[-1] / runs.SUMMARY).read_text())
    summary["args"]["learning_rate"] = 1e-3  # as if this Vanilla run had another recipe
    (made[-1] / runs.SUMMARY).write_text(json.dumps(summary))
    one_line_error(command("compare", tmp_path / "runs", "--out", tmp_path / "out", "--no-plots"),
                   "different settings", "learning_rate", str(made[-1]))
    assert not (tmp_path / "out" / "report.md").exists()


@pytest.mark.slow
def test_too_few_runs_give_no_verdict(finished_run, tmp_path):
    fake_runs(tmp_path / "runs", finished_run)
    result = command("compare", tmp_path / "runs", "--out", tmp_path / "out", "--no-plots", "--reps", MIN_REPS)
    assert result.returncode == 0, result.stderr
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    assert results["rl"]["poi_return"]["camal>vanilla"]["verdict"].startswith("too few runs for a verdict")
    assert "significant" not in results["rl"]["poi_return"]["camal>vanilla"]["verdict"]


@pytest.mark.slow
def test_runs_of_different_lengths_are_compared_at_a_common_step(finished_run, tmp_path):
    made = fake_runs(tmp_path / "runs", finished_run, seeds=(1,))
    longer = made[0]
    result = command("train", "--resume", longer, "--total-timesteps", "384", "--no-progress")
    assert result.returncode == 0, result.stderr[-2000:]
    result = command("compare", tmp_path / "runs", "--out", tmp_path / "out", "--no-plots", "--reps", MIN_REPS)
    assert result.returncode == 0, result.stderr
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    assert results["compared_at_step"] == {"basic": 256}
    assert "different agent steps" in (tmp_path / "out" / "report.md").read_text()


@pytest.mark.slow
def test_a_run_from_a_spec_file_outside_envs_compares_and_records(tmp_path, short_scenario):
    spec = short_scenario(80, name="mybasic")
    for method, coef in (("camal", "1"), ("vanilla", "0")):
        result = command("train", "--env", spec, "--camal-coef", coef, "--run-dir", tmp_path / "runs" / method, *TINY)
        assert result.returncode == 0, result.stderr[-2000:]
    Path(spec).unlink()  # the runs carry their scenario: the file may move
    result = command("train", "--resume", tmp_path / "runs" / "camal", "--total-timesteps", "384", "--no-progress")
    assert result.returncode == 0, result.stderr[-2000:]  # resumes without its spec file
    result = command("compare", tmp_path / "runs", "--out", tmp_path / "out", "--no-plots", "--reps", MIN_REPS)
    assert result.returncode == 0, result.stderr
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    summary = json.loads((tmp_path / "runs" / "camal" / runs.SUMMARY).read_text())
    assert summary["env"] == "mybasic" and summary["scenario"]["random_score"] == -70.0
    assert summary["global_step"] == 384
    normalised = results["rl"]["per_env"]["mybasic/camal"]["normalised_return"][0]
    assert normalised == pytest.approx((summary["eval_return_mean"] + 70.0) / 165.0)
    video = tmp_path / "v.mp4"
    result = command("record", tmp_path / "runs" / "camal", tmp_path / "runs" / "vanilla", "--out", video,
                     "--max-steps", "5")
    assert result.returncode == 0 and video.stat().st_size > 0, result.stderr


@pytest.mark.slow
def test_record_refuses_pairs_it_cannot_show_honestly(finished_run, tmp_path, short_scenario):
    other = tmp_path / "other"
    result = command("train", "--env", short_scenario(80, name="mybasic"), "--run-dir", other, *tiny(128))
    assert result.returncode == 0, result.stderr[-2000:]
    one_line_error(command("record", finished_run, other, "--out", tmp_path / "v.mp4"), "different scenarios")
    one_line_error(command("record", "--panel", finished_run, other, "--out", tmp_path / "p.png"),
                   "different scenarios")
    assert not (tmp_path / "v.mp4").exists() and not (tmp_path / "p.png").exists()


def test_sweep_to_cloud_storage_without_its_driver_is_one_line(tmp_path):
    one_line_error(command("sweep", "--envs", "basic", "--seeds", "1", "--storage", "nosuchproto://bucket/runs",
                           "--out", tmp_path), "nosuchproto", "shared path")


@pytest.mark.parametrize("program, flags, words", [
    ("sweep", ["--workers", "0"], ["--workers", ">= 1"]),
    ("sweep", ["--workers", "many"], ["--workers", "auto or a whole number"]),
    ("train", ["--cuda-graph", "--no-cuda"], ["--cuda-graph needs a CUDA GPU"]),
    ("sweep", ["--gpu-memory-per-run", "0"], ["--gpu-memory-per-run", "GiB > 0"]),
    ("sweep", ["--gpus-per-run", "-1"], ["--gpus-per-run"]),
    ("classify", ["--epochs", "0"], ["--epochs", ">= 1"]),
    ("classify", ["--lr", "nan"], ["--lr", "finite"]),
    ("classify", ["--folds", "3", "--only-folds", "5"], ["--only-folds", "0 to 2"]),
    ("eval", ["some_run", "--episodes", "0"], ["--episodes", ">= 1"]),
    ("eval", ["no_such_run"], ["no checkpoint at no_such_run"]),
    ("record", ["some_run", "--fps", "0"], ["--fps", ">= 1"]),
    ("compare", ["somewhere", "--out", "x", "--reps", "0"], ["--reps"]),
    ("compare", ["somewhere", "--out", "x", "--reps", "1"], ["--reps 1 is too few", f"--reps {MIN_REPS} or more"]),
    ("compare", ["somewhere", "--out", "x", "--min-runs", "0"], ["--min-runs must be >= 1"]),
    ("sweep", ["--reps", "50"], ["--reps", f">= {MIN_REPS}"]),
    ("compare", ["no_such_folder", "--out", "x"], ["no_such_folder does not exist"]),
])
def test_every_command_checks_its_flags_first(tmp_path, program, flags, words):
    one_line_error(command(program, *flags, cwd=tmp_path), *words)
    assert list(tmp_path.iterdir()) == []  # nothing written


@pytest.mark.slow
def test_a_sweep_over_a_spec_file_trains_and_reports(tmp_path, short_scenario):
    spec = short_scenario(80, name="mybasic")
    result = command("sweep", "--envs", spec, "--methods", "camal", "vanilla", "--seeds", "1",
                     "--out", tmp_path / "grid", "--reps", MIN_REPS, "--", *tiny(128), cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    report = (tmp_path / "grid" / "report" / "report.md").read_text()
    assert "mybasic" in report and "too few runs for a verdict" in report
