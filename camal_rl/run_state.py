"""A training run's life: where it stands, when it evaluates and checkpoints, and how it stops.

``RunState`` holds what a checkpoint carries besides the network and the envs (the iteration, the
agent steps, the training and evaluation time, the recent returns, the last evaluation) and decides
the schedule: an evaluation every ``eval_interval`` agent steps and at the end; a checkpoint every
``checkpoint_interval`` iterations, after ``checkpoint_minutes`` of training, at the end and on a
stop. A stop (Ctrl-C, SIGTERM) lets the running iteration finish, so that its checkpoint is the
run exactly as an uninterrupted one would have it; a second signal stops at once. No engine,
network or file here: the trainer gives it a clock and a function that saves.
"""

from __future__ import annotations

import math
import os
import shlex
import signal
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from tqdm import tqdm

from camal_rl.errors import ConfigError, Interrupted

RECENT_EPISODES = 20  # the training return a progress bar and a summary show: CleanRL's window
# What a checkpoint carries of the run state (besides the network, optimiser, envs and storage).
SAVED_FIELDS = ("iteration", "global_step", "train_time_s", "eval_time_s", "recent_returns", "last_eval",
                "dead_attention_step", "grid")


@dataclass
class RunState:
    total_iterations: int
    batch_size: int
    eval_interval: int = 0  # agent steps between evaluations; 0: only at the end
    checkpoint_interval: int = 10  # iterations between checkpoints
    checkpoint_minutes: float = 0.0  # training minutes after which a checkpoint is due anyway; 0: never
    clock: Callable[[], float] = time.monotonic
    # saved in the checkpoint
    iteration: int = 0
    global_step: int = 0
    train_time_s: float = 0.0
    eval_time_s: float = 0.0
    recent_returns: deque = field(default_factory=lambda: deque(maxlen=RECENT_EPISODES))
    last_eval: dict = field(default_factory=dict)
    dead_attention_step: int | None = None
    grid: tuple | None = None  # fixed evaluation frames and masks drawn with their attention
    # this session
    last_checkpoint: int = 0
    stop_signal: int | None = None

    def __post_init__(self) -> None:
        self.recent_returns = deque(self.recent_returns, maxlen=RECENT_EPISODES)
        self._session_start = self.clock()
        self._session_eval_seconds = 0.0
        self._checkpoint_time = self._session_start
        self.next_eval_step = self._next_eval_after(self.global_step)

    @classmethod
    def restored(cls, saved: dict, **schedule) -> RunState:
        """The state a checkpoint saved, with this session's schedule (``RunState``'s first fields)."""
        state = cls(**schedule, **{name: saved[name] for name in SAVED_FIELDS if name in saved})
        state.last_checkpoint = state.iteration
        return state

    # ---- where the run stands ----------------------------------------------------------
    def iterations(self) -> range:
        return range(self.iteration + 1, self.total_iterations + 1)

    def is_last(self, iteration: int) -> bool:
        return iteration == self.total_iterations

    def train_seconds(self) -> float:
        """Training time over every session of the run, evaluations left out."""
        return self.train_time_s + self.clock() - self._session_start - self._session_eval_seconds

    def steps_per_second(self) -> int:
        return int(self.global_step / max(self.train_seconds(), 1e-9))

    def finish_iteration(self, iteration: int, global_step: int) -> None:
        self.iteration, self.global_step = iteration, global_step

    def episodes_ended(self, returns) -> None:
        self.recent_returns.extend(float(r) for r in returns)

    def mean_recent_return(self) -> float | None:
        return sum(self.recent_returns) / len(self.recent_returns) if self.recent_returns else None

    # ---- the schedule --------------------------------------------------------------------
    def _next_eval_after(self, step: int) -> int | None:
        return (step // self.eval_interval + 1) * self.eval_interval if self.eval_interval else None

    def evaluation_due(self, iteration: int) -> bool:
        """At the end, and every ``eval_interval`` agent steps; not after a stop was asked (it would only
        delay it), but for the last iteration."""
        scheduled = self.next_eval_step is not None and self.global_step >= self.next_eval_step
        return self.is_last(iteration) or (scheduled and self.stop_signal is None)

    @contextmanager
    def evaluating(self) -> Iterator[None]:
        """Time an evaluation apart from training and move the schedule past it."""
        start = self.clock()
        try:
            yield
        finally:
            self._session_eval_seconds += self.clock() - start
            if self.next_eval_step is not None:
                self.next_eval_step = self._next_eval_after(self.global_step)

    def checkpoint_due(self, iteration: int) -> bool:
        minutes = (self.clock() - self._checkpoint_time) / 60
        return (self.is_last(iteration) or iteration % self.checkpoint_interval == 0 or self.stop_signal is not None
                or (self.checkpoint_minutes > 0 and minutes >= self.checkpoint_minutes))

    def saved(self) -> dict:
        """What a checkpoint of the run state holds now; the save's time starts the next interval."""
        self.last_checkpoint = self.iteration
        self._checkpoint_time = self.clock()
        return {"iteration": self.iteration, "global_step": self.global_step, "train_time_s": self.train_seconds(),
                "eval_time_s": self.eval_seconds(), "recent_returns": list(self.recent_returns),
                "last_eval": self.last_eval, "dead_attention_step": self.dead_attention_step, "grid": self.grid}

    def eval_seconds(self) -> float:
        return self.eval_time_s + self._session_eval_seconds

    # ---- what a person watching sees ---------------------------------------------------
    @contextmanager
    def progress_bar(self, description: str, enabled: bool) -> Iterator[None]:
        """A bar over the run's agent steps with steps/s, the recent return, IoU and the ETA."""
        self._bar = tqdm(total=self.total_iterations * self.batch_size, initial=self.global_step, unit="step",
                         disable=not enabled, dynamic_ncols=True, desc=description)
        try:
            yield
        finally:
            self._bar.close()

    def show_progress(self, iou: float | None) -> None:
        recent = self.mean_recent_return()
        self._bar.update(self.global_step - self._bar.n)
        self._bar.set_postfix(sps=self.steps_per_second(), ret="-" if recent is None else f"{recent:.1f}",
                              iou="-" if iou is None else f"{iou:.2f}")

    # ---- stops -----------------------------------------------------------------------------
    def stop_if_not_finite(self, losses: list[float], iteration: int, epoch: int, run_dir: Path) -> None:
        """A NaN or infinite loss poisons the weights: stop before anything of this iteration is saved."""
        bad = next((loss for loss in losses if not math.isfinite(loss)), None)
        if bad is None:
            return
        kept = (f"its last good checkpoint (iteration {self.last_checkpoint}) stays in {run_dir}"
                if self.last_checkpoint else "no checkpoint had been written yet")
        raise ConfigError(f"the loss became {bad} in iteration {iteration} (epoch {epoch}); the run stops before "
                          f"that update is saved, {kept}; lower --learning-rate or --camal-coef and start a new run")

    @contextmanager
    def stoppable(self, run_dir: Path) -> Iterator[None]:
        """Ctrl-C or SIGTERM asks the loop to stop after the running iteration (``stop_signal``); a
        second one stops at once. Either way the run ends with ``Interrupted`` saying where it stopped
        and how to resume. Outside the main thread signals cannot be caught: a stop is then immediate."""
        handled = (signal.SIGINT, signal.SIGTERM)
        previous = {}

        def ask_to_stop(signum, frame):
            if self.stop_signal is not None:
                raise Interrupted(signum=signum)
            self.stop_signal = signum
            # os.write, not print: a handler may run while the progress bar is writing to the same stream
            os.write(2, f"\ncamal-train: stopping after the running iteration (it is saved first; "
                        f"{signal.Signals(signum).name} again stops at once)\n".encode())

        if threading.current_thread() is threading.main_thread():
            previous = {signum: signal.signal(signum, ask_to_stop) for signum in handled}
        try:
            yield
        except KeyboardInterrupt as interruption:
            raise Interrupted(self._where_stopped(run_dir), getattr(interruption, "signum", signal.SIGINT)) from None
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)
        if self.stop_signal is not None and self.iteration < self.total_iterations:  # a stop at the end is no stop
            raise Interrupted(self._where_stopped(run_dir), self.stop_signal)

    def stop_requested(self) -> bool:
        return self.stop_signal is not None

    def _where_stopped(self, run_dir: Path) -> str:
        where = f"{run_dir} stopped after iteration {self.iteration} of {self.total_iterations}"
        if self.last_checkpoint:
            return (f"{where}; its last checkpoint is iteration {self.last_checkpoint}; continue with: "
                    f"camal-train --resume {shlex.quote(str(run_dir))}")
        return f"{where}, before its first checkpoint; delete the folder and start again"
