"""camal-eval replays the trainer's own evaluation; --track logs to Weights & Biases (offline here)."""

import json
import subprocess
import sys

import pytest

from camal_rl import ppo, runs
from camal_rl.evaluation import evaluate_run

pytestmark = pytest.mark.slow


def tiny_run(tmp_path, name="run", **overrides):
    values = dict(env="basic", seed=4, total_timesteps=256, num_envs=2, num_steps=64, num_minibatches=2,
                  update_epochs=1, eval_episodes=3, eval_interval=0, eval_image_frames=2, progress=False, cuda=False,
                  threads=2, run_dir=str(tmp_path / name))
    values.update(overrides)
    return ppo.train(ppo.Args(**values))


def test_camal_eval_gives_the_trainers_own_numbers(tmp_path):
    summary = tiny_run(tmp_path)
    import torch

    again = evaluate_run(tmp_path / "run", episodes=3, device=torch.device("cpu"))
    assert again["return_mean"] == summary["eval_return_mean"]
    assert again["iou_mean"] == summary["eval_iou_mean"] and again["iou_frames"] == summary["eval_iou_frames"]
    assert again["zero_map_fraction"] == summary["eval_zero_map_fraction"]
    other_seed = evaluate_run(tmp_path / "run", episodes=3, seed=99, device=torch.device("cpu"))
    assert other_seed["returns"] != again["returns"]  # another seed plays other episodes

    result = subprocess.run([sys.executable, "-m", "camal_rl.evaluation", str(tmp_path / "run"), "--episodes", "3",
                             "--json", str(tmp_path / "eval.json"), "--no-cuda"], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    table, printed = result.stdout.strip().splitlines()[:-1], json.loads(result.stdout.strip().splitlines()[-1])
    assert table[0].startswith("| run | env | method |") and "| basic | camal | 4 | 256 | 3 |" in table[2]
    assert printed == json.loads((tmp_path / "eval.json").read_text())
    assert printed[0]["return_mean"] == summary["eval_return_mean"]
    assert printed[0]["normalised_return"] == pytest.approx((summary["eval_return_mean"] + 120.6) / 215.6)


def test_track_logs_the_run_to_wandb_offline(tmp_path, monkeypatch):
    pytest.importorskip("wandb", reason="the track extra (wandb) is not installed")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    tiny_run(tmp_path, track=True, wandb_project_name="camal-test", wandb_group="study-a")
    logs = list((tmp_path / "run" / "wandb").glob("offline-run-*/run-*.wandb"))
    assert len(logs) == 1
    log = logs[0].read_bytes()  # W&B's record log: the config, the synced TensorBoard scalars, the image grid
    for expected in (b"camal-test", b"study-a", b"camal_coef", b"losses/camal_loss", b"charts/episodic_return",
                     b"eval/return_mean", b"eval/attention"):
        assert expected in log, expected
    images = list(logs[0].parent.glob("files/media/images/*.png"))
    assert images and images[0].read_bytes()[:4] == b"\x89PNG"


def test_without_track_wandb_is_never_imported(tmp_path):
    code = ("import sys; from camal_rl import ppo; "
            f"ppo.train(ppo.Args(env='basic', total_timesteps=128, num_envs=2, num_steps=64, num_minibatches=2, "
            f"update_epochs=1, eval_episodes=1, progress=False, cuda=False, run_dir={str(tmp_path / 'r')!r})); "
            "print('wandb' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip().splitlines()[-1] == "False"
    assert (tmp_path / "r" / runs.SUMMARY).exists()
