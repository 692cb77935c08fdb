"""scripts/turn_steps.py measures the engine's turn per agent step (the aim a frame skip allows)."""

import pytest

from camal_rl import doom
from camal_rl.errors import ConfigError


@pytest.fixture(scope="module")
def turn_steps(load_script):
    return load_script("turn_steps")


def test_a_held_turn_speeds_up_and_a_step_turns_in_proportion_to_the_frame_skip(turn_steps):
    spec = doom.load_spec("defend_the_center")
    held_4, first_4 = turn_steps.turn_angles(spec, 4, 4)
    held_2, first_2 = turn_steps.turn_angles(spec, 2, 8)
    assert held_4[0] < held_4[-1] and held_2[0] < held_2[-1]  # Doom's slow start of a held turn
    assert held_4[-1] == pytest.approx(2 * held_2[-1], rel=0.01)  # the same turn rate per tic
    assert first_4 == pytest.approx(2 * first_2, rel=0.01) and first_2 < held_2[-1]
    assert sum(held_4) == pytest.approx(sum(held_2), rel=0.01)  # 16 tics of turning either way


def test_a_scenario_without_a_turn_is_refused(turn_steps):
    with pytest.raises(ConfigError, match="no TURN_RIGHT"):
        turn_steps.turn_angles(doom.load_spec("basic"), 4, 2)


def test_a_scenario_whose_wad_is_missing_is_one_line(turn_steps, tmp_path, monkeypatch):
    """The script builds the engine as the trainer does: a missing .wad is the trainer's one-line error."""
    folder = tmp_path / "envs"
    folder.mkdir()
    (folder / "gone.cfg").write_text((doom.load_spec("defend_the_center").config).read_text()
                                     .replace("defend_the_center.wad", str(tmp_path / "gone.wad")))
    (folder / "gone.toml").write_text(f'config = "{folder / "gone.cfg"}"\nmask_categories = ["Monster"]\n')
    monkeypatch.setenv("CAMAL_ENVS", str(folder))
    with pytest.raises(doom.SpecError, match="gone.wad") as refused:
        turn_steps.turn_angles(doom.load_spec("gone"), 4, 2)
    assert "\n" not in str(refused.value)
