"""PPO + CAMAL for ViZDoom, CleanRL style: ``camal-train --env basic`` (= ``python -m camal_rl.ppo``).

CleanRL's PPO in named pieces: ``Args``; ``rollout`` fills the storage; ``compute_gae``;
``update``, one minibatch step of CleanRL's loss plus the CAMAL term (``ppo_camal_loss``); and
``train_loop``, which reads top to bottom. The run's lifecycle (resume, the evaluation and
checkpoint schedule, timers, stops) is ``camal_rl.run_state.RunState``; what other commands share
lives in modules made for it: the loss core in ``camal_rl.camal``, the agent in
``camal_rl.agent``, the storage in ``camal_rl.rollout``, the envs in ``camal_rl.doom`` /
``camal_rl.vector``, evaluation in ``camal_rl.evaluation``, the run folder in ``camal_rl.runs``.

The CAMAL term (arXiv:2605.08325, section 3.3): the attention of the critic value V(s) at the last
conv layer (LayerCAM at the CPU default, Grad-CAM with ``--paper-frames``), taken from the
minibatch's own forward pass, normalised, compared with the label-buffer mask at the engine's
screen resolution, and added as ``camal_coef * mean(beta - alpha)``. ``--camal-coef 0`` is
Vanilla PPO and computes no attention in the update.
"""

from __future__ import annotations

import contextlib
import os
import random
import sys
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal, NamedTuple

import numpy as np
import torch
import torch.nn as nn
from torch.distributions.categorical import Categorical
from torch.utils.tensorboard import SummaryWriter
from tqdm import tqdm

from camal_rl import arguments, camal, doom, runs, tracking, vector
from camal_rl.agent import Agent, GraphedForward
from camal_rl.errors import Interrupted, run_cli
from camal_rl.evaluation import EVAL_SEED_OFFSET, attention_grid, attention_stats, evaluate
from camal_rl.guide import ending_text
from camal_rl.rollout import FrameStorage, env_options, pin_host_memory
from camal_rl.run_state import RunState
from camal_rl.runs import Tag


