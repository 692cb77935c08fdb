"""How far one agent step turns the player at each frame skip: the aim an agent can take.

    python scripts/turn_steps.py [--env defend_the_center] [--frame-skips 4 2 1] [--steps 6]

Holds the scenario's TURN_RIGHT for ``--steps`` agent steps from rest and prints the engine's ANGLE
change per step, then the first step after a pause. Doom turns slowly for the first tics of a held
turn, so the smallest step is the first one after a pause.
"""
from __future__ import annotations

import argparse

import vizdoom as vzd

from camal_rl import doom, schema
from camal_rl.errors import ConfigError, run_cli


def turn_angles(spec: doom.ScenarioSpec, frame_skip: int, steps: int) -> tuple[list[float], float]:
    """(degrees turned in each of ``steps`` held TURN_RIGHT steps from rest, degrees of the first step
    after a pause)."""
    env = doom.DoomEnv(spec, frame_skip=frame_skip)  # the trainer's engine setup: its errors, its files' folder
    try:
        game = env.game
        buttons = [str(b).split(".")[-1] for b in game.get_available_buttons()]
        if "TURN_RIGHT" not in buttons:
            raise ConfigError(f"{spec.name} has no TURN_RIGHT button ({buttons}); choose a scenario that turns")
        turn = [float(b == "TURN_RIGHT") for b in buttons]
        still = [0.0] * len(buttons)
        game.new_episode()

        def step(action) -> float:
            before = game.get_game_variable(vzd.GameVariable.ANGLE)
            game.make_action(action, frame_skip)
            return round((before - game.get_game_variable(vzd.GameVariable.ANGLE)) % 360, 2)

        held = [step(turn) for _ in range(steps)]
        step(still)
        return held, step(turn)
    finally:
        env.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--env", default="defend_the_center")
    parser.add_argument("--frame-skips", type=int, nargs="+", default=[4, 2, 1])
    parser.add_argument("--steps", type=int, default=6)
    options = parser.parse_args()
    problems = [schema.value_problem(skip, schema.FRAME_SKIP) for skip in options.frame_skips]
    bad = next((problem for problem in problems if problem), None)
    if bad or options.steps < 1:
        raise ConfigError(f"--frame-skips: a frame skip {bad}" if bad else "--steps must be >= 1")
    spec = doom.load_spec(options.env)
    print(f"{spec.name}: degrees turned per agent step of a held TURN_RIGHT")
    for frame_skip in options.frame_skips:
        held, after_pause = turn_angles(spec, frame_skip, options.steps)
        print(f"frame skip {frame_skip}: held from rest {held}; first step after a pause {after_pause}")


if __name__ == "__main__":
    run_cli("turn_steps", main)
