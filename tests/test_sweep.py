"""camal-sweep: local grids, a Ray cluster of several nodes with one killed mid-run, classification folds,
fsspec storage, and requests no node can meet."""

import json
import os
import re
import threading
import time
from pathlib import Path

import pytest

from camal_rl import doom, recipes, sweep
from camal_rl.statistics import MIN_REPS

TINY = ["--total-timesteps", "128", "--num-envs", "2", "--num-steps", "64", "--num-minibatches", "2",
        "--update-epochs", "1", "--eval-episodes", "1", "--no-cuda"]
GRID = dict(envs=["basic", "defend_the_line"], methods=["camal"], seeds=[1])


def check_finished(out, steps=128):
    for env in GRID["envs"]:
        summary = json.loads((out / f"{env}__camal__1" / "summary.json").read_text())
        assert summary["env"] == env and summary["global_step"] == steps


@pytest.mark.slow
def test_local_sweep_then_skip(tmp_path):
    out = tmp_path / "local"
    result = sweep.sweep(out=out, train_args=TINY, workers=2, reps=MIN_REPS, **GRID)
    assert result["failed"] == [] and len(result["ran"]) == 2
    check_finished(out)
    assert (out / "report" / "report.md").exists()
    again = sweep.sweep(out=out, train_args=TINY, workers=2, reps=MIN_REPS, **GRID)
    assert again["ran"] == [] and sorted(again["skipped"]) == ["basic__camal__1", "defend_the_line__camal__1"]
    # other settings into the same folder would mix in one report: refused before anything runs
    basic_lr = recipes.resolve("default", doom.load_spec("basic").recipes)[1]["learning_rate"]  # what it trained with
    refused = re.escape(f"basic__camal__1 has learning_rate {basic_lr!r} (this sweep: 0.001)")
    with pytest.raises(sweep.SweepError, match=refused):
        sweep.sweep(out=out, train_args=TINY + ["--learning-rate", "1e-3"], workers=2, reps=MIN_REPS, **GRID)
    with pytest.raises(sweep.SweepError, match="total_timesteps 128 .this sweep: 256.*--resume RUN --total-timesteps"):
        sweep.sweep(out=out, train_args=["--total-timesteps", "256", *TINY[2:]], workers=2, reps=MIN_REPS, **GRID)
    # how a run runs may differ: checkpoints, threads, env workers
    same = sweep.sweep(out=out, train_args=TINY + ["--checkpoint-interval", "3", "--env-workers", "0"], workers=2,
                       reps=MIN_REPS, **GRID)
    assert same["ran"] == [] and len(same["skipped"]) == 2


@pytest.mark.slow
def test_a_sweep_killed_halfway_finishes_only_what_was_missing(tmp_path):
    """One run finished, one stopped after a checkpoint, one never started: the rerun skips,
    resumes and starts them in that order, and ends with one summary each."""
    out = tmp_path / "grid"
    args = TINY[:1] + ["256"] + TINY[2:] + ["--checkpoint-interval", "1"]
    grid = dict(envs=["basic"], methods=["camal", "vanilla", "suppress"], seeds=[1])
    sweep.sweep(grid["envs"], ["camal"], [1], out, train_args=args, compare=False)
    from camal_rl import ppo

    class Stop(Exception):
        pass

    def stop_after_first(iteration, rollout):
        if iteration == 2:
            raise Stop
    with pytest.raises(Stop):  # a run stopped after its first checkpoint, as a killed sweep leaves it
        ppo.train(ppo.Args(env="basic", seed=1, camal_coef=0.0, total_timesteps=256, num_envs=2, num_steps=64,
                           num_minibatches=2, update_epochs=1, eval_episodes=1, checkpoint_interval=1, progress=False,
                           cuda=False, run_dir=str(out / "basic__vanilla__1")), on_rollout=stop_after_first)
    result = sweep.sweep(out=out, train_args=args, compare=False, **grid)
    assert result["skipped"] == ["basic__camal__1"]
    # the box's steps count what this sweep trained: 128 more for the resumed run, 256 for the new one
    assert result["box_steps"] == 128 + 256
    assert result["box_steps_per_second"] == pytest.approx(384 / result["seconds"])
    assert result["resumed"] == ["basic__vanilla__1"] and result["ran"] == ["basic__suppress__1", "basic__vanilla__1"]
    assert "resuming" in (out / "basic__vanilla__1.log").read_text()
    for method in grid["methods"]:
        assert json.loads((out / f"basic__{method}__1" / "summary.json").read_text())["global_step"] == 256