@arguments.remembers_given
@dataclass
class Args:
    """PPO + CAMAL on a ViZDoom scenario (arXiv:2605.08325). The learning hyperparameters and the
    budget come from --recipe: the scenario's neutral recipe (searched with both methods) where it has
    one, else its tuned one, else the paper's Table 8.
    Every value given here wins over the recipe's."""

    env: str = "basic"
    """scenario: a name from envs/ or $CAMAL_ENVS, or the path of a .toml spec"""
    seed: int = 1
    """seed of the envs, the network and the minibatch order (0 to 2**32 - 1)"""
    torch_deterministic: bool = True
    """cudnn.deterministic (reproducible convolutions on a GPU)"""
    cuda: bool = field(default_factory=torch.cuda.is_available)
    """train on the GPU (default: on when one is available)"""
    cuda_graph: bool = False
    """replay the rollout's policy forward from a CUDA graph; with --compile, the update's too (CUDA only)"""
    compile: bool = False
    """torch.compile the update's loss and the rollout's policy forward (equal to eager up to float rounding)"""
    run_dir: str | None = None
    """run folder; default runs/<env>__<method>__<seed>__<time>; it must not hold another run"""
    resume: str | None = None
    """continue the run in this folder from its checkpoint, with its own settings"""
    recipe: str = "default"
    """hyperparameter recipe: default (the scenario's neutral recipe, else tuned, else paper), paper (Table 8), or a name from the scenario's recipes"""  # noqa: E501
    track: bool = False
    """log the run to Weights & Biases too (pip install 'camal-rl[track]'; WANDB_MODE=offline works without a network)"""  # noqa: E501
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
    """attention method of V(s); default: layercam at the CPU frames, where Grad-CAM of V(s) dies, gradcam with --paper-frames (the paper)"""  # noqa: E501
    create_graph: bool = True
    """differentiate through the attention's channel weights (the head above the features)"""
    empty_mask: Literal["skip", "suppress"] = "skip"
    """frames whose mask is empty: skip = no CAMAL term (Eq. 1's alpha is undefined); suppress = add beta"""

    frame_skip: int | None = None
    """engine tics per agent step; default: the recipe's, else the scenario spec's (4 in every bundled spec)"""
    frame_stack: int = 4
    """frames per observation"""
    obs_size: tuple[int, int] = (60, 80)
    """observation height width; 60x80 halves ViZDoom's 120x160 exactly (fastest on CPU)"""
    grayscale: bool = True
    """grey observations (the engine's GRAY8)"""
    resolution: str | None = None
    """ViZDoom screen resolution (= the mask's); default: the spec's (RES_160X120)"""
    paper_frames: bool = False
    """the paper's frames: 240x320 colour from RES_320X240 (not combinable with --obs-size, --grayscale, --resolution)"""  # noqa: E501
    env_workers: int | None = None
    """env worker processes (0 = step the envs in this process); default: 0 on <= 2 cores, else one per env"""
    env_groups: int | None = None
    """envs step in this many groups while the policy acts for the others (2 = double-buffered); default: 2 with workers and a GPU, else 1"""  # noqa: E501
    threads: int = 0
    """torch CPU threads; 0 = all cores on a CPU, the cores the env workers leave with a GPU"""

    eval_interval: int = 100_000
    """evaluate every this many agent steps (0: only at the end)"""
    eval_episodes: int = 10
    """episodes per evaluation, played in parallel envs (0: no evaluation)"""
    eval_image_frames: int = 8
    """evaluation frames drawn with their attention into TensorBoard at each evaluation (0: none)"""
    checkpoint_interval: int = 10
    """checkpoint every this many iterations (and at the end, on a stop, and after --checkpoint-minutes)"""
    checkpoint_minutes: float = 2.0
    """checkpoint after this many minutes of training at the latest (0: by iterations only)"""
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


# ``on_rollout(iteration, rollout)`` is called after each rollout with the stacked observations,
# masks, actions and rewards; scripts measure from it and tests stop runs with it.
RolloutCallback = Callable[[int, dict], None]


