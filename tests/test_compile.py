"""``--compile``: torch.compile of the update's loss and the rollout's policy forward gives eager's
numbers up to float rounding, on this CPU (the CUDA graphs of ``--compile --cuda-graph`` need a GPU)."""

import copy

import numpy as np
import pytest
import torch

from camal_rl import arguments, camal, ppo
from camal_rl.agent import Agent

BATCH = 64


def a_minibatch(agent: Agent, *, with_masks: bool = True) -> ppo.Minibatch:
    generator = torch.Generator().manual_seed(0)
    obs = torch.randint(0, 256, (BATCH, 4, 60, 80), dtype=torch.uint8, generator=generator)
    masks = torch.zeros(BATCH, 120, 160, dtype=torch.uint8)
    if with_masks:
        masks[: BATCH // 2, 40:70, 60:100] = 1  # half the frames show an object, half none (skipped)
    return ppo.Minibatch(obs, torch.randint(0, 3, (BATCH,), generator=generator),
                         -1.1 + 0.1 * torch.randn(BATCH, generator=generator), torch.randn(BATCH, generator=generator),
                         torch.randn(BATCH, generator=generator), torch.randn(BATCH, generator=generator),
                         camal.grid_mask(masks, agent.feature_grid))


@pytest.mark.slow
def test_compiled_update_steps_equal_the_eager_ones():
    torch.manual_seed(0)
    args = arguments.resolve(ppo.Args(env="basic", compile=True))
    eager_agent = Agent((4, 60, 80), 3)
    compiled_agent = copy.deepcopy(eager_agent)
    optimizers = [torch.optim.Adam(a.parameters(), lr=1e-3, eps=1e-5, fused=True)
                  for a in (eager_agent, compiled_agent)]
    policy, loss_fn = ppo.compiled_parts(compiled_agent, args, torch.device("cpu"))
    assert loss_fn is not ppo.ppo_camal_loss and policy is not None
    for step in range(3):
        batch = a_minibatch(eager_agent, with_masks=step != 1)  # step 1: no frame has an object
        eager = ppo.update(eager_agent, optimizers[0], batch, args)
        compiled = ppo.update(compiled_agent, optimizers[1], batch, args, loss_fn)
        for tag, value in eager.items():
            assert compiled[tag].item() == pytest.approx(value.item(), rel=1e-4, abs=1e-6), (step, tag)
    assert eager[ppo.Tag.CAMAL_LOSS].item() != 0  # the CAMAL term took part
    for (name, eager_weight), compiled_weight in zip(eager_agent.named_parameters(), compiled_agent.parameters(),
                                                    strict=True):
        assert torch.allclose(eager_weight, compiled_weight, rtol=1e-4, atol=1e-6), name
    obs = a_minibatch(eager_agent).obs[:8]
    with torch.no_grad():
        logits, value = policy(obs)
        eager_logits, eager_value, _ = compiled_agent(obs)
    assert torch.allclose(logits, eager_logits, atol=1e-5) and torch.allclose(value, eager_value, atol=1e-5)


@pytest.mark.slow
def test_a_compiled_run_trains_like_the_eager_one(tmp_path):
    from test_fingerprint import fingerprint

    common = dict(env="basic", seed=5, recipe="paper", total_timesteps=2 * 2 * 64, num_envs=2, num_steps=64,
                  num_minibatches=2, update_epochs=1, eval_episodes=1, progress=False, cuda=False, env_workers=0,
                  threads=2)
    eager = ppo.train(ppo.Args(**common, run_dir=str(tmp_path / "eager")))
    compiled = ppo.train(ppo.Args(**common, compile=True, run_dir=str(tmp_path / "compiled")))
    assert compiled["args"]["compile"] and compiled["global_step"] == eager["global_step"] == 256
    assert np.isclose(fingerprint(tmp_path / "compiled")["parameter_abs_sum"],
                      fingerprint(tmp_path / "eager")["parameter_abs_sum"], rtol=1e-4)
