"""The PPO + CAMAL trainer on real ViZDoom: logs, checkpoints, exact resume, both rollout paths, bad input."""

import json
import os
import signal
import subprocess
import sys

import numpy as np
import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from camal_rl import agent as agent_module
from camal_rl import camal, doom, errors, ppo, runs, vector

TAGS = [
    "charts/episodic_return", "charts/SPS", "charts/learning_rate", "losses/value_loss", "losses/policy_loss",
    "losses/entropy", "losses/approx_kl", "losses/clipfrac", "losses/camal_loss", "attention/alpha",
    "attention/beta", "attention/iou", "attention/zero_map_fraction", "attention/empty_mask_fraction",
    "eval/return_mean", "eval/iou_mean", "eval/zero_map_fraction", "perf/rollout_seconds", "perf/update_seconds",
]
COMPARED = ["losses/value_loss", "losses/policy_loss", "losses/entropy", "losses/camal_loss", "losses/approx_kl",
            "charts/episodic_return", "attention/alpha", "attention/beta", "eval/return_mean"]


def tiny_args(tmp_path, **overrides):
    values = dict(
        env="basic", seed=3, total_timesteps=4 * 2 * 64, num_envs=2, num_steps=64, num_minibatches=2,
        update_epochs=1, eval_episodes=2, eval_interval=0, checkpoint_interval=1, progress=False,
        cuda=False, run_dir=str(tmp_path / "run"), env_workers=0, threads=2,
    )
    values.update(overrides)
    return ppo.Args(**values)


def events(run_dir):
    accumulator = EventAccumulator(str(run_dir), size_guidance={"scalars": 0, "images": 0})
    accumulator.Reload()
    return accumulator


def scalars(run_dir):
    accumulator = events(run_dir)
    return {tag: {e.step: e.value for e in accumulator.Scalars(tag)} for tag in accumulator.Tags()["scalars"]}


def numbers(run_dir):
    logged = scalars(run_dir)
    return {tag: logged.get(tag) for tag in COMPARED}


class Crash(Exception):
    pass


@pytest.mark.slow
def test_crash_and_resume_continue_bit_identically(tmp_path):
    """A run killed after its 2nd checkpoint and resumed equals the uninterrupted run, number for number."""
    uninterrupted = tmp_path / "straight"
    ppo.train(tiny_args(tmp_path, run_dir=str(uninterrupted), checkpoint_interval=2))

    def crash_at_third(iteration, rollout):
        if iteration == 3:
            raise Crash

    with pytest.raises(Crash):
        ppo.train(tiny_args(tmp_path, checkpoint_interval=2), on_rollout=crash_at_third)
    run_dir = tmp_path / "run"
    checkpoint = torch.load(run_dir / runs.CHECKPOINT, weights_only=True)
    assert checkpoint["iteration"] == 2 and checkpoint["global_step"] == 256
    assert any(state["actions"] for state in checkpoint["env_states"])  # mid-episode: the replay matters
    assert not (run_dir / runs.SUMMARY).exists()

    summary = ppo.train(ppo.Args(resume=str(run_dir), progress=False, cuda=False, threads=2))
    assert summary["global_step"] == 512
    resumed, straight = numbers(run_dir), numbers(uninterrupted)
    assert resumed == straight, "resumed run differs from the uninterrupted one"
    assert len(straight["losses/value_loss"]) == 4 and len(straight["charts/episodic_return"]) >= 2
    on_disk = json.loads((run_dir / runs.SUMMARY).read_text())
    for key in ["env", "method", "seed", "global_step", "eval_return_mean", "eval_iou_mean", "eval_zero_map_fraction",
                "sps", "train_time_s", "eval_time_s", "wall_time_s", "attention_dead", "args"]:
        assert key in on_disk
    assert on_disk["eval_return_mean"] == json.loads((uninterrupted / runs.SUMMARY).read_text())["eval_return_mean"]
    assert on_disk["method"] == "camal" and on_disk["env"] == "basic"
    assert on_disk["train_time_s"] > 0 and on_disk["eval_time_s"] > 0
    assert abs(on_disk["wall_time_s"] - on_disk["train_time_s"] - on_disk["eval_time_s"]) < 1e-6

    logged = scalars(run_dir)
    missing = [tag for tag in TAGS if tag not in logged]
    assert not missing, f"missing TensorBoard tags {missing}"
    assert sorted(logged["charts/SPS"]) == [128, 256, 384, 512]  # the step axis continues after the resume
    rollout_seconds, update_seconds = logged["perf/rollout_seconds"], logged["perf/update_seconds"]
    assert sorted(rollout_seconds) == sorted(update_seconds) == [128, 256, 384, 512]
    assert min(rollout_seconds.values()) > 0 and min(update_seconds.values()) > 0
    # the phases are parts of the training time
    assert sum(rollout_seconds.values()) + sum(update_seconds.values()) <= on_disk["train_time_s"]
    assert "eval/attention" in events(run_dir).Tags()["images"]  # the attention grid of fixed eval frames
    assert not list(run_dir.glob("*.partial*"))  # atomic writes leave nothing behind


