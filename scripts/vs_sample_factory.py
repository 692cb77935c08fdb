"""This trainer against Sample Factory 2.1.1's APPO defaults, side by side on this machine: the same
wall-clock time per scenario, one run at a time, the training mean of the last 20 episodes at
fixed times.

    python scripts/vs_sample_factory.py --minutes 10 --sf-python .venv-sf/bin/python \\
        --out reports/vs_sample_factory

Ours: ``camal-train --env X --seed S --recipe R`` (CAMAL; ``--recipe``, the scenario's default unless
told, and the label says which it resolved to; the recipe's budget), stopped
at ``--minutes`` (a stop saves and ends) or ending at its budget, whichever comes first; a run
that ended keeps its last training mean. Sample Factory: ``sf_examples.vizdoom.train_vizdoom``
with its defaults (APPO, a GRU core, 128x72 frames, its own action sets),
stopped at the same time (its ``--train_for_seconds`` never fires in 2.1.1: a Ctrl-C stops it); only
its reporting window is set to ours (``--stats_avg 20``) and its rewards are
scaled back (its Basic trains on rewards x 0.01). TakeCover is not one of its registered Doom envs:
it is registered here from ViZDoom's own ``take_cover.cfg`` with an idle action added, as Sample
Factory does for the others. Sample Factory needs gymnasium < 1 and numpy < 2, so it runs from its
own virtual environment (``--sf-python``); set one up with
``python3 -m venv .venv-sf && .venv-sf/bin/pip install sample-factory==2.1.1 'gymnasium<1' 'numpy<2' vizdoom torch``.

Times count from the process start (engines and workers starting included). Prints a table and
writes ``results.json`` and ``README.md`` into ``--out``. A run already in ``--runs`` is kept (the
script resumes) only where it ran with the same settings (the minutes; for ours every resolved trainer
setting, a recipe's values and not only its name, and the scenario's spec); one made with others is
run again, never reported under these.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import benchkit

from camal_rl import arguments, doom, ppo, recipes, runs
from camal_rl.files import write_json, write_text_atomic
from camal_rl.run_state import RECENT_EPISODES

SF_ENVS = {"basic": "doom_basic", "defend_the_center": "doom_defend_the_center",
           "defend_the_line": "doom_defend_the_line", "take_cover": "doom_take_cover"}
WINDOW = RECENT_EPISODES  # episodes in a training mean, as CleanRL's and this trainer's progress bar

# Run in Sample Factory's own environment: register TakeCover like its other Doom envs, then train. A
# file, not -c: Sample Factory spawns its workers, which import this module again (and need TakeCover).
SF_RUNNER = r"""
import os, sys
import vizdoom
from gymnasium.spaces import Discrete
from sf_examples.vizdoom.doom import doom_utils
take_cover = os.path.join(vizdoom.scenarios_path, "take_cover.cfg")
doom_utils.DOOM_ENVS.append(doom_utils.DoomSpec("doom_take_cover", take_cover, Discrete(1 + 2), 1.0))
from sf_examples.vizdoom.train_vizdoom import main
if __name__ == "__main__":
    sys.exit(main())
