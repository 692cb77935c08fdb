"""PPO + CAMAL for ViZDoom, CleanRL style: ``python -m camal_rl.ppo --env basic``.

One file holds one training run: arguments, agent, rollout, PPO update with the CAMAL term,
evaluation, logging, checkpoints. The loss core lives in ``camal_rl.camal``, the environment in
``camal_rl.doom`` and the env workers that feed the rollout in ``camal_rl.vector``.

The CAMAL term (paper section 3.3): Grad-CAM of the critic value V(s) at the last conv layer,
taken from the minibatch's own forward pass, normalised, compared with the label-buffer mask at
the engine's screen resolution (the map is upsampled to it) and added as
``camal_coef * mean(beta - alpha)``. ``--camal-coef 0`` is Vanilla PPO and computes no
attention during the update.

The rollout keeps one frame per env and step (``FrameStorage``); the 4-frame stacks the agent
sees are assembled by indexing, in the rollout and in every minibatch.
"""

from __future__ import annotations

import json
import os
import random
import sys
import time
from collections import deque
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Callable, Literal, Optional

import numpy as np
import torch
import torch.nn as nn
import tyro
from torch.distributions.categorical import Categorical
from torch.utils.tensorboard import SummaryWriter
from tqdm import tqdm

from camal_rl import camal, doom, overlay, vector
from camal_rl.files import atomic_path, exit_on_sigterm, write_text_atomic

CHECKPOINT = "checkpoint.pt"
SUMMARY = "summary.json"


@dataclass
class Args:
    """PPO + CAMAL on a ViZDoom scenario. Defaults are the paper's Table 8 except where noted."""

    env: str = "basic"
    """scenario spec name (see envs/) or path to a .toml spec"""
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
    attention: Optional[Literal["gradcam", "signed-gradcam", "gradcam++", "layercam"]] = None
    """attention method of camal_rl.camal; default: layercam at the CPU frames, where Grad-CAM of V(s)
    dies (README, "Defaults"), gradcam with --paper-frames (the paper)"""
    create_graph: bool = True
    """differentiate through the Grad-CAM channel weights (the head above the features)"""
    empty_mask: Literal["skip", "suppress"] = "skip"
    """frames whose mask is empty: skip = no CAMAL term (Eq. 1's alpha is undefined); suppress = add beta"""

    frame_skip: int = 4
    frame_stack: int = 4
    clip_reward: bool = True
    obs_size: tuple[int, int] = (60, 80)
    """observation height width; 60x80 halves ViZDoom's 120x160 exactly (fastest on CPU, see README)"""
    grayscale: bool = True
    resolution: Optional[str] = None
    """ViZDoom screen resolution (= the mask's); default: the spec's (RES_160X120)"""
    paper_frames: bool = False
    """the paper's setting: ViZDoom's native 240x320 colour frames (RES_320X240)"""
    env_workers: Optional[int] = None
    """env worker processes (0 = step the envs in this process); default: 0 on <= 2 cores, else one per env"""
    env_groups: Optional[int] = None
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

    @classmethod
    def from_saved(cls, saved: dict, **overrides) -> "Args":
        """Args from a checkpoint or summary; keys this version does not know are dropped."""
        known = {f.name for f in fields(cls)}
        values = {k: v for k, v in saved.items() if k in known}
        if "obs_size" in values:
            values["obs_size"] = tuple(values["obs_size"])
        return cls(**{**values, **overrides})


class TrainingError(Exception):
    """Bad input or state; printed as one line by the CLI."""


def default_attention(args: Args) -> str:
    """The paper's Grad-CAM at the paper's frames; LayerCAM at the CPU default (measured: NOTES.md)."""
    return "gradcam" if args.paper_frames else "layercam"


def validate(args: Args) -> None:
    doom.load_spec(args.env)  # unknown env -> SpecError listing the available ones
    if args.attention is None:
        args.attention = default_attention(args)
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
    if args.env_workers is not None and args.env_workers < 0:
        raise TrainingError("--env-workers must be >= 0 (0 = envs in this process)")
    if args.env_groups is not None and not 1 <= args.env_groups <= args.num_envs:
        raise TrainingError(f"--env-groups must be between 1 and --num-envs ({args.num_envs})")


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
            grid = self.conv(torch.zeros(1, channels, height, width))
        flat, self.feature_grid = grid.numel(), tuple(grid.shape[-2:])
        self.fc = nn.Sequential(nn.Flatten(), layer_init(nn.Linear(flat, 512)), nn.ReLU())
        self.actor = layer_init(nn.Linear(512, num_actions), std=0.01)
        self.critic = layer_init(nn.Linear(512, 1), std=1)
        self.obs_shape = tuple(obs_shape)
        self.num_actions = num_actions
        # channels-last convolutions are ~1.5-2x faster on CPU (oneDNN) and fine on CUDA
        self.to(memory_format=torch.channels_last)

    def forward(self, x: torch.Tensor):
        """uint8 frames -> (action logits, value [B], last-conv features [B, 64, h, w])."""
        # uint8 -> channels-last first (a quarter of the bytes to move), then scale in place
        features = self.conv(x.contiguous(memory_format=torch.channels_last).float().div_(255.0))
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