@pytest.mark.slow
def test_fsspec_storage_mirrors_the_run_folders(tmp_path):
    """A URI storage (file:// here, s3:// or gs:// on a cluster): runs train in scratch, their folders land there."""
    remote = tmp_path / "bucket"
    result = sweep.sweep(["basic"], ["camal"], [1], f"file://{remote}", train_args=TINY, compare=False)
    assert result["failed"] == []
    summary = json.loads((remote / "basic__camal__1" / "summary.json").read_text())
    assert summary["global_step"] == 128 and (remote / "basic__camal__1" / "checkpoint.pt").exists()
    assert (remote / "basic__camal__1.log").exists()
    again = sweep.sweep(["basic"], ["camal"], [1], f"file://{remote}", train_args=TINY, compare=False)
    assert again["skipped"] == ["basic__camal__1"]


@pytest.mark.slow
def test_classification_folds_sweep_into_one_folder_each(tmp_path):
    pytest.importorskip("torchvision", reason="the vision extra installs torchvision")
    out = tmp_path / "cls"
    args = ["--camal-coef", "0.3", "--epochs", "1", "--image-size", "32", "--faithfulness-steps", "4", "--no-cuda"]
    result = sweep.sweep_classify(["small_cnn"], ["decoy_digits"], ["vanilla", "camal"], 2, out, classify_args=args,
                                  workers=2, reps=MIN_REPS)
    assert result["failed"] == [] and len(result["ran"]) == 4
    for method in ("vanilla", "camal"):
        folder = out / f"small_cnn__decoy_digits__{method}"
        assert sorted(p.name for p in folder.glob("fold_*.json")) == ["fold_00.json", "fold_01.json"]
    report = (out / "report" / "report.md").read_text()
    assert "CAMAL vs vanilla" in report and "small_cnn" in report


def test_bad_grid_fails_fast(tmp_path):
    with pytest.raises(Exception, match="available"):
        sweep.sweep(["no_such_env"], ["camal"], [1], tmp_path)
    with pytest.raises(ValueError, match="unknown method"):
        sweep.sweep(["basic"], ["magic"], [1], tmp_path)
    with pytest.raises(ValueError, match="unknown classification method"):
        sweep.sweep_classify(["small_cnn"], ["decoy_digits"], ["magic"], 2, tmp_path)


def test_requests_no_node_can_meet_are_refused():
    nodes = [{"Alive": True, "Resources": {"CPU": 2.0}}, {"Alive": True, "Resources": {"CPU": 4.0}}]
    with pytest.raises(sweep.SweepError, match="--gpus-per-run 0.5 but no node .* 0 GPU"):
        sweep.check_cluster({"CPU": 6.0}, nodes, cpus_per_run=1, gpus_per_run=0.5)
    with pytest.raises(sweep.SweepError, match="largest node .* 4 CPUs"):
        sweep.check_cluster({"CPU": 6.0}, nodes, cpus_per_run=8, gpus_per_run=0)
    big = {"Alive": True, "Resources": {"CPU": 8.0, "GPU": 1.0}}
    sweep.check_cluster({"CPU": 6.0, "GPU": 1.0}, nodes + [big], 8, 0.25)


def _raylet_of(pid: int) -> int:
    """The raylet that spawned the Ray worker that launched process ``pid``."""
    def parent(p):
        return int(Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()[1])
    worker = parent(pid)
    return parent(worker)


