"""ViZDoom environments with label-buffer masks, on the real engine."""

import multiprocessing
import time

import cv2
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

from camal_rl import doom

PAPER_SCENARIOS = ["basic", "defend_the_line", "defend_the_center", "take_cover"]


@pytest.mark.parametrize("name", PAPER_SCENARIOS)
def test_check_env_passes(name):
    env = doom.make_env(name, seed=0)
    try:
        check_env(env, skip_render_check=True)
    finally:
        env.close()


def test_all_bundled_specs_load():
    for name in ["basic", "defend_the_line", "defend_the_center", "take_cover", "health_gathering", "my_way_home"]:
        spec = doom.load_spec(name)
        assert spec.config.is_file() and spec.reference_score != spec.random_score


def _target_boxes(state, spec):
    return [
        (label.x, label.y, label.width, label.height)
        for label in state.labels
        if label.object_category in spec.mask_categories or label.object_name in spec.mask_objects
    ]


def test_basic_masks_lie_on_the_cacodemon():
    env = doom.make_env("basic", seed=3, render_mode="rgb_array")
    rng = np.random.default_rng(0)
    env.reset(seed=3)
    non_empty, frames, contrasts = 0, 0, []
    done = False
    while not done and frames < 200:
        state = env.game.get_state()
        full_mask = env.mask
        assert full_mask.shape == env.screen.shape[:2]
        assert set(np.unique(full_mask)) <= {0, 1}
        if full_mask.any():
            non_empty += 1
            inside_boxes = np.zeros_like(full_mask, dtype=bool)
            for x, y, w, h in _target_boxes(state, env.scenario):
                inside_boxes[y : y + h + 1, x : x + w + 1] = True
            assert not (full_mask.astype(bool) & ~inside_boxes).any(), "mask pixel outside every target box"
            # the weapon sprite (255), walls (0) and floor (1) are never in the mask
            assert not np.isin(state.labels_buffer[full_mask.astype(bool)], [0, 1, 255]).any()
            assert env.render().shape == env.screen.shape and env.screen.ndim == 3  # native RGB for videos
            gray = env.screen.astype(float).mean(2)
            contrasts.append(abs(gray[full_mask == 1].mean() - gray[full_mask == 0].mean()))
        frames += 1
        # move only (no attack) so the episode lasts
        _, _, terminated, truncated, _ = env.step(int(rng.integers(2)))
        done = terminated or truncated
    env.close()
    assert non_empty > 0.8 * frames, f"mask empty on {frames - non_empty} of {frames} frames"
    assert np.mean(contrasts) > 5.0


def test_observation_mask_is_the_label_buffer_at_screen_resolution():
    """Oracle independent of the LUT: the target labels' pixel values, looked up with numpy."""
    env = doom.make_env("defend_the_line", seed=1, obs_size=(60, 80))
    obs, _ = env.reset(seed=1)
    checked = 0
    for step in range(40):
        state = env.game.get_state()
        targets = [label.value for label in state.labels
                   if label.object_category in env.scenario.mask_categories
                   or label.object_name in env.scenario.mask_objects]
        expected = np.isin(state.labels_buffer, [v for v in targets if v not in (0, 1, 255)]).astype(np.uint8)
        assert obs["mask"].shape == (120, 160) == env.screen.shape[:2]  # never resized
        assert np.array_equal(obs["mask"], expected)
        checked += int(expected.any())
        newest = cv2.resize(env.screen, (80, 60), interpolation=cv2.INTER_AREA)  # engine gives grey frames
        assert np.array_equal(obs["image"][-1], newest)
        obs, _, terminated, truncated, _ = env.step(step % 3)
        if terminated or truncated:
            break
    env.close()
    assert checked > 10


