"""The three ways to extend camal-rl touch one place each (docs/extending.md): an attention method
is a weighting and one registry line, a scenario is a spec file (carrying its own recipes), a
classifier is one row of the architecture registry."""

import json

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from camal_rl import arguments, camal, doom, ppo, recipes, runs
from camal_rl.errors import ConfigError


def tiny_args(tmp_path, **overrides):
    values = dict(env="basic", seed=1, total_timesteps=128, num_envs=2, num_steps=64, num_minibatches=2,
                  update_epochs=1, eval_episodes=1, progress=False, cuda=False, threads=2,
                  run_dir=str(tmp_path / "run"))
    values.update(overrides)
    return ppo.Args(**values)


def test_an_attention_method_is_one_function_and_one_line(tmp_path, monkeypatch):
    def absolute_gradients(features, grads):  # the new method: weight each location by |dV/dA|
        return (grads.abs() * features).mean(dim=1)

    monkeypatch.setitem(camal.ATTENTION_METHODS, "abs-grad", camal.AttentionMethod("|grad| CAM", absolute_gradients))
    features = torch.rand(3, 4, 5, 6, requires_grad=True)
    scores = (features * torch.randn(4, 1, 1)).sum(dim=(1, 2, 3))
    assert camal.attention(features, scores, method="abs-grad").shape == (3, 5, 6)
    summary = ppo.train(tiny_args(tmp_path, attention="abs-grad"))
    assert summary["args"]["attention"] == "abs-grad" and summary["eval_iou_frames"] > 0
    with pytest.raises(ConfigError, match="not registered"):
        ppo.train(tiny_args(tmp_path, attention="nope", run_dir=str(tmp_path / "other")))


def test_a_scenario_is_a_spec_file_in_camal_envs_with_its_own_recipe(tmp_path, monkeypatch):
    folder = tmp_path / "my_envs"
    folder.mkdir()
    (folder / "quick_basic.toml").write_text(
        'config = "basic"\nmask_categories = ["Monster"]\nactions = [["MOVE_LEFT"], ["MOVE_RIGHT"], ["ATTACK"]]\n'
        "frame_skip = 2\nrandom_score = -120.6\nreference_score = 95.0\n"
        "[recipes.tuned]\nnum_envs = 2\nnum_steps = 64\nnum_minibatches = 2\nupdate_epochs = 1\nlearning_rate = 1e-3\n")
    monkeypatch.setenv("CAMAL_ENVS", str(folder))
    assert "quick_basic" in doom.available_scenarios()
    args = ppo.Args(env="quick_basic", total_timesteps=128, eval_episodes=1, progress=False, cuda=False,
                    run_dir=str(tmp_path / "run"))
    summary = ppo.train(args)
    saved = summary["args"]
    assert summary["recipe"] == "tuned" and saved["learning_rate"] == 1e-3 and saved["num_envs"] == 2
    assert saved["frame_skip"] == 2  # the spec's frame skip reaches the engine
    assert saved["clip_coef"] == recipes.PAPER["clip_coef"]  # what the recipe leaves out comes from Table 8
    paper = arguments.resolve(ppo.Args(env="quick_basic", recipe="paper", num_envs=2, num_steps=64, learning_rate=5e-4))
    assert paper.num_minibatches == 4 and paper.learning_rate == 5e-4  # a flag beats its recipe value
    (folder / "broken.toml").write_text('config = "basic"\nmask_categories = ["Monster"]\n'
                                        '[recipes.tuned]\nlearnin_rate = 1\n')
    with pytest.raises(doom.SpecError, match="learnin_rate"):
        doom.load_spec("broken")
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["scenario"]["frame_skip"] == 2


def test_a_classifier_is_one_row_of_the_registry(monkeypatch):
    pytest.importorskip("torchvision", reason="the vision extra installs torchvision")
    from camal_rl.vision import models

    class TwoConvs(nn.Module):
        def __init__(self, num_classes):
            super().__init__()
            self.body = nn.Sequential(nn.Conv2d(3, 8, 3, stride=2), nn.ReLU(), nn.Conv2d(8, 8, 3), nn.ReLU())
            self.fc = nn.Linear(8, num_classes)

        def forward(self, x):
            return self.fc(self.body(x).mean(dim=(2, 3)))

    monkeypatch.setitem(models.ARCHITECTURES, "two_convs", models.Architecture(
        build=lambda num_classes, image_size: TwoConvs(num_classes), feature_layer=lambda m: m.body, head="fc"))
    model = models.create("two_convs", 5)
    images, masks = torch.rand(4, 3, 32, 32), torch.zeros(4, 32, 32)
    masks[:, 8:16, 8:16] = 1
    logits, features = model(images)
    assert logits.shape == (4, 5) and features.shape == (4, 8, 13, 13)
    maps = camal.normalize(camal.attention(features, logits[:, 0], method="gradcam"))
    loss = F.cross_entropy(logits, torch.zeros(4, dtype=torch.long)) + camal.camal_loss(maps, masks)
    loss.backward()
    assert model.model.body[0].weight.grad is not None and models.default_learning_rate("two_convs") == 1e-3


