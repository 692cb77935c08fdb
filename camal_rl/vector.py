"""Doom envs for the trainer: each step ships only the newest frame and its mask.

``DoomVector`` steps ``num_envs`` games either in this process (``workers=0``) or in worker
processes (``workers=N``, envs split evenly among them). Workers write the newest frame, its
mask, rewards and flags straight into memory shared with the learner, so a step moves one
frame per env (230 KB at 240x320 colour) instead of a whole stack, and nothing is pickled;
a one-byte message per worker says "step" and "done". Frame stacking happens once, on the
learner's side (``camal_rl.rollout.FrameStorage``). Both modes give the same numbers for the same seed.

Autoreset is CleanRL's: an env whose episode ends starts the next (seeded) episode in the same
step, and ``episode_starts`` marks the frames that begin an episode. ``state()`` and
``restore()`` save and replay each env's position in its episode, for exact resume.

This module never imports torch. Workers are forked: build a ``DoomVector`` before the learner
touches CUDA (the trainer does).
"""

from __future__ import annotations

import enum
import mmap
import multiprocessing
import os
import pickle
import signal
from multiprocessing.connection import Connection

import numpy as np

from camal_rl import doom
from camal_rl.errors import CamalError
from camal_rl.files import die_with_parent

# A step takes milliseconds; a worker silent for this long is hung.
STEP_TIMEOUT_S = 120.0
RESTORE_TIMEOUT_S = 1800.0


class Message(bytes, enum.Enum):
    """The first byte of every message between the learner and an env worker; a pickled payload may follow."""

    STEP = b"s"  # learner: step your envs with the actions in shared memory
    RESET = b"r"  # learner: reset your envs with these seeds
    STATES = b"g"  # learner: send each env's place in its episode
    REPLAY = b"p"  # learner: replay your envs to these places
    CLOSE = b"c"  # learner: close your envs and exit
    OK = b"k"  # worker: done (its reply follows where there is one)
    ERROR = b"e"  # worker: failed (what went wrong follows)


class EnvWorkerError(CamalError, RuntimeError):
    """A worker process died or failed; the message names the worker, its envs and the cause."""


