"""The rollout storage: the staging copy path (pinned on a GPU) stores exactly what the direct path does."""

import numpy as np
import torch

from camal_rl.rollout import FrameStorage


def fill(storage: FrameStorage, rng: np.random.Generator, steps: int, envs: int) -> None:
    for t in range(steps + 1):
        frames = rng.integers(0, 256, size=(envs, 1, 12, 16), dtype=np.uint8)
        masks = rng.integers(0, 2, size=(envs, 6, 8), dtype=np.uint8)
        starts = rng.random(envs) < 0.2
        for group in (slice(0, envs // 2), slice(envs // 2, envs)):  # two env groups, as double buffering does
            storage.put(t, frames, masks, starts, group)


def test_staging_path_equals_the_direct_path():
    steps, envs = 6, 4
    direct = FrameStorage(steps, envs, 4, (1, 12, 16), (6, 8), torch.device("cpu"), staging=False)
    staged = FrameStorage(steps, envs, 4, (1, 12, 16), (6, 8), torch.device("cpu"), staging=True)
    assert staged.staging and not direct.staging
    fill(direct, np.random.default_rng(0), steps, envs)
    fill(staged, np.random.default_rng(0), steps, envs)
    assert torch.equal(direct.frames, staged.frames) and torch.equal(direct.masks, staged.masks)
    for t in range(steps + 1):
        assert torch.equal(direct.observation(t), staged.observation(t))
    indices = torch.randperm(steps * envs)[:10]
    assert torch.equal(direct.minibatch(indices), staged.minibatch(indices))
    assert torch.equal(direct.minibatch_masks(indices), staged.minibatch_masks(indices))
    assert direct.observation(3).shape == (envs, 4, 12, 16)
