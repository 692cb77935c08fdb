"""The recipe search's known points, minibatch bound and objectives (scripts/tune_recipe.py), without training."""


import optuna
import pytest

from camal_rl import doom, recipes


@pytest.fixture(scope="module")
def tune(load_script):
    return load_script("tune_recipe")


def test_known_points_lie_in_the_search_space(tune):
    spec = doom.load_spec("defend_the_center")
    points = tune.known_points(spec, ["from_basic"])
    assert len(points) == 3
    for point in points:
        sampled = tune.sample_recipe(optuna.trial.FixedTrial(point))  # raises where a value is not a choice
        assert sampled == {**{"reward_scale": 1.0}, **point}
    assert points[0]["learning_rate"] == recipes.PAPER["learning_rate"]
    assert points[2]["learning_rate"] == spec.recipes["from_basic"]["learning_rate"]


def test_unknown_start_recipe_is_named(tune):
    with pytest.raises(ValueError, match="no such recipe"):
        tune.known_points(doom.load_spec("basic"), ["from_nowhere"])


def test_minibatch_bound(tune):
    points = tune.known_points(doom.load_spec("basic"), ["tuned"])
    assert [tune.minibatch_size(p) for p in points] == [256, 64, 64]
    tiny = {**points[0], "num_envs": 4, "num_steps": 32, "num_minibatches": 32}
    assert tune.minibatch_size(tiny) == 4
    with pytest.raises(optuna.TrialPruned, match="minibatch of 4"):
        tune.refuse_small_minibatches(tiny, 64)
    for point in points:
        tune.refuse_small_minibatches(point, 64)


def write_episodes(run_dir, spec, normalised_by_step):
    """A TensorBoard file as camal-train writes it: one episodic return per (step, normalised value)."""
    from torch.utils.tensorboard import SummaryWriter

    from camal_rl import runs

    writer = SummaryWriter(str(run_dir))
    for step, value in normalised_by_step:
        writer.add_scalar(runs.Tag.EPISODIC_RETURN, spec.random_score + value * (spec.reference_score - spec.random_score), step)
    writer.close()


def test_area_rewards_learning_early_and_end_rewards_still_climbing(tune, tmp_path):
    spec, steps = doom.load_spec("basic"), 30_000
    write_episodes(tmp_path / "stalls", spec, [(step, 0.6) for step in range(500, steps + 1, 500)])
    write_episodes(tmp_path / "climbs", spec, [(step, 0.0 if step <= 15_000 else 0.5 if step <= 22_000 else 1.0)
                                               for step in range(500, steps + 1, 500)])
    curves = {name: tune.training_curve(tmp_path / name, spec, steps, bins=30) for name in ("stalls", "climbs")}
    assert curves["stalls"] == pytest.approx([0.6] * 30)
    assert tune.score(curves["stalls"], "area") > tune.score(curves["climbs"], "area")
    assert tune.score(curves["climbs"], "end") == pytest.approx(1.0)  # the last quarter: 7 of 30 slices
    assert tune.score(curves["climbs"], "end") > tune.score(curves["stalls"], "end")


def test_a_resumed_search_does_not_replay_its_first_random_draws(tune):
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="maximize")

    def draw(study):
        study.sampler = tune.sampler_for(study)
        trial = study.ask()
        value = trial.suggest_float("x", 0.0, 1.0)
        study.tell(trial, value)
        return value

    first = [draw(study) for _ in range(3)]  # three sessions, each resuming the study
    fresh = optuna.create_study(direction="maximize")
    assert draw(fresh) == first[0]  # a new search is seeded 0, as before
    assert len(set(first)) == 3


def test_the_sampler_seed_chooses_the_random_draws(tune):
    optuna.logging.set_verbosity(optuna.logging.WARNING)

    def first_draw(seed):
        study = optuna.create_study(direction="maximize")
        study.sampler = tune.sampler_for(study, seed)
        return study.ask().suggest_float("x", 0.0, 1.0)

    assert first_draw(0) == first_draw(0)  # a search is reproducible
    assert first_draw(1) != first_draw(0)  # and another seed draws other recipes