@pytest.mark.slow
def test_worker_processes_give_the_in_process_numbers(tmp_path):
    common = dict(total_timesteps=3 * 4 * 64, num_envs=4, env_groups=2, eval_episodes=0, checkpoint_interval=10)
    ppo.train(tiny_args(tmp_path, run_dir=str(tmp_path / "inproc"), env_workers=0, **common))
    summary = ppo.train(tiny_args(tmp_path, run_dir=str(tmp_path / "workers"), env_workers=2, **common))
    assert summary["env_workers"] == 2 and summary["env_groups"] == 2
    assert numbers(tmp_path / "workers") == numbers(tmp_path / "inproc")


def test_stacks_from_single_frames_equal_the_gymnasium_stacks(tmp_path, short_basic):
    """The rollout keeps one frame per step; the stacks it assembles are exactly those of the landed
    path (gymnasium's SyncVectorEnv of DoomEnv, frame_stack 4), across episode ends."""
    rollouts = {}

    def keep(iteration, rollout):
        rollouts[iteration] = {k: v.clone() for k, v in rollout.items()}

    ppo.train(tiny_args(tmp_path, env=short_basic, total_timesteps=2 * 2 * 64, eval_episodes=0), on_rollout=keep)
    gym_envs = doom.make_vector_env(short_basic, num_envs=2, seed=3, obs_size=(60, 80))
    obs, _ = gym_envs.reset(seed=[3, 4])
    resets = 0
    for iteration in (1, 2):
        for t in range(64):
            assert np.array_equal(rollouts[iteration]["obs"][t].numpy(), obs["image"]), (iteration, t)
            assert np.array_equal(rollouts[iteration]["masks"][t].numpy(), obs["mask"])
            obs, _, terminated, truncated, _ = gym_envs.step(rollouts[iteration]["actions"][t].numpy())
            resets += int((terminated | truncated).sum())
    gym_envs.close()
    assert resets >= 4


def test_every_finished_episode_is_in_tensorboard_once(tmp_path):
    """Episodes that end in the same step share one event; readers still see one return and one
    length per episode, at the agent step it ended, in the order the trainer counted them."""
    ppo.train(tiny_args(tmp_path, num_envs=4, total_timesteps=4 * 64 * 3, eval_episodes=0))
    logged = events(tmp_path / "run")
    returns = logged.Scalars("charts/episodic_return")
    lengths = logged.Scalars("charts/episodic_length")
    assert len(returns) == len(lengths) >= 8
    assert [e.step for e in returns] == [e.step for e in lengths]
    assert all(e.step % 4 == 0 and 0 < e.step <= 4 * 64 * 3 for e in returns)
    assert all(1 <= e.value <= 75 and e.value == int(e.value) for e in lengths)  # Basic: 300 tics / frame skip 4
    checkpoint = runs.load_checkpoint(tmp_path / "run")
    assert [e.value for e in returns][-20:] == pytest.approx(checkpoint["recent_returns"], abs=1e-4)


@pytest.mark.slow
def test_evaluation_leaves_training_untouched(tmp_path):
    common = dict(total_timesteps=3 * 2 * 64, checkpoint_interval=10)
    ppo.train(tiny_args(tmp_path, run_dir=str(tmp_path / "quiet"), eval_episodes=0, **common))
    ppo.train(tiny_args(tmp_path, run_dir=str(tmp_path / "evaluated"), eval_episodes=3, eval_interval=128, **common))
    quiet, evaluated = numbers(tmp_path / "quiet"), numbers(tmp_path / "evaluated")
    assert len(evaluated.pop("eval/return_mean")) == 3 and quiet.pop("eval/return_mean") is None
    assert quiet == evaluated