"""


def started_with(folder: Path, key: str, settings: dict) -> float | None:
    """When the run ``key`` in ``folder`` started, where it ran with ``settings``; None where it must run
    (again): no stamp, a stamp from other settings, or one that does not read as a stamp."""
    stamp = folder / f"{key}.json"
    if not stamp.exists():
        if (folder / f"{key}.started").exists():  # this script's older stamp, which held no settings
            print(f"vs_sample_factory: {key} has no record of its settings: running it again", flush=True)
        return None
    try:
        recorded = json.loads(stamp.read_text())
        ran_with, started = recorded["settings"], float(recorded["started"])
    except (ValueError, KeyError, TypeError):
        print(f"vs_sample_factory: {stamp} is not a run stamp: running {key} again", flush=True)
        return None
    if ran_with != settings:
        changed = differing(ran_with, settings)
        shown = ", ".join(changed[:5]) + (f" and {len(changed) - 5} more" if len(changed) > 5 else "")
        print(f"vs_sample_factory: {key} ran with other settings ({shown}): running it again", flush=True)
        return None
    return started


def differing(before, now, where: str = "") -> list[str]:
    """The dotted names of the settings that differ between two stamps (``where`` for the whole)."""
    if not (isinstance(before, dict) and isinstance(now, dict)):
        return [] if before == now else [where or "all"]
    return [name for key in sorted(set(before) | set(now), key=str)
            for name in differing(before.get(key), now.get(key), f"{where}.{key}" if where else str(key))]


def forget_run(folder: Path, key: str) -> None:
    """Before a run starts again: its old stamp goes first, so a run killed now is never taken for it."""
    (folder / f"{key}.json").unlink(missing_ok=True)
    (folder / f"{key}.started").unlink(missing_ok=True)


def stamp_run(folder: Path, key: str, settings: dict, started: float) -> None:
    """Record that the run ``key`` finished under ``settings`` (written last: a killed run has none)."""
    write_json(folder / f"{key}.json", {"settings": settings, "started": started})


def our_settings(env: str, seed: int, minutes: float, recipe: str) -> dict:
    """What our run's result depends on, as its stamp reads back: the minutes, the scenario's spec and every
    setting the trainer resolves (a recipe edited under the same name is other settings)."""
    resolved = arguments.resolve(ppo.Args(env=env, seed=seed, recipe=recipe))
    learned = {k: v for k, v in dataclasses.asdict(resolved).items() if k not in runs.HOW_A_RUN_RUNS}
    record = doom.load_spec(env).record()
    # the game, not where it is installed; the recipes that matter are already in the resolved args
    spec = {k: v for k, v in record.items() if k not in ("description", "source", "recipes", "config")}
    spec["config_sha256"] = hashlib.sha256(Path(record["config"]).read_bytes()).hexdigest()
    return json.loads(json.dumps({"minutes": minutes, "scenario": spec, "args": learned}))


def mean_at(points: list[tuple[float, float]], seconds: float) -> float | None:
    """The last value logged at or before ``seconds`` (None before the first)."""
    before = [value for when, value in points if when <= seconds]
    return before[-1] if before else None


def ours(env: str, seed: int, minutes: float, recipe: str, folder: Path) -> tuple[float, list[tuple[float, float]]]:
    """Our trainer for ``minutes`` (or its budget): when it started, and (seconds since then, mean of the last
    20 episodes)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run_dir = folder / f"ours_{env}"
    settings = our_settings(env, seed, minutes, recipe)
    started = started_with(folder, f"ours_{env}", settings)
    if started is None:
        forget_run(folder, f"ours_{env}")
        shutil.rmtree(run_dir, ignore_errors=True)
        started = time.time()
        with open(folder / f"ours_{env}.log", "w") as log:
            process = subprocess.Popen([sys.executable, "-m", "camal_rl.ppo", "--env", env, "--seed", str(seed),
                                        "--recipe", recipe, "--run-dir", str(run_dir), "--no-progress", "--no-cuda"],
                                       stdout=log, stderr=subprocess.STDOUT)
        try:
            process.wait(timeout=minutes * 60)
        except subprocess.TimeoutExpired:
            process.send_signal(signal.SIGTERM)  # it finishes its iteration, saves and ends
            process.wait()
        stamp_run(folder, f"ours_{env}", settings, started)
    events = EventAccumulator(str(run_dir), size_guidance={"scalars": 0})
    events.Reload()
    if runs.Tag.EPISODIC_RETURN not in events.Tags()["scalars"]:
        sys.exit(f"vs_sample_factory: our run on {env} logged no episode; see {folder / f'ours_{env}.log'}")
    returns = [(e.wall_time - started, e.value) for e in events.Scalars(runs.Tag.EPISODIC_RETURN)]
    return started, [(when, sum(v for _, v in returns[max(0, i + 1 - WINDOW): i + 1]) / min(WINDOW, i + 1))
                     for i, (when, _) in enumerate(returns)]