class _Buffers:
    """The arrays learner and workers share: one anonymous shared mapping, views into it."""

    def __init__(self, num_envs: int, frame_shape: tuple, mask_shape: tuple, shared: bool):
        layout = [
            ("frames", np.uint8, (num_envs, *frame_shape)),
            ("masks", np.uint8, (num_envs, *mask_shape)),
            ("actions", np.int64, (num_envs,)),
            ("rewards", np.float64, (num_envs,)),
            ("terminated", np.bool_, (num_envs,)),
            ("truncated", np.bool_, (num_envs,)),
            ("episode_starts", np.bool_, (num_envs,)),
            ("finished_returns", np.float64, (num_envs,)),
            ("finished_lengths", np.int64, (num_envs,)),
        ]
        offsets, total = [], 0
        for _, dtype, shape in layout:
            total = -(-total // 64) * 64  # 64-byte alignment for each array
            offsets.append(total)
            total += int(np.prod(shape)) * np.dtype(dtype).itemsize
        # MAP_SHARED anonymous memory survives fork as the same pages in every worker.
        self.memory = mmap.mmap(-1, max(total, 1)) if shared else bytearray(max(total, 1))
        for (name, dtype, shape), offset in zip(layout, offsets, strict=True):
            setattr(self, name, np.ndarray(shape, dtype=dtype, buffer=self.memory, offset=offset))


def _run_envs(envs: list[doom.DoomEnv], indices: range, buffers: _Buffers, command: bytes, payload,
              into: tuple[np.ndarray, np.ndarray] | None = None) -> object:
    """Carry out one command on a group of envs, writing results into ``buffers`` (a step's frames
    and masks into ``into`` where given)."""
    if command == Message.STEP:
        frames, masks = into if into is not None else (buffers.frames, buffers.masks)
        rows = slice(indices.start, indices.stop)
        # the small per-env results go into the shared arrays once per group, not once per env
        outcomes = []
        for env, i, action in zip(envs, indices, buffers.actions[rows].tolist(), strict=True):
            if action < 0:  # inactive this step (evaluation envs that have played their share)
                outcomes.append((0.0, False, False, False))
                continue
            reward, terminated, truncated, finished = env.play(action)
            outcomes.append((reward, terminated, truncated, finished is not None))
            if finished is not None:
                buffers.finished_returns[i], buffers.finished_lengths[i] = finished["r"], finished["l"]
            frames[i], masks[i] = env.frame, env.mask
        if not outcomes:
            return None
        rewards, terminated, truncated, starts = zip(*outcomes, strict=True)
        buffers.rewards[rows], buffers.terminated[rows], buffers.truncated[rows] = rewards, terminated, truncated
        buffers.episode_starts[rows] = starts
        return None
    if command == Message.RESET:
        for env, i in zip(envs, indices, strict=True):
            env.reset(seed=payload[i])
            buffers.frames[i], buffers.masks[i] = env.frame, env.mask
            buffers.episode_starts[i] = True
        return None
    if command == Message.STATES:
        return [env.episode_state() for env in envs]
    if command == Message.REPLAY:
        for env, i in zip(envs, indices, strict=True):
            env.replay(payload[i])
            buffers.frames[i], buffers.masks[i] = env.frame, env.mask
            buffers.episode_starts[i] = False
        return None
    raise ValueError(f"unknown command {command!r}")


def _worker(conn: Connection, parent_end: Connection, spec: doom.ScenarioSpec, indices: range, seeds: list[int],
            env_kwargs: dict, buffers: _Buffers) -> None:
    parent_end.close()
    # Its own process group: the ViZDoom engines it starts join it, so the learner can end
    # them even when this worker is killed (an orphaned engine would run on otherwise).
    os.setpgid(0, 0)
    die_with_parent(signal.SIGKILL)  # a learner killed with -9 takes its workers along (their reapers end the engines)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the learner's to handle
    envs = []
    try:
        for i in indices:
            envs.append(doom.make_env(spec, seed=seeds[i], frame_stack=1, **env_kwargs))
        conn.send_bytes(Message.OK)
        while True:
            message = conn.recv_bytes()
            command, payload = message[:1], (pickle.loads(message[1:]) if len(message) > 1 else None)
            if command == Message.CLOSE:
                break
            reply = _run_envs(envs, indices, buffers, command, payload)
            conn.send_bytes(Message.OK + (pickle.dumps(reply) if reply is not None else b""))
    except (EOFError, BrokenPipeError, KeyboardInterrupt):
        pass  # the learner is gone
    except BaseException as error:  # report, then exit: the learner raises EnvWorkerError
        try:
            conn.send_bytes(Message.ERROR + pickle.dumps(f"{type(error).__name__}: {error}"))
        except (BrokenPipeError, OSError):
            pass
    finally:
        for env in envs:
            env.close()
        conn.close()


def _end_group(process: multiprocessing.Process) -> None:
    """Kill whatever is left of a worker's process group (its ViZDoom engines)."""
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError, TypeError):
        pass


