"""A run's lifecycle without an engine or a network: the schedule, the clocks, saving and
restoring, the non-finite stop, and a stop that lets the running iteration finish."""

import os
import signal
from collections import deque

import pytest

from camal_rl.errors import ConfigError, Interrupted
from camal_rl.run_state import RECENT_EPISODES, SAVED_FIELDS, RunState


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


def state(clock=None, **schedule):
    values = dict(total_iterations=10, batch_size=100, eval_interval=250, checkpoint_interval=4,
                  checkpoint_minutes=0.0)
    values.update(schedule)
    return RunState(**values, clock=clock or Clock())


def walk(run: RunState, clock: Clock, seconds_per_iteration: float = 1.0):
    """Iterate as the trainer does; which iterations evaluated and which checkpointed."""
    evaluated, saved = [], []
    for iteration in run.iterations():
        clock.now += seconds_per_iteration
        run.finish_iteration(iteration, run.global_step + run.batch_size)
        if run.evaluation_due(iteration):
            with run.evaluating():
                clock.now += 10.0
            evaluated.append(iteration)
        if run.checkpoint_due(iteration):
            run.saved()
            saved.append(iteration)
    return evaluated, saved


def test_evaluations_follow_agent_steps_and_checkpoints_follow_iterations():
    clock = Clock()
    run = state(clock)
    evaluated, saved = walk(run, clock)
    assert evaluated == [3, 5, 8, 10]  # 300 >= 250, 500 >= 500, 800 >= 750, and the last
    assert saved == [4, 8, 10]
    # training time leaves the evaluations out
    assert run.train_seconds() == pytest.approx(10.0) and run.eval_seconds() == pytest.approx(40.0)
    assert run.steps_per_second() == 100


def test_a_slow_run_checkpoints_by_the_clock_too():
    clock = Clock()
    run = state(clock, checkpoint_interval=100, checkpoint_minutes=1.0, eval_interval=0)
    _, saved = walk(run, clock, seconds_per_iteration=25.0)
    assert saved == [3, 6, 9, 10]  # 60 s of the clock after the last save (75 s, 150 s, 225 s), and the end


def test_saved_fields_restore_the_run_where_it_stood():
    clock = Clock()
    run = state(clock)
    run.episodes_ended(range(RECENT_EPISODES + 5))
    run.dead_attention_step, run.last_eval = 300, {"return_mean": 1.5}
    for iteration in range(1, 4):
        clock.now += 2.0
        run.finish_iteration(iteration, run.global_step + 100)
    saved = run.saved()
    assert set(saved) == set(SAVED_FIELDS)
    assert saved["recent_returns"] == list(range(5, RECENT_EPISODES + 5))
    later = Clock()
    restored = RunState.restored(saved, total_iterations=10, batch_size=100, eval_interval=250, clock=later)
    assert (restored.iteration, restored.global_step, restored.last_checkpoint) == (3, 300, 3)
    assert list(restored.iterations()) == list(range(4, 11))
    assert restored.next_eval_step == 500  # not 250 again: that evaluation already happened
    assert restored.train_seconds() == pytest.approx(6.0)
    assert isinstance(restored.recent_returns, deque) and restored.recent_returns.maxlen == RECENT_EPISODES
    assert restored.mean_recent_return() == pytest.approx(sum(range(5, 25)) / 20)


def test_a_non_finite_loss_stops_the_run_saying_what_is_kept(tmp_path):
    run = state()
    run.stop_if_not_finite([0.5, 1e30], 1, 1, tmp_path)  # large is not infinite
    with pytest.raises(ConfigError, match="loss became nan in iteration 2 .epoch 3.*no checkpoint had been written"):
        run.stop_if_not_finite([0.1, float("nan")], 2, 3, tmp_path)
    run.finish_iteration(4, 400)
    run.saved()
    with pytest.raises(ConfigError, match=r"became inf .*its last good checkpoint \(iteration 4\) stays in"):
        run.stop_if_not_finite([float("inf")], 5, 1, tmp_path)


def test_a_stop_lets_the_iteration_finish_and_saves_it(tmp_path):
    run = state()
    finished = []
    with pytest.raises(Interrupted) as stopped:
        with run.stoppable(tmp_path):
            for iteration in run.iterations():
                if iteration == 3:
                    os.kill(os.getpid(), signal.SIGTERM)  # arrives mid-iteration
                run.finish_iteration(iteration, run.global_step + 100)
                finished.append(iteration)
                if run.checkpoint_due(iteration):
                    run.saved()
                if run.stop_requested():
                    break
    assert finished == [1, 2, 3] and run.last_checkpoint == 3  # the stopped iteration was saved
    assert stopped.value.signum == signal.SIGTERM
    assert f"last checkpoint is iteration 3; continue with: camal-train --resume {tmp_path}" in stopped.value.message


def test_a_second_signal_stops_at_once(tmp_path):
    run = state()
    with pytest.raises(Interrupted) as stopped:
        with run.stoppable(tmp_path):
            for iteration in run.iterations():
                run.finish_iteration(iteration, run.global_step + 100)
                if iteration == 4:
                    run.saved()
                if iteration == 6:
                    os.kill(os.getpid(), signal.SIGINT)
                    os.kill(os.getpid(), signal.SIGINT)
                    pytest.fail("the second signal did not stop the loop")
    assert "stopped after iteration 6" in stopped.value.message
    assert "last checkpoint is iteration 4" in stopped.value.message


def test_the_handlers_are_put_back(tmp_path):
    before = {signum: signal.getsignal(signum) for signum in (signal.SIGINT, signal.SIGTERM)}
    run = state(total_iterations=2)
    with run.stoppable(tmp_path):
        assert signal.getsignal(signal.SIGINT) is not before[signal.SIGINT]
    assert {signum: signal.getsignal(signum) for signum in before} == before


def test_a_stop_asked_in_the_last_iteration_lets_the_run_finish(tmp_path):
    run = state(total_iterations=3)
    with run.stoppable(tmp_path):  # no Interrupted: the run is whole
        for iteration in run.iterations():
            if iteration == 3:
                os.kill(os.getpid(), signal.SIGINT)
            run.finish_iteration(iteration, run.global_step + 100)
            assert not run.evaluation_due(iteration) or run.is_last(iteration)  # a stop skips scheduled ones
            if run.stop_requested():
                break
    assert run.iteration == 3 and run.stop_requested()
