"""The rollout storage and policy step: stacks equal a frame-by-frame reference, the staging copy path
(pinned on a GPU) stores what the direct path does, and `Agent.act` draws what `Categorical` draws."""

import numpy as np
import pytest
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


def test_envs_writing_into_host_rows_equals_put():
    """The trainer's in-process envs write straight into ``host_rows``; ``put(written=True)`` then
    records only the episode starts: the same storage as copying through ``put``."""
    steps, envs = 6, 4
    copied = FrameStorage(steps, envs, 4, (1, 12, 16), (6, 8), torch.device("cpu"))
    written = FrameStorage(steps, envs, 4, (1, 12, 16), (6, 8), torch.device("cpu"))
    fill(copied, np.random.default_rng(0), steps, envs)
    rng = np.random.default_rng(0)
    for t in range(steps + 1):
        frames = rng.integers(0, 256, size=(envs, 1, 12, 16), dtype=np.uint8)
        masks = rng.integers(0, 2, size=(envs, 6, 8), dtype=np.uint8)
        starts = rng.random(envs) < 0.2
        rows_frames, rows_masks = written.host_rows(t)
        for group in (slice(0, envs // 2), slice(envs // 2, envs)):
            rows_frames[group], rows_masks[group] = frames[group], masks[group]
            written.put(t, rows_frames, rows_masks, starts, group, written=True)
    assert torch.equal(copied.frames, written.frames) and torch.equal(copied.masks, written.masks)
    assert np.array_equal(copied.first_slot, written.first_slot)
    assert FrameStorage(2, 2, 4, (1, 4, 4), (2, 2), torch.device("cpu"), staging=True).host_rows(0) is None


def reference_stack(history: list[np.ndarray], starts: list[np.ndarray], t: int, env: int, stack: int) -> np.ndarray:
    """Step ``t``'s stack for one env the slow way: walk back from its newest frame, repeating the
    episode's first frame rather than reaching into the episode before (as DoomEnv stacks)."""
    frames, step = [], t
    for _ in range(stack):
        frames.append(history[step][env])
        if step > 0 and not starts[step][env]:
            step -= 1
    return np.concatenate(frames[::-1], axis=0)


@pytest.mark.parametrize("staging", [False, True], ids=["cpu-paths", "gpu-paths"])
def test_stacks_match_a_frame_by_frame_reference_across_rollouts(staging):
    """Views, the stacks of envs whose episode began inside the stack (a numpy gather on a CPU, a
    clone and patch on a GPU), minibatches, and the carry-over into the next rollout give exactly
    the reference stacks."""
    steps, envs, stack, rollouts = 5, 6, 4, 3
    rng = np.random.default_rng(1)
    storage = FrameStorage(steps, envs, stack, (1, 3, 4), (2, 2), torch.device("cpu"), staging=staging)
    history, starts = [], []
    for rollout in range(rollouts):
        first_step = 0 if rollout == 0 else 1  # step 0 of a later rollout is the last one's bootstrap
        for t in range(first_step, steps + 1):
            frames = rng.integers(0, 256, size=(envs, 1, 3, 4), dtype=np.uint8)
            began = np.ones(envs, dtype=bool) if not history else rng.random(envs) < 0.3
            history.append(frames)
            starts.append(began)
            storage.put(t, frames, rng.integers(0, 2, size=(envs, 2, 2), dtype=np.uint8), began)
        offset = len(history) - 1 - steps  # the global step of this rollout's step 0
        for t in range(steps + 1):
            expected = np.stack([reference_stack(history, starts, offset + t, e, stack) for e in range(envs)])
            assert np.array_equal(storage.observation(t).numpy(), expected), (rollout, t)
            assert np.array_equal(storage.observation(t, slice(2, 5)).numpy(), expected[2:5]), (rollout, t)
        indices = torch.randperm(steps * envs)
        batch = storage.minibatch(indices).numpy()
        for row, flat in enumerate(indices.tolist()):
            expected = reference_stack(history, starts, offset + flat // envs, flat % envs, stack)
            assert np.array_equal(batch[row], expected), (rollout, flat)
        storage.carry_over()


def test_checkpoint_state_gives_back_the_same_observations():
    """A checkpoint holds the frames the next stacks reach back to, env-major ([E, S, ...]), as tensors;
    loading it gives back the same observations."""
    storage = FrameStorage(4, 4, 4, (1, 12, 16), (6, 8), torch.device("cpu"))
    fill(storage, np.random.default_rng(2), 4, 4)
    storage.carry_over()
    state = storage.state()
    assert state["frames"].shape == (4, 4, 1, 12, 16) and all(isinstance(v, torch.Tensor) for v in state.values())
    assert torch.equal(state["frames"][:, -1], storage.newest_frames())
    again = FrameStorage(4, 4, 4, (1, 12, 16), (6, 8), torch.device("cpu"))
    again.load_state(state)
    assert torch.equal(again.observation(0), storage.observation(0))


def test_the_rollouts_policy_step_draws_what_a_categorical_draws():
    """Agent.act skips the distribution object and the entropy; actions, log-probabilities and values
    are bit-identical to CleanRL's Categorical from the same random state."""
    from torch.distributions.categorical import Categorical

    from camal_rl.agent import Agent

    torch.manual_seed(0)
    agent = Agent((4, 60, 80), 5)
    obs = torch.randint(0, 256, (64, 4, 60, 80), dtype=torch.uint8)
    with torch.no_grad():
        torch.manual_seed(7)
        action, logprob, value = agent.act(obs)
        torch.manual_seed(7)
        logits, reference_value, _ = agent(obs)
        distribution = Categorical(logits=logits)
        reference_action = distribution.sample()
        reference_logprob = distribution.log_prob(reference_action)
    assert torch.equal(action, reference_action)
    assert torch.equal(logprob, reference_logprob) and torch.equal(value, reference_value)
    assert action.dtype == torch.long and len(set(action.tolist())) > 1  # a real draw, not a constant


@pytest.mark.parametrize("device", [
    "cpu",
    pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(),
                                                  reason="needs a CUDA GPU: the draws on CUDA are checked only there")),
])
def test_sample_one_draws_what_multinomial_draws_and_leaves_the_same_random_state(device):
    """``sample_one`` skips torch.multinomial's checks; its draws must be multinomial's, draw for
    draw, from near-uniform to near-certain distributions, and leave the generator where it does."""
    from camal_rl.agent import sample_one

    generator = torch.Generator().manual_seed(0)
    for trial in range(300):
        scale = (0.01, 1.0, 5.0, 30.0)[trial % 4]
        probs = torch.softmax(torch.randn(64, 2 + trial % 7, generator=generator) * scale, dim=-1).to(device)
        torch.manual_seed(trial)
        expected, expected_next = torch.multinomial(probs, 1, True), torch.rand(3, device=device)
        torch.manual_seed(trial)
        drawn, drawn_next = sample_one(probs), torch.rand(3, device=device)
        assert torch.equal(drawn, expected), f"trial {trial}"
        assert torch.equal(drawn_next, expected_next)
    # draws follow the probabilities (not argmax): about 30 % of 20,000 draws of p = (0.7, 0.3)
    torch.manual_seed(1)
    share = sample_one(torch.tensor([[0.7, 0.3]], device=device).expand(20_000, 2)).float().mean().item()
    assert abs(share - 0.3) < 0.02


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU: --cuda-graph exists only there")
def test_the_cuda_graph_forward_gives_the_eager_numbers_and_follows_the_weights():
    from camal_rl.agent import Agent, GraphedForward

    torch.manual_seed(0)
    agent = Agent((4, 60, 80), 3).cuda()
    graphed = GraphedForward(agent)
    optimizer = torch.optim.Adam(agent.parameters(), lr=1e-3)
    storage = torch.randint(0, 256, (16, 6, 1, 60, 80), dtype=torch.uint8, device="cuda")
    for round_ in range(3):
        obs = storage[:, round_ : round_ + 4].flatten(1, 2)  # a strided view, as FrameStorage gives
        with torch.no_grad():
            torch.manual_seed(round_)
            eager = agent.act(obs)
            torch.manual_seed(round_)
            replayed = agent.act(obs, forward=graphed)
        assert torch.equal(eager[0], replayed[0])
        torch.testing.assert_close(eager[1], replayed[1])
        torch.testing.assert_close(eager[2], replayed[2])
        optimizer.zero_grad()
        agent(obs)[1].mean().backward()
        optimizer.step()  # in place: the graph must read the new weights next round
    assert len(graphed.graphs) == 1