def act_with_attention(agent: Agent, obs: torch.Tensor, size: tuple[int, int], *, method: str = "gradcam",
                       generator: Optional[torch.Generator] = None):
    """Action, V(s) and normalised Grad-CAM of V(s) at ``size`` from one forward pass.

    Actions are drawn from ``generator`` (evaluation, videos), never from the training stream."""

    def forward():
        logits, value, features = agent(obs)
        return features, value, (logits, value)

    (logits, value), maps = camal.inspect_attention(forward, size, method=method)
    action = torch.multinomial(torch.softmax(logits, dim=-1), 1, replacement=True, generator=generator).squeeze(1)
    return action, value, maps


def value_attention(agent: Agent, obs: torch.Tensor, size: tuple[int, int], *, method: str = "gradcam") -> torch.Tensor:
    """Normalised Grad-CAM of V(s) at ``size``, ``[B, *size]``."""
    def forward():
        _, value, features = agent(obs)
        return features, value, ()

    return camal.inspect_attention(forward, size, method=method)[1]


# ---------------------------------------------------------------------------------------
# Rollout storage: single frames; stacks are assembled by indexing
# ---------------------------------------------------------------------------------------
class FrameStorage:
    """One frame per env and step instead of a 4-frame stack per step.

    Slot ``t + S - 1`` holds the newest frame of step ``t``'s observation, ``t = 0 .. T`` (``T``
    is the bootstrap observation); slots ``0 .. S-2`` hold the frames before the rollout. A stack
    never reaches back before its episode's first frame: those positions repeat that frame, as
    ``DoomEnv``'s own stack does after a reset. Masks stay at screen resolution.
    """

    def __init__(self, num_steps: int, num_envs: int, frame_stack: int, frame_shape, mask_shape, device):
        self.num_steps, self.num_envs, self.stack = num_steps, num_envs, frame_stack
        self.device = device
        self.frames = torch.zeros((num_steps + frame_stack, num_envs, *frame_shape), dtype=torch.uint8, device=device)
        self.masks = torch.zeros((num_steps + 1, num_envs, *mask_shape), dtype=torch.uint8, device=device)
        self.first_slot = np.zeros((num_steps + 1, num_envs), dtype=np.int64)  # first slot of each step's episode
        self.episode_first = np.zeros(num_envs, dtype=np.int64)
        self._offsets = np.arange(frame_stack)
        self._envs = torch.arange(num_envs, device=device)
        self._first_slot_device: Optional[torch.Tensor] = None
        self.host_registered = False
        # Pinned staging: the copy to the GPU is asynchronous; the policy's .cpu() before the
        # next step synchronises the stream, so the staging buffer is free again by then.
        if device.type != "cpu":
            self._frame_staging = torch.empty((num_envs, *frame_shape), dtype=torch.uint8, pin_memory=True)
            self._mask_staging = torch.empty((num_envs, *mask_shape), dtype=torch.uint8, pin_memory=True)

    def nbytes(self) -> int:
        return self.frames.numel() + self.masks.numel()

    def put(self, t: int, frames: np.ndarray, masks: np.ndarray, episode_starts: np.ndarray,
            envs: slice = slice(None)) -> None:
        """Store step ``t``'s newest frames and masks of ``envs`` (the arrays' rows ``envs``);
        ``episode_starts`` marks first frames of episodes."""
        slot = t + self.stack - 1
        frames, masks = frames[envs], masks[envs]
        if self.device.type == "cpu" or self.host_registered:
            # from shared memory that CUDA has pinned (or on a CPU): no staging copy
            self.frames[slot, envs].copy_(torch.from_numpy(frames), non_blocking=True)
            self.masks[t, envs].copy_(torch.from_numpy(masks), non_blocking=True)
        else:
            self._frame_staging[envs].numpy()[:] = frames
            self._mask_staging[envs].numpy()[:] = masks
            self.frames[slot, envs].copy_(self._frame_staging[envs], non_blocking=True)
            self.masks[t, envs].copy_(self._mask_staging[envs], non_blocking=True)
        self.episode_first[envs][episode_starts[envs]] = slot
        self.first_slot[t, envs] = self.episode_first[envs]
        self._first_slot_device = None

    def observation(self, t: int, envs: slice = slice(None)) -> torch.Tensor:
        """The stacked observations of step ``t`` for ``envs``, ``[E, S*C, H, W]``."""
        first = self.first_slot[t, envs]
        slots = np.maximum(t + self._offsets[None, :], first[:, None])
        stacked = self.frames[torch.as_tensor(slots, device=self.device), self._envs[envs, None]]  # [E, S, C, H, W]
        return stacked.flatten(1, 2)

    def minibatch(self, flat_indices: torch.Tensor) -> torch.Tensor:
        """Stacked observations ``[B, S*C, H, W]`` for flat (step, env) indices."""
        if self._first_slot_device is None:
            self._first_slot_device = torch.as_tensor(self.first_slot[: self.num_steps], device=self.device)
        steps = torch.div(flat_indices, self.num_envs, rounding_mode="floor")
        envs = flat_indices % self.num_envs
        offsets = torch.arange(self.stack, device=self.device)
        slots = torch.maximum(steps[:, None] + offsets[None, :], self._first_slot_device[steps, envs][:, None])
        return self.frames[slots, envs[:, None]].flatten(1, 2)

    def minibatch_masks(self, flat_indices: torch.Tensor) -> torch.Tensor:
        """Screen-size masks ``[B, sH, sW]`` for flat (step, env) indices (only for measuring: the
        loss uses masks pulled back to the feature grid)."""
        return self.masks[: self.num_steps].flatten(0, 1)[flat_indices]

    def carry_over(self) -> None:
        """After the update: the bootstrap observation becomes step 0 of the next rollout."""
        T = self.num_steps
        self.frames[: self.stack] = self.frames[T : T + self.stack].clone()
        self.masks[0] = self.masks[T]
        self.episode_first = np.maximum(self.episode_first - T, 0)
        self.first_slot[0] = self.episode_first
        self._first_slot_device = None

    def state(self) -> dict:
        return {"frames": self.frames[: self.stack].cpu(), "mask": self.masks[0].cpu(),
                "episode_first": self.episode_first.copy()}

    def load_state(self, state: dict) -> None:
        self.frames[: self.stack] = state["frames"].to(self.device)
        self.masks[0] = state["mask"].to(self.device)
        self.episode_first = np.asarray(state["episode_first"], dtype=np.int64).copy()
        self.first_slot[0] = self.episode_first
        self._first_slot_device = None


