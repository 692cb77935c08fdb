"""A new user's first hour: the first command's budget, a stop that keeps the training, an ending a
person reads, and an agent exported the way the Hub's Doom agents are, played back without a pickle."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from cli_helpers import command, copy_of, one_line_error

from camal_rl import arguments, doom, evaluation, ppo, recipes, runs
from camal_rl.guide import ending_text


def test_a_scenarios_recipe_carries_its_budget_and_a_flag_still_wins():
    assert arguments.resolve(ppo.Args(env="basic")).total_timesteps == doom.load_spec("basic").recipes["neutral"][
        "total_timesteps"] <= 100_000
    assert arguments.resolve(ppo.Args(env="basic", recipe="paper")).total_timesteps == recipes.PAPER["total_timesteps"]
    assert arguments.parse(ppo.Args, ["--env", "basic", "--total-timesteps", "4096"]).total_timesteps == 4096
    for name in doom.PAPER_SCENARIOS:  # every paper scenario has a budget a laptop finishes
        assert arguments.resolve(ppo.Args(env=name)).total_timesteps <= 1_000_000, name


def summary_of(**values):
    base = {"env": "basic", "method": "camal", "seed": 1, "global_step": 49_152, "train_time_s": 171.0,
            "eval_time_s": 9.0, "eval_return_mean": 83.6, "eval_return_std": 1.4, "eval_episodes": 10,
            "eval_normalised_return": 0.95, "eval_iou_mean": 0.27, "eval_zero_map_fraction": 0.0,
            "train_return_recent": 80.0}
    return {**base, **values}


def test_the_ending_says_how_good_the_agent_is_and_what_to_run_next(tmp_path):
    run_dir = tmp_path / "runs" / "basic__camal__1__17"
    text = ending_text(summary_of(), run_dir)
    assert "finished" in text and "49,152 in 2 min 51 s (287 steps/s)" in text
    assert "83.6 ± 1.4 over 10 episodes (normalised 0.95" in text and "IoU      0.27" in text
    for next_command in (f"camal-record {run_dir} ", f"camal-eval {run_dir} ", f"camal-export {run_dir} --out",
                         f"camal-compare {run_dir.parent} "):
        assert next_command in text, next_command
    stopped = ending_text(summary_of(stopped=True, eval_return_mean=None), run_dir)
    assert "stopped" in stopped and f"camal-train --resume {run_dir}" in stopped
    assert "not evaluated yet" in stopped and "80.0" in stopped
    no_object = ending_text(summary_of(eval_iou_mean=float("nan"), eval_zero_map_fraction=float("nan")), run_dir)
    assert "attention IoU" not in no_object and " nan" not in no_object  # no labelled object evaluated: no IoU line


@pytest.mark.slow
def test_ctrl_c_keeps_what_was_trained_and_the_run_plays_and_resumes(tmp_path):
    """A Ctrl-C from the terminal (SIGINT to the whole process group, engines included) lets the running
    iteration finish and saves it: camal-eval plays that agent, --resume goes on from it."""
    run_dir = tmp_path / "run"
    stderr_path = tmp_path / "stderr"
    flags = ["--env", "basic", "--run-dir", str(run_dir), "--total-timesteps", "1000000", "--num-envs", "2",
             "--num-steps", "64", "--num-minibatches", "2", "--update-epochs", "1", "--eval-episodes", "2",
             "--checkpoint-interval", "100000", "--checkpoint-minutes", "0", "--no-progress", "--no-cuda"]
    with open(stderr_path, "w") as stderr:
        process = subprocess.Popen([sys.executable, "-m", "camal_rl.ppo", *flags], stdout=subprocess.PIPE,
                                   stderr=stderr, text=True, start_new_session=True,
                                   preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.time() + 120
    while not list(run_dir.glob("events.out.tfevents.*")) and time.time() < deadline:
        time.sleep(0.2)
    time.sleep(8)  # some iterations in, long before its first scheduled checkpoint
    assert not (run_dir / runs.CHECKPOINT).exists()
    os.killpg(process.pid, signal.SIGINT)  # what a terminal's Ctrl-C sends
    stdout, _ = process.communicate(timeout=120)
    stderr = stderr_path.read_text()
    assert process.returncode == 128 + signal.SIGINT, stderr
    assert "Traceback" not in stderr and "stopping after the running iteration" in stderr
    last = stderr.strip().splitlines()[-1]
    assert "last checkpoint is iteration" in last and f"camal-train --resume {run_dir}" in last
    saved = runs.load_checkpoint(run_dir, for_resume=True)
    assert saved["iteration"] >= 1 and f"stopped (its last iteration is saved) in {run_dir}" in stdout
    played = command("eval", run_dir, "--episodes", "1")
    assert played.returncode == 0, played.stderr[-2000:]
    resumed = command("train", "--resume", run_dir, "--total-timesteps", saved["global_step"] + 128)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert json.loads((run_dir / runs.SUMMARY).read_text())["global_step"] == saved["global_step"] + 128


@pytest.mark.slow
def test_an_exported_agent_plays_like_its_run_without_a_pickle(finished_run, tmp_path, monkeypatch):
    out = tmp_path / "agents" / "basic-camal-1"
    exported = command("export", finished_run, "--out", out, "--episodes", "2", "--video-episodes", "1")
    assert exported.returncode == 0, exported.stderr[-2000:]
    assert sorted(p.name for p in out.iterdir()) == ["README.md", "config.json", "model.safetensors", "replay.mp4"]
    config = json.loads((out / "config.json").read_text())
    assert config["env"] == "basic" and config["method"] == "camal" and config["evaluation"]["episodes"] == 2
    assert "/" not in config["scenario"]["config"]  # no path of the exporting machine
    card = (out / "README.md").read_text()
    assert "model-index:" in card and "arXiv:2605.08325" in card
    assert f"value: {config['evaluation']['return_mean']:.2f} +/- {config['evaluation']['return_std']:.2f}" in card
    one_line_error(command("export", finished_run, "--out", out), "exists", "--overwrite")

    # the export alone plays, and gives its run's numbers: no checkpoint, and torch.load is never called
    def no_pickles(*args, **kwargs):
        raise AssertionError("a pickle was read")

    run_copy = copy_of(finished_run, tmp_path, "gone")
    from_run = evaluation.evaluate_run(run_copy, episodes=2, device=torch.device("cpu"))
    monkeypatch.setattr(torch, "load", no_pickles)
    from_export = evaluation.evaluate_run(out, episodes=2, device=torch.device("cpu"))
    assert from_export["returns"] == from_run["returns"] and from_export["iou_mean"] == from_run["iou_mean"]
    from camal_rl.record import record

    result = record([str(out)], tmp_path / "again.mp4", episodes=1, progress=False)
    assert result["frames"] > 0


def test_a_hub_name_offline_is_one_line(tmp_path):
    pytest.importorskip("huggingface_hub", reason="the hub extra installs huggingface_hub")
    one_line_error(command("eval", "hf:nobody/no-agent", env={"HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path)}),
                   "hf:nobody/no-agent", "did not give it", "hf download")


def test_a_damaged_export_is_one_line(finished_run, tmp_path):
    out = tmp_path / "agent"
    out.mkdir()
    (out / "model.safetensors").write_bytes(b"not safetensors")
    (out / "config.json").write_text(json.dumps({"format": 1, "library": "camal-rl"}))
    one_line_error(command("eval", out), "config.json", "lacks")
    assert Path(out / "model.safetensors").read_bytes() == b"not safetensors"
