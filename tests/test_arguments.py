"""One configuration path: what a caller gives wins over the recipe, in Python as on the command
line, even when it equals a default; what it leaves out comes from the recipe or the resumed run."""

import subprocess
import sys

import pytest

from camal_rl import arguments, doom, ppo, recipes, runs
from camal_rl.errors import ConfigError, RunFolderError

BASIC_RECIPE, BASIC = recipes.resolve("default", doom.load_spec("basic").recipes)
TINY = dict(env="basic", seed=3, total_timesteps=2 * 64, num_envs=2, num_steps=64, num_minibatches=2,
            update_epochs=1, eval_episodes=0, progress=False, cuda=False, env_workers=0, threads=2)


def test_a_value_given_in_python_wins_even_when_it_equals_the_default():
    table8 = recipes.PAPER["learning_rate"]
    assert BASIC["learning_rate"] != table8
    assert arguments.resolve(ppo.Args(env="basic", learning_rate=table8)).learning_rate == table8
    assert arguments.resolve(ppo.Args(env="basic")).learning_rate == BASIC["learning_rate"]
    later = ppo.Args(env="basic")
    later.num_steps = recipes.PAPER["num_steps"]  # set after construction: given all the same
    resolved = arguments.resolve(later)
    assert resolved.num_steps == recipes.PAPER["num_steps"] and resolved.num_envs == BASIC["num_envs"]


def test_the_command_line_reads_the_recipe_before_the_flags():
    table8 = recipes.PAPER["learning_rate"]
    given = arguments.parse(ppo.Args, ["--learning-rate", str(table8), "--env", "basic"])
    assert given.learning_rate == table8 and given.num_steps == BASIC["num_steps"]
    assert given.recipe == BASIC_RECIPE == "neutral"
    paper = arguments.parse(ppo.Args, ["--env", "basic", "--recipe", "paper", "--num-envs", "4"])
    assert paper.learning_rate == table8 and paper.num_envs == 4 and paper.recipe == "paper"
    frames = arguments.parse(ppo.Args, ["--paper-frames"])
    assert frames.obs_size == (240, 320) and frames.attention == "gradcam" and not frames.grayscale


def test_help_shows_the_scenarios_own_values():
    shown = subprocess.run([sys.executable, "-m", "camal_rl.ppo", "--env", "basic", "--help"], capture_output=True,
                           text=True, env={"COLUMNS": "200", "PATH": ""})
    assert shown.returncode == 0
    line = next(line for line in shown.stdout.splitlines() if "--learning-rate" in line)
    assert f"default: {BASIC['learning_rate']}" in line


def test_a_clash_with_the_paper_frames_is_refused_either_way():
    with pytest.raises(ConfigError, match="--paper-frames sets the frames itself.*--obs-size"):
        arguments.resolve(ppo.Args(paper_frames=True, obs_size=(60, 80)))
    with pytest.raises(ConfigError, match="--paper-frames sets the frames itself.*--obs-size"):
        arguments.resolve(arguments.parse(ppo.Args, ["--paper-frames", "--obs-size", "84", "84"]))


@pytest.mark.parametrize("seed", [-1, 2**32, True])
def test_seeds_outside_numpys_range_are_one_line(seed):
    with pytest.raises(ConfigError, match="--seed must be a whole number from 0 to 4294967295"):
        arguments.resolve(ppo.Args(seed=seed))


def test_an_empty_resume_is_not_a_fresh_run(tmp_path):
    with pytest.raises(ConfigError, match="--resume needs a run folder"):
        arguments.start_or_resume(ppo.Args(resume="", run_dir=str(tmp_path / "r")))


def test_a_resume_takes_the_runs_settings_and_refuses_what_disagrees(tmp_path):
    run_dir = tmp_path / "run"
    ppo.train(ppo.Args(**TINY, run_dir=str(run_dir)))
    # Python: only what is given is compared; seed 1 is Args' default and still counts as given
    with pytest.raises(RunFolderError, match=r"--seed 1 \(the run has 3\)"):
        arguments.start_or_resume(ppo.Args(resume=str(run_dir), seed=1))
    resumed, _, checkpoint = arguments.start_or_resume(ppo.Args(resume=str(run_dir), total_timesteps=4 * 64,
                                                                threads=1))
    assert (resumed.seed, resumed.num_envs, resumed.total_timesteps, resumed.threads) == (3, 2, 256, 1)
    assert checkpoint["iteration"] == 1
    # the command line: the run's settings are the defaults, a flag that differs is refused
    parsed = arguments.parse(ppo.Args, ["--resume", str(run_dir)])
    assert (parsed.seed, parsed.learning_rate, parsed.run_dir) == (3, BASIC["learning_rate"], str(run_dir))
    with pytest.raises(RunFolderError, match=r"--gamma 0.5 \(the run has 0.95\)"):
        arguments.start_or_resume(arguments.parse(ppo.Args, ["--resume", str(run_dir), "--gamma", "0.5"]))


def test_settings_a_newer_version_wrote_are_refused_by_name(tmp_path):
    with pytest.raises(RunFolderError, match="does not know .'warp_drive'."):
        arguments.saved_settings(ppo.Args, {"env": "basic", "warp_drive": 1}, tmp_path / runs.CHECKPOINT)