def _trainer_pids(marker: str) -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            except OSError:
                continue
            if "camal_rl.ppo" in command and marker in command:
                pids.append(int(entry.name))
    return pids


@pytest.mark.slow
def test_ray_cluster_of_two_nodes_survives_a_killed_node(tmp_path):
    """A run on a node that dies is retried on the other one and resumes from its checkpoint in the
    shared storage: the right step count, one summary, and a log that says it resumed."""
    pytest.importorskip("ray", reason="the ray extra is not installed (pip install -e '.[ray]')")
    from ray.cluster_utils import Cluster

    cluster = Cluster(initialize_head=True, head_node_args={
        "num_cpus": 0,  # runs go to the worker nodes only
        "_system_config": {"health_check_initial_delay_ms": 0, "health_check_period_ms": 500,
                           "health_check_failure_threshold": 3}})
    try:
        workers = [cluster.add_node(num_cpus=1) for _ in range(2)]
        cluster.wait_for_nodes()
        storage = tmp_path / "shared"
        args = ["--total-timesteps", str(8 * 2 * 64), "--num-envs", "2", "--num-steps", "64", "--num-minibatches", "2",
                "--update-epochs", "1", "--eval-episodes", "0", "--checkpoint-interval", "1", "--env-workers", "0"]
        outcome = {}
        runner = threading.Thread(target=lambda: outcome.update(sweep.sweep(
            ["basic"], ["camal"], [1], storage, train_args=args, launcher="ray", ray_address=cluster.address,
            compare=False, max_retries=3)))
        runner.start()
        checkpoint = storage / "basic__camal__1" / "checkpoint.pt"
        deadline = time.time() + 180
        while not checkpoint.exists() and time.time() < deadline:
            time.sleep(0.5)
        assert checkpoint.exists(), "the run never checkpointed"
        trainer = _trainer_pids(str(storage))
        assert len(trainer) == 1
        raylet = _raylet_of(trainer[0])
        victim = next(node for node in workers if node.all_processes["raylet"][0].process.pid == raylet)
        cluster.remove_node(victim, allow_graceful=False)
        runner.join(timeout=300)
        assert not runner.is_alive(), "the sweep did not finish after the node died"
        assert outcome["failed"] == [], outcome
        summary = json.loads((storage / "basic__camal__1" / "summary.json").read_text())
        assert summary["global_step"] == 8 * 2 * 64
        log = (storage / "basic__camal__1.log").read_text()
        assert "resuming" in log and "at iteration 1 " not in log  # resumed from a checkpoint, not from zero
        assert list(storage.glob("basic__camal__1/summary*.json")) == [storage / "basic__camal__1" / "summary.json"]
        deadline = time.time() + 20
        while _trainer_pids(str(storage)) and time.time() < deadline:
            time.sleep(0.5)
        assert not _trainer_pids(str(storage)), "a trainer of the dead node kept running"
    finally:
        cluster.shutdown()
        os.environ.pop("RAY_ADDRESS", None)


def test_runs_per_box_follow_cores_and_gpu_memory():
    gib = sweep.GiB
    laptop = sweep.plan_box(2, None, 20, memory_per_run=2 * gib)
    assert (laptop.runs, laptop.threads, laptop.env_workers) == (2, 1, None)  # as many as cores, no GPU
    assert sweep.plan_box(2, None, 1, memory_per_run=2 * gib).threads == 2  # one run takes both cores
    # an H200 box at paper frames: memory would hold 21, cores cap it at 16, engines in each learner
    h200 = sweep.plan_box(16, 141 * gib, 40, memory_per_run=6 * gib)
    assert (h200.runs, h200.threads, h200.env_workers) == (16, 1, 0) and "21 fit" in h200.why
    small_gpu = sweep.plan_box(16, 20 * gib, 40, memory_per_run=6 * gib)
    assert (small_gpu.runs, small_gpu.env_workers) == (3, 4)  # 3 fit; 16 // 3 - 1 cores for each run's engines
    assert sweep.plan_box(16, 141 * gib, 1, memory_per_run=6 * gib).env_workers == 15  # one run: every spare core
    given = sweep.plan_box(16, 141 * gib, 40, memory_per_run=6 * gib, runs=20, env_workers=2)
    assert (given.runs, given.env_workers) == (20, 2) and "given" in given.why


