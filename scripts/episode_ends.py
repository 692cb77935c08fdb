"""How a trained agent's episodes end: the evidence of what limits a shooting scenario's return.

    python scripts/episode_ends.py runs/drl_master/defend_the_center__camal__* --episodes 20
    python scripts/episode_ends.py RUN [RUN ...] --out reports/drl_master/episode_ends.md

Plays each run's checkpoint (or exported agent) on its own frames for ``--episodes`` seeded
episodes, actions sampled from the policy as the trainer's evaluation samples them, and reads the
engine's game variables at every step: kills (KILLCOUNT), shots (falls of the selected weapon's
ammo) and ammunition left. Per run it prints the return, kills, shots, kills per shot, the share
of episodes that ended before the time limit (in DefendCenter and DefendLine, by death; DefendLine
has no limit), the ammunition left at the end, the share of steps played with none, and kills per
100 steps. In DefendCenter the ammunition (26) caps the kills: an agent that dies with rounds left is
limited by survival, one that runs dry by its aim.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

import torch
import vizdoom as vzd

from camal_rl import doom, runs
from camal_rl.agent import Agent
from camal_rl.errors import ConfigError, run_cli
from camal_rl.evaluation import EVAL_SEED_OFFSET
from camal_rl.files import write_text_atomic
from camal_rl.rollout import env_options

VARIABLES = {"kills": vzd.GameVariable.KILLCOUNT, "ammo": vzd.GameVariable.SELECTED_WEAPON_AMMO}


def read_variables(game: vzd.DoomGame) -> dict[str, float]:
    return {name: game.get_game_variable(variable) for name, variable in VARIABLES.items()}


def play_episode(agent: Agent, env: doom.DoomEnv, generator: torch.Generator) -> dict:
    """One episode: its return, length, how it ended, kills, shots and ammunition (the engine keeps its
    variables' last values after the episode ends)."""
    observation, _ = env.reset()
    start = read_variables(env.game)
    last, shots, refilled, dry_steps = start, 0.0, False, 0
    while True:
        with torch.no_grad():
            logits, _, _ = agent(torch.as_tensor(observation["image"])[None])
        action = int(torch.multinomial(torch.softmax(logits, dim=-1), 1, generator=generator))
        dry_steps += last["ammo"] <= 0
        observation, _, terminated, truncated, info = env.step(action)
        now = read_variables(env.game)
        shots += max(0.0, last["ammo"] - now["ammo"])
        refilled |= now["ammo"] > last["ammo"]  # a scenario that hands out ammunition: shots are not countable
        last = now
        if terminated or truncated:
            length = info["episode"]["l"]
            kills = now["kills"] - start["kills"]
            return {"return": info["episode"]["r"], "length": length, "ended_early": bool(terminated),
                    "kills": kills, "shots": None if refilled else shots, "ammo_start": start["ammo"],
                    "ammo_left": now["ammo"], "kill_rate": 100 * kills / length, "dry_share": dry_steps / length}


def diagnose(run_dir: Path, episodes: int) -> dict:
    trained = runs.open_trained_agent(run_dir, purpose="episode_ends")
    run = trained.run
    env = doom.DoomEnv(trained.spec, frame_stack=run.frame_stack, seed=run.seed + EVAL_SEED_OFFSET,
                       **env_options(run))
    try:
        agent = trained.network((run.frame_stack * env.frame_shape[0], *env.frame_shape[1:]), env.action_space.n)
        generator = torch.Generator().manual_seed(run.seed + EVAL_SEED_OFFSET)
        played = [play_episode(agent, env, generator) for _ in range(episodes)]
    finally:
        env.close()
    countable = all(episode["shots"] is not None for episode in played)
    mean = {key: statistics.mean(float(episode[key]) for episode in played) for key in played[0] if key != "shots"}
    shots = sum(episode["shots"] for episode in played) if countable else None
    return {"run": run_dir.name, "env": trained.spec.name, "method": run.method, "seed": run.seed,
            "step": int(trained.checkpoint.get("global_step", 0)), "episodes": episodes, **mean,
            "shots": None if shots is None else shots / episodes,
            "kills_per_shot": sum(episode["kills"] for episode in played) / shots if shots else None,
            "played": played}


def table(results: list[dict]) -> str:
    """Markdown, a row per run; "-" where ammunition is handed out during the episode (no shot count)."""
    def figure(value, form: str) -> str:
        return "-" if value is None else format(value, form)

    lines = ["| run | agent steps | episodes | return | kills | shots | kills per shot | ended before the time limit "
             "| ammo at start, at the end | steps with no ammo | length | kills per 100 steps |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        lines.append(f"| {r['run']} | {r['step']:,} | {r['episodes']} | {r['return']:.1f} | {r['kills']:.1f} | "
                     f"{figure(r['shots'], '.1f')} | {figure(r['kills_per_shot'], '.2f')} | {r['ended_early']:.0%} | "
                     f"{r['ammo_start']:.0f}, {r['ammo_left']:.1f} | {r['dry_share']:.0%} | {r['length']:.0f} | "
                     f"{r['kill_rate']:.1f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> str:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path, help="run folders (or exported agents) to play")
    parser.add_argument("--episodes", type=int, default=20, help="episodes per run (default 20)")
    parser.add_argument("--out", type=Path, help="also write the table to this Markdown file")
    options = parser.parse_args(argv)
    if options.episodes < 1:
        raise ConfigError(f"--episodes must be at least 1, got {options.episodes}")
    if options.out is not None:  # before any episode is played, not after
        if options.out.is_dir():
            raise ConfigError(f"--out {options.out} is a folder; give a Markdown file's path")
        options.out.parent.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(1)  # one env, one small forward a step: more threads only wait
    results = []
    for run_dir in options.runs:
        results.append(diagnose(run_dir, options.episodes))
        print(f"{run_dir}: {results[-1]['kills']:.1f} kills an episode", file=sys.stderr,
              flush=True)
    text = table(results)
    print(text)
    if options.out is not None:
        write_text_atomic(options.out, text + "\n")
    return text


if __name__ == "__main__":
    run_cli("episode_ends", main)