# ---------------------------------------------------------------------------------------
# Rollout
# ---------------------------------------------------------------------------------------
class HostRollout:
    """The host side of a rollout: the envs' rewards and done flags stay in numpy until the rollout
    ends, then go to the device in one copy (from pinned memory on a GPU). Row ``t`` of ``dones``
    flags an episode that ended entering step ``t``."""

    def __init__(self, num_steps: int, num_envs: int, reward_dtype, device: torch.device):
        self.rewards = np.zeros((num_steps, num_envs), dtype=reward_dtype)
        self.buffer = torch.zeros((2, num_steps + 1, num_envs), pin_memory=device.type == "cuda")
        self.dones = self.buffer[1].numpy()
        self.num_steps, self.device = num_steps, device

    def to_device(self, args: Args) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(rewards [T, N] as learned from: clipped, scaled; dones [T, N]; the next done [N])."""
        rewards = np.clip(self.rewards, -1.0, 1.0) if args.clip_reward else self.rewards
        self.buffer[0, : self.num_steps] = torch.from_numpy(rewards * args.reward_scale)
        on_device = self.buffer.to(self.device, non_blocking=True)
        return on_device[0, : self.num_steps], on_device[1, : self.num_steps], on_device[1, -1]


def rollout(agent: Agent, envs: vector.DoomVector, storage: FrameStorage, host: HostRollout, groups: list[slice],
            *, policy: Callable | None, episodes_ended: Callable[[int, np.ndarray, np.ndarray], None]):
    """``num_steps`` steps of every env into ``storage``: each group's envs step while the policy acts
    for the next group. Returns the actions, log-probabilities and values, ``[T, N]`` each."""

    def collect(step: int, group: slice) -> None:
        written = envs.step_wait(group, into=storage.host_rows(step + 1))  # in-process envs write straight there
        host.rewards[step, group] = envs.rewards[group]
        done = envs.terminated[group] | envs.truncated[group]
        host.dones[step + 1, group] = done
        storage.put(step + 1, envs.frames, envs.masks, envs.episode_starts, group, written=written)
        if done.any():
            ended = group.start + np.flatnonzero(done)
            episodes_ended(step + 1, envs.finished_returns[ended], envs.finished_lengths[ended])

    outputs = []  # per step and group: (action, log-probability, value)
    with torch.no_grad():
        for step in range(host.num_steps):
            for group in groups:
                if step > 0:
                    collect(step - 1, group)
                action, logprob, value = agent.act(storage.observation(step, group), forward=policy)
                outputs.append((action, logprob, value))
                envs.step_async(action.cpu().numpy(), group)
        for group in groups:
            collect(host.num_steps - 1, group)
    return tuple(stack_steps([out[k] for out in outputs], host.num_steps) for k in range(3))


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


# ---------------------------------------------------------------------------------------
# Update
# ---------------------------------------------------------------------------------------
class Minibatch(NamedTuple):
    obs: torch.Tensor  # uint8 stacks [B, S*C, H, W]
    actions: torch.Tensor
    logprobs: torch.Tensor
    advantages: torch.Tensor
    returns: torch.Tensor
    values: torch.Tensor
    grid_masks: camal.GridMask | None  # the masks pulled back to the feature grid (CAMAL only)


def shuffled_minibatches(args: Args, device: torch.device):
    """Per epoch, the minibatches' flat (step, env) indices: CleanRL's shuffle of one index array,
    drawn when the epoch starts (an early stop draws no more)."""
    order = np.arange(args.batch_size)
    for _ in range(args.update_epochs):
        np.random.shuffle(order)
        yield [torch.as_tensor(order[start : start + args.minibatch_size], device=device)
               for start in range(0, args.batch_size, args.minibatch_size)]


def ppo_camal_loss(agent: Agent, batch: Minibatch, args: Args) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """CleanRL's PPO loss plus the CAMAL term; (the loss, the metrics CleanRL logs and the CAMAL term)."""
    logits, newvalue, features, fc_layer = agent.forward_with_linear(batch.obs)
    probs = Categorical(logits=logits, validate_args=False)
    newlogprob, entropy = probs.log_prob(batch.actions), probs.entropy()
    logratio = newlogprob - batch.logprobs
    ratio = logratio.exp()
    with torch.no_grad():
        old_approx_kl = (-logratio).mean()
        approx_kl = ((ratio - 1) - logratio).mean()
        clipfrac = ((ratio - 1.0).abs() > args.clip_coef).float().mean()

    advantages = batch.advantages
    if args.norm_adv:
        advantages = (advantages - advantages.mean()) / (advantages.std() + 1e-8)
    pg_loss1 = -advantages * ratio
    pg_loss2 = -advantages * torch.clamp(ratio, 1 - args.clip_coef, 1 + args.clip_coef)
    pg_loss = torch.max(pg_loss1, pg_loss2).mean()

    if args.clip_vloss:
        v_loss_unclipped = (newvalue - batch.returns) ** 2
        v_clipped = batch.values + torch.clamp(newvalue - batch.values, -args.clip_coef, args.clip_coef)
        v_loss = 0.5 * torch.max(v_loss_unclipped, (v_clipped - batch.returns) ** 2).mean()
    else:
        v_loss = 0.5 * ((newvalue - batch.returns) ** 2).mean()

    entropy_loss = entropy.mean()
    loss = pg_loss - args.ent_coef * entropy_loss + v_loss * args.vf_coef

    # CAMAL (Eq. 2): the attention of V(s) from this forward pass, against the masks
    camal_term = torch.zeros((), device=loss.device)
    if args.camal_coef > 0:
        maps = camal.normalize(camal.attention(features, newvalue, method=args.attention,
                                               create_graph=args.create_graph, linear=fc_layer))
        camal_term = camal.camal_loss(maps, batch.grid_masks, regularizer=args.regularizer, empty_mask=args.empty_mask)
        loss = loss + args.camal_coef * camal_term

    metrics = {Tag.VALUE_LOSS: v_loss, Tag.POLICY_LOSS: pg_loss, Tag.ENTROPY: entropy_loss,
               Tag.OLD_APPROX_KL: old_approx_kl, Tag.APPROX_KL: approx_kl, Tag.CLIPFRAC: clipfrac,
               Tag.CAMAL_LOSS: camal_term}
    return loss, {tag: value.detach() for tag, value in metrics.items()} | {"loss": loss.detach()}