def test_a_sweep_prints_its_box_plan_and_steps_per_second(tmp_path, capsys):
    result = sweep.sweep(["basic"], ["vanilla"], [1], tmp_path / "one", train_args=TINY, compare=False)
    printed = capsys.readouterr().out
    assert "camal-sweep: 1 at a time" in printed and "torch thread(s)" in printed
    assert result["box_steps"] == 128 and f"{result['box_steps_per_second']:,.0f} agent steps/s in all" in printed


@pytest.mark.slow
def test_sigterm_stops_the_sweep_and_its_runs(tmp_path):
    """SIGTERM (or Ctrl-C) to a sweep stops it: the running trainer is ended with its checkpoint
    kept, the queued run never starts, and the error says how to continue."""
    import signal

    from camal_rl.errors import Interrupted, stop_on_sigterm

    out = tmp_path / "stopped"
    args = ["--total-timesteps", "200000", *TINY[2:], "--checkpoint-interval", "1"]
    first = out / "basic__camal__1"

    def terminate_after_first_checkpoint():
        deadline = time.time() + 120
        while not (first / "checkpoint.pt").exists() and time.time() < deadline:
            time.sleep(0.2)
        time.sleep(1.0)
        os.kill(os.getpid(), signal.SIGTERM)

    previous = signal.getsignal(signal.SIGTERM)
    stop_on_sigterm()
    threading.Thread(target=terminate_after_first_checkpoint, daemon=True).start()
    started = time.time()
    try:
        with pytest.raises(Interrupted, match="0 of 2 run.s. had ended.*the same command continues them"):
            sweep.sweep(["basic"], ["camal", "vanilla"], [1], out, train_args=args, workers=1, compare=False)
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert time.time() - started < 150  # not the minutes that 200,000 steps would take
    storage = sweep.Storage(out)
    jobs = sweep.plan(["basic"], ["camal", "vanilla"], [1], args)
    assert [job.state(storage) for job in jobs] == ["resumable", "new"]
    assert not (out / "basic__vanilla__1").exists() and not (out / "basic__vanilla__1.log").exists()
    assert "stopped by SIGTERM" in (out / "basic__camal__1.log").read_text()


@pytest.mark.slow
def test_ctrl_c_on_a_sweep_lets_its_trainers_save_their_iteration(tmp_path):
    """A terminal's Ctrl-C (SIGINT to the sweep's whole process group): the trainers, in sessions of
    their own, get one SIGTERM from the sweep, finish their iteration and save it, though their next
    scheduled checkpoint is far away."""
    import signal
    import subprocess
    import sys

    out = tmp_path / "grid"
    flags = ["--total-timesteps", "1000000", *TINY[2:], "--checkpoint-interval", "100000", "--checkpoint-minutes", "0"]
    process = subprocess.Popen([sys.executable, "-m", "camal_rl.sweep", "--envs", "basic", "--methods", "camal",
                                "--seeds", "1", "--out", str(out), "--no-compare", "--workers", "1", "--", *flags],
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, start_new_session=True,
                               preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    run = out / "basic__camal__1"
    deadline = time.time() + 120
    while not list(run.glob("events.out.tfevents.*")) and time.time() < deadline:
        time.sleep(0.2)
    time.sleep(5)
    os.killpg(process.pid, signal.SIGINT)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 128 + signal.SIGINT and "Traceback" not in stderr, stderr
    log = (out / "basic__camal__1.log").read_text()
    assert "stopped by SIGTERM" in log and "last checkpoint is iteration" in log, log[-2000:]
    from camal_rl import runs

    assert runs.load_checkpoint(run, for_resume=True)["iteration"] >= 1  # saved on the stop, not by schedule