# ---------------------------------------------------------------------------------------
# Environments, seeding, run folder, checkpoints
# ---------------------------------------------------------------------------------------
def env_kwargs(args: Args) -> dict:
    kwargs = dict(
        frame_skip=args.frame_skip,
        obs_size=tuple(args.obs_size),
        grayscale=args.grayscale,
        clip_reward=False,  # the trainer clips, so that episodic returns stay unclipped
        resolution=args.resolution,
    )
    if args.paper_frames:
        kwargs.update(obs_size=(240, 320), grayscale=False, resolution="RES_320X240")
    return kwargs


def pin_host_memory(memory) -> Optional[int]:
    """Page-lock the env buffers for CUDA so frames go to the GPU without a staging copy.

    Returns the address to unpin later, or None where CUDA refuses (the staging path is used)."""
    import ctypes

    try:
        address = ctypes.addressof(ctypes.c_char.from_buffer(memory))
        if int(torch.cuda.cudart().cudaHostRegister(address, len(memory), 0)) == 0:
            return address
    except (RuntimeError, AttributeError, TypeError, ValueError):
        pass
    return None


def env_group_count(args: Args, device: torch.device, workers: int) -> int:
    """Double-buffered sampling (2 groups) where env workers and a GPU can overlap; else 1."""
    if args.env_groups is not None:
        return args.env_groups
    return 2 if workers >= 2 and device.type == "cuda" else 1


def env_worker_count(args: Args, device: torch.device) -> int:
    if args.env_workers is not None:
        return min(args.env_workers, args.num_envs)
    return vector.default_workers(args.num_envs)


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


def load_checkpoint(run_dir: Path, *, purpose: str = "--resume") -> dict:
    path = Path(run_dir) / CHECKPOINT
    if not path.is_file():
        raise TrainingError(f"no checkpoint at {path}; {purpose} needs a run folder written by camal-train "
                            f"(it saves checkpoint.pt every --checkpoint-interval iterations)")
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