def update(agent: Agent, optimizer: torch.optim.Optimizer, batch: Minibatch, args: Args,
           loss_fn: Callable = ppo_camal_loss) -> dict[str, torch.Tensor]:
    """One PPO + CAMAL minibatch step; its metrics (0-d tensors: no host sync here)."""
    loss, metrics = loss_fn(agent, batch, args)
    optimizer.zero_grad()
    loss.backward()
    nn.utils.clip_grad_norm_(agent.parameters(), args.max_grad_norm)
    optimizer.step()
    return metrics


def compiled_parts(agent: Agent, args: Args, device: torch.device) -> tuple[Callable | None, Callable]:
    """The rollout's policy forward (None: the agent's own) and the update's loss, as ``--compile``
    and ``--cuda-graph`` ask. With both on a GPU, torch.compile's CUDA graphs replay each; a graph
    overwrites its outputs at its next replay, so what the loop keeps is copied out."""
    graphs = args.cuda_graph and device.type == "cuda"
    if not args.compile:
        return (GraphedForward(agent) if graphs else None), ppo_camal_loss

    def policy_forward(x: torch.Tensor):
        logits, value, _ = agent(x)
        return logits, value

    if not graphs:
        return torch.compile(policy_forward), torch.compile(ppo_camal_loss)
    graphed_policy = torch.compile(policy_forward, mode="reduce-overhead")
    graphed_loss = torch.compile(ppo_camal_loss, mode="reduce-overhead")

    def policy(x: torch.Tensor):
        torch.compiler.cudagraph_mark_step_begin()
        return tuple(output.clone() for output in graphed_policy(x))

    def loss(agent_: Agent, batch: Minibatch, args_: Args):
        torch.compiler.cudagraph_mark_step_begin()
        value, metrics = graphed_loss(agent_, batch, args_)
        return value, {tag: metric.clone() for tag, metric in metrics.items()}

    return policy, loss


def measure_attention(agent: Agent, storage: FrameStorage, indices: torch.Tensor, method: str) -> dict:
    """The attention of V(s) on rollout frames, against their screen-size masks: the same
    measurement for every method (Vanilla too), logged per iteration. Gradients stay on for an
    attention method that needs autograd; the maps are detached."""
    _, value, features, fc_layer = agent.forward_with_linear(storage.minibatch(indices))
    maps = camal.normalize(camal.attention(features, value, method=method, create_graph=False, linear=fc_layer))
    return attention_stats(maps.detach(), storage.minibatch_masks(indices))


def iteration_metrics(metrics: list[dict[str, torch.Tensor]]) -> dict[str, float]:
    """What CleanRL logs of an update: the last minibatch's losses and KLs, the mean clip fraction;
    and the mean CAMAL term."""
    logged = {tag: metrics[-1][tag].item() for tag in (Tag.VALUE_LOSS, Tag.POLICY_LOSS, Tag.ENTROPY,
                                                       Tag.OLD_APPROX_KL, Tag.APPROX_KL)}
    for tag in (Tag.CLIPFRAC, Tag.CAMAL_LOSS):
        logged[tag] = float(np.mean(torch.stack([m[tag] for m in metrics]).tolist()))
    return logged