def stop_after(process: subprocess.Popen, seconds: float) -> None:
    """Let ``process`` (a session of its own) run ``seconds``, then stop it as Ctrl-C would and end what
    is left of its session (Sample Factory 2.1.1 never counts its training time, so its
    ``--train_for_seconds`` does not stop it; its workers' engines would outlive it)."""
    try:
        process.wait(timeout=seconds)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGINT)
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def sample_factory(env: str, seed: int, minutes: float, folder: Path,
                   sf_python: str) -> tuple[float, list[tuple[float, float]]]:
    """Sample Factory's APPO defaults for ``minutes``: when it started, and (seconds since then, its 20-episode
    mean reward)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    train_dir = folder / "sample_factory"
    experiment = f"sf_{env}"
    summary = train_dir / experiment / ".summary" / "0"
    settings = {"env": env, "seed": seed, "minutes": minutes}
    started = started_with(folder, f"sf_{env}", settings)
    if started is None:
        forget_run(folder, f"sf_{env}")
        shutil.rmtree(train_dir / experiment, ignore_errors=True)
        runner = folder / "sf_runner.py"
        runner.write_text(SF_RUNNER)
        started = time.time()
        with open(folder / f"sf_{env}.log", "w") as log:
            process = subprocess.Popen([sf_python, str(runner), f"--env={SF_ENVS[env]}", f"--experiment={experiment}",
                                        f"--train_dir={train_dir}", f"--seed={seed}", f"--stats_avg={WINDOW}",
                                        "--device=cpu"], stdout=log, stderr=subprocess.STDOUT,
                                       env={**os.environ, "PYTHONPATH": ""}, start_new_session=True)
            stop_after(process, minutes * 60)
        stamp_run(folder, f"sf_{env}", settings, started)
    scaling = 0.01 if env == "basic" else 1.0  # its DoomSpec's reward_scaling
    events = EventAccumulator(str(summary), size_guidance={"scalars": 0})
    events.Reload()
    tag = "reward/reward"
    if tag not in events.Tags()["scalars"]:
        return started, []
    return started, [(e.wall_time - started, e.value / scaling) for e in events.Scalars(tag)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--envs", nargs="+", default=list(doom.PAPER_SCENARIOS), choices=sorted(SF_ENVS))
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--recipe", default="default", help="our recipe (default: each scenario's default)")
    parser.add_argument("--sf-python", default=".venv-sf/bin/python", help="Python of Sample Factory's own venv")
    parser.add_argument("--runs", default="runs/vs_sample_factory", help="where both trainers' run folders go")
    parser.add_argument("--out", required=True, help="where results.json and README.md go")
    options = parser.parse_args()
    if not Path(options.sf_python).exists():
        parser.error(f"--sf-python {options.sf_python} does not exist; set up Sample Factory's venv (see --help)")
    recipe_of = {}  # every scenario's recipe checked before any run starts
    for env in options.envs:
        known = doom.load_spec(env).recipes
        try:
            recipe_of[env] = recipes.resolve(options.recipe, known)[0]
        except KeyError:
            parser.error(f"--recipe {options.recipe}: {env} has {recipes.available(known)}")
    out, scratch = Path(options.out), Path(options.runs)
    out.mkdir(parents=True, exist_ok=True)
    scratch.mkdir(parents=True, exist_ok=True)
    machine = benchkit.machine_line()
    print(machine, flush=True)
    marks = sorted({m for m in (1, 2, 5, 10, 15, 30, 60) if m <= options.minutes} | {options.minutes})
    results = {"machine": machine, "minutes": options.minutes, "seed": options.seed, "recipe": options.recipe,
               "recipe_per_scenario": recipe_of, "marks_minutes": marks, "scenarios": {},
               "command": shlex.join(["python", "scripts/vs_sample_factory.py", *sys.argv[1:]])}
    for env in options.envs:
        spec = doom.load_spec(env)
        recipe = recipe_of[env]
        frame_skip = arguments.resolve(ppo.Args(env=env, recipe=recipe)).frame_skip
        skip = "" if frame_skip == spec.frame_skip else f", frame skip {frame_skip}"  # Sample Factory's is 4
        curves = {f"ours (CAMAL, {recipe} recipe{skip})": ours(env, options.seed, options.minutes, recipe, scratch),
                  "Sample Factory 2.1.1 APPO defaults": sample_factory(env, options.seed, options.minutes, scratch,
                                                                       options.sf_python)}
        results["scenarios"][env] = {
            trainer: {"started_utc": time.strftime("%Y-%m-%d %H:%M", time.gmtime(started)),
                      "at_minutes": [mean_at(curve, m * 60) for m in marks],
                      "best": max((value for _, value in curve), default=None), "points": len(curve),
                      "normalised_best": (spec.normalize_return(max(value for _, value in curve)) if curve else None)}
            for trainer, (started, curve) in curves.items()}
        write_json(out / "results.json", results)
        for trainer, row in results["scenarios"][env].items():
            cells = " | ".join("-" if v is None else f"{v:.1f}" for v in row["at_minutes"])
            print(f"| {env} | {trainer} | {cells} | {row['best'] if row['best'] is None else round(row['best'], 1)} |",
                  flush=True)
    write_text_atomic(out / "README.md", report(results))


def report(results: dict) -> str:
    marks = results["marks_minutes"]
    recipe = results.get("recipe", "default")
    recipe_flag = "" if recipe == "default" else f" --recipe {recipe}"
    lines = ["# This trainer against Sample Factory, side by side", "",
             f"Training mean of the last {WINDOW} episodes (raw game return) at each time since the process "
             f"started, one run at a time, seed {results['seed']}, {results['minutes']:g} minutes each.",
             f"{results['machine']}.", "",
             "Command: `" + results.get("command", "python scripts/vs_sample_factory.py --minutes "
                                  f"{results['minutes']:g}{recipe_flag} --sf-python .venv-sf/bin/python "
                                  "--out reports/vs_sample_factory") + "`",
             "",
             "| scenario | trainer | run started (UTC) | " + " | ".join(f"{m:g} min" for m in marks) + " | best |",
             "|---|---|---|" + "---|" * (len(marks) + 1)]
    for env, rows in results["scenarios"].items():
        for trainer, row in rows.items():
            cells = " | ".join("-" if v is None else f"{v:.1f}" for v in row["at_minutes"])
            best = "-" if row["best"] is None else f"{row['best']:.1f}"
            lines.append(f"| {env} | {trainer} | {row.get('started_utc', '-')} | {cells} | {best} |")
    lines += ["", "Ours stops at its scenario budget when that comes first; its training mean then stays where it "
              "ended. `-`: no mean logged yet. A run made earlier under the same settings is kept, not made again: "
              "the start column says when each ran."]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
