"""The PPO + CAMAL trainer on real ViZDoom: logs, checkpoints, resume, the CAMAL term, bad input."""

import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from camal_rl import camal, doom, ppo

TAGS = [
    "charts/episodic_return", "charts/SPS", "charts/learning_rate", "losses/value_loss", "losses/policy_loss",
    "losses/entropy", "losses/approx_kl", "losses/clipfrac", "losses/camal_loss", "attention/alpha",
    "attention/beta", "attention/iou", "eval/return_mean", "eval/iou_mean",
]


def tiny_args(tmp_path, **overrides):
    values = dict(
        env="basic", seed=3, total_timesteps=4 * 2 * 64, num_envs=2, num_steps=64, num_minibatches=2,
        update_epochs=1, eval_episodes=1, eval_interval=0, checkpoint_interval=1, progress=False,
        cuda=False, run_dir=str(tmp_path / "run"), attention_sample=64,
    )
    values.update(overrides)
    return ppo.Args(**values)


def scalars(run_dir):
    accumulator = EventAccumulator(str(run_dir), size_guidance={"scalars": 0})
    accumulator.Reload()
    return {tag: [(e.step, e.value) for e in accumulator.Scalars(tag)] for tag in accumulator.Tags()["scalars"]}


class Crash(Exception):
    pass


def test_tiny_run_logs_checkpoints_and_resumes_after_a_crash(tmp_path):
    args = tiny_args(tmp_path)

    def crash_at_third(iteration, rollout):
        if iteration == 3:
            raise Crash

    with pytest.raises(Crash):
        ppo.train(args, on_rollout=crash_at_third)
    run_dir = tmp_path / "run"
    checkpoint = torch.load(run_dir / ppo.CHECKPOINT, weights_only=False)
    assert checkpoint["iteration"] == 2 and checkpoint["global_step"] == 256
    assert not (run_dir / ppo.SUMMARY).exists()

    summary = ppo.train(ppo.Args(resume=str(run_dir), progress=False, cuda=False))
    assert summary["global_step"] == args.total_timesteps == 512
    on_disk = json.loads((run_dir / ppo.SUMMARY).read_text())
    for key in ["env", "method", "seed", "global_step", "eval_return_mean", "eval_iou_mean", "sps", "wall_time_s", "args"]:
        assert key in on_disk
    assert on_disk["method"] == "camal" and on_disk["env"] == "basic"

    logged = scalars(run_dir)
    missing = [tag for tag in TAGS if tag not in logged]
    assert not missing, f"missing TensorBoard tags {missing}"
    sps_steps = sorted(step for step, _ in logged["charts/SPS"])
    assert sps_steps == [128, 256, 384, 512]  # the step axis continues after the resume
    assert [v for _, v in logged["attention/alpha"]] and all(np.isfinite(v) for _, v in logged["losses/camal_loss"])
    assert not list(run_dir.glob("*.partial*"))  # atomic writes leave nothing behind


def test_vanilla_and_camal_share_the_first_rollout(tmp_path):
    rollouts = {}

    def keep(method):
        def hook(iteration, rollout):
            rollouts.setdefault(method, {})[iteration] = {k: v.clone() for k, v in rollout.items()}
        return hook

    common = dict(total_timesteps=2 * 2 * 64, eval_episodes=1, checkpoint_interval=10)
    ppo.train(tiny_args(tmp_path, camal_coef=0.0, run_dir=str(tmp_path / "v"), **common), on_rollout=keep("vanilla"))
    ppo.train(tiny_args(tmp_path, camal_coef=1.0, run_dir=str(tmp_path / "c"), **common), on_rollout=keep("camal"))
    for key in ["obs", "masks", "actions", "rewards"]:
        assert torch.equal(rollouts["vanilla"][1][key], rollouts["camal"][1][key]), key
    # ... while the updates differ: the CAMAL term changed the trunk's weights
    weights = [torch.load(tmp_path / m / ppo.CHECKPOINT, weights_only=False)["agent"]["conv.0.weight"] for m in "vc"]
    assert not torch.equal(*weights)
    assert json.loads((tmp_path / "v" / ppo.SUMMARY).read_text())["method"] == "vanilla"