@pytest.mark.slow
def test_vanilla_and_camal_share_the_first_rollout(tmp_path):
    rollouts = {}

    def keep(method):
        def hook(iteration, rollout):
            rollouts.setdefault(method, {})[iteration] = {k: v.clone() for k, v in rollout.items()}
        return hook

    common = dict(total_timesteps=2 * 2 * 64, eval_episodes=1, checkpoint_interval=10)
    ppo.train(tiny_args(tmp_path, camal_coef=0.0, run_dir=str(tmp_path / "v"), **common), on_rollout=keep("vanilla"))
    ppo.train(tiny_args(tmp_path, camal_coef=1.0, run_dir=str(tmp_path / "c"), attention="signed-gradcam", **common),
              on_rollout=keep("camal"))
    for key in ["obs", "masks", "actions", "rewards"]:
        assert torch.equal(rollouts["vanilla"][1][key], rollouts["camal"][1][key]), key
    # ... while the updates differ: the CAMAL term changed the trunk's weights
    weights = [torch.load(tmp_path / m / runs.CHECKPOINT, weights_only=True)["agent"]["conv.0.weight"] for m in "vc"]
    assert not torch.equal(*weights)
    assert json.loads((tmp_path / "v" / runs.SUMMARY).read_text())["method"] == "vanilla"


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
    assert masks.shape[-2:] == (120, 160)  # screen-resolution masks; the maps are upsampled to them
    agent = agent_module.Agent(tuple(images.shape[1:]), 3)
    optimizer = torch.optim.Adam(agent.parameters(), lr=2.5e-4, eps=1e-5)

    def gap():
        maps = agent_module.value_attention(agent, images, agent.feature_grid, method="signed-gradcam")
        alpha, beta = camal.alpha_beta(maps, masks)
        return (alpha - beta).mean().item()

    grid_masks = camal.grid_mask(masks, agent.feature_grid)
    before = gap()
    for _ in range(15):
        _, value, features = agent(images)
        maps = camal.normalize(camal.attention(features, value, method="signed-gradcam"))
        loss = camal.camal_loss(maps, grid_masks)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    after = gap()
    print(f"alpha - beta: {before:.3f} -> {after:.3f}")
    assert after > before + 0.1


@pytest.mark.parametrize("method", ["gradcam", "layercam"])
def test_the_agents_attention_through_its_fc_layer_is_the_full_gradients(method):
    """The update's attention of V(s) taken through the agent's fc layer and critic head (its flatten order
    on channels-last features included): the maps and the CAMAL loss's gradients of the full gradient."""
    torch.manual_seed(0)
    images, masks = _basic_frames()
    agent = agent_module.Agent(tuple(images.shape[1:]), 3)
    grid_masks = camal.grid_mask(masks, agent.feature_grid)
    results = []
    for through_fc in (False, True):
        agent.zero_grad()
        logits, value, features, fc_layer = agent.forward_with_linear(images)
        assert torch.equal(logits, agent(images)[0])
        maps = camal.attention(features, value, method=method, linear=fc_layer if through_fc else None)
        camal.camal_loss(camal.normalize(maps), grid_masks).backward()
        weights = (agent.fc[1].weight, agent.critic.weight, agent.conv[0].weight)
        results.append((maps.detach(), [p.grad.clone() for p in weights]))
    (maps_full, grads_full), (maps_fc, grads_fc) = results
    assert maps_full.amax() > 0
    assert torch.allclose(maps_full, maps_fc, rtol=1e-4, atol=1e-6 * maps_full.amax().item())
    for full, through in zip(grads_full, grads_fc, strict=True):
        assert full.abs().amax() > 0
        assert torch.allclose(full, through, rtol=1e-3, atol=1e-4 * full.abs().amax().item())