# ---------------------------------------------------------------------------------------
# Setup
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


@dataclass
class Run:
    """What one training run works with, made by ``train``."""

    args: Args
    run_dir: Path
    spec: doom.ScenarioSpec
    device: torch.device
    envs: vector.DoomVector
    eval_envs: vector.DoomVector | None
    agent: Agent
    optimizer: torch.optim.Optimizer
    storage: FrameStorage
    writer: SummaryWriter
    groups: list[slice]

    def save_checkpoint(self, state: RunState, next_done: np.ndarray) -> None:
        self.writer.flush()
        runs.save_checkpoint(self.run_dir, agent=self.agent, optimizer=self.optimizer, args=asdict(self.args),
                             spec=self.spec, envs=self.envs, storage=self.storage,
                             next_done=torch.from_numpy(next_done), **state.saved())

    def summary(self, state: RunState, *, stopped: bool = False) -> dict:
        return runs.make_summary(asdict(self.args), method=self.args.method, spec=self.spec,
                                 global_step=state.global_step, last_eval=state.last_eval,
                                 recent_returns=state.recent_returns, dead_attention_step=state.dead_attention_step,
                                 train_time=state.train_seconds(), eval_time=state.eval_seconds(),
                                 device=str(self.device), env_workers=self.envs.workers,
                                 env_groups=len(self.groups), stopped=stopped)


def train(args: Args, *, on_rollout: RolloutCallback | None = None,
          ending: Callable[[dict, Path], None] | None = None) -> dict:
    """Run (or resume) one training run; returns its summary. ``ending(summary, run_dir)`` is told how
    the run ended, finished or stopped (``summary["stopped"]``); the command line prints it."""
    args, run_dir, checkpoint = arguments.start_or_resume(args)
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

    with runs.run_folder(run_dir, fresh=checkpoint is None), contextlib.ExitStack() as closing:
        if checkpoint is not None:
            checkpoint = runs.reload_if_moved_on(run_dir, checkpoint)
        # Env workers are forked: start them before the learner touches CUDA.
        envs = closing.enter_context(vector.DoomVector(spec, num_envs=args.num_envs, seed=args.seed, workers=workers,
                                                       **env_options(args)))
        eval_envs = None
        if args.eval_episodes:
            eval_envs = closing.enter_context(vector.DoomVector(
                spec, num_envs=min(args.eval_episodes, args.num_envs), seed=args.seed + EVAL_SEED_OFFSET,
                workers=min(workers, args.eval_episodes), **env_options(args)))
        agent = Agent((args.frame_stack * envs.frame_shape[0], *envs.frame_shape[1:]), envs.num_actions).to(device)
        # fused: one pass over all parameters (docs/performance.md, "Adam")
        optimizer = torch.optim.Adam(agent.parameters(), lr=args.learning_rate, eps=1e-5, fused=True)
        storage = FrameStorage(args.num_steps, args.num_envs, args.frame_stack, envs.frame_shape, envs.mask_shape,
                               device)
        if device.type == "cuda":
            pinned = pin_host_memory(envs.buffers.memory)
            storage.host_registered = pinned is not None
            if pinned is not None:
                closing.callback(torch.cuda.cudart().cudaHostUnregister, pinned)
        schedule = dict(total_iterations=args.num_iterations, batch_size=args.batch_size,
                        eval_interval=args.eval_interval, checkpoint_interval=args.checkpoint_interval,
                        checkpoint_minutes=args.checkpoint_minutes)
        if checkpoint is None:
            state = RunState(**schedule)
            envs.reset()
            storage.put(0, envs.frames, envs.masks, envs.episode_starts)
            next_done = np.zeros(args.num_envs, dtype=np.float32)
        else:
            runs.restore_checkpoint(checkpoint, run_dir, agent=agent, optimizer=optimizer, envs=envs, storage=storage)
            state = RunState.restored(checkpoint, **schedule)
            next_done = checkpoint["next_done"].cpu().numpy().astype(np.float32)
            tqdm.write(f"camal-train: resuming {run_dir} at iteration {state.iteration + 1} "
                       f"(agent step {state.global_step:,})", file=sys.stderr)
        writer = tracking.open_writer(run_dir, asdict(args), fresh=checkpoint is None, track=args.track,
                                      project=args.wandb_project_name, entity=args.wandb_entity,
                                      group=args.wandb_group)
        closing.callback(tracking.close_writer, writer)
        groups = envs.groups(env_group_count(args, device, envs.workers))
        run = Run(args, run_dir, spec, device, envs, eval_envs, agent, optimizer, storage, writer, groups)
        try:
            train_loop(run, state, next_done, on_rollout)
        except Interrupted:
            if ending is not None and state.last_checkpoint:
                ending(run.summary(state, stopped=True), run_dir)
            raise
        summary = run.summary(state)
        runs.save_json(summary, run_dir / runs.SUMMARY)
    if ending is not None:
        ending(summary, run_dir)
    return summary