def start_or_resume(args: Args) -> tuple[Args, Path, Optional[dict]]:
    """(the run's args, its folder, the checkpoint to continue from or None); nothing is written."""
    if not args.resume:
        validate(args)
        run_dir = Path(args.run_dir) if args.run_dir else default_run_dir(args)
        if (run_dir / CHECKPOINT).exists():
            raise TrainingError(f"{run_dir} already holds a run; use --resume {run_dir} or another --run-dir")
        args.run_dir = str(run_dir)
        return args, run_dir, None
    run_dir = Path(args.resume)
    checkpoint = load_checkpoint(run_dir)
    saved = dict(checkpoint["args"])
    if args.env != Args.env and args.env != saved["env"]:
        raise TrainingError(f"checkpoint {run_dir / CHECKPOINT} is for env {saved['env']!r}, not {args.env!r}")
    if "env_states" not in checkpoint:
        raise TrainingError(f"checkpoint {run_dir / CHECKPOINT} was written by an older camal-rl without environment "
                            f"states; it can be recorded (camal-record) but not resumed")
    resumed = Args.from_saved(saved, resume=str(run_dir), run_dir=str(run_dir), cuda=args.cuda, progress=args.progress)
    validate(resumed)
    return resumed, run_dir, checkpoint


# ---------------------------------------------------------------------------------------
# Evaluation: return and attention IoU of Grad-CAM of V(s) vs the label mask
# ---------------------------------------------------------------------------------------
def evaluate(agent: Agent, envs: vector.DoomVector, args: Args, device: torch.device, *, episodes: int,
             keep_frames: int = 0) -> dict:
    """``episodes`` episodes spread over the parallel ``envs`` (env ``e`` plays its ``e``-th,
    ``(e+n)``-th, ... share, with its own seeded episodes), actions from an own generator.

    IoU and the share of all-zero maps are over frames whose mask is non-empty. With
    ``keep_frames`` it also returns that many evenly spaced such frames of env 0's first episode.
    """
    generator = torch.Generator(device=device).manual_seed(args.seed + 10_000)
    n = envs.num_envs
    share = np.array([len(range(e, episodes, n)) for e in range(n)])
    played = np.zeros(n, dtype=int)
    returns: list[tuple[int, int, float]] = []
    ious, zero_maps, skipped = [], 0, 0
    candidates: list[tuple[torch.Tensor, torch.Tensor]] = []
    envs.reset()
    newest = torch.as_tensor(envs.frames, device=device)
    channels = newest.shape[1]
    stacks = newest.repeat(1, args.frame_stack, 1, 1)
    while (played < share).any():
        active = played < share
        masks = torch.as_tensor(envs.masks, device=device)
        action, _, maps = act_with_attention(agent, stacks, tuple(masks.shape[-2:]), method=args.attention,
                                             generator=generator)
        has_object = masks.flatten(1).any(1).bool() & torch.as_tensor(active, device=device)
        if has_object.any():
            ious += camal.attention_iou(maps[has_object], masks[has_object]).tolist()
            zero_maps += int((maps[has_object].flatten(1).amax(1) == 0).sum())
        skipped += int((active & ~has_object.cpu().numpy()).sum())
        if keep_frames and played[0] == 0 and bool(has_object[0]):
            candidates.append((stacks[0].clone(), masks[0].clone()))
        envs.step(np.where(active, action.cpu().numpy(), -1))
        for e in np.flatnonzero(envs.episode_starts & active):
            returns.append((e, played[e], float(envs.finished_returns[e])))
            played[e] += 1
        newest = torch.as_tensor(envs.frames, device=device)
        stacks = torch.cat([stacks[:, channels:], newest], dim=1)
        starts = torch.as_tensor(envs.episode_starts, device=device)
        stacks[starts] = newest[starts].repeat(1, args.frame_stack, 1, 1)
    values = [r for _, _, r in sorted(returns)]
    result = {
        "return_mean": float(np.mean(values)),
        "return_std": float(np.std(values, ddof=1)) if len(values) > 1 else 0.0,
        "episodes": len(values),
        "iou_mean": float(np.mean(ious)) if ious else float("nan"),
        "iou_frames": len(ious),
        "iou_skipped_empty_mask": skipped,
        "zero_map_fraction": zero_maps / len(ious) if ious else float("nan"),
    }
    if keep_frames and candidates:
        picks = np.linspace(0, len(candidates) - 1, min(keep_frames, len(candidates))).round().astype(int)
        result["frames"] = (torch.stack([candidates[i][0] for i in picks]), torch.stack([candidates[i][1] for i in picks]))
    return result


