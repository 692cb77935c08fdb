"""PPO + CAMAL for ViZDoom, CleanRL style: ``camal-train --env basic`` (= ``python -m camal_rl.ppo``).

This file is one training run, read top to bottom: arguments, the checks on them, setup, then the
iteration: rollout, GAE, the PPO update with the CAMAL term, logging, evaluation, checkpoint.
What other code shares lives in modules made for it: the loss core in ``camal_rl.camal``, the
agent and its attention in ``camal_rl.agent``, the rollout storage in ``camal_rl.rollout``, the
envs in ``camal_rl.doom`` / ``camal_rl.vector``, evaluation in ``camal_rl.evaluation`` and the
run folder (checkpoint, summary, TensorBoard tags) in ``camal_rl.runs``.

The CAMAL term (paper arXiv:2605.08325, section 3.3): the attention of the critic value V(s) at
the last conv layer (LayerCAM at the CPU default, Grad-CAM with ``--paper-frames``), taken from
the minibatch's own forward pass with one backward, normalised, compared with the label-buffer
mask at the engine's screen resolution, and added as ``camal_coef * mean(beta - alpha)``.
``--camal-coef 0`` is Vanilla PPO and computes no attention during the update.
"""

from __future__ import annotations

import json
import os
import random
import sys
import time
from collections import deque
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Literal

import numpy as np
import torch
import torch.nn as nn
import tyro
from torch.distributions.categorical import Categorical
from torch.utils.tensorboard import SummaryWriter  # the writer's type
from tqdm import tqdm

from camal_rl import arguments, camal, doom, runs, tracking, vector
from camal_rl.agent import Agent, GraphedForward
from camal_rl.errors import ConfigError, Interrupted, RunFolderError, run_cli
from camal_rl.evaluation import EVAL_SEED_OFFSET, attention_grid, attention_stats, evaluate
from camal_rl.rollout import FrameStorage, env_options, pin_host_memory
from camal_rl.runs import Tag