# ---------------------------------------------------------------------------------------
# The loop
# ---------------------------------------------------------------------------------------
def train_loop(run: Run, state: RunState, next_done: np.ndarray, on_rollout: RolloutCallback | None) -> None:
    args, agent, optimizer, storage, envs, writer = (run.args, run.agent, run.optimizer, run.storage, run.envs,
                                                     run.writer)
    host = HostRollout(args.num_steps, args.num_envs, envs.rewards.dtype, run.device)
    policy, loss_fn = compiled_parts(agent, args, run.device)

    def episodes_ended(step: int, returns: np.ndarray, lengths: np.ndarray) -> None:
        state.episodes_ended(returns)
        tracking.log_episodes(writer, state.global_step + step * args.num_envs, returns, lengths)

    with state.stoppable(run.run_dir), state.progress_bar(f"{run.spec.name}/{args.method}/{args.seed}", args.progress):
        for iteration in state.iterations():
            if args.anneal_lr:
                optimizer.param_groups[0]["lr"] = (1.0 - (iteration - 1.0) / args.num_iterations) * args.learning_rate

            # ---- rollout ----
            rollout_start = state.clock()
            host.dones[0] = next_done
            actions, logprobs, values = rollout(agent, envs, storage, host, run.groups, policy=policy,
                                                episodes_ended=episodes_ended)
            rewards, dones, next_done_device = host.to_device(args)
            next_done = host.dones[-1].copy()
            update_start = state.clock()
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
            metrics = []
            for epoch, minibatches in enumerate(shuffled_minibatches(args, run.device)):
                if epoch == 0:  # attention on the rollout, before it is trained on
                    attention_log = measure_attention(agent, storage, minibatches[0], args.attention)
                for mb in minibatches:
                    batch = Minibatch(storage.minibatch(mb), b_actions[mb], b_logprobs[mb], b_advantages[mb],
                                      b_returns[mb], b_values[mb], None if b_grid_masks is None else b_grid_masks[mb])
                    metrics.append(update(agent, optimizer, batch, args, loss_fn))
                    state.stop_if_not_finite([metrics[-1]["loss"].item()], iteration, epoch + 1, run.run_dir)
                if args.target_kl is not None and metrics[-1][Tag.APPROX_KL] > args.target_kl:
                    break
            storage.carry_over()
            update_end = state.clock()
            state.finish_iteration(iteration, state.global_step + args.batch_size)

            # ---- logging ----
            log_iteration(run, state, metrics, attention_log, b_values, b_returns,
                          rollout_seconds=update_start - rollout_start, update_seconds=update_end - update_start)
            warn_if_attention_died(args, state, attention_log, iteration)

            # ---- evaluation and checkpoint ----
            if run.eval_envs is not None and state.evaluation_due(iteration):
                with state.evaluating():
                    run_evaluation(run, state)
            if state.checkpoint_due(iteration):
                run.save_checkpoint(state, next_done)
            state.show_progress(attention_log[Tag.IOU])
            if state.stop_requested():
                break