def attention_grid(agent: Agent, stacks: torch.Tensor, masks: torch.Tensor, args: Args, tile_height: int = 120) -> np.ndarray:
    """The fixed evaluation frames with the agent's current attention and the mask outline, one image."""
    size = tuple(masks.shape[-2:])
    maps = value_attention(agent, stacks, size, method=args.attention)  # no sampling: the training RNG stays untouched
    channels = stacks.shape[1] // args.frame_stack
    tiles = []
    for stack, mask, attention in zip(stacks.cpu().numpy(), masks.cpu().numpy(), maps.cpu().numpy()):
        newest = overlay.to_rgb(stack[-channels:])
        screen = overlay.fit_height(newest, size[0])  # the frame at the mask's resolution
        tiles.append(overlay.fit_height(overlay.draw_attention(screen, attention, mask), tile_height))
    return overlay.tile(tiles, columns=min(4, len(tiles)))


def measure_attention(features: torch.Tensor, value: torch.Tensor, maps: Optional[torch.Tensor], masks: torch.Tensor,
                      args: Args) -> dict:
    """attention/* scalars from a minibatch before its update: alpha, beta, IoU, all-zero and empty shares.

    CAMAL passes the maps it trains on; Vanilla's are taken here (a backward through the heads only)."""
    with torch.no_grad():
        if maps is None:
            with torch.enable_grad():
                maps = camal.normalize(camal.attention(features, value, method=args.attention, create_graph=False))
        maps = maps.detach()
        alpha, beta = camal.alpha_beta(maps, masks)
        iou = camal.attention_iou(maps, masks)
        has_object = torch.isfinite(iou)
        return {
            "attention/alpha": alpha[has_object].mean().item() if has_object.any() else None,
            "attention/beta": beta.mean().item(),
            "attention/iou": iou[has_object].mean().item() if has_object.any() else None,
            "attention/zero_map_fraction": (maps.flatten(1).amax(1) == 0).float().mean().item(),
            "attention/empty_mask_fraction": 1.0 - has_object.float().mean().item(),
        }


# ---------------------------------------------------------------------------------------
# Logging and checkpoints
# ---------------------------------------------------------------------------------------
def log_iteration(writer: SummaryWriter, step: int, values: dict) -> None:
    for tag, value in values.items():
        if value is not None and np.isfinite(value):
            writer.add_scalar(tag, value, step)


def save_checkpoint(run_dir: Path, agent: Agent, optimizer, args: Args, envs: vector.DoomVector, storage: FrameStorage,
                    **progress) -> None:
    atomic_save(
        {
            "agent": agent.state_dict(),
            "optimizer": optimizer.state_dict(),
            "env": args.env,
            "obs_shape": agent.obs_shape,
            "num_actions": agent.num_actions,
            "action_names": envs.action_names,
            "args": asdict(args),
            "rng": rng_state(),
            "env_states": envs.state(),  # each env's episode seed and actions: replayed on resume
            "storage": storage.state(),
            **progress,
        },
        run_dir / CHECKPOINT,
    )


def start_or_restore(args: Args, run_dir: Path, checkpoint: Optional[dict], agent: Agent, optimizer,
                     envs: vector.DoomVector, storage: FrameStorage, device) -> tuple[dict, torch.Tensor]:
    """A fresh start resets the envs. A resume restores weights, optimizer, random streams and the
    rollout's carried frames, and replays every env to where it stood: the run goes on bit for bit.
    Returns the progress record (iteration, steps, times, last evaluation, ...) and ``next_done``."""
    progress = {"iteration": 0, "global_step": 0, "train_time_s": 0.0, "eval_time_s": 0.0,
                "recent_returns": [], "last_eval": {}, "dead_attention_step": None, "grid": None}
    if checkpoint is None:
        envs.reset()
        storage.put(0, envs.frames, envs.masks, envs.episode_starts)
        return progress, torch.zeros(args.num_envs, device=device)
    restore_agent(agent, checkpoint, args.env, run_dir / CHECKPOINT)
    optimizer.load_state_dict(checkpoint["optimizer"])
    progress.update({k: checkpoint[k] for k in progress if k in checkpoint})
    envs.restore(checkpoint["env_states"])
    storage.load_state(checkpoint["storage"])
    if not np.array_equal(envs.frames, checkpoint["storage"]["frames"][-1].numpy()):
        tqdm.write("camal-train: warning: the replayed environments differ from the checkpoint's frames; "
                   "the run continues but not bit-identically", file=sys.stderr)
    set_rng_state(checkpoint["rng"])
    tqdm.write(f"camal-train: resuming {run_dir} at iteration {progress['iteration'] + 1} "
               f"(agent step {progress['global_step']})", file=sys.stderr)
    return progress, checkpoint["next_done"].to(device)