@dataclass
class Args:
    """PPO + CAMAL on a ViZDoom scenario (arXiv:2605.08325). The learning hyperparameters come from
    --recipe: the scenario's tuned recipe where it has one, else the paper's Table 8, whose values
    are the defaults shown here; a flag given here overrides its recipe value. (In Python a field
    left at its default value takes the recipe's value: pass recipe="paper" for Table 8 exactly.)"""

    env: str = "basic"
    """scenario: a name from envs/ or $CAMAL_ENVS, or the path of a .toml spec"""
    seed: int = 1
    """seed of the envs, the network and the minibatch order"""
    torch_deterministic: bool = True
    """cudnn.deterministic (reproducible convolutions on a GPU)"""
    cuda: bool = field(default_factory=torch.cuda.is_available)
    """train on the GPU (default: on when one is available)"""
    cuda_graph: bool = False
    """replay the rollout's policy forward from a CUDA graph (CUDA only; new, not yet measured on a GPU)"""
    run_dir: str | None = None
    """run folder; default runs/<env>__<method>__<seed>__<time>; it must not hold another run"""
    resume: str | None = None
    """continue the run in this folder from its checkpoint, with its own settings"""
    recipe: str = "default"
    """hyperparameter recipe: default (the scenario's tuned recipe where there is one, else paper), paper (Table 8), or a name from the scenario's recipes"""
    track: bool = False
    """log the run to Weights & Biases too (pip install 'camal-rl[track]'; WANDB_MODE=offline works without a network)"""
    wandb_project_name: str = "camal-rl"
    """W&B project (with --track)"""
    wandb_entity: str | None = None
    """W&B entity, user or team (with --track)"""
    wandb_group: str | None = None
    """W&B group, e.g. a study's name (with --track)"""

    total_timesteps: int = 10_000_000
    """agent steps to train for"""
    learning_rate: float = 2.5e-4
    """Adam learning rate"""
    num_envs: int = 8
    """parallel envs"""
    num_steps: int = 128
    """steps per env and rollout"""
    anneal_lr: bool = True
    """anneal the learning rate linearly to 0"""
    gamma: float = 0.99
    """discount"""
    gae_lambda: float = 0.95
    """GAE lambda"""
    num_minibatches: int = 4
    """minibatches per epoch"""
    update_epochs: int = 4
    """epochs over each rollout"""
    norm_adv: bool = True
    """normalise advantages per minibatch"""
    clip_coef: float = 0.1
    """PPO clip range"""
    clip_vloss: bool = True
    """clip the value loss like the policy"""
    ent_coef: float = 0.01
    """entropy bonus"""
    vf_coef: float = 0.5
    """value loss weight"""
    max_grad_norm: float = 0.5
    """gradient norm clip"""
    target_kl: float | None = None
    """stop an update's epochs early above this approximate KL (off by default)"""
    clip_reward: bool = True
    """clip rewards to [-1, 1] for learning (Table 8: on); episodic returns are logged unclipped"""
    reward_scale: float = 1.0
    """multiply rewards by this for learning, after clipping (1 = as is)"""

    camal_coef: float = 1.0
    """lambda of Eq. 2; 0 = Vanilla PPO"""
    regularizer: Literal["camal", "suppress"] = "camal"
    """camal = mean(beta - alpha); suppress = mean(beta), the suppress-only baseline"""
    attention: camal.AttentionName | None = None
    """attention method of V(s); default: layercam at the CPU frames, where Grad-CAM of V(s) dies, gradcam with --paper-frames (the paper)"""
    create_graph: bool = True
    """differentiate through the attention's channel weights (the head above the features)"""
    empty_mask: Literal["skip", "suppress"] = "skip"
    """frames whose mask is empty: skip = no CAMAL term (Eq. 1's alpha is undefined); suppress = add beta"""

    frame_skip: int | None = None
    """engine tics per agent step; default: the scenario spec's (4 in every bundled spec)"""
    frame_stack: int = 4
    """frames per observation"""
    obs_size: tuple[int, int] = (60, 80)
    """observation height width; 60x80 halves ViZDoom's 120x160 exactly (fastest on CPU)"""
    grayscale: bool = True
    """grey observations (the engine's GRAY8)"""
    resolution: str | None = None
    """ViZDoom screen resolution (= the mask's); default: the spec's (RES_160X120)"""
    paper_frames: bool = False
    """the paper's frames: 240x320 colour from RES_320X240 (not combinable with --obs-size, --grayscale, --resolution)"""
    env_workers: int | None = None
    """env worker processes (0 = step the envs in this process); default: 0 on <= 2 cores, else one per env"""
    env_groups: int | None = None
    """envs step in this many groups while the policy acts for the others (2 = double-buffered); default: 2 with workers and a GPU, else 1"""
    threads: int = 0
    """torch CPU threads; 0 = all cores on a CPU, the cores the env workers leave with a GPU"""

    eval_interval: int = 100_000
    """evaluate every this many agent steps (0: only at the end)"""
    eval_episodes: int = 10
    """episodes per evaluation, played in parallel envs (0: no evaluation)"""
    eval_image_frames: int = 8
    """evaluation frames drawn with their attention into TensorBoard at each evaluation (0: none)"""
    checkpoint_interval: int = 10
    """checkpoint every this many iterations (and at the end)"""
    progress: bool = True
    """show a progress bar with ETA"""

    @property
    def method(self) -> str:
        return runs.method_name(self.camal_coef, self.regularizer)

    @property
    def batch_size(self) -> int:
        return self.num_envs * self.num_steps

    @property
    def minibatch_size(self) -> int:
        return self.batch_size // self.num_minibatches

    @property
    def num_iterations(self) -> int:
        return max(1, self.total_timesteps // self.batch_size)

    @classmethod
    def from_saved(cls, saved: dict, **overrides) -> Args:
        """Args from a checkpoint or summary; keys this version does not know are dropped."""
        known = {f.name for f in fields(cls)}
        values = {k: v for k, v in saved.items() if k in known}
        if values.get("obs_size") is not None:
            values["obs_size"] = tuple(values["obs_size"])
        values.setdefault("recipe", "paper")  # runs from before recipes trained with Table 8
        values.setdefault("reward_scale", 1.0)
        return cls(**{**values, **overrides})


# ---------------------------------------------------------------------------------------
# Setup helpers
# ---------------------------------------------------------------------------------------
def seed_everything(seed: int, deterministic: bool) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.backends.cudnn.deterministic = deterministic


def env_worker_count(args: Args) -> int:
    if args.env_workers is not None:
        return min(args.env_workers, args.num_envs)
    return vector.default_workers(args.num_envs)


def env_group_count(args: Args, device: torch.device, workers: int) -> int:
    """Double-buffered sampling (2 groups) where env workers and a GPU can overlap; else 1."""
    if args.env_groups is not None:
        return args.env_groups
    return 2 if workers >= 2 and device.type == "cuda" else 1


def log_scalars(writer: SummaryWriter, step: int, values: dict) -> None:
    for tag, value in values.items():
        if value is not None and np.isfinite(value):
            writer.add_scalar(tag, value, step)


def stack_steps(outputs: list[torch.Tensor], num_steps: int) -> torch.Tensor:
    """``[T, N]`` from a rollout's per-step outputs, step-major, each step's groups in env order."""
    per_step = len(outputs) // num_steps
    if per_step == 1:
        return torch.stack(outputs)
    return torch.stack([torch.cat(outputs[t * per_step : (t + 1) * per_step]) for t in range(num_steps)])


def compute_gae(rewards, values, dones, next_value, next_done, gamma: float, gae_lambda: float):
    """CleanRL's generalised advantage estimation over one rollout: (advantages, returns)."""
    num_steps = rewards.shape[0]
    advantages = torch.zeros_like(rewards)
    lastgaelam = 0
    for t in reversed(range(num_steps)):
        nextnonterminal = 1.0 - (next_done if t == num_steps - 1 else dones[t + 1])
        nextvalues = next_value if t == num_steps - 1 else values[t + 1]
        delta = rewards[t] + gamma * nextvalues * nextnonterminal - values[t]
        advantages[t] = lastgaelam = delta + gamma * gae_lambda * nextnonterminal * lastgaelam
    return advantages, advantages + values


# ``on_rollout(iteration, rollout)`` is called after each rollout with the stacked observations,
# masks, actions and rewards; scripts measure from it and tests stop runs with it.
RolloutCallback = Callable[[int, dict], None]


# ---------------------------------------------------------------------------------------
# Training
# ---------------------------------------------------------------------------------------
def train(args: Args, *, given: set[str] | None = None, on_rollout: RolloutCallback | None = None) -> dict:
    """Run (or resume) one training run; returns its summary. ``given``: the flags the user typed."""
    args, run_dir, checkpoint = arguments.start_or_resume(args, given)
    if arguments.is_finished(args, checkpoint, run_dir):
        tqdm.write(f"camal-train: {run_dir} is finished ({checkpoint['global_step']:,} agent steps); nothing to do. "
                   f"Give a larger --total-timesteps to train it further.", file=sys.stderr)
        return runs.read_summary(run_dir)
    spec = doom.load_spec(args.env) if checkpoint is None else doom.spec_of_run(checkpoint, args.env)
    device = torch.device("cuda" if args.cuda and torch.cuda.is_available() else "cpu")
    workers = env_worker_count(args)
    # On a CPU the workers sleep while the learner updates, so it takes every core; with a GPU
    # the learner needs little CPU and leaves the cores to the workers.
    cores = os.cpu_count() or 1
    torch.set_num_threads(args.threads or (max(1, cores - workers) if device.type == "cuda" else cores))
    seed_everything(args.seed, args.torch_deterministic)

    fresh_folder = not run_dir.exists()
    run_dir.mkdir(parents=True, exist_ok=True)  # a read-only or missing parent fails here, before any engine
    envs = eval_envs = pinned = writer = None
    try:
        # Env workers are forked: start them before the learner touches CUDA.
        envs = vector.DoomVector(spec, num_envs=args.num_envs, seed=args.seed, workers=workers, **env_options(args))
        if args.eval_episodes:
            eval_envs = vector.DoomVector(spec, num_envs=min(args.eval_episodes, args.num_envs), seed=args.seed + EVAL_SEED_OFFSET,
                                          workers=min(workers, args.eval_episodes), **env_options(args))
        frame_shape = (args.frame_stack * envs.frame_shape[0], *envs.frame_shape[1:])
        agent = Agent(frame_shape, envs.num_actions).to(device)
        # fused: one pass over all parameters; the per-tensor loop took 5.3 ms of a 30 ms minibatch step on 2 CPU cores
        optimizer = torch.optim.Adam(agent.parameters(), lr=args.learning_rate, eps=1e-5, fused=True)
        storage = FrameStorage(args.num_steps, args.num_envs, args.frame_stack, envs.frame_shape, envs.mask_shape, device)
        if device.type == "cuda":
            pinned = pin_host_memory(envs.buffers.memory)
            storage.host_registered = pinned is not None
        progress = {"iteration": 0, "global_step": 0, "train_time_s": 0.0, "eval_time_s": 0.0, "recent_returns": [],
                    "last_eval": {}, "dead_attention_step": None, "grid": None}
        if checkpoint is None:
            envs.reset()
            storage.put(0, envs.frames, envs.masks, envs.episode_starts)
            next_done = np.zeros(args.num_envs, dtype=np.float32)
        else:
            runs.restore_checkpoint(checkpoint, run_dir, agent=agent, optimizer=optimizer, envs=envs, storage=storage)
            progress.update({k: checkpoint[k] for k in progress if k in checkpoint})
            next_done = checkpoint["next_done"].cpu().numpy().astype(np.float32)
            tqdm.write(f"camal-train: resuming {run_dir} at iteration {checkpoint['iteration'] + 1} "
                       f"(agent step {checkpoint['global_step']:,})", file=sys.stderr)
        writer = tracking.open_writer(run_dir, asdict(args), fresh=checkpoint is None, track=args.track,
                                      project=args.wandb_project_name, entity=args.wandb_entity, group=args.wandb_group)
        return train_loop(args, run_dir, spec, device, envs, eval_envs, agent, optimizer, storage, writer, progress,
                          next_done, on_rollout)
    except BaseException:
        if fresh_folder and not runs.holds_a_run(run_dir):
            try:
                run_dir.rmdir()  # nothing of the run was written: leave no empty folder behind
            except OSError:
                pass
        raise
    finally:
        tracking.close_writer(writer)
        if pinned is not None:
            torch.cuda.cudart().cudaHostUnregister(pinned)
        for vec in (envs, eval_envs):
            if vec is not None:
                vec.close()


def train_loop(args: Args, run_dir: Path, spec: doom.ScenarioSpec, device: torch.device, envs: vector.DoomVector,
               eval_envs: vector.DoomVector | None, agent: Agent, optimizer, storage: FrameStorage,
               writer: SummaryWriter, progress: dict, next_done: np.ndarray, on_rollout: RolloutCallback | None) -> dict:
    global_step = progress["global_step"]
    recent_returns: deque = deque(progress["recent_returns"], maxlen=20)
    # The host side of a rollout: the envs' rewards and done flags stay in numpy until the rollout
    # ends, then go to the device in one copy (from pinned memory on a GPU) instead of two small
    # copies per group and step. Row t of ``host_dones`` flags an episode that ended entering step t.
    host_rewards = np.zeros((args.num_steps, args.num_envs), dtype=envs.rewards.dtype)
    host_buffer = torch.zeros((2, args.num_steps + 1, args.num_envs), pin_memory=device.type == "cuda")
    host_dones = host_buffer[1].numpy()
    env_groups = envs.groups(env_group_count(args, device, envs.workers))
    graphed = GraphedForward(agent) if args.cuda_graph and device.type == "cuda" else None

    def collect(step: int, group: slice, rollout_step: int) -> None:
        """Wait for one group's env step ``step``: rewards, done flags, its next frames, finished episodes."""
        written = envs.step_wait(group, into=storage.host_rows(step + 1))  # in-process envs write straight there
        host_rewards[step, group] = envs.rewards[group]
        done = envs.terminated[group] | envs.truncated[group]
        host_dones[step + 1, group] = done
        storage.put(step + 1, envs.frames, envs.masks, envs.episode_starts, group, written=written)
        if done.any():
            ended = group.start + np.flatnonzero(done)
            recent_returns.extend(envs.finished_returns[ended].tolist())
            tracking.log_episodes(writer, rollout_step + (step + 1) * args.num_envs, envs.finished_returns[ended],
                                  envs.finished_lengths[ended])

    next_eval_step = (global_step // args.eval_interval + 1) * args.eval_interval if args.eval_interval else None
    session_start, session_eval_seconds, last_checkpoint = time.time(), 0.0, progress["iteration"]
    bar = tqdm(total=args.total_timesteps, initial=global_step, unit="step", disable=not args.progress,
               dynamic_ncols=True, desc=f"{spec.name}/{args.method}/{args.seed}")
    iteration = progress["iteration"]
    try:
        for iteration in range(progress["iteration"] + 1, args.num_iterations + 1):
            if args.anneal_lr:
                optimizer.param_groups[0]["lr"] = (1.0 - (iteration - 1.0) / args.num_iterations) * args.learning_rate

            # ---- rollout: each group's envs step while the policy acts for the next group ----
            rollout_step, rollout_start = global_step, time.perf_counter()
            host_dones[0] = next_done
            outputs = []  # per step and group: (action, log-probability, value), stacked once at the end
            with torch.no_grad():
                for step in range(args.num_steps):
                    for group in env_groups:
                        if step > 0:
                            collect(step - 1, group, rollout_step)
                        action, logprob, value = agent.act(storage.observation(step, group), forward=graphed)
                        outputs.append((action, logprob, value))
                        envs.step_async(action.cpu().numpy(), group)
                for group in env_groups:
                    collect(args.num_steps - 1, group, rollout_step)
            global_step = rollout_step + args.batch_size
            actions, logprobs, values = (stack_steps([out[k] for out in outputs], args.num_steps) for k in range(3))
            reward = np.clip(host_rewards, -1.0, 1.0) if args.clip_reward else host_rewards
            host_buffer[0, : args.num_steps] = torch.from_numpy(reward * args.reward_scale)
            on_device = host_buffer.to(device, non_blocking=True)
            rewards, dones, next_done_device = on_device[0, : args.num_steps], on_device[1, : args.num_steps], on_device[1, -1]
            next_done = host_dones[-1].copy()
            update_start = time.perf_counter()
            if on_rollout is not None:
                on_rollout(iteration, {"obs": torch.stack([storage.observation(t) for t in range(args.num_steps)]),
                                       "masks": storage.masks[: args.num_steps].clone(), "actions": actions.clone(),
                                       "rewards": rewards.clone()})

            # ---- GAE ----
            with torch.no_grad():
                next_value = agent.get_value(storage.observation(args.num_steps))
                advantages, returns = compute_gae(rewards, values, dones, next_value, next_done_device, args.gamma,
                                                  args.gae_lambda)
            b_logprobs, b_actions = logprobs.reshape(-1), actions.reshape(-1)
            b_advantages, b_returns, b_values = advantages.reshape(-1), returns.reshape(-1), values.reshape(-1)
            # The masks stay fixed for the update: pulled back to the feature grid once.
            b_grid_masks = camal.grid_mask(storage.masks[: args.num_steps].flatten(0, 1), agent.feature_grid) \
                if args.camal_coef > 0 else None

            # ---- PPO update + CAMAL term ----
            b_inds = np.arange(args.batch_size)
            clipfracs, camal_losses = [], []
            for epoch in range(args.update_epochs):
                np.random.shuffle(b_inds)
                for start in range(0, args.batch_size, args.minibatch_size):
                    mb_inds = torch.as_tensor(b_inds[start : start + args.minibatch_size], device=device)
                    logits, newvalue, features, fc_layer = agent.forward_with_linear(storage.minibatch(mb_inds))
                    probs = Categorical(logits=logits)
                    newlogprob, entropy = probs.log_prob(b_actions[mb_inds]), probs.entropy()
                    logratio = newlogprob - b_logprobs[mb_inds]
                    ratio = logratio.exp()
                    with torch.no_grad():
                        old_approx_kl = (-logratio).mean()
                        approx_kl = ((ratio - 1) - logratio).mean()
                        clipfracs.append(((ratio - 1.0).abs() > args.clip_coef).float().mean().item())

                    mb_advantages = b_advantages[mb_inds]
                    if args.norm_adv:
                        mb_advantages = (mb_advantages - mb_advantages.mean()) / (mb_advantages.std() + 1e-8)
                    pg_loss1 = -mb_advantages * ratio
                    pg_loss2 = -mb_advantages * torch.clamp(ratio, 1 - args.clip_coef, 1 + args.clip_coef)
                    pg_loss = torch.max(pg_loss1, pg_loss2).mean()

                    if args.clip_vloss:
                        v_loss_unclipped = (newvalue - b_returns[mb_inds]) ** 2
                        v_clipped = b_values[mb_inds] + torch.clamp(newvalue - b_values[mb_inds], -args.clip_coef, args.clip_coef)
                        v_loss = 0.5 * torch.max(v_loss_unclipped, (v_clipped - b_returns[mb_inds]) ** 2).mean()
                    else:
                        v_loss = 0.5 * ((newvalue - b_returns[mb_inds]) ** 2).mean()

                    entropy_loss = entropy.mean()
                    loss = pg_loss - args.ent_coef * entropy_loss + v_loss * args.vf_coef
                    maps = None
                    if args.camal_coef > 0:
                        # Attention of V(s) from this minibatch's forward pass: one extra backward (Grad-CAM's
                        # only to the fc layer). Kept at feature size: the grid masks upsample it implicitly.
                        maps = camal.normalize(camal.attention(features, newvalue, method=args.attention,
                                                               create_graph=args.create_graph, linear=fc_layer))
                        camal_term = camal.camal_loss(maps, b_grid_masks[mb_inds], regularizer=args.regularizer,
                                                      empty_mask=args.empty_mask)
                        loss = loss + args.camal_coef * camal_term
                        camal_losses.append(camal_term.item())
                    if epoch == 0 and start == 0:  # attention on the rollout: the same measurement for every method
                        if maps is None:  # Vanilla: a backward through the heads only
                            maps = camal.normalize(camal.attention(features, newvalue, method=args.attention, create_graph=False,
                                                                   linear=fc_layer))
                        attention_log = attention_stats(maps, storage.minibatch_masks(mb_inds))
                    if not torch.isfinite(loss):
                        kept = f"its last good checkpoint (iteration {last_checkpoint}) stays in {run_dir}" \
                            if last_checkpoint else "no checkpoint had been written yet"
                        raise ConfigError(f"the loss became {loss.item()} in iteration {iteration} (epoch {epoch + 1}); "
                                          f"the run stops before that update, {kept}; lower --learning-rate or "
                                          f"--camal-coef and start a new run")

                    optimizer.zero_grad()
                    loss.backward()
                    nn.utils.clip_grad_norm_(agent.parameters(), args.max_grad_norm)
                    optimizer.step()

                if args.target_kl is not None and approx_kl > args.target_kl:
                    break
            storage.carry_over()
            update_end = time.perf_counter()

            # ---- logging ----
            y_pred, y_true = b_values.cpu().numpy(), b_returns.cpu().numpy()
            var_y = np.var(y_true)
            explained_var = np.nan if var_y == 0 else 1 - np.var(y_true - y_pred) / var_y
            train_seconds = progress["train_time_s"] + time.time() - session_start - session_eval_seconds
            sps = int(global_step / max(train_seconds, 1e-9))
            log_scalars(writer, global_step, {
                Tag.LEARNING_RATE: optimizer.param_groups[0]["lr"], Tag.SPS: sps,
                Tag.ROLLOUT_SECONDS: update_start - rollout_start,  # env steps + the policy's actions
                Tag.UPDATE_SECONDS: update_end - update_start,  # GAE + PPO (+ CAMAL) epochs
                Tag.VALUE_LOSS: v_loss.item(), Tag.POLICY_LOSS: pg_loss.item(), Tag.ENTROPY: entropy_loss.item(),
                Tag.OLD_APPROX_KL: old_approx_kl.item(), Tag.APPROX_KL: approx_kl.item(),
                Tag.CLIPFRAC: np.mean(clipfracs), Tag.EXPLAINED_VARIANCE: explained_var,
                Tag.CAMAL_LOSS: np.mean(camal_losses) if camal_losses else 0.0, **attention_log,
            })
            warn_if_attention_died(args, progress, attention_log, iteration, global_step)

            # ---- evaluation ----
            last_iteration = iteration == args.num_iterations
            if eval_envs is not None and (last_iteration or (next_eval_step is not None and global_step >= next_eval_step)):
                eval_start = time.time()
                run_evaluation(args, agent, eval_envs, device, writer, progress, global_step)
                while next_eval_step is not None and next_eval_step <= global_step:
                    next_eval_step += args.eval_interval
                session_eval_seconds += time.time() - eval_start

            # ---- checkpoint ----
            progress.update(iteration=iteration, global_step=global_step, recent_returns=list(recent_returns))
            if last_iteration or iteration % args.checkpoint_interval == 0:
                writer.flush()
                runs.save_checkpoint(run_dir, agent=agent, optimizer=optimizer, args=asdict(args), spec=spec, envs=envs,
                                     storage=storage, next_done=torch.from_numpy(next_done), **{
                    **progress, "train_time_s": progress["train_time_s"] + time.time() - session_start - session_eval_seconds,
                    "eval_time_s": progress["eval_time_s"] + session_eval_seconds})
                last_checkpoint = iteration
            bar.update(global_step - bar.n)
            bar.set_postfix(sps=sps, ret=f"{np.mean(recent_returns):.1f}" if recent_returns else "-",
                            iou="-" if attention_log[Tag.IOU] is None else f"{attention_log[Tag.IOU]:.2f}")
    except KeyboardInterrupt as interruption:
        if (run_dir / runs.CHECKPOINT).exists() and last_checkpoint < iteration:  # stopped right after a save
            try:
                last_checkpoint = int(runs.load_checkpoint(run_dir)["iteration"])
            except (RunFolderError, KeyError):
                pass
        where = f"{run_dir} stopped in iteration {iteration} of {args.num_iterations}"
        if last_checkpoint:
            raise Interrupted(f"{where}; its last checkpoint is iteration {last_checkpoint}; continue with: "
                              f"camal-train --resume {run_dir}", getattr(interruption, "signum", 2)) from None
        raise Interrupted(f"{where}, before its first checkpoint; delete the folder and start again",
                          getattr(interruption, "signum", 2)) from None
    finally:
        bar.close()

    train_time = progress["train_time_s"] + time.time() - session_start - session_eval_seconds
    summary = runs.make_summary(asdict(args), method=args.method, spec=spec, global_step=global_step,
                                last_eval=progress["last_eval"], recent_returns=recent_returns,
                                dead_attention_step=progress["dead_attention_step"], train_time=train_time,
                                eval_time=progress["eval_time_s"] + session_eval_seconds, device=str(device),
                                env_workers=envs.workers, env_groups=len(env_groups))
    runs.save_json(summary, run_dir / runs.SUMMARY)
    return summary


def warn_if_attention_died(args: Args, progress: dict, attention_log: dict, iteration: int, global_step: int) -> None:
    """An all-zero ReLU'd map has no gradient: the CAMAL term then silently does nothing. Say so once."""
    zero_map_fraction = attention_log[Tag.ZERO_MAP_FRACTION]
    if args.camal_coef > 0 and zero_map_fraction > 0.9 and progress["dead_attention_step"] is None:
        progress["dead_attention_step"] = global_step
        tqdm.write(f"camal-train: warning: {args.attention} of V(s) is all zero on {zero_map_fraction:.0%} of frames "
                   f"(iteration {iteration}); the CAMAL term gets no gradient from them, so this run is Vanilla PPO "
                   f"while it lasts. LayerCAM (--attention layercam) did not die in our measurements.", file=sys.stderr)


def run_evaluation(args: Args, agent: Agent, eval_envs: vector.DoomVector, device: torch.device,
                   writer: SummaryWriter, progress: dict, global_step: int) -> None:
    keep = args.eval_image_frames if progress["grid"] is None else 0
    result = evaluate(agent, eval_envs, episodes=args.eval_episodes, frame_stack=args.frame_stack,
                      attention=args.attention, seed=args.seed, device=device, keep_frames=keep)
    if "frames" in result:
        progress["grid"] = tuple(t.cpu() for t in result.pop("frames"))
    progress["last_eval"] = result
    log_scalars(writer, global_step, {Tag.EVAL_RETURN: result["return_mean"], Tag.EVAL_IOU: result["iou_mean"],
                                      Tag.EVAL_ZERO_MAP_FRACTION: result["zero_map_fraction"]})
    if progress["grid"] is not None:
        stacks, masks = (t.to(device) for t in progress["grid"])
        grid = attention_grid(agent, stacks, masks, frame_stack=args.frame_stack, attention=args.attention)
        writer.add_image(Tag.EVAL_IMAGE, grid, global_step, dataformats="HWC")


def cli(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    args = tyro.cli(Args, args=argv)
    summary = run_cli("camal-train", lambda: train(args, given=arguments.given_fields(argv, Args)))
    print(json.dumps({k: v for k, v in summary.items() if k not in ("args", runs.SCENARIO_KEY)}, indent=2))


if __name__ == "__main__":
    cli()