def _basic_frames(count=64, seed=0):
    env = doom.make_env("basic", seed=seed)
    obs, _ = env.reset(seed=seed)
    rng = np.random.default_rng(seed)
    images, masks = [], []
    while len(images) < count:
        if obs["mask"].any():
            images.append(obs["image"])
            masks.append(obs["mask"])
        obs, _, terminated, truncated, _ = env.step(int(rng.integers(2)))  # move only
        if terminated or truncated:
            obs, _ = env.reset()
    env.close()
    return torch.as_tensor(np.stack(images)), torch.as_tensor(np.stack(masks))


def test_camal_term_alone_raises_alpha_minus_beta():
    torch.manual_seed(0)
    images, masks = _basic_frames()
    agent = ppo.Agent(tuple(images.shape[1:]), 3)
    optimizer = torch.optim.Adam(agent.parameters(), lr=2.5e-4, eps=1e-5)

    def gap():
        maps = ppo.value_attention(agent, images)
        alpha, beta = camal.alpha_beta(maps, masks)
        return (alpha - beta).mean().item()

    before = gap()
    for _ in range(15):
        _, value, features = agent(images)
        maps = camal.attention_map(features, value, tuple(masks.shape[-2:]))
        loss = camal.camal_loss(maps, masks)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    after = gap()
    print(f"alpha - beta: {before:.3f} -> {after:.3f}")
    assert after > before + 0.1


def test_bad_input_errors(tmp_path):
    with pytest.raises(doom.SpecError, match="available"):
        ppo.train(tiny_args(tmp_path, env="basik"))
    with pytest.raises(ppo.TrainingError, match="divisible"):
        ppo.train(tiny_args(tmp_path, num_envs=3, num_steps=5, num_minibatches=4))
    with pytest.raises(ppo.TrainingError, match="no checkpoint"):
        ppo.train(ppo.Args(resume=str(tmp_path / "nowhere"), progress=False))
    corrupt = tmp_path / "corrupt"
    corrupt.mkdir()
    (corrupt / ppo.CHECKPOINT).write_bytes(b"not a checkpoint")
    with pytest.raises(ppo.TrainingError, match="corrupt"):
        ppo.train(ppo.Args(resume=str(corrupt), progress=False))
    assert not (tmp_path / "run").exists()  # nothing was written for the failed starts


def test_checkpoint_from_other_network_or_env_is_refused(tmp_path):
    agent = ppo.Agent((4, 60, 80), 3)
    checkpoint = {"env": "take_cover", "obs_shape": (4, 60, 80), "num_actions": 2, "agent": agent.state_dict()}
    with pytest.raises(ppo.TrainingError, match="take_cover"):
        ppo.restore_agent(agent, checkpoint, "basic", tmp_path / "x.pt")
    checkpoint["env"] = "basic"
    with pytest.raises(ppo.TrainingError, match="network"):
        ppo.restore_agent(agent, checkpoint, "basic", tmp_path / "x.pt")


def test_cli_prints_one_line_and_exits_nonzero(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "camal_rl.ppo", "--env", "basic", "--num-envs", "3", "--num-steps", "5",
         "--run-dir", str(tmp_path / "r")],
        capture_output=True, text=True,
    )
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "divisible" in lines[0]
    assert not (tmp_path / "r").exists()


def test_dead_attention_is_logged_and_warned(tmp_path, monkeypatch, capsys):
    real = ppo.value_attention
    monkeypatch.setattr(ppo, "value_attention", lambda agent, obs, method="gradcam": real(agent, obs, method=method) * 0)
    ppo.train(tiny_args(tmp_path, total_timesteps=128, eval_episodes=1))
    assert "all zero on 100% of frames" in capsys.readouterr().err
    assert scalars(tmp_path / "run")["attention/zero_map_fraction"][0][1] == 1.0
    monkeypatch.setattr(ppo, "value_attention", real)
    ppo.train(tiny_args(tmp_path, total_timesteps=128, eval_episodes=1, camal_coef=0.0, run_dir=str(tmp_path / "v")))
    assert "warning" not in capsys.readouterr().err  # Vanilla is never warned
