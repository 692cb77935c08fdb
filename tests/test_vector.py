"""The trainer's env plumbing on the real engine: workers vs in-process, groups, replay, a dying worker."""

import os
import signal
import subprocess
import time

import numpy as np
import pytest

from camal_rl import doom, vector


def play(envs: vector.DoomVector, steps: int, seed: int = 0, grouped: bool = False):
    """Frames, masks, rewards, flags and finished returns of ``steps`` random vector steps."""
    rng = np.random.default_rng(seed)
    envs.reset()
    trace = [(envs.frames.copy(), envs.masks.copy(), envs.episode_starts.copy())]
    groups = envs.groups(2) if grouped else None
    for _ in range(steps):
        actions = rng.integers(3, size=envs.num_envs)
        if groups:
            for group in groups:
                envs.step_async(actions[group], group)
            for group in reversed(groups):
                envs.step_wait(group)
        else:
            envs.step(actions)
        trace.append((envs.frames.copy(), envs.masks.copy(), envs.rewards.copy(), envs.terminated.copy(),
                      envs.truncated.copy(), envs.episode_starts.copy(),
                      # finished returns are only meaningful where an episode ended
                      np.where(envs.episode_starts, envs.finished_returns, 0.0)))
    return trace


def same(a, b) -> bool:
    return len(a) == len(b) and all(all(np.array_equal(x, y) for x, y in zip(p, q, strict=True))
                                    for p, q in zip(a, b, strict=True))


def test_workers_and_groups_give_the_in_process_numbers(short_basic):
    with vector.DoomVector(short_basic, num_envs=4, seed=7, workers=0) as envs:
        reference = play(envs, 40)
    with vector.DoomVector(short_basic, num_envs=4, seed=7, workers=2) as envs:
        assert envs.workers == 2 and len(envs.groups(2)) == 2
        assert same(play(envs, 40), reference)
        assert same(play(envs, 40, grouped=True), reference)  # double-buffered stepping: same envs, same numbers
        untouched = (np.zeros_like(envs.frames), np.zeros_like(envs.masks))
        envs.step_async(np.zeros(4, dtype=np.int64), slice(0, 4))
        assert not envs.step_wait(slice(0, 4), into=untouched)  # workers write the shared arrays only
        assert not untouched[0].any() and not untouched[1].any()
    assert sum(int(step[5].sum()) for step in reference[1:]) >= 8, "the test must cross episode ends"
    frames, masks = reference[0][0], reference[0][1]
    assert frames.shape == (4, 1, 60, 80) and masks.shape == (4, 120, 160)  # masks stay at screen resolution


def test_in_process_envs_write_into_given_rows(short_basic):
    """``step_wait(into=...)`` (the trainer passes its storage's rows) gets the frames and masks the
    vector's own arrays would have held, and leaves those arrays as they were."""
    with vector.DoomVector(short_basic, num_envs=4, seed=7, workers=0) as envs:
        reference = play(envs, 30, grouped=True)
    rng = np.random.default_rng(0)
    with vector.DoomVector(short_basic, num_envs=4, seed=7, workers=0) as envs:
        envs.reset()
        first_frames = envs.frames.copy()
        frames, masks = np.zeros_like(envs.frames), np.zeros_like(envs.masks)
        for step in range(1, 31):
            actions = rng.integers(3, size=envs.num_envs)
            for group in envs.groups(2):
                envs.step_async(actions[group], group)
            for group in reversed(envs.groups(2)):
                assert envs.step_wait(group, into=(frames, masks))
            assert np.array_equal(frames, reference[step][0]) and np.array_equal(masks, reference[step][1])
            assert np.array_equal(envs.rewards, reference[step][2])
        assert np.array_equal(envs.frames, first_frames)


