"""The rollout's storage and what carries the envs' frames into it (the trainer's side of
``camal_rl.vector``).

``FrameStorage`` keeps one frame per env and step and builds the 4-frame stacks by indexing, in
the rollout and in every minibatch. ``env_options`` turns a run's arguments into the env's
settings, the same for training, evaluation, videos and ``camal-eval``.
"""

from __future__ import annotations

import numpy as np
import torch

# --paper-frames: the engine's native 240x320 colour frames at RES_320X240 (the paper's setting).
PAPER_FRAMES = {"obs_size": (240, 320), "grayscale": False, "resolution": "RES_320X240"}


def env_options(args) -> dict:
    """DoomEnv / DoomVector settings of a run's arguments (``camal_rl.ppo.Args`` or a saved copy)."""
    return dict(
        frame_skip=args.frame_skip,
        obs_size=tuple(args.obs_size),
        grayscale=args.grayscale,
        clip_reward=False,  # the trainer clips, so that episodic returns stay unclipped
        resolution=args.resolution,
    )


class FrameStorage:
    """One frame per env and step instead of a 4-frame stack per step.

    ``frames[e, t + S - 1]`` holds env ``e``'s newest frame of step ``t``'s observation, ``t = 0 ..
    T`` (``T`` is the bootstrap observation); slots ``0 .. S-2`` hold the frames before the rollout.
    Env-major, so that a step's stacks are a view (``frames[envs, t : t + S]``) the network reads
    without a copy. A stack never reaches back before its episode's first frame: those positions
    repeat that frame, as ``DoomEnv``'s own stack does after a reset. Masks stay at screen
    resolution, step-major.
    """

    def __init__(self, num_steps: int, num_envs: int, frame_stack: int, frame_shape, mask_shape, device,
                 *, staging: bool | None = None):
        self.num_steps, self.num_envs, self.stack = num_steps, num_envs, frame_stack
        self.device = device
        self.frames = torch.zeros((num_envs, num_steps + frame_stack, *frame_shape), dtype=torch.uint8, device=device)
        self.masks = torch.zeros((num_steps + 1, num_envs, *mask_shape), dtype=torch.uint8, device=device)
        self.first_slot = np.zeros((num_steps + 1, num_envs), dtype=np.int64)  # first slot of each step's episode
        self.episode_first = np.zeros(num_envs, dtype=np.int64)
        self._offsets = np.arange(frame_stack)
        self._envs = torch.arange(num_envs, device=device)
        self._first_slot_device: torch.Tensor | None = None
        self.host_registered = False
        # Pinned staging: the copy to the GPU is asynchronous; the policy's .cpu() before the
        # next step synchronises the stream, so the staging buffer is free again by then.
        # ``staging=True`` on a CPU takes the GPU's paths unpinned (tests compare the paths).
        self.staging = device.type != "cpu" if staging is None else staging
        # On a CPU the env buffers are copied with numpy into the storage's own memory (a numpy
        # slice is cheaper than a torch one, docs/performance.md, "Small choices"; a vector step does two per group).
        on_host = device.type == "cpu" and not self.staging
        self._host_frames = self.frames.numpy() if on_host else None
        self._host_masks = self.masks.numpy() if on_host else None
        if self.staging:
            pinned = torch.cuda.is_available()
            self._frame_staging = torch.empty((num_envs, *frame_shape), dtype=torch.uint8, pin_memory=pinned)
            self._mask_staging = torch.empty((num_envs, *mask_shape), dtype=torch.uint8, pin_memory=pinned)

    def host_rows(self, t: int) -> tuple[np.ndarray, np.ndarray] | None:
        """Where step ``t``'s newest frames and masks go, as numpy views ``([E, C, H, W], [E, sH, sW])``
        that envs stepped in this process can write straight into (then ``put(..., written=True)``);
        None where the storage is not in host memory (a GPU, or staging)."""
        if self._host_frames is None:
            return None
        return self._host_frames[:, t + self.stack - 1], self._host_masks[t]

    def put(self, t: int, frames: np.ndarray, masks: np.ndarray, episode_starts: np.ndarray,
            envs: slice = slice(None), *, written: bool = False) -> None:
        """Store step ``t``'s newest frames and masks of ``envs`` (the arrays' rows ``envs``);
        ``episode_starts`` marks first frames of episodes. ``written``: the frames and masks are
        already in place (``host_rows``); only the episode starts are recorded."""
        slot = t + self.stack - 1
        if not written:
            self._copy_in(t, slot, frames[envs], masks[envs], envs)
        self.episode_first[envs][episode_starts[envs]] = slot
        self.first_slot[t, envs] = self.episode_first[envs]
        self._first_slot_device = None

    def _copy_in(self, t: int, slot: int, frames: np.ndarray, masks: np.ndarray, envs: slice) -> None:
        if self.staging and not self.host_registered:
            self._frame_staging[envs].numpy()[:] = frames
            self._mask_staging[envs].numpy()[:] = masks
            self.frames[envs, slot].copy_(self._frame_staging[envs], non_blocking=True)
            self.masks[t, envs].copy_(self._mask_staging[envs], non_blocking=True)
        elif self._host_frames is not None:
            self._host_frames[envs, slot] = frames
            self._host_masks[t, envs] = masks
        else:  # from shared memory that CUDA has pinned: no staging copy
            self.frames[envs, slot].copy_(torch.from_numpy(frames), non_blocking=True)
            self.masks[t, envs].copy_(torch.from_numpy(masks), non_blocking=True)

    def observation(self, t: int, envs: slice = slice(None)) -> torch.Tensor:
        """The stacked observations of step ``t`` for ``envs``, ``[E, S*C, H, W]``: a view into the
        storage, valid until the storage is next written; a copy where an episode began inside the
        stack (its first frame repeats)."""
        stacked = self.frames[envs, t : t + self.stack].flatten(1, 2)
        first = self.first_slot[t, envs]
        began_inside = np.flatnonzero(first > t)
        if began_inside.size and self._host_frames is not None:
            # on a CPU one numpy gather of every env's slots beats a copy and a patch
            slots = np.maximum(t + self._offsets[None, :], first[:, None])
            env_ids = np.arange(self.num_envs)[envs]
            return torch.from_numpy(self._host_frames[env_ids[:, None], slots]).flatten(1, 2)
        if began_inside.size:
            stacked = stacked.clone()
            slots = np.maximum(t + self._offsets[None, :], first[began_inside, None])
            rows = torch.as_tensor(began_inside, device=self.device)
            env_ids = self._envs[envs][rows]
            stacked[rows] = self.frames[env_ids[:, None], torch.as_tensor(slots, device=self.device)].flatten(1, 2)
        return stacked

    def minibatch(self, flat_indices: torch.Tensor) -> torch.Tensor:
        """Stacked observations ``[B, S*C, H, W]`` for flat (step, env) indices."""
        if self._first_slot_device is None:
            self._first_slot_device = torch.as_tensor(self.first_slot[: self.num_steps], device=self.device)
        steps = torch.div(flat_indices, self.num_envs, rounding_mode="floor")
        envs = flat_indices % self.num_envs
        offsets = torch.arange(self.stack, device=self.device)
        slots = torch.maximum(steps[:, None] + offsets[None, :], self._first_slot_device[steps, envs][:, None])
        return self.frames[envs[:, None], slots].flatten(1, 2)

    def minibatch_masks(self, flat_indices: torch.Tensor) -> torch.Tensor:
        """Screen-size masks ``[B, sH, sW]`` for flat (step, env) indices (only for measuring: the
        loss uses masks pulled back to the feature grid)."""
        return self.masks[: self.num_steps].flatten(0, 1)[flat_indices]

    def carry_over(self) -> None:
        """After the update: the bootstrap observation becomes step 0 of the next rollout."""
        T = self.num_steps
        self.frames[:, : self.stack] = self.frames[:, T : T + self.stack].clone()
        self.masks[0] = self.masks[T]
        self.episode_first = np.maximum(self.episode_first - T, 0)
        self.first_slot[0] = self.episode_first
        self._first_slot_device = None

    def state(self) -> dict:
        """What a checkpoint keeps: the frames the next rollout's first stacks reach back to (env-major,
        ``[E, S, ...]``), the carried mask and where each env's episode began; tensors only."""
        return {"frames": self.frames[:, : self.stack].cpu().clone(), "mask": self.masks[0].cpu().clone(),
                "episode_first": torch.from_numpy(self.episode_first.copy())}

    def load_state(self, state: dict) -> None:
        self.frames[:, : self.stack] = state["frames"].to(self.device)
        self.masks[0] = state["mask"].to(self.device)
        self.episode_first = state["episode_first"].numpy().astype(np.int64)
        self.first_slot[0] = self.episode_first
        self._first_slot_device = None

    def newest_frames(self) -> torch.Tensor:
        """Each env's newest frame, ``[E, C, H, W]``: what the envs show between rollouts."""
        return self.frames[:, self.stack - 1]


def pin_host_memory(memory) -> int | None:
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
