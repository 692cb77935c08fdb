"""PPO + CAMAL for ViZDoom, CleanRL style: ``python -m camal_rl.ppo --env basic``.

One file holds one training run: arguments, agent, rollout, PPO update with the CAMAL term,
evaluation, logging, checkpoints. The loss core lives in ``camal_rl.camal`` and the
environment in ``camal_rl.doom``.

The CAMAL term (paper section 3.3): Grad-CAM of the critic value V(s) at the last conv layer,
taken from the minibatch's own forward pass, normalised, resized to the label-buffer mask and
added as ``camal_coef * mean(beta - alpha)``. ``--camal-coef 0`` is Vanilla PPO and computes no
attention during the update.
"""

from __future__ import annotations

import json
import os
import random
import sys
import time
from collections import deque
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Literal, Optional

import numpy as np
import torch
import torch.nn as nn
import tyro
from torch.distributions.categorical import Categorical
from torch.utils.tensorboard import SummaryWriter
from tqdm import tqdm

from camal_rl import camal, doom
from camal_rl.files import atomic_path, write_text_atomic

CHECKPOINT = "checkpoint.pt"
SUMMARY = "summary.json"


@dataclass
class Args:
    """PPO + CAMAL on a ViZDoom scenario. Defaults are the paper's Table 8 except where noted."""

    env: str = "basic"
    """scenario spec name (see camal_rl/envs) or path to a .toml spec"""
    seed: int = 1
    torch_deterministic: bool = True
    cuda: bool = field(default_factory=torch.cuda.is_available)
    """train on the GPU (default: on when one is available)"""
    run_dir: Optional[str] = None
    """run folder; default runs/<env>__<method>__<seed>__<time>"""
    resume: Optional[str] = None
    """continue the run in this folder from its checkpoint, to the same total"""

    total_timesteps: int = 10_000_000
    learning_rate: float = 2.5e-4
    num_envs: int = 8
    num_steps: int = 128
    anneal_lr: bool = True
    gamma: float = 0.99
    gae_lambda: float = 0.95
    num_minibatches: int = 4
    update_epochs: int = 4
    norm_adv: bool = True
    clip_coef: float = 0.1
    clip_vloss: bool = True
    ent_coef: float = 0.01
    vf_coef: float = 0.5
    max_grad_norm: float = 0.5
    target_kl: Optional[float] = None

    camal_coef: float = 1.0
    """lambda of Eq. 2; 0 = Vanilla PPO"""
    regularizer: Literal["camal", "suppress"] = "camal"
    """camal = mean(beta - alpha); suppress = mean(beta), the suppress-only baseline"""
    attention: Literal["gradcam", "signed-gradcam", "gradcam++", "layercam"] = "gradcam"
    """attention method of camal_rl.camal (signed-gradcam: no ReLU, never all-zero; see README)"""
    create_graph: bool = True
    """differentiate through the Grad-CAM channel weights (the head above the features)"""

    frame_skip: int = 4
    frame_stack: int = 4
    clip_reward: bool = True
    obs_size: tuple[int, int] = (60, 80)
    """observation height width; 60x80 halves ViZDoom's 120x160 exactly (fastest on CPU, see README)"""
    grayscale: bool = True
    resolution: Optional[str] = None
    """ViZDoom screen resolution; default: the spec's (RES_160X120)"""
    paper_frames: bool = False
    """the paper's setting: ViZDoom's native 240x320 colour frames (RES_320X240)"""
    async_envs: bool = False
    """one process per env (slower than in-process envs on 2 cores; see README)"""
    threads: int = 0
    """torch CPU threads; 0 = number of cores"""

    eval_interval: int = 100_000
    """evaluate every this many agent steps (0: only at the end)"""
    eval_episodes: int = 10
    """episodes per evaluation (0: no evaluation)"""
    checkpoint_interval: int = 10
    """checkpoint every this many iterations (and at the end)"""
    attention_sample: int = 256
    """rollout frames used per iteration to log attention/alpha, beta, iou"""
    progress: bool = True

    @property
    def method(self) -> str:
        return "vanilla" if self.camal_coef == 0 else self.regularizer

    @property
    def batch_size(self) -> int:
        return self.num_envs * self.num_steps

    @property
    def minibatch_size(self) -> int:
        return self.batch_size // self.num_minibatches

    @property
    def num_iterations(self) -> int:
        return max(1, self.total_timesteps // self.batch_size)


class TrainingError(Exception):
    """Bad input or state; printed as one line by the CLI."""


def validate(args: Args) -> None:
    doom.load_spec(args.env)  # unknown env -> SpecError listing the available ones
    if args.num_envs < 1 or args.num_steps < 1 or args.num_minibatches < 1:
        raise TrainingError("--num-envs, --num-steps and --num-minibatches must be positive")
    if args.batch_size % args.num_minibatches:
        raise TrainingError(
            f"num_envs x num_steps = {args.batch_size} is not divisible by --num-minibatches "
            f"{args.num_minibatches}; pick values whose product it divides"
        )
    if args.total_timesteps < args.batch_size:
        raise TrainingError(
            f"--total-timesteps {args.total_timesteps} is below one rollout "
            f"(num_envs x num_steps = {args.batch_size})"
        )
    if args.camal_coef < 0:
        raise TrainingError("--camal-coef must be >= 0 (0 = Vanilla)")


# ---------------------------------------------------------------------------------------
# Agent: CleanRL's Nature CNN trunk with actor and critic heads
# ---------------------------------------------------------------------------------------
def layer_init(layer, std=np.sqrt(2), bias_const=0.0):
    torch.nn.init.orthogonal_(layer.weight, std)
    torch.nn.init.constant_(layer.bias, bias_const)
    return layer


class Agent(nn.Module):
    def __init__(self, obs_shape: tuple[int, int, int], num_actions: int):
        super().__init__()
        channels, height, width = obs_shape
        self.conv = nn.Sequential(
            layer_init(nn.Conv2d(channels, 32, 8, stride=4)),
            nn.ReLU(),
            layer_init(nn.Conv2d(32, 64, 4, stride=2)),
            nn.ReLU(),
            layer_init(nn.Conv2d(64, 64, 3, stride=1)),
            nn.ReLU(),  # Grad-CAM features: the last conv layer's activations
        )
        with torch.no_grad():
            flat = self.conv(torch.zeros(1, channels, height, width)).numel()
        self.fc = nn.Sequential(nn.Flatten(), layer_init(nn.Linear(flat, 512)), nn.ReLU())
        self.actor = layer_init(nn.Linear(512, num_actions), std=0.01)
        self.critic = layer_init(nn.Linear(512, 1), std=1)
        self.obs_shape = tuple(obs_shape)
        self.num_actions = num_actions
        # channels-last convolutions are ~1.5-2x faster on CPU (oneDNN) and fine on CUDA
        self.to(memory_format=torch.channels_last)

    def forward(self, x: torch.Tensor):
        """uint8 frames -> (action logits, value [B], last-conv features [B, 64, h, w])."""
        features = self.conv((x.float() / 255.0).contiguous(memory_format=torch.channels_last))
        hidden = self.fc(features)
        return self.actor(hidden), self.critic(hidden).squeeze(-1), features

    def get_value(self, x):
        return self(x)[1]

    def get_action_and_value(self, x, action=None):
        logits, value, features = self(x)
        probs = Categorical(logits=logits)
        if action is None:
            action = probs.sample()
        return action, probs.log_prob(action), probs.entropy(), value, features


def _forward_with_attention(agent: Agent, obs: torch.Tensor, method: str):
    """One forward: (logits, V(s), normalised Grad-CAM of V(s) at observation size), all detached.

    ``autograd.grad`` leaves parameter ``.grad`` untouched, so this never affects training."""
    with torch.enable_grad():
        logits, value, features = agent(obs)
        maps = camal.attention_map(features, value, tuple(obs.shape[-2:]), method=method, create_graph=False)
    return logits.detach(), value.detach(), maps.detach()


def value_attention(agent: Agent, obs: torch.Tensor, *, method: str = "gradcam") -> torch.Tensor:
    """Normalised Grad-CAM of V(s) at observation size ``[B, H, W]``."""
    return _forward_with_attention(agent, obs, method)[2]


def act_with_attention(agent: Agent, obs: torch.Tensor, *, method: str = "gradcam"):
    """Sampled action, V(s) and its Grad-CAM from a single forward pass (evaluation, videos)."""
    logits, value, maps = _forward_with_attention(agent, obs, method)
    return Categorical(logits=logits).sample(), value, maps


# ---------------------------------------------------------------------------------------
# Environments, seeding, run folder
# ---------------------------------------------------------------------------------------
def env_kwargs(args: Args) -> dict:
    kwargs = dict(
        frame_skip=args.frame_skip,
        frame_stack=args.frame_stack,
        obs_size=tuple(args.obs_size),
        grayscale=args.grayscale,
        clip_reward=False,  # the trainer clips, so that episodic returns stay unclipped
        resolution=args.resolution,
    )
    if args.paper_frames:
        kwargs.update(obs_size=(240, 320), grayscale=False, resolution="RES_320X240")
    return kwargs


def seed_everything(seed: int, deterministic: bool) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.backends.cudnn.deterministic = deterministic


def rng_state() -> dict:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def atomic_save(obj, path: Path) -> None:
    """JSON or a torch file, written beside the target and renamed (see ``camal_rl.files``)."""
    if path.suffix == ".json":
        write_text_atomic(path, json.dumps(obj, indent=2, default=str))
        return
    with atomic_path(path) as partial:
        torch.save(obj, partial)


def load_checkpoint(run_dir: Path) -> dict:
    path = run_dir / CHECKPOINT
    if not path.is_file():
        raise TrainingError(f"no checkpoint at {path}; --resume needs a run folder written by camal-train")
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except Exception as error:  # torch raises many types for a damaged file
        raise TrainingError(f"checkpoint {path} is corrupt or unreadable ({type(error).__name__}); "
                            f"delete it to start over") from None


def restore_agent(agent: Agent, checkpoint: dict, env_name: str, source: Path) -> None:
    if checkpoint.get("env") != env_name:
        raise TrainingError(f"checkpoint {source} is for env {checkpoint.get('env')!r}, not {env_name!r}")
    if tuple(checkpoint.get("obs_shape", ())) != agent.obs_shape or checkpoint.get("num_actions") != agent.num_actions:
        raise TrainingError(
            f"checkpoint {source} is for a network with observations {checkpoint.get('obs_shape')} and "
            f"{checkpoint.get('num_actions')} actions, this run has {agent.obs_shape} and {agent.num_actions}"
        )
    try:
        agent.load_state_dict(checkpoint["agent"])
    except (RuntimeError, KeyError) as error:
        raise TrainingError(f"checkpoint {source} does not fit this network: {str(error).splitlines()[0]}") from None


def default_run_dir(args: Args) -> Path:
    return Path("runs") / f"{Path(args.env).stem}__{args.method}__{args.seed}__{int(time.time())}"


# ---------------------------------------------------------------------------------------
# Evaluation: return and attention IoU of Grad-CAM of V(s) vs the label mask
# ---------------------------------------------------------------------------------------
def evaluate(agent: Agent, args: Args, device: torch.device, *, episodes: int, seed: int) -> dict:
    env = doom.make_env(args.env, seed=seed, **env_kwargs(args))
    returns, ious, skipped = [], [], 0
    try:
        for episode in range(episodes):
            obs, _ = env.reset(seed=seed + episode)
            done = False
            while not done:
                image = torch.as_tensor(obs["image"][None], device=device)
                mask = torch.as_tensor(obs["mask"][None], device=device)
                action, _, maps = act_with_attention(agent, image, method=args.attention)
                if mask.any():
                    ious.append(camal.attention_iou(maps, mask).item())
                else:
                    skipped += 1
                obs, _, terminated, truncated, info = env.step(int(action))
                done = terminated or truncated
            returns.append(info["episode"]["r"])
    finally:
        env.close()
    return {
        "return_mean": float(np.mean(returns)),
        "return_std": float(np.std(returns)),
        "iou_mean": float(np.mean(ious)) if ious else float("nan"),
        "iou_frames": len(ious),
        "iou_skipped_empty_mask": skipped,
    }


# ---------------------------------------------------------------------------------------
# Training
# ---------------------------------------------------------------------------------------
def train(args: Args, *, on_rollout: Optional[Callable[[int, dict], None]] = None) -> dict:
    """Run (or resume) one training run; returns the summary. ``on_rollout`` is a test hook."""
    checkpoint = None
    if args.resume:
        run_dir = Path(args.resume)
        checkpoint = load_checkpoint(run_dir)
        saved = dict(checkpoint["args"])
        if args.env != Args.env and args.env != saved["env"]:
            raise TrainingError(f"checkpoint {run_dir / CHECKPOINT} is for env {saved['env']!r}, not {args.env!r}")
        args = Args(**{**saved, "resume": str(run_dir), "run_dir": str(run_dir),
                       "cuda": args.cuda, "progress": args.progress})
    validate(args)
    device = torch.device("cuda" if args.cuda and torch.cuda.is_available() else "cpu")
    torch.set_num_threads(args.threads or os.cpu_count() or 1)
    seed_everything(args.seed, args.torch_deterministic)

    envs = doom.make_vector_env(
        args.env, num_envs=args.num_envs, seed=args.seed, asynchronous=args.async_envs, **env_kwargs(args)
    )
    obs_space = envs.single_observation_space
    agent = Agent(obs_space["image"].shape, int(envs.single_action_space.n)).to(device)
    optimizer = torch.optim.Adam(agent.parameters(), lr=args.learning_rate, eps=1e-5)
    start_iteration, global_step, elapsed_before = 1, 0, 0.0
    recent_returns: deque = deque(maxlen=20)
    last_eval: dict = {}
    if checkpoint is not None:
        try:
            restore_agent(agent, checkpoint, args.env, run_dir / CHECKPOINT)
            optimizer.load_state_dict(checkpoint["optimizer"])
        except Exception:
            envs.close()
            raise
        start_iteration = checkpoint["iteration"] + 1
        global_step = checkpoint["global_step"]
        elapsed_before = checkpoint.get("wall_time_s", 0.0)
        recent_returns.extend(checkpoint.get("recent_returns", []))
        last_eval = checkpoint.get("last_eval", {})
        set_rng_state(checkpoint["rng"])
    else:
        run_dir = Path(args.run_dir) if args.run_dir else default_run_dir(args)
        if (run_dir / CHECKPOINT).exists():
            envs.close()
            raise TrainingError(f"{run_dir} already holds a run; use --resume {run_dir} or another --run-dir")
    run_dir.mkdir(parents=True, exist_ok=True)
    args.run_dir = str(run_dir)
    writer = SummaryWriter(str(run_dir))
    if checkpoint is None:
        writer.add_text("hyperparameters", "|param|value|\n|-|-|\n" + "\n".join(f"|{k}|{v}|" for k, v in asdict(args).items()))

    # Rollout storage; masks sit beside their observations.
    image_shape, mask_shape = obs_space["image"].shape, obs_space["mask"].shape
    obs = torch.zeros((args.num_steps, args.num_envs) + image_shape, dtype=torch.uint8, device=device)
    masks = torch.zeros((args.num_steps, args.num_envs) + mask_shape, dtype=torch.uint8, device=device)
    actions = torch.zeros((args.num_steps, args.num_envs), dtype=torch.long, device=device)
    logprobs = torch.zeros((args.num_steps, args.num_envs), device=device)
    rewards = torch.zeros((args.num_steps, args.num_envs), device=device)
    dones = torch.zeros((args.num_steps, args.num_envs), device=device)
    values = torch.zeros((args.num_steps, args.num_envs), device=device)

    # A resumed run starts fresh episodes: seed them apart from the first start.
    next_obs, _ = envs.reset(seed=args.seed + 1000 * (start_iteration - 1))
    next_image = torch.as_tensor(next_obs["image"], device=device)
    next_mask = torch.as_tensor(next_obs["mask"], device=device)
    next_done = torch.zeros(args.num_envs, device=device)
    running_returns = np.zeros(args.num_envs)
    running_lengths = np.zeros(args.num_envs, dtype=int)
    next_eval_step = (global_step // args.eval_interval + 1) * args.eval_interval if args.eval_interval else None

    start_time = time.time()
    start_step = global_step
    eval_seconds = 0.0  # excluded from SPS: it measures training speed
    warned_dead_maps = False
    bar = tqdm(total=args.total_timesteps, initial=global_step, unit="step", disable=not args.progress,
               dynamic_ncols=True, desc=f"{Path(args.env).stem}/{args.method}/{args.seed}")
    try:
        for iteration in range(start_iteration, args.num_iterations + 1):
            if args.anneal_lr:
                frac = 1.0 - (iteration - 1.0) / args.num_iterations
                optimizer.param_groups[0]["lr"] = frac * args.learning_rate

            # ---- rollout ------------------------------------------------------------------
            for step in range(args.num_steps):
                global_step += args.num_envs
                obs[step], masks[step], dones[step] = next_image, next_mask, next_done
                with torch.no_grad():
                    action, logprob, _, value, _ = agent.get_action_and_value(next_image)
                values[step], actions[step], logprobs[step] = value, action, logprob
                next_obs, raw_reward, terminations, truncations, _ = envs.step(action.cpu().numpy())
                reward = np.clip(raw_reward, -1.0, 1.0) if args.clip_reward else raw_reward
                rewards[step] = torch.as_tensor(reward, dtype=torch.float32, device=device)
                done = np.logical_or(terminations, truncations)
                next_image = torch.as_tensor(next_obs["image"], device=device)
                next_mask = torch.as_tensor(next_obs["mask"], device=device)
                next_done = torch.as_tensor(done, dtype=torch.float32, device=device)
                running_returns += raw_reward
                running_lengths += 1
                for i in np.flatnonzero(done):
                    recent_returns.append(float(running_returns[i]))
                    writer.add_scalar("charts/episodic_return", running_returns[i], global_step)
                    writer.add_scalar("charts/episodic_length", running_lengths[i], global_step)
                    running_returns[i], running_lengths[i] = 0.0, 0
            if on_rollout is not None:
                on_rollout(iteration, {"obs": obs, "masks": masks, "actions": actions, "rewards": rewards})

            # ---- GAE ----------------------------------------------------------------------
            with torch.no_grad():
                next_value = agent.get_value(next_image)
                advantages = torch.zeros_like(rewards)
                lastgaelam = 0
                for t in reversed(range(args.num_steps)):
                    nextnonterminal = 1.0 - (next_done if t == args.num_steps - 1 else dones[t + 1])
                    nextvalues = next_value if t == args.num_steps - 1 else values[t + 1]
                    delta = rewards[t] + args.gamma * nextvalues * nextnonterminal - values[t]
                    advantages[t] = lastgaelam = delta + args.gamma * args.gae_lambda * nextnonterminal * lastgaelam
                returns = advantages + values

            b_obs = obs.reshape((-1,) + image_shape)
            b_masks = masks.reshape((-1,) + mask_shape)
            b_logprobs, b_actions = logprobs.reshape(-1), actions.reshape(-1)
            b_advantages, b_returns, b_values = advantages.reshape(-1), returns.reshape(-1), values.reshape(-1)

            # ---- attention on the rollout, the same measurement for every method ---------
            sample = torch.randperm(args.batch_size, device=device)[: args.attention_sample]
            rollout_maps = value_attention(agent, b_obs[sample], method=args.attention)
            alpha, beta = camal.alpha_beta(rollout_maps, b_masks[sample])
            rollout_iou = camal.attention_iou(rollout_maps, b_masks[sample])
            # An all-zero ReLU'd map has no gradient: the CAMAL term then silently does nothing.
            zero_map_fraction = (rollout_maps.flatten(1).amax(1) == 0).float().mean().item()
            if args.camal_coef > 0 and zero_map_fraction > 0.9 and not warned_dead_maps:
                warned_dead_maps = True
                tqdm.write(f"camal-train: warning: {args.attention} of V(s) is all zero on {zero_map_fraction:.0%} of "
                           f"frames (iteration {iteration}); the CAMAL term gets no gradient from them. "
                           f"--attention signed-gradcam avoids this (README, Findings).", file=sys.stderr)

            # ---- PPO update (+ CAMAL) -----------------------------------------------------
            b_inds = np.arange(args.batch_size)
            clipfracs, camal_losses = [], []
            for epoch in range(args.update_epochs):
                np.random.shuffle(b_inds)
                for start in range(0, args.batch_size, args.minibatch_size):
                    mb_inds = torch.as_tensor(b_inds[start : start + args.minibatch_size], device=device)
                    logits, newvalue, features = agent(b_obs[mb_inds])
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
                        v_clipped = b_values[mb_inds] + torch.clamp(
                            newvalue - b_values[mb_inds], -args.clip_coef, args.clip_coef
                        )
                        v_loss_clipped = (v_clipped - b_returns[mb_inds]) ** 2
                        v_loss = 0.5 * torch.max(v_loss_unclipped, v_loss_clipped).mean()
                    else:
                        v_loss = 0.5 * ((newvalue - b_returns[mb_inds]) ** 2).mean()

                    entropy_loss = entropy.mean()
                    loss = pg_loss - args.ent_coef * entropy_loss + v_loss * args.vf_coef
                    if args.camal_coef > 0:
                        # Grad-CAM of V(s) from this minibatch's forward pass: one extra backward.
                        # kept at feature size: alpha_beta resizes it to the mask implicitly (cheaper)
                        maps = camal.normalize(
                            camal.attention(features, newvalue, method=args.attention, create_graph=args.create_graph)
                        )
                        camal_term = camal.camal_loss(maps, b_masks[mb_inds], mode=args.regularizer)
                        loss = loss + args.camal_coef * camal_term
                        camal_losses.append(camal_term.item())

                    optimizer.zero_grad()
                    loss.backward()
                    nn.utils.clip_grad_norm_(agent.parameters(), args.max_grad_norm)
                    optimizer.step()

                if args.target_kl is not None and approx_kl > args.target_kl:
                    break

            y_pred, y_true = b_values.cpu().numpy(), b_returns.cpu().numpy()
            var_y = np.var(y_true)
            explained_var = np.nan if var_y == 0 else 1 - np.var(y_true - y_pred) / var_y

            elapsed = time.time() - start_time
            sps = int((global_step - start_step) / max(elapsed - eval_seconds, 1e-9))
            writer.add_scalar("charts/learning_rate", optimizer.param_groups[0]["lr"], global_step)
            writer.add_scalar("charts/SPS", sps, global_step)
            writer.add_scalar("losses/value_loss", v_loss.item(), global_step)
            writer.add_scalar("losses/policy_loss", pg_loss.item(), global_step)
            writer.add_scalar("losses/entropy", entropy_loss.item(), global_step)
            writer.add_scalar("losses/old_approx_kl", old_approx_kl.item(), global_step)
            writer.add_scalar("losses/approx_kl", approx_kl.item(), global_step)
            writer.add_scalar("losses/clipfrac", np.mean(clipfracs), global_step)
            writer.add_scalar("losses/explained_variance", explained_var, global_step)
            writer.add_scalar("losses/camal_loss", np.mean(camal_losses) if camal_losses else 0.0, global_step)
            writer.add_scalar("attention/alpha", alpha.mean().item(), global_step)
            writer.add_scalar("attention/beta", beta.mean().item(), global_step)
            if torch.isfinite(rollout_iou).any():
                writer.add_scalar("attention/iou", rollout_iou.nanmean().item(), global_step)
            writer.add_scalar("attention/zero_map_fraction", zero_map_fraction, global_step)
            writer.add_scalar("attention/empty_mask_fraction", torch.isnan(rollout_iou).float().mean().item(), global_step)

            last_iteration = iteration == args.num_iterations
            if args.eval_episodes and (last_iteration or (next_eval_step is not None and global_step >= next_eval_step)):
                eval_start = time.time()
                last_eval = evaluate(agent, args, device, episodes=args.eval_episodes, seed=args.seed + 10_000)
                eval_seconds += time.time() - eval_start
                writer.add_scalar("eval/return_mean", last_eval["return_mean"], global_step)
                if not np.isnan(last_eval["iou_mean"]):
                    writer.add_scalar("eval/iou_mean", last_eval["iou_mean"], global_step)
                if next_eval_step is not None:
                    while next_eval_step <= global_step:
                        next_eval_step += args.eval_interval

            if last_iteration or iteration % args.checkpoint_interval == 0:
                writer.flush()
                atomic_save(
                    {
                        "agent": agent.state_dict(),
                        "optimizer": optimizer.state_dict(),
                        "iteration": iteration,
                        "global_step": global_step,
                        "wall_time_s": elapsed_before + elapsed,
                        "env": args.env,
                        "obs_shape": agent.obs_shape,
                        "num_actions": agent.num_actions,
                        "action_names": envs.envs[0].action_names if hasattr(envs, "envs") else None,
                        "args": asdict(args),
                        "rng": rng_state(),
                        "recent_returns": list(recent_returns),
                        "last_eval": last_eval,
                    },
                    run_dir / CHECKPOINT,
                )
            bar.update(global_step - bar.n)
            bar.set_postfix(sps=sps, ret=f"{np.mean(recent_returns):.1f}" if recent_returns else "-",
                            iou=f"{rollout_iou.nanmean().item():.2f}")
    finally:
        bar.close()
        envs.close()
        writer.close()

    summary = {
        "env": Path(args.env).stem if args.env.endswith(".toml") else args.env,
        "method": args.method,
        "seed": args.seed,
        "global_step": global_step,
        "eval_return_mean": last_eval.get("return_mean"),
        "eval_return_std": last_eval.get("return_std"),
        "eval_iou_mean": last_eval.get("iou_mean"),
        "eval_iou_frames": last_eval.get("iou_frames"),
        "eval_iou_skipped_empty_mask": last_eval.get("iou_skipped_empty_mask"),
        "train_return_recent": float(np.mean(recent_returns)) if recent_returns else None,
        "sps": int((global_step - start_step) / max(time.time() - start_time - eval_seconds, 1e-9)),
        "wall_time_s": elapsed_before + (time.time() - start_time),
        "device": str(device),
        "args": asdict(args),
    }
    atomic_save(summary, run_dir / SUMMARY)
    return summary


def cli() -> None:
    args = tyro.cli(Args)
    try:
        summary = train(args)
    except (TrainingError, doom.SpecError) as error:
        print(f"camal-train: error: {error}", file=sys.stderr)
        raise SystemExit(2)
    print(json.dumps({k: v for k, v in summary.items() if k != "args"}, indent=2))


if __name__ == "__main__":
    cli()