def test_each_env_matches_a_lone_env_with_its_seed(short_basic):
    """Env i of the vector is env seed+i: same frames, masks and autoreset as a DoomEnv stepped alone."""
    with vector.DoomVector(short_basic, num_envs=2, seed=3, workers=2) as envs:
        trace = play(envs, 35, seed=1)
    rng = np.random.default_rng(1)
    actions = [rng.integers(3, size=2) for _ in range(35)]
    for i in range(2):
        env = doom.make_env(short_basic, seed=3 + i, frame_stack=1)
        env.reset(seed=3 + i)
        assert np.array_equal(trace[0][0][i], env.frame)
        for t, action in enumerate(actions, 1):
            reward, terminated, truncated, finished = env.play(int(action[i]))
            assert np.array_equal(trace[t][0][i], env.frame) and np.array_equal(trace[t][1][i], env.mask)
            assert trace[t][2][i] == reward and trace[t][5][i] == (finished is not None)
        env.close()


def test_state_and_restore_continue_exactly(short_basic):
    rng = np.random.default_rng(5)
    with vector.DoomVector(short_basic, num_envs=3, seed=11, workers=3) as envs:
        envs.reset()
        for _ in range(23):  # crosses at least one episode end
            envs.step(rng.integers(3, size=3))
        saved = envs.state()
        later_actions = rng.integers(3, size=(12, 3))
        expected = []
        for actions in later_actions:
            envs.step(actions)
            expected.append((envs.frames.copy(), envs.masks.copy(), envs.rewards.copy(), envs.episode_starts.copy()))
    assert any(state["episode_index"] > 0 for state in saved) and all(state["actions"] for state in saved)
    with vector.DoomVector(short_basic, num_envs=3, seed=11, workers=0) as fresh:
        fresh.restore(saved)
        for actions, (frames, masks, rewards, starts) in zip(later_actions, expected, strict=True):
            fresh.step(actions)
            assert np.array_equal(fresh.frames, frames) and np.array_equal(fresh.masks, masks)
            assert np.array_equal(fresh.rewards, rewards) and np.array_equal(fresh.episode_starts, starts)


def _alive(pids) -> list[str]:
    return [p for p in pids if os.path.exists(f"/proc/{p}") and open(f"/proc/{p}/stat").read().split()[2] != "Z"]


def test_a_dead_worker_is_a_clear_error_and_its_engines_are_ended(short_basic, engines):
    vizdoom_engines = engines
    envs = vector.DoomVector(short_basic, num_envs=4, seed=0, workers=2)
    envs.reset()
    envs.step(np.zeros(4, dtype=int))
    victim = envs._processes[1]
    children = subprocess.run(["pgrep", "-P", str(victim.pid)], capture_output=True, text=True).stdout.split()
    engines = sorted(set(children) & vizdoom_engines())  # the worker's other child is its engine reaper
    assert len(engines) == 2  # one ViZDoom engine per env of the worker
    os.kill(victim.pid, signal.SIGKILL)
    victim.join(timeout=10)
    with pytest.raises(vector.EnvWorkerError,
                       match=r"env worker 1 \(envs 2-3, pid \d+\) died \(exit code -9\).*--resume"):
        envs.step(np.zeros(4, dtype=int))
    envs.close()
    deadline = time.time() + 15
    while _alive(engines) and time.time() < deadline:
        time.sleep(0.2)
    assert not _alive(engines), "the dead worker's ViZDoom engines were left running"


def test_a_failing_env_reports_its_error(short_basic):
    with vector.DoomVector(short_basic, num_envs=2, seed=0, workers=1) as envs:
        envs.reset()
        with pytest.raises(vector.EnvWorkerError, match="env worker 0 .* failed: .*Error"):
            envs.step(np.array([0, 99]))  # no such action


def test_bad_scenario_fails_in_this_process():
    with pytest.raises(doom.SpecError, match="available"):
        vector.DoomVector("no_such_scenario", num_envs=2, seed=0, workers=2)


def test_screen_size_of_resolution_names():
    assert doom.screen_size("RES_160X120") == (120, 160)
    assert doom.screen_size("RES_320X240") == (240, 320)