def test_bad_input_errors(tmp_path):
    with pytest.raises(doom.SpecError, match="available"):
        ppo.train(tiny_args(tmp_path, env="basik"))
    with pytest.raises(errors.ConfigError, match="divisible"):
        ppo.train(tiny_args(tmp_path, num_envs=3, num_steps=5, num_minibatches=4))
    with pytest.raises(errors.ConfigError, match="--env-groups"):
        ppo.train(tiny_args(tmp_path, env_groups=5))
    with pytest.raises(errors.RunFolderError, match="no checkpoint"):
        ppo.train(ppo.Args(resume=str(tmp_path / "nowhere"), progress=False))
    corrupt = tmp_path / "corrupt"
    corrupt.mkdir()
    (corrupt / runs.CHECKPOINT).write_bytes(b"not a checkpoint")
    with pytest.raises(errors.RunFolderError, match="corrupt"):
        ppo.train(ppo.Args(resume=str(corrupt), progress=False))
    assert not (tmp_path / "run").exists()  # nothing was written for the failed starts


def test_checkpoint_from_other_network_is_refused(tmp_path):
    agent = agent_module.Agent((4, 60, 80), 3)
    checkpoint = {"env": "take_cover", "obs_shape": (4, 60, 80), "num_actions": 2, "agent": agent.state_dict()}
    with pytest.raises(errors.RunFolderError, match="network"):
        runs.restore_agent(agent, checkpoint, tmp_path / "x.pt")
    checkpoint["num_actions"] = 3
    checkpoint["agent"] = {k: v[:1] for k, v in checkpoint["agent"].items()}
    with pytest.raises(errors.RunFolderError, match="does not fit"):
        runs.restore_agent(agent, checkpoint, tmp_path / "x.pt")


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


@pytest.mark.slow
def test_a_dying_env_worker_stops_the_run_clearly_and_it_resumes(tmp_path):
    def kill_a_worker(iteration, rollout):
        if iteration == 2:
            worker = next(p for p in __import__("multiprocessing").active_children() if p.name.startswith("camal-env-"))
            os.kill(worker.pid, signal.SIGKILL)

    args = tiny_args(tmp_path, env_workers=2, eval_episodes=0, total_timesteps=3 * 2 * 64)
    with pytest.raises(vector.EnvWorkerError, match="died .*--resume"):
        ppo.train(args, on_rollout=kill_a_worker)
    assert torch.load(tmp_path / "run" / runs.CHECKPOINT, weights_only=True)["iteration"] == 1
    summary = ppo.train(ppo.Args(resume=str(tmp_path / "run"), progress=False, cuda=False))
    assert summary["global_step"] == 3 * 2 * 64


def test_dead_attention_is_logged_warned_and_recorded(tmp_path, monkeypatch, capsys):
    def dead_attention(features, scores, *, method="gradcam", create_graph=True, linear=None):
        return (features * 0).mean(dim=1)  # what a ReLU'd Grad-CAM with only negative weights gives

    monkeypatch.setattr(camal, "attention", dead_attention)
    summary = ppo.train(tiny_args(tmp_path, total_timesteps=128, eval_episodes=1))
    assert "all zero on 100% of frames" in capsys.readouterr().err
    assert summary["attention_dead"] and summary["attention_dead_since_step"] == 128
    assert scalars(tmp_path / "run")["attention/zero_map_fraction"][128] == 1.0
    vanilla = ppo.train(tiny_args(tmp_path, total_timesteps=128, eval_episodes=1, camal_coef=0.0,
                                  run_dir=str(tmp_path / "v")))
    assert "warning" not in capsys.readouterr().err and not vanilla["attention_dead"]  # Vanilla is never warned


@pytest.mark.slow
def test_empty_mask_policy_reaches_the_loss(tmp_path):
    """Frames without a target: skipped by default, a beta term with --empty-mask suppress."""
    common = dict(total_timesteps=2 * 2 * 64, eval_episodes=0, checkpoint_interval=10, attention="signed-gradcam",
                  env="defend_the_center", frame_skip=4)  # monsters all around: many frames show none
    ppo.train(tiny_args(tmp_path, run_dir=str(tmp_path / "skip"), **common))
    ppo.train(tiny_args(tmp_path, run_dir=str(tmp_path / "suppress"), empty_mask="suppress", **common))
    skip, suppress = scalars(tmp_path / "skip"), scalars(tmp_path / "suppress")
    assert max(skip["attention/empty_mask_fraction"].values()) > 0.05
    assert skip["losses/camal_loss"] != suppress["losses/camal_loss"]