def test_kill_just_before_the_time_limit_is_terminal_not_truncated(tmp_path):
    """The limit counts from the episode's start; a kill 1-4 tics before it ends the episode for real."""
    probe = doom.make_env("basic", seed=0)
    found = None
    for seed in range(40):  # an episode where shooting at once kills within the first steps
        probe.reset(seed=seed)
        for _ in range(20):
            before = probe.game.get_episode_time() - probe.game.get_episode_start_time()
            _, _, terminated, truncated, info = probe.step(2)
            if terminated or truncated:
                break
        if terminated and info["episode"]["r"] > 0:
            found = seed, before
            break
    probe.close()
    assert found is not None, "no quick kill found to build the test on"
    seed, before = found
    spec = tmp_path / "tight_basic.toml"
    # the kill lands within the last step (4 tics) before the limit, 1 tic or more ahead of it
    spec.write_text('config = "basic"\nmask_categories = ["Monster"]\n'
                    'actions = [["MOVE_LEFT"], ["MOVE_RIGHT"], ["ATTACK"]]\n'
                    f"episode_timeout = {before + 5}\n")
    env = doom.make_env(str(spec), seed=0)
    env.reset(seed=seed)
    while True:
        _, _, terminated, truncated, info = env.step(2)
        if terminated or truncated:
            break
    assert terminated and not truncated and info["episode"]["r"] > 0
    env.reset(seed=seed)
    while True:  # never shooting: the time limit ends it, truncated
        _, _, terminated, truncated, _ = env.step(0)
        if terminated or truncated:
            break
    assert truncated and not terminated
    assert env.game.get_episode_time() - env.game.get_episode_start_time() == before + 5  # the limit, not start + limit
    env.close()


def test_episodes_are_seeded_and_replayable():
    env = doom.make_env("defend_the_center", seed=4, frame_stack=1)
    env.reset(seed=4)
    rng = np.random.default_rng(0)
    saved, later, frames = None, [], []
    for step in range(260):  # long enough for the second episode to start (the player dies)
        action = int(rng.integers(env.action_space.n))
        if step == 200:
            saved = env.episode_state()
        if saved is not None:
            later.append(action)
        env.play(action)
        if saved is not None:
            frames.append(env.frame.copy())
    assert saved["episode_index"] >= 1, "the test must save inside a later, automatically seeded episode"
    env.close()
    replayed = doom.make_env("defend_the_center", seed=99, frame_stack=1)
    replayed.replay(saved)
    for action, frame in zip(later, frames, strict=True):
        replayed.play(action)
        assert np.array_equal(replayed.frame, frame)
    replayed.close()
    assert doom.episode_seed(4, 0) == 4 and doom.episode_seed(4, 1) != doom.episode_seed(5, 1)


def _rollout(seed, steps=50):
    env = doom.make_env("defend_the_line", seed=seed)
    obs, _ = env.reset(seed=seed)
    images, masks = [obs["image"]], [obs["mask"]]
    actions = np.random.default_rng(7).integers(env.action_space.n, size=steps)
    for action in actions:
        obs, _, terminated, truncated, _ = env.step(int(action))
        images.append(obs["image"])
        masks.append(obs["mask"])
        if terminated or truncated:
            break
    env.close()
    return np.stack(images), np.stack(masks)


def test_same_seed_same_observations_and_masks():
    images_a, masks_a = _rollout(11)
    images_b, masks_b = _rollout(11)
    assert images_a.shape[0] == 51
    assert np.array_equal(images_a, images_b) and np.array_equal(masks_a, masks_b)
    assert masks_a.any()


def test_mask_stays_aligned_across_autoreset(short_scenario):
    short_basic = short_scenario(40, actions=(("MOVE_LEFT",), ("MOVE_RIGHT",)))  # 10 agent steps
    envs = doom.make_vector_env(short_basic, num_envs=2, seed=5, asynchronous=False, obs_size=(60, 80))
    obs, _ = envs.reset(seed=5)
    resets = 0
    for _ in range(25):
        obs, _, terminated, truncated, _ = envs.step(np.array([0, 1]))
        resets += int((terminated | truncated).sum())
        for i, sub in enumerate(envs.envs):
            # the sub-env's current screen is the frame the vector obs must show (reset frame after a reset)
            assert np.array_equal(obs["mask"][i], sub.mask)
            newest = cv2.resize(sub.screen, (80, 60), interpolation=cv2.INTER_AREA)
            assert np.array_equal(obs["image"][i, -1], newest)
    envs.close()
    assert resets >= 4