# ---------------------------------------------------------------------------------------
# Training
# ---------------------------------------------------------------------------------------
def train(args: Args, *, on_rollout: Optional[Callable[[int, dict], None]] = None) -> dict:
    """Run (or resume) one training run; returns the summary. ``on_rollout`` is a test hook."""
    args, run_dir, checkpoint = start_or_resume(args)
    device = torch.device("cuda" if args.cuda and torch.cuda.is_available() else "cpu")
    workers = env_worker_count(args, device)
    # On a CPU the workers sleep while the learner updates, so it takes every core; with a GPU
    # the learner needs little CPU and leaves the cores to the workers.
    cores = os.cpu_count() or 1
    torch.set_num_threads(args.threads or (max(1, cores - workers) if device.type == "cuda" else cores))
    seed_everything(args.seed, args.torch_deterministic)

    # Env workers are forked: start them before the learner touches CUDA.
    envs = vector.DoomVector(args.env, num_envs=args.num_envs, seed=args.seed, workers=workers, **env_kwargs(args))
    eval_envs, pinned = None, None
    try:
        if args.eval_episodes:
            eval_envs = vector.DoomVector(args.env, num_envs=min(args.eval_episodes, args.num_envs), seed=args.seed + 10_000,
                                          workers=min(workers, args.eval_episodes), **env_kwargs(args))
        frame_shape = (args.frame_stack * envs.frame_shape[0], *envs.frame_shape[1:])
        agent = Agent(frame_shape, envs.num_actions).to(device)
        optimizer = torch.optim.Adam(agent.parameters(), lr=args.learning_rate, eps=1e-5)
        storage = FrameStorage(args.num_steps, args.num_envs, args.frame_stack, envs.frame_shape, envs.mask_shape, device)
        if device.type == "cuda":
            pinned = pin_host_memory(envs.buffers.memory)
            storage.host_registered = pinned is not None
        return _train_loop(args, run_dir, checkpoint, device, envs, eval_envs, agent, optimizer, storage, workers, on_rollout)
    finally:
        if pinned is not None:
            torch.cuda.cudart().cudaHostUnregister(pinned)
        envs.close()
        if eval_envs is not None:
            eval_envs.close()