class DoomVector:
    """``num_envs`` Doom games with seeds ``seed + i``; see the module docstring.

    After ``reset()`` or ``step(actions)``: ``frames`` ``[E, C, H, W]`` and ``masks``
    ``[E, screen H, screen W]`` (uint8 views, overwritten by the next step: copy what you keep),
    ``rewards`` (raw, unclipped), ``terminated``, ``truncated``, ``episode_starts``, and for envs
    whose episode ended ``finished_returns`` / ``finished_lengths``. An ``action`` of -1 leaves
    that env where it is.
    """

    def __init__(self, name_or_path, *, num_envs: int, seed: int, workers: int = 0, **env_kwargs):
        spec = doom.load_spec(name_or_path)  # a bad name fails here, in this process
        if num_envs < 1:
            raise ValueError("num_envs must be at least 1")
        self.spec, self.num_envs, self.seeds = spec, num_envs, [seed + i for i in range(num_envs)]
        grayscale = env_kwargs.get("grayscale", True)
        height, width = env_kwargs.get("obs_size", (60, 80))
        self.frame_shape = (1 if grayscale else 3, height, width)
        self.mask_shape = doom.screen_size(env_kwargs.get("resolution") or spec.resolution)
        self.workers = min(max(0, workers), num_envs)
        self.buffers = _Buffers(num_envs, self.frame_shape, self.mask_shape, shared=self.workers > 0)
        for name in ("frames", "masks", "rewards", "terminated", "truncated", "episode_starts",
                     "finished_returns", "finished_lengths"):
            setattr(self, name, getattr(self.buffers, name))
        self._envs: list[doom.DoomEnv] = []
        self._groups: list[range] = []
        self._connections: list[Connection] = []
        self._processes: list[multiprocessing.Process] = []
        self.action_names: list[str] = []
        try:
            if self.workers == 0:
                self._envs = [doom.make_env(spec, seed=s, frame_stack=1, **env_kwargs) for s in self.seeds]
                self.action_names = self._envs[0].action_names
                self.num_actions = int(self._envs[0].action_space.n)
            else:
                self._start_workers(env_kwargs)
                self.action_names = [" + ".join(a) or "NOOP" for a in spec.actions] if spec.actions else []
                self.num_actions = len(spec.actions) if spec.actions else self._count_buttons(spec)
        except BaseException:
            self.close()
            raise

    @staticmethod
    def _count_buttons(spec: doom.ScenarioSpec) -> int:
        # A spec without an action list gets one action per button of its .cfg (as DoomEnv does).
        env = doom.DoomEnv(spec, frame_stack=1, obs_size=(30, 40))
        try:
            return int(env.action_space.n)
        finally:
            env.close()

    def _start_workers(self, env_kwargs: dict) -> None:
        context = multiprocessing.get_context("fork")
        bounds = np.linspace(0, self.num_envs, self.workers + 1).round().astype(int)
        self._groups = [range(bounds[w], bounds[w + 1]) for w in range(self.workers)]
        for group in self._groups:
            parent_end, child_end = context.Pipe(duplex=True)
            process = context.Process(
                target=_worker, args=(child_end, parent_end, self.spec, group, self.seeds, env_kwargs, self.buffers),
                daemon=True, name=f"camal-env-{group.start}-{group.stop - 1}",
            )
            process.start()
            child_end.close()
            self._connections.append(parent_end)
            self._processes.append(process)
        self._gather(timeout=STEP_TIMEOUT_S)  # each worker says "k" once its games are up

    # -- talking to workers -----------------------------------------------------------------
    def _describe(self, worker: int) -> str:
        group = self._groups[worker]
        return f"env worker {worker} (envs {group.start}-{group.stop - 1}, pid {self._processes[worker].pid})"

    def _receive(self, worker: int, timeout: float) -> object:
        connection = self._connections[worker]
        try:
            if not connection.poll(timeout):
                raise EnvWorkerError(f"{self._describe(worker)} did not answer within {timeout:.0f} s")
            message = connection.recv_bytes()
        except (EOFError, ConnectionResetError, BrokenPipeError):
            process = self._processes[worker]
            process.join(timeout=1.0)
            _end_group(process)
            raise EnvWorkerError(
                f"{self._describe(worker)} died (exit code {process.exitcode}); the run stops here - "
                f"continue it with --resume from its last checkpoint"
            ) from None
        if message[:1] == Message.ERROR:
            raise EnvWorkerError(f"{self._describe(worker)} failed: {pickle.loads(message[1:])}")
        return pickle.loads(message[1:]) if len(message) > 1 else None

    def _gather(self, timeout: float) -> list:
        return [self._receive(w, timeout) for w in range(len(self._connections))]

    def _send(self, workers, message: bytes) -> None:
        for w in workers:
            try:
                self._connections[w].send_bytes(message)
            except (BrokenPipeError, ConnectionResetError, OSError):
                self._receive(w, 0.0)  # raises with the exit code

    def _broadcast(self, command: bytes, payload=None, timeout: float = STEP_TIMEOUT_S) -> list:
        self._send(range(len(self._connections)), command + (pickle.dumps(payload) if payload is not None else b""))
        return self._gather(timeout)

    def _in_process(self, envs: slice, command: bytes, payload=None, into=None) -> object:
        try:
            return _run_envs(self._envs[envs], range(self.num_envs)[envs], self.buffers, command, payload, into)
        except (vzd_errors() + (OSError,)) as error:
            indices = range(self.num_envs)[envs]
            raise EnvWorkerError(f"the ViZDoom engines of envs {indices.start}-{indices.stop - 1} (in this process) "
                                 f"failed: {type(error).__name__}: {error}; the run stops here - continue it with "
                                 f"--resume from its last checkpoint") from None

    def _command(self, command: bytes, payload=None, timeout: float = STEP_TIMEOUT_S) -> list:
        if self.workers == 0:
            return [self._in_process(slice(None), command, payload)]
        return self._broadcast(command, payload, timeout)

    # -- the API -------------------------------------------------------------------------------
    def reset(self) -> None:
        """Start every env's first episode (seeds ``seed + i``)."""
        self._command(Message.RESET, self.seeds)

    def step(self, actions) -> None:
        self.buffers.actions[:] = actions
        self._command(Message.STEP)

    def groups(self, count: int) -> list[slice]:
        """Split the envs into ``count`` contiguous groups that can step independently
        (``step_async`` / ``step_wait``); with workers, each group is a set of whole workers."""
        count = max(1, min(count, self.workers or self.num_envs))
        if self.workers == 0:
            bounds = np.linspace(0, self.num_envs, count + 1).round().astype(int)
        else:
            split = np.linspace(0, self.workers, count + 1).round().astype(int)
            bounds = [self._groups[w].start for w in split[:-1]] + [self.num_envs]
        return [slice(int(a), int(b)) for a, b in zip(bounds[:-1], bounds[1:], strict=True)]

    def _workers_of(self, envs: slice) -> list[int]:
        return [w for w, group in enumerate(self._groups) if envs.start <= group.start and group.stop <= envs.stop]

    def step_async(self, actions, envs: slice) -> None:
        """Start stepping the envs of one group (from ``groups``); the others keep their state."""
        self.buffers.actions[envs] = actions
        if self.workers:
            self._send(self._workers_of(envs), Message.STEP)

    def step_wait(self, envs: slice, into: tuple[np.ndarray, np.ndarray] | None = None) -> bool:
        """Wait for a group started by ``step_async``; its entries of the arrays are then current.

        ``into``: ``(frames, masks)`` arrays shaped like ``frames`` / ``masks`` that envs stepped in
        this process write their newest frames and masks to instead (a rollout storage's rows: one
        copy fewer); their rows of ``frames`` / ``masks`` then stay as they were. Workers always
        write the shared arrays. Returns whether the frames and masks went to ``into``."""
        if self.workers == 0:
            self._in_process(envs, Message.STEP, into=into)
            return into is not None
        for w in self._workers_of(envs):
            self._receive(w, STEP_TIMEOUT_S)
        return False

    def state(self) -> list[dict]:
        """Each env's seed, episode number and actions so far in its episode (for a checkpoint)."""
        replies = self._command(Message.STATES)
        return [state for reply in replies for state in reply]

    def restore(self, states: list[dict]) -> None:
        """Replay every env to the position ``state()`` saved; ``frames``/``masks`` then show it."""
        if len(states) != self.num_envs:
            raise ValueError(f"{len(states)} saved env states for {self.num_envs} envs")
        self._command(Message.REPLAY, states, timeout=RESTORE_TIMEOUT_S)

    def close(self) -> None:
        for env in self._envs:
            env.close()
        self._envs = []
        for connection in self._connections:
            try:
                connection.send_bytes(Message.CLOSE)
            except (BrokenPipeError, ConnectionResetError, OSError):
                pass
        for process in self._processes:
            process.join(timeout=10.0)
            if process.is_alive():
                process.terminate()
                process.join(timeout=5.0)
            _end_group(process)
        for connection in self._connections:
            connection.close()
        self._connections, self._processes = [], []

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass


def vzd_errors() -> tuple[type, ...]:
    """ViZDoom's exceptions for a dead or stuck engine (its SignalException, UnexpectedExit, ...)."""
    import vizdoom

    return tuple(getattr(vizdoom, name) for name in ("ViZDoomUnexpectedExitException", "ViZDoomIsNotRunningException",
                                                       "ViZDoomErrorException", "SignalException")
                 if isinstance(getattr(vizdoom, name, None), type))


def default_workers(num_envs: int) -> int:
    """One worker per env when there are cores to spare, else the envs run in this process.

    A worker spends most of a step waiting for its ViZDoom engine (a process of its own), so one
    per env lets every engine run at once. On 2 cores they only compete with the learner: there
    in-process envs are as fast (docs/performance.md, "In-process envs vs worker processes") and use less memory.
    """
    return 0 if (os.cpu_count() or 1) <= 2 else num_envs