# ---------------------------------------------------------------------------------------
# Logging and evaluation
# ---------------------------------------------------------------------------------------
def log_scalars(writer: SummaryWriter, step: int, values: dict) -> None:
    for tag, value in values.items():
        if value is not None and np.isfinite(value):
            writer.add_scalar(tag, value, step)


def log_iteration(run: Run, state: RunState, metrics: list[dict], attention_log: dict, b_values: torch.Tensor,
                  b_returns: torch.Tensor, *, rollout_seconds: float, update_seconds: float) -> None:
    y_pred, y_true = b_values.cpu().numpy(), b_returns.cpu().numpy()
    var_y = np.var(y_true)
    explained_var = np.nan if var_y == 0 else 1 - np.var(y_true - y_pred) / var_y
    log_scalars(run.writer, state.global_step, {
        Tag.LEARNING_RATE: run.optimizer.param_groups[0]["lr"], Tag.SPS: state.steps_per_second(),
        Tag.ROLLOUT_SECONDS: rollout_seconds,  # env steps + the policy's actions
        Tag.UPDATE_SECONDS: update_seconds,  # GAE + PPO (+ CAMAL) epochs
        **iteration_metrics(metrics), Tag.EXPLAINED_VARIANCE: explained_var, **attention_log,
    })


def warn_if_attention_died(args: Args, state: RunState, attention_log: dict, iteration: int) -> None:
    """An all-zero ReLU'd map has no gradient: the CAMAL term then silently does nothing. Say so once."""
    zero_map_fraction = attention_log[Tag.ZERO_MAP_FRACTION]
    if args.camal_coef > 0 and zero_map_fraction > 0.9 and state.dead_attention_step is None:
        state.dead_attention_step = state.global_step
        tqdm.write(f"camal-train: warning: {args.attention} of V(s) is all zero on {zero_map_fraction:.0%} of frames "
                   f"(iteration {iteration}); the CAMAL term gets no gradient from them, so this run is Vanilla PPO "
                   f"while it lasts. LayerCAM (--attention layercam) did not die in our measurements.", file=sys.stderr)


def run_evaluation(run: Run, state: RunState) -> None:
    args = run.args
    keep = args.eval_image_frames if state.grid is None else 0
    result = evaluate(run.agent, run.eval_envs, episodes=args.eval_episodes, frame_stack=args.frame_stack,
                      attention=args.attention, seed=args.seed, device=run.device, keep_frames=keep)
    if "frames" in result:
        state.grid = tuple(t.cpu() for t in result.pop("frames"))
    state.last_eval = result
    log_scalars(run.writer, state.global_step, {Tag.EVAL_RETURN: result["return_mean"],
                                                Tag.EVAL_IOU: result["iou_mean"],
                                                Tag.EVAL_ZERO_MAP_FRACTION: result["zero_map_fraction"]})
    if state.grid is not None:
        stacks, masks = (t.to(run.device) for t in state.grid)
        grid = attention_grid(run.agent, stacks, masks, frame_stack=args.frame_stack, attention=args.attention)
        run.writer.add_image(Tag.EVAL_IMAGE, grid, state.global_step, dataformats="HWC")


def cli(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    run_cli("camal-train", lambda: train(arguments.parse(Args, argv), ending=print_ending))


def print_ending(summary: dict, run_dir: Path) -> None:
    """What a person reads when a run ends or stops: how good the agent is, and what to run next
    (``summary.json`` holds the same numbers for scripts)."""
    tqdm.write(ending_text(summary, run_dir))


if __name__ == "__main__":
    cli()