def _train_loop(args, run_dir, checkpoint, device, envs, eval_envs, agent, optimizer, storage, workers, on_rollout) -> dict:
    progress, next_done = start_or_restore(args, run_dir, checkpoint, agent, optimizer, envs, storage, device)
    global_step = progress["global_step"]
    recent_returns: deque = deque(progress["recent_returns"], maxlen=20)
    run_dir.mkdir(parents=True, exist_ok=True)
    writer = SummaryWriter(str(run_dir))
    if checkpoint is None:
        writer.add_text("hyperparameters", "|param|value|\n|-|-|\n" + "\n".join(f"|{k}|{v}|" for k, v in asdict(args).items()))

    actions = torch.zeros((args.num_steps, args.num_envs), dtype=torch.long, device=device)
    logprobs = torch.zeros((args.num_steps, args.num_envs), device=device)
    rewards = torch.zeros((args.num_steps, args.num_envs), device=device)
    dones = torch.zeros((args.num_steps, args.num_envs), device=device)
    values = torch.zeros((args.num_steps, args.num_envs), device=device)
    env_groups = envs.groups(env_group_count(args, device, envs.workers))

    def finish_step(step: int, group: slice) -> None:
        """Collect one group's env step: rewards, done flags, the next frames, finished episodes."""
        envs.step_wait(group)
        reward = np.clip(envs.rewards[group], -1.0, 1.0) if args.clip_reward else envs.rewards[group]
        rewards[step, group] = torch.as_tensor(reward, dtype=torch.float32, device=device)
        done = envs.terminated[group] | envs.truncated[group]
        next_done[group] = torch.as_tensor(done, dtype=torch.float32, device=device)
        storage.put(step + 1, envs.frames, envs.masks, envs.episode_starts, group)
        logged_step = rollout_start_step + (step + 1) * args.num_envs
        for i in group.start + np.flatnonzero(done):
            recent_returns.append(float(envs.finished_returns[i]))
            writer.add_scalar("charts/episodic_return", envs.finished_returns[i], logged_step)
            writer.add_scalar("charts/episodic_length", envs.finished_lengths[i], logged_step)

    next_eval_step = (global_step // args.eval_interval + 1) * args.eval_interval if args.eval_interval else None
    start_step, session_start = global_step, time.time()
    eval_seconds = 0.0
    bar = tqdm(total=args.total_timesteps, initial=global_step, unit="step", disable=not args.progress,
               dynamic_ncols=True, desc=f"{Path(args.env).stem}/{args.method}/{args.seed}")
    try:
        for iteration in range(progress["iteration"] + 1, args.num_iterations + 1):
            if args.anneal_lr:
                frac = 1.0 - (iteration - 1.0) / args.num_iterations
                optimizer.param_groups[0]["lr"] = frac * args.learning_rate

            # ---- rollout ------------------------------------------------------------------
            # Double-buffered when there are several env groups: one group's envs step while the
            # policy acts for the next. Each env's action still comes from the same policy and
            # its own observation, and the groups are the same whichever backend runs them.
            rollout_start_step, rollout_start_time = global_step, time.perf_counter()
            for step in range(args.num_steps):
                for group in env_groups:
                    if step > 0:
                        finish_step(step - 1, group)
                    dones[step, group] = next_done[group]
                    with torch.no_grad():
                        action, logprob, _, value, _ = agent.get_action_and_value(storage.observation(step, group))
                    values[step, group], actions[step, group], logprobs[step, group] = value, action, logprob
                    envs.step_async(action.cpu().numpy(), group)
            for group in env_groups:
                finish_step(args.num_steps - 1, group)
            global_step = rollout_start_step + args.batch_size
            update_start_time = time.perf_counter()
            if on_rollout is not None:
                stacked = torch.stack([storage.observation(t) for t in range(args.num_steps)])
                on_rollout(iteration, {"obs": stacked, "masks": storage.masks[: args.num_steps].clone(),
                                       "actions": actions.clone(), "rewards": rewards.clone()})

            # ---- GAE ----------------------------------------------------------------------
            with torch.no_grad():
                next_value = agent.get_value(storage.observation(args.num_steps))
                advantages = torch.zeros_like(rewards)
                lastgaelam = 0
                for t in reversed(range(args.num_steps)):
                    nextnonterminal = 1.0 - (next_done if t == args.num_steps - 1 else dones[t + 1])
                    nextvalues = next_value if t == args.num_steps - 1 else values[t + 1]
                    delta = rewards[t] + args.gamma * nextvalues * nextnonterminal - values[t]
                    advantages[t] = lastgaelam = delta + args.gamma * args.gae_lambda * nextnonterminal * lastgaelam
                returns = advantages + values

            b_logprobs, b_actions = logprobs.reshape(-1), actions.reshape(-1)
            b_advantages, b_returns, b_values = advantages.reshape(-1), returns.reshape(-1), values.reshape(-1)

            # The masks stay fixed for the update: pull them back to the feature grid once.
            b_grid_masks = camal.grid_mask(storage.masks[: args.num_steps].flatten(0, 1), agent.feature_grid) \
                if args.camal_coef > 0 else None

            # ---- PPO update (+ CAMAL) -----------------------------------------------------
            b_inds = np.arange(args.batch_size)
            clipfracs, camal_losses = [], []
            for epoch in range(args.update_epochs):
                np.random.shuffle(b_inds)
                for start in range(0, args.batch_size, args.minibatch_size):
                    mb_inds = torch.as_tensor(b_inds[start : start + args.minibatch_size], device=device)
                    mb_obs = storage.minibatch(mb_inds)
                    logits, newvalue, features = agent(mb_obs)
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
                    maps = None
                    if args.camal_coef > 0:
                        # Grad-CAM of V(s) from this minibatch's forward pass: one extra backward.
                        # Kept at feature size: the grid masks upsample it to the mask implicitly.
                        maps = camal.normalize(
                            camal.attention(features, newvalue, method=args.attention, create_graph=args.create_graph)
                        )
                        camal_term = camal.camal_loss(maps, b_grid_masks[mb_inds], regularizer=args.regularizer,
                                                      empty_mask=args.empty_mask)
                        loss = loss + args.camal_coef * camal_term
                        camal_losses.append(camal_term.item())
                    if epoch == 0 and start == 0:  # attention on the rollout: the same measurement for every method
                        attention_log = measure_attention(features, newvalue, maps, storage.minibatch_masks(mb_inds), args)

                    optimizer.zero_grad()
                    loss.backward()
                    nn.utils.clip_grad_norm_(agent.parameters(), args.max_grad_norm)
                    optimizer.step()

                if args.target_kl is not None and approx_kl > args.target_kl:
                    break
            storage.carry_over()
            update_end_time = time.perf_counter()

            y_pred, y_true = b_values.cpu().numpy(), b_returns.cpu().numpy()
            var_y = np.var(y_true)
            explained_var = np.nan if var_y == 0 else 1 - np.var(y_true - y_pred) / var_y

            train_seconds = time.time() - session_start - eval_seconds
            sps = int((global_step - start_step) / max(train_seconds, 1e-9))
            log_iteration(writer, global_step, {
                "charts/learning_rate": optimizer.param_groups[0]["lr"],
                "charts/SPS": sps,
                "perf/rollout_seconds": update_start_time - rollout_start_time,  # env steps + the policy's actions
                "perf/update_seconds": update_end_time - update_start_time,  # GAE + PPO (+ CAMAL) epochs
                "losses/value_loss": v_loss.item(),
                "losses/policy_loss": pg_loss.item(),
                "losses/entropy": entropy_loss.item(),
                "losses/old_approx_kl": old_approx_kl.item(),
                "losses/approx_kl": approx_kl.item(),
                "losses/clipfrac": np.mean(clipfracs),
                "losses/explained_variance": explained_var,
                "losses/camal_loss": np.mean(camal_losses) if camal_losses else 0.0,
                **attention_log,
            })
            # An all-zero ReLU'd map has no gradient: the CAMAL term then silently does nothing.
            zero_map_fraction = attention_log["attention/zero_map_fraction"]
            if args.camal_coef > 0 and zero_map_fraction > 0.9 and progress["dead_attention_step"] is None:
                progress["dead_attention_step"] = global_step
                tqdm.write(f"camal-train: warning: {args.attention} of V(s) is all zero on {zero_map_fraction:.0%} of "
                           f"frames (iteration {iteration}); the CAMAL term gets no gradient from them, so this run "
                           f"is Vanilla PPO while it lasts. LayerCAM, the CPU default (--attention layercam), did not die in our "
                           f"measurements (README, Defaults).",
                           file=sys.stderr)

            # ---- evaluation ---------------------------------------------------------------
            last_iteration = iteration == args.num_iterations
            if eval_envs is not None and (last_iteration or (next_eval_step is not None and global_step >= next_eval_step)):
                eval_start = time.time()
                keep = args.eval_image_frames if progress["grid"] is None else 0
                result = evaluate(agent, eval_envs, args, device, episodes=args.eval_episodes, keep_frames=keep)
                if "frames" in result:
                    progress["grid"] = tuple(t.cpu() for t in result.pop("frames"))
                progress["last_eval"] = result
                log_iteration(writer, global_step, {"eval/return_mean": result["return_mean"],
                                                    "eval/iou_mean": result["iou_mean"],
                                                    "eval/zero_map_fraction": result["zero_map_fraction"]})
                if progress["grid"] is not None:
                    stacks, masks = (t.to(device) for t in progress["grid"])
                    writer.add_image("eval/attention", attention_grid(agent, stacks, masks, args), global_step, dataformats="HWC")
                if next_eval_step is not None:
                    while next_eval_step <= global_step:
                        next_eval_step += args.eval_interval
                eval_seconds += time.time() - eval_start

            progress.update(iteration=iteration, global_step=global_step, recent_returns=list(recent_returns))
            if last_iteration or iteration % args.checkpoint_interval == 0:
                writer.flush()
                elapsed_train = time.time() - session_start - eval_seconds
                save_checkpoint(run_dir, agent, optimizer, args, envs, storage, next_done=next_done.cpu(),
                                **{**progress, "train_time_s": progress["train_time_s"] + elapsed_train,
                                   "eval_time_s": progress["eval_time_s"] + eval_seconds})
            bar.update(global_step - bar.n)
            bar.set_postfix(sps=sps, ret=f"{np.mean(recent_returns):.1f}" if recent_returns else "-",
                            iou="-" if attention_log["attention/iou"] is None else f"{attention_log['attention/iou']:.2f}")
    finally:
        bar.close()
        writer.close()

    train_time = progress["train_time_s"] + (time.time() - session_start - eval_seconds)
    eval_time = progress["eval_time_s"] + eval_seconds
    last_eval = progress["last_eval"]
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
        "eval_zero_map_fraction": last_eval.get("zero_map_fraction"),
        "train_return_recent": float(np.mean(recent_returns)) if recent_returns else None,
        "attention_dead": progress["dead_attention_step"] is not None,
        "attention_dead_since_step": progress["dead_attention_step"],
        "sps": int((global_step - start_step) / max(time.time() - session_start - eval_seconds, 1e-9)),
        "train_time_s": train_time,
        "eval_time_s": eval_time,
        "wall_time_s": train_time + eval_time,
        "device": str(device),
        "env_workers": workers,
        "env_groups": len(env_groups),
        "args": asdict(args),
    }
    atomic_save(summary, run_dir / SUMMARY)
    return summary


def cli() -> None:
    args = tyro.cli(Args)
    exit_on_sigterm()
    try:
        summary = train(args)
    except (TrainingError, doom.SpecError, vector.EnvWorkerError) as error:
        print(f"camal-train: error: {error}", file=sys.stderr)
        raise SystemExit(2)
    print(json.dumps({k: v for k, v in summary.items() if k != "args"}, indent=2))


if __name__ == "__main__":
    cli()