def test_default_prefers_the_neutral_recipe_then_the_tuned_one_then_the_paper():
    basic = arguments.resolve(ppo.Args(env="basic"))
    recipe = doom.load_spec("basic").recipes["neutral"]
    assert basic.recipe == "neutral"
    assert basic.learning_rate == recipe["learning_rate"] and basic.update_epochs == recipe["update_epochs"]
    only_tuned = {"tuned": {"learning_rate": 1e-3}, "from_basic": {"learning_rate": 2e-3}}
    assert recipes.resolve("default", only_tuned) == ("tuned", {**recipes.PAPER, "learning_rate": 1e-3})
    both = {**only_tuned, "neutral": {"learning_rate": 3e-3}}
    assert recipes.resolve("default", both)[1]["learning_rate"] == 3e-3
    tuned = arguments.resolve(ppo.Args(env="basic", recipe="tuned"))  # the CAMAL-searched one stays a flag away
    assert tuned.recipe == "tuned" and tuned.learning_rate == doom.load_spec("basic").recipes["tuned"]["learning_rate"]
    paper = arguments.resolve(ppo.Args(env="basic", recipe="paper"))
    assert {name: getattr(paper, name) for name in recipes.PAPER} == recipes.PAPER
    other = arguments.resolve(ppo.Args(env="health_gathering"))  # no recipe of its own: Table 8
    assert other.recipe == "paper" and other.learning_rate == recipes.PAPER["learning_rate"]


def test_a_study_gives_each_scenario_the_first_recipe_it_has():
    wanted = ["tuned", "from_basic"]
    assert recipes.first_of(wanted, doom.load_spec("basic").recipes) == "tuned"
    assert recipes.first_of(wanted, {"from_basic": {"learning_rate": 1e-3}}) == "from_basic"
    assert recipes.first_of([*wanted, "paper"], doom.load_spec("health_gathering").recipes) == "paper"
    with pytest.raises(KeyError, match="it has default, paper"):
        recipes.first_of(wanted, doom.load_spec("health_gathering").recipes)


def test_a_recipe_may_set_the_frame_skip_and_a_flag_still_wins(tmp_path, monkeypatch):
    folder = tmp_path / "my_envs"
    folder.mkdir()
    spec = ('config = "defend_the_center"\nmask_categories = ["Monster"]\nframe_skip = 3\n'
            "[recipes.neutral]\nlearning_rate = 1e-3\nframe_skip = {skip}\n[recipes.tuned]\nlearning_rate = 2e-3\n")
    (folder / "aim.toml").write_text(spec.format(skip=2))
    monkeypatch.setenv("CAMAL_ENVS", str(folder))
    assert arguments.resolve(ppo.Args(env="aim")).frame_skip == 2  # the default recipe's
    assert arguments.resolve(ppo.Args(env="aim", recipe="tuned")).frame_skip == 3  # no frame skip: the spec's
    assert arguments.resolve(ppo.Args(env="aim", recipe="paper")).frame_skip == 3  # Table 8 leaves it to the spec
    assert arguments.resolve(ppo.Args(env="aim", frame_skip=5)).frame_skip == 5
    assert arguments.resolve(ppo.Args(env="aim", frame_skip=None)).frame_skip == 2  # None given: no choice made
    assert "frame_skip" not in recipes.PAPER
    for bad in ("0", "-1", '"2"', "2.0", "true"):
        (folder / "aim.toml").write_text(spec.format(skip=bad))
        with pytest.raises(doom.SpecError, match="frame_skip"):
            doom.load_spec("aim")


SKIP_SPEC = 'config = "basic"\nmask_categories = ["Monster"]\n'


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(frame_skip=st.one_of(st.integers(-5, 5), st.integers(990, 1010), st.integers(-2**40, 2**40)))
def test_every_home_of_a_frame_skip_takes_the_same_values(frame_skip, tmp_path, monkeypatch):
    """A spec, a recipe, --frame-skip and a run's saved settings accept a frame skip alike: a value
    one takes is never refused where the run is read back."""
    folder = tmp_path / "skip_envs"
    folder.mkdir(exist_ok=True)
    monkeypatch.setenv("CAMAL_ENVS", str(folder))
    spec_file = folder / "skip.toml"
    verdicts = {}
    spec_file.write_text(f'{SKIP_SPEC}frame_skip = {frame_skip}\n')
    verdicts["spec"] = _accepts(doom.SpecError, lambda: doom.load_spec("skip"))
    spec_file.write_text(f'{SKIP_SPEC}[recipes.neutral]\nframe_skip = {frame_skip}\n')
    verdicts["recipe"] = _accepts(doom.SpecError, lambda: doom.load_spec("skip"))
    spec_file.write_text(SKIP_SPEC)
    verdicts["flag"] = _accepts(ConfigError, lambda: arguments.resolve(ppo.Args(env="skip", frame_skip=frame_skip)))
    saved = {**vars(ppo.Args(env="skip", frame_skip=4)), "frame_skip": frame_skip}
    verdicts["saved run"] = _accepts(runs.RunFolderError, lambda: runs.SavedRun(saved))
    assert len(set(verdicts.values())) == 1, verdicts
    assert verdicts["flag"] == (1 <= frame_skip <= 1000)
    if not verdicts["flag"]:  # the env refuses before it starts an engine (accepted values would start one)
        assert not _accepts(ValueError, lambda: doom.DoomEnv(doom.load_spec("skip"), frame_skip=frame_skip))


def _accepts(refusal: type[Exception], make) -> bool:
    try:
        make()
    except refusal as error:
        assert "frame_skip" in str(error) or "frame-skip" in str(error), error
        return False
    return True