def test_async_vector_env_closes_its_processes(short_basic, engines):
    before = engines()
    envs = doom.make_vector_env(short_basic, num_envs=2, seed=0, asynchronous=True)
    envs.reset(seed=0)
    obs, *_ = envs.step(np.array([0, 1]))
    assert obs["mask"].shape == (2, 120, 160)
    assert len(multiprocessing.active_children()) >= 2
    envs.close()
    deadline = time.time() + 10
    while multiprocessing.active_children() and time.time() < deadline:
        time.sleep(0.1)
    assert multiprocessing.active_children() == []
    while (engines() - before) and time.time() < deadline:
        time.sleep(0.1)
    assert engines() - before == set(), "ViZDoom engine processes left behind"


def test_unknown_scenario_lists_available():
    with pytest.raises(doom.SpecError, match="available: .*basic.*take_cover"):
        doom.make_env("doom_eternal", seed=0)


@pytest.mark.parametrize("name, body, error", [
    ("bad_key", 'config = "basic"\nmask_categories = ["Monster"]\nframeskip = 4\n', r"bad_key\.toml.*frameskip"),
    ("bad_object", 'config = "basic"\nmask_objects = ["Cacodaemon"]\n', r"bad_object\.toml.*mask_objects.*Cacodaemon"),
    ("missing_cfg", 'config = "maps/nowhere.cfg"\nmask_categories = ["Monster"]\n', r"nowhere\.cfg"),
    ("bad_button", 'config = "basic"\nmask_categories = ["Monster"]\nactions = [["JUMP"]]\n', r"actions.*JUMP"),
])
def test_bad_specs_name_file_and_key(tmp_path, name, body, error):
    spec = tmp_path / f"{name}.toml"
    spec.write_text(body)
    with pytest.raises(doom.SpecError, match=error):
        doom.make_env(spec, seed=0)


def test_user_spec_found_by_name_through_search_path(tmp_path, monkeypatch):
    (tmp_path / "my_basic.toml").write_text('config = "basic"\nmask_categories = ["Monster"]\n')
    monkeypatch.setenv(doom.SPEC_PATH_VARIABLE, str(tmp_path))
    assert "my_basic" in doom.available_scenarios()
    env = doom.make_env("my_basic", seed=0)
    assert env.action_space.n == 3  # one action per button of basic.cfg when none are given
    env.close()


def test_one_frame_stack_for_numpy_and_torch_keeps_colour_frames_whole():
    """A new episode's stack repeats its first frame with the channels in order (R G B R G B ...,
    not R R R R G G ...), for numpy (the env) and torch (evaluation) alike."""
    import torch

    stacking = doom.FrameStack(frame_stack=4, channels=3)
    frames = np.random.default_rng(0).integers(0, 255, (5, 2, 3, 4, 6), dtype=np.uint8)  # [time, envs, C, H, W]
    stack = stacking.first(frames[0])
    assert stack.shape == (2, 12, 4, 6)
    assert all(np.array_equal(stack[:, 3 * k : 3 * k + 3], frames[0]) for k in range(4))
    tensor_stack = stacking.first(torch.as_tensor(frames[0]))
    for t in range(1, 5):
        starts = np.array([t == 3, False])
        stacking.push(stack, frames[t], starts)
        stacking.push(tensor_stack, torch.as_tensor(frames[t]), torch.as_tensor(starts))
        assert np.array_equal(stack, tensor_stack.numpy())
    assert np.array_equal(stack[1], np.concatenate(list(frames[1:5, 1])))  # env 1: the last four frames
    assert np.array_equal(stack[0], np.concatenate([frames[3, 0]] * 3 + [frames[4, 0]]))  # env 0 began at t = 3
    env = doom.make_env("basic", seed=1, grayscale=False, obs_size=(30, 40))
    try:
        observation, _ = env.reset(seed=1)
        assert np.array_equal(observation["image"], np.concatenate([env.frame] * 4))
    finally:
        env.close()
