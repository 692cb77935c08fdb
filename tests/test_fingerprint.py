"""The trainer's numbers do not move when its code is reshaped: short seeded runs give the same
parameters and TensorBoard scalars, bit for bit, as the tree the fingerprint was taken from (its
``_taken_from``: a change that means to round differently retakes it and says by how much)."""

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from camal_rl import ppo, runs
from camal_rl.runs import Tag

REFERENCE = json.loads((Path(__file__).parent / "data" / "trainer_fingerprint.json").read_text())
WALL_CLOCK = {Tag.SPS, Tag.ROLLOUT_SECONDS, Tag.UPDATE_SECONDS}
# Three runs that between them take every branch of the update: CAMAL with LayerCAM; the
# suppress-only term on empty masks too, signed Grad-CAM, no value clip, an early KL stop, unclipped
# scaled rewards, raw advantages, a constant learning rate; Vanilla.
CONFIGS = {
    "camal_layercam": dict(),
    "suppress_gradcam_branches": dict(regularizer="suppress", empty_mask="suppress", attention="signed-gradcam",
                                      clip_vloss=False, target_kl=0.02, clip_reward=False, reward_scale=0.5,
                                      norm_adv=False, anneal_lr=False),
    "vanilla": dict(camal_coef=0.0),
}
COMMON = dict(env="basic", seed=5, recipe="paper", total_timesteps=3 * 2 * 32, num_envs=2, num_steps=32,
              num_minibatches=2, update_epochs=2, learning_rate=1e-3, eval_episodes=2, eval_interval=128,
              checkpoint_interval=2, progress=False, cuda=False, env_workers=0, threads=1)


def fingerprint(run_dir: Path) -> dict:
    weights = runs.load_checkpoint(run_dir)["agent"]
    parameters = hashlib.sha256()
    for name in sorted(weights):
        parameters.update(name.encode())
        parameters.update(weights[name].contiguous().numpy().tobytes())
    events = EventAccumulator(str(run_dir), size_guidance={"scalars": 0})
    events.Reload()
    scalars, count = hashlib.sha256(), 0
    for tag in sorted(set(events.Tags()["scalars"]) - WALL_CLOCK):
        for event in events.Scalars(tag):
            scalars.update(f"{tag}|{event.step}|{np.float32(event.value).view(np.uint32)}".encode())
            count += 1
    return {"parameters": parameters.hexdigest(), "scalars": scalars.hexdigest(), "scalar_count": count,
            "parameter_abs_sum": float(sum(t.double().abs().sum() for t in weights.values()))}


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_a_seeded_run_matches_the_fingerprint_of_the_reshaped_trainer(tmp_path, name):
    ppo.train(ppo.Args(**COMMON, **CONFIGS[name], run_dir=str(tmp_path / name)))
    got, wanted = fingerprint(tmp_path / name), REFERENCE[name]
    assert got["scalar_count"] == wanted["scalar_count"]
    machine = {"torch": torch.__version__, "cpu_capability": torch.backends.cpu.get_cpu_capability()}
    if machine == REFERENCE["_machine"]:
        assert got["parameters"] == wanted["parameters"], "the parameters after training moved"
        assert got["scalars"] == wanted["scalars"], "the logged scalars moved"
    else:  # other kernels round differently: the numbers must still agree closely
        print(f"fingerprint taken on {REFERENCE['_machine']}, this is {machine}: bits compared only there; "
              f"here the parameters' sum of magnitudes, to 1e-4")
        assert got["parameter_abs_sum"] == pytest.approx(wanted["parameter_abs_sum"], rel=1e-4)
