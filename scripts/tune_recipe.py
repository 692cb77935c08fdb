"""Search a scenario's PPO recipe with Optuna (TPE), as CleanRL's tuner does; resumable.

Each trial trains every ``--methods`` (CAMAL and Vanilla by default) with one sampled recipe on
every search seed and scores each run's normalised training-return curve: the mean, over 30 equal
slices, of the normalised return of the episodes that ended in each slice (a slice without an
episode keeps the last value; the curve starts at 0, a random policy). ``--objective`` picks the
slices:

- ``wall`` (the default): slices of the first ``--minutes`` of wall-clock time, engine start-up
  included: what a person on this machine waits for, so a recipe that learns per second wins over
  one that learns per agent step but runs many passes of the network per step. Each run trains
  toward the scenario's budget (its annealing follows it) and is stopped at ``--minutes``.
- ``area``: slices of ``--steps`` agent steps (learning per agent step, as the first searches did).
- ``end``: the last quarter of those slices (keeps climbing).

A trial's score is the worse of the methods' (``--combine worst``, the default: a recipe that
helps one method only loses, so the search favours no method; ``mean`` averages them). Runs go two
at a time with one torch thread each, the same for every trial. ``--budget-hours`` bounds the
search's wall time: no trial starts once the trials so far took that long.
The study lives in an SQLite file in ``--out``: a killed search started again goes on where it
was. It stores the search's settings and refuses to resume with others, naming what differs, so
``best.toml`` states the budget its trials had.

    python scripts/tune_recipe.py --env basic --minutes 4 --budget-hours 2 --seeds 101 102 \
        --out reports/recipe_search_neutral/basic
    python scripts/tune_recipe.py --env defend_the_center --objective area --steps 100000 --out ...

The first trials are known points: Table 8, Stable-Baselines3's PPO defaults and any of the
scenario's own recipes named by ``--start-from``. A sampled recipe whose minibatches would hold
fewer than ``--min-minibatch`` samples is pruned before it trains. Where ``--give-up-after``
trials in a row are pruned or fail, no recipe can complete: the search stops with one line saying
why and a non-zero exit.

Writes ``trials.csv`` (every trial: parameters, score per method and seed, wall time) and
``best.toml`` (the winner as a table to paste into the scenario spec: ``[recipes.neutral]`` when the
trials scored both CAMAL and Vanilla, which ``--recipe default`` prefers, else ``[recipes.tuned]``)
into ``--out``.
"""

from __future__ import annotations

import argparse
import json
import signal
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from camal_rl import arguments, doom, ppo, recipes, runs
from camal_rl.errors import CamalError, run_cli
from camal_rl.files import write_text_atomic


def sample_recipe(trial) -> dict:
    """The search space: everything PPO allows that the trainer exposes (recipes.HYPERPARAMETERS)."""
    recipe = {
        "learning_rate": trial.suggest_float("learning_rate", 1e-4, 1.5e-3, log=True),
        "num_envs": trial.suggest_categorical("num_envs", [4, 8, 16]),
        "num_steps": trial.suggest_categorical("num_steps", [32, 64, 128, 256]),
        "num_minibatches": trial.suggest_categorical("num_minibatches", [2, 4, 8, 16, 32]),
        "update_epochs": trial.suggest_int("update_epochs", 2, 10),
        "gamma": trial.suggest_categorical("gamma", [0.95, 0.99, 0.995]),
        "gae_lambda": trial.suggest_categorical("gae_lambda", [0.9, 0.95, 0.98]),
        "clip_coef": trial.suggest_categorical("clip_coef", [0.1, 0.2, 0.3]),
        "ent_coef": trial.suggest_categorical("ent_coef", [0.0, 0.001, 0.01]),
        "vf_coef": trial.suggest_categorical("vf_coef", [0.5, 1.0]),
        "anneal_lr": trial.suggest_categorical("anneal_lr", [True, False]),
        "clip_vloss": trial.suggest_categorical("clip_vloss", [True, False]),
        "clip_reward": trial.suggest_categorical("clip_reward", [True, False]),
    }
    # without clipping, rewards are scaled instead (Basic's +106 kill would swamp the value loss)
    recipe["reward_scale"] = (1.0 if recipe["clip_reward"]
                              else trial.suggest_categorical("reward_scale", [0.01, 0.03, 0.1]))
    return recipe


def minibatch_size(recipe: dict) -> int:
    return recipe["num_envs"] * recipe["num_steps"] // recipe["num_minibatches"]


def refuse_small_minibatches(recipe: dict, minimum: int) -> None:
    """Prune (before training) a recipe whose minibatches hold fewer than ``minimum`` samples."""
    import optuna

    if minibatch_size(recipe) < minimum:
        raise optuna.TrialPruned(f"minibatch of {minibatch_size(recipe)} < --min-minibatch {minimum}")


def known_points(spec: doom.ScenarioSpec, start_from: list[str]) -> list[dict]:
    """Trials to run first: Table 8, Stable-Baselines3's PPO defaults, then the scenario's recipes
    named in ``start_from`` (a ``ValueError`` names a recipe the scenario does not have)."""
    paper = {k: v for k, v in recipes.PAPER.items() if k not in ("reward_scale", recipes.BUDGET)}
    points = [paper, {**paper, "learning_rate": 3e-4, "num_steps": 256, "num_minibatches": 32, "update_epochs": 10,
                      "clip_coef": 0.2, "ent_coef": 0.0, "anneal_lr": False}]
    for name in start_from:
        if name not in spec.recipes:
            raise ValueError(f"--start-from {name}: scenario {spec.name} has no such recipe; "
                             f"it has {sorted(spec.recipes) or 'none'}")
        recipe = {k: v for k, v in {**recipes.PAPER, **spec.recipes[name]}.items()
                  if k != recipes.BUDGET and k not in recipes.OPTIONAL}  # a search keeps the spec's frame skip
        if recipe["clip_reward"] or recipe["reward_scale"] == 1.0:
            recipe.pop("reward_scale")  # only sampled where rewards are scaled instead of clipped
        points.append(recipe)
    return points


def flags(recipe: dict) -> list[str]:
    out = []
    for name, value in recipe.items():
        flag = "--" + name.replace("_", "-")
        out += [flag if value else "--no-" + flag[2:]] if isinstance(value, bool) else [flag, str(value)]
    return out


OBJECTIVES = {"wall": "area under the normalised training-return curve over wall-clock time",
              "area": "area under the normalised training-return curve over agent steps",
              "end": "normalised training return over the last quarter of the budget"}


def slices(events: list[tuple[float, float]], end: float, bins: int) -> list[float]:
    """The mean of each of ``bins`` equal slices of [0, end] over (position, value) points; a slice
    without a point keeps the last value, from 0 (a random policy's normalised return)."""
    edges = np.linspace(0, end, bins + 1)
    curve, last = [], 0.0
    for low, high in zip(edges[:-1], edges[1:], strict=True):
        inside = [value for position, value in events if low < position <= high]
        last = float(np.mean(inside)) if inside else last
        curve.append(last)
    return curve


def training_curve(run_dir: Path, spec: doom.ScenarioSpec, end: float, bins: int, *,
                   started: float | None = None) -> list[float]:
    """The normalised training return per slice of ``end`` agent steps, or with ``started`` (the
    epoch second the run's process began) per slice of ``end`` seconds of wall-clock time."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run_dir), size_guidance={"scalars": 0})
    events.Reload()
    returns = events.Scalars(runs.Tag.EPISODIC_RETURN) if runs.Tag.EPISODIC_RETURN in events.Tags()["scalars"] else []
    points = [((e.wall_time - started) if started is not None else e.step, spec.normalize_return(e.value))
              for e in returns]
    return slices(points, end, bins)


def score(curve: list[float], objective: str) -> float:
    return float(np.mean(curve[-max(1, len(curve) // 4):] if objective == "end" else curve))


METHOD_FLAGS = {"camal": [], "vanilla": ["--camal-coef", "0"]}


class LiveRuns:
    """The trainers a trial has running, so that a stop reaches them at once: without it a stopped
    search waited for its runs' minutes to end before it let go of the cores."""

    def __init__(self):
        self._lock = threading.Lock()
        self._processes: set[subprocess.Popen] = set()
        self.stopping = False

    def start(self, command: list[str]) -> subprocess.Popen:
        with self._lock:
            if self.stopping:  # a queued run of a stopped trial: do not start it
                raise RuntimeError("the search was stopped")
            process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
            self._processes.add(process)
            return process

    def ended(self, process: subprocess.Popen) -> None:
        with self._lock:
            self._processes.discard(process)

    def stop_all(self) -> None:
        """Each running trainer gets SIGTERM (it saves and ends); no new one starts."""
        with self._lock:
            self.stopping = True
            for process in self._processes:
                if process.poll() is None:
                    process.send_signal(signal.SIGTERM)


LIVE_RUNS = LiveRuns()


def train_once(env: str, recipe: dict, seed: int, method: str, options, root: Path) -> tuple[float, float]:
    """One run of a trial; (its score, its wall seconds). ``RuntimeError`` naming the seed when it failed."""
    run_dir = root / f"{method}_seed{seed}"
    wall = options.objective == "wall"
    steps = options.total_timesteps if wall else options.steps
    command = [sys.executable, "-m", "camal_rl.ppo", "--env", env, "--seed", str(seed), "--recipe", "paper",
               *flags(recipe), *METHOD_FLAGS[method], "--total-timesteps", str(steps), "--eval-episodes", "0",
               "--checkpoint-interval", "1000000", "--checkpoint-minutes", "0", "--threads", "1", "--no-progress",
               "--no-cuda", "--run-dir", str(run_dir)]
    started = time.time()
    process = LIVE_RUNS.start(command)
    stopped = (0, 128 + signal.SIGTERM)
    try:
        _, stderr = process.communicate(timeout=options.minutes * 60 if wall else None)
    except subprocess.TimeoutExpired:  # the wall-clock budget is spent: stop it (it saves and ends)
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate()
        # a run ending by itself just then can take the signal after Python gave its handler back
        stopped += (-signal.SIGTERM,)
    finally:
        LIVE_RUNS.ended(process)
    if process.returncode not in stopped:
        last = stderr.strip().splitlines()[-1] if stderr.strip() else "failed"
        raise RuntimeError(f"{method} seed {seed}: {last}")
    spec = doom.load_spec(env)
    curve = (training_curve(run_dir, spec, options.minutes * 60, 30, started=started) if wall
             else training_curve(run_dir, spec, steps, 30))
    return score(curve, options.objective), time.time() - started


# What a search is: a resumed search must train and score its trials as the stored ones were.
SEARCH_SETTINGS = ("env", "methods", "combine", "objective", "steps", "minutes", "total_timesteps", "seeds",
                   "min_minibatch", "frame_skip")
STORED_SINCE_2026_12_07 = ("frame_skip",)  # a search stored before lacks these; any other missing setting differs
SETTING_NAMES = {"frame_skip": "the scenario spec's frame_skip"}  # the settings no flag of this script sets


class SearchError(CamalError):
    """A search that cannot go on as asked; the message is the whole story."""


def parse_options(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--env", default="basic")
    parser.add_argument("--trials", type=int, default=20, help="trials in all (a resumed study counts those done)")
    parser.add_argument("--objective", choices=sorted(OBJECTIVES), default="wall",
                        help="wall: the first --minutes of wall-clock time; area: --steps agent steps (learn early); "
                             "end: their last quarter (keep climbing)")
    parser.add_argument("--minutes", type=float, default=4.0, help="wall-clock minutes per run (--objective wall)")
    parser.add_argument("--total-timesteps", type=int, default=None,
                        help="the budget each run trains toward with --objective wall (its annealing follows it); "
                             "default: the scenario's default recipe's")
    parser.add_argument("--steps", type=int, default=30_000, help="agent steps per run (--objective area, end)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[101, 102],
                        help="search seeds (keep them apart from verification seeds)")
    parser.add_argument("--methods", nargs="+", choices=sorted(METHOD_FLAGS), default=["camal", "vanilla"])
    parser.add_argument("--combine", choices=["worst", "mean"], default="worst",
                        help="a trial's score from its methods' (each the mean over seeds): the worse, so the search "
                             "favours no method, or the mean")
    parser.add_argument("--budget-hours", type=float, default=None,
                        help="start no trial once the search's trials took this many hours of wall time")
    parser.add_argument("--start-from", nargs="*", default=[], metavar="RECIPE",
                        help="also try these recipes of the scenario first (e.g. from_basic)")
    parser.add_argument("--min-minibatch", type=int, default=64, help="prune recipes with smaller minibatches")
    parser.add_argument("--give-up-after", type=int, default=10, metavar="N",
                        help="stop (non-zero exit) after N trials in a row that were pruned or failed")
    parser.add_argument("--sampler-seed", type=int, default=0,
                        help="seed of the sampler's random start-up draws; searches that share it draw the same random "
                             "recipes (the searches in reports/recipe_search/ all used 0)")
    parser.add_argument("--out", required=True)
    options = parser.parse_args(argv)
    for flag in ("trials", "steps", "give_up_after"):
        if getattr(options, flag) < 1:
            parser.error(f"--{flag.replace('_', '-')} must be >= 1, got {getattr(options, flag)}")
    if not options.minutes > 0 or (options.budget_hours is not None and not options.budget_hours > 0):
        parser.error("--minutes and --budget-hours must be > 0")
    if len(set(options.methods)) != len(options.methods):
        parser.error(f"--methods names one twice: {options.methods}")
    return options


def open_study(path: Path, name: str):
    """The study ``name`` in the SQLite file ``path`` (new or resumed); ``SearchError`` for a file
    Optuna cannot read or one that holds another search."""
    import optuna

    try:
        storage = optuna.storages.RDBStorage(f"sqlite:///{path}")
        others = [other for other in optuna.study.get_all_study_names(storage) if other != name]
        study = None if others else optuna.create_study(study_name=name, direction="maximize", storage=storage,
                                                        load_if_exists=True)
    except Exception as error:  # sqlite's "not a database", a schema from another Optuna, ...
        why = (str(error).strip().splitlines() or [type(error).__name__])[0]
        raise SearchError(f"{path} cannot be read as an Optuna study ({why}); move it away to start a new "
                          "search, or give another --out") from None
    if others:
        raise SearchError(f"{path} holds the search {others[0]!r}, not {name!r} (another --env, --method or "
                          "--objective); give the same ones to resume it, or another --out")
    return study


def shown(value) -> str:
    return " ".join(map(str, value)) if isinstance(value, list) else str(value)


def check_settings(study, settings: dict, path: Path) -> dict:
    """Store a new search's settings; refuse to resume one whose stored settings differ. Returns them."""
    stored = study.user_attrs.get("search")
    if stored is None:  # a new search, or one from before settings were stored
        if study.trials:
            print(f"{path}: a search from before its settings were stored; taking this command's: "
                  + ", ".join(f"--{k.replace('_', '-')} {shown(v)}" for k, v in settings.items()), flush=True)
        study.set_user_attr("search", settings)
        return settings
    unrecorded = [key for key in STORED_SINCE_2026_12_07 if key not in stored]
    if unrecorded:  # its trials ran at the spec's frame skip, which no bundled spec has changed
        print(f"{path}: a search from before {', '.join(unrecorded)} was stored; taking this command's", flush=True)
        stored = {**stored, **{key: settings[key] for key in unrecorded}}
        study.set_user_attr("search", stored)
    differ = [f"{SETTING_NAMES.get(key, '--' + key.replace('_', '-'))} {shown(stored.get(key))}, not "
              f"{shown(settings[key])}" for key in SEARCH_SETTINGS if stored.get(key) != settings[key]]
    if differ:
        raise SearchError(f"{path} was searched with {'; '.join(differ)}; resume it with its own settings, or give "
                          "another --out")
    return stored


def make_objective(options):
    """The trial: sample a recipe, train it with every method on every search seed (two runs at a
    time), score the curves. A pruned or failed trial keeps its reason (user attribute ``why``) for
    the line that ends a search that cannot go on."""
    import optuna

    def objective(trial) -> float:
        recipe = sample_recipe(trial)
        try:
            refuse_small_minibatches(recipe, options.min_minibatch)
        except optuna.TrialPruned as pruned:
            trial.set_user_attr("why", f"pruned: {pruned}")
            raise
        cells = [(method, seed) for method in options.methods for seed in options.seeds]
        started = time.time()
        LIVE_RUNS.stopping = False
        try:
            with tempfile.TemporaryDirectory() as scratch, ThreadPoolExecutor(2) as pool:
                try:
                    results = list(pool.map(lambda cell: train_once(options.env, recipe, cell[1], cell[0],
                                                                    options, Path(scratch)), cells))
                except KeyboardInterrupt:  # stop the runs now, not when their minutes are up
                    pool.shutdown(wait=False, cancel_futures=True)
                    LIVE_RUNS.stop_all()
                    raise
        except KeyboardInterrupt:  # a stop (Ctrl-C, SIGTERM): Optuna marks it failed; resumed, it runs again
            trial.set_user_attr("interrupted", True)
            raise
        except RuntimeError as error:
            trial.set_user_attr("why", f"failed: {error}")
            trial.set_user_attr("wall_seconds", time.time() - started)
            print(f"trial {trial.number} failed: {error}", flush=True)
            return float("nan")  # Optuna marks the trial failed, with one line instead of a traceback
        scores = {method: [score for (m, _), (score, _) in zip(cells, results, strict=True) if m == method]
                  for method in options.methods}
        per_method = {method: float(np.mean(values)) for method, values in scores.items()}
        value = min(per_method.values()) if options.combine == "worst" else float(np.mean(list(per_method.values())))
        trial.set_user_attr("scores", scores)
        trial.set_user_attr("wall_seconds", time.time() - started)
        shown_scores = ", ".join(f"{method} {score:.3f}" for method, score in per_method.items())
        print(f"trial {trial.number}: {options.objective} {value:.3f} ({shown_scores}) in "
              f"{time.time() - started:.0f} s: {json.dumps(recipe)}", flush=True)
        return value

    return objective


def search_hours(study) -> float:
    return sum(t.user_attrs.get("wall_seconds", 0.0) for t in study.trials) / 3600


def completed(study) -> list:
    import optuna

    return [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]


def run_trials(study, objective, trials: int, give_up_after: int, path: Path,
               budget_hours: float | None = None) -> None:
    """Trials until ``trials`` have completed (pruned and failed ones do not count) or the trials so far
    took ``budget_hours``; ``SearchError`` after ``give_up_after`` pruned or failed trials in a row,
    where no recipe can complete."""
    in_a_row = 0
    while len(completed(study)) < trials:
        if budget_hours is not None and search_hours(study) >= budget_hours:
            print(f"the search's budget is spent: its trials took {search_hours(study):.2f} h of the "
                  f"{budget_hours:g} h allowed ({len(completed(study))} complete)", flush=True)
            return
        study.optimize(objective, n_trials=1)
        last = study.trials[-1]
        in_a_row = 0 if last.state.name == "COMPLETE" else in_a_row + 1
        if in_a_row >= give_up_after:
            why = last.user_attrs.get("why", last.state.name.lower())
            raise SearchError(f"{in_a_row} trials in a row were pruned or failed (the last {why}); stopped with "
                              f"{len(completed(study))} of {trials} trials complete. The study stays in {path}: "
                              "fix the cause (or raise --give-up-after) and run the same command to go on")


def main(argv=None) -> None:
    options = parse_options(argv)
    spec = doom.load_spec(options.env)
    try:
        starts = known_points(spec, options.start_from)
    except ValueError as error:
        raise SearchError(str(error)) from None
    out = Path(options.out)
    out.mkdir(parents=True, exist_ok=True)
    with runs.one_writer(out):  # one search per folder: a second would share, and fail, its trials
        search(options, spec, starts, out)


def search(options, spec, starts: list[dict], out: Path) -> None:
    import optuna

    path = out / "study.db"
    name = f"{spec.name}-{'-'.join(options.methods)}-{options.objective}"
    study = open_study(path, name)
    if options.total_timesteps is None:
        options.total_timesteps = arguments.resolve(ppo.Args(env=options.env)).total_timesteps
    settings = {"env": spec.name, "methods": options.methods, "combine": options.combine,
                "objective": options.objective, "steps": options.steps, "minutes": options.minutes,
                "total_timesteps": options.total_timesteps, "seeds": options.seeds,
                "min_minibatch": options.min_minibatch,
                "frame_skip": spec.frame_skip}  # trials train --recipe paper with flags: the spec's frame skip
    settings = check_settings(study, settings, path)
    requeue_interrupted(study)
    study.sampler = sampler_for(study, options.sampler_seed)
    if not study.trials:
        for point in starts:
            study.enqueue_trial(point)
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # each trial prints its own line
    run_trials(study, make_objective(options), options.trials, options.give_up_after, path, options.budget_hours)
    write_results(study, settings, out)


def cli(argv=None) -> None:
    run_cli("tune_recipe", lambda: main(argv))


def requeue_interrupted(study) -> None:
    """Trials a stopped search cut off (left running by a kill, or failed by a Ctrl-C or SIGTERM) have
    their recipes queued again, once, so a resumed search loses none of its points. None is live: the
    folder's lock is ours."""
    import optuna

    running, failed = optuna.trial.TrialState.RUNNING, optuna.trial.TrialState.FAIL
    requeued = list(study.user_attrs.get("requeued", []))
    for trial in study.get_trials(deepcopy=False, states=(running, failed)):
        if trial.number in requeued or not (trial.state == running or trial.user_attrs.get("interrupted")):
            continue
        if trial.state == running:
            study.tell(trial.number, state=failed)
        study.enqueue_trial(trial.system_attrs.get("fixed_params") or trial.params)
        requeued.append(trial.number)
        print(f"trial {trial.number} was cut off by a stopped search: queued its recipe again", flush=True)
    study.set_user_attr("requeued", requeued)


def sampler_for(study, seed: int = 0):
    """TPE with 8 random start-up trials, seeded ``seed`` for a new search. A resumed search adds its trial
    count, so that it does not replay its first session's random draws (seeded alike again, DefendLine's
    resumed search re-ran trial 3's recipe as trial 8). A seed is a set of draws, not a scenario's: with 0,
    the searches of DefendCenter, DefendLine and TakeCover drew the same random recipes."""
    import optuna

    return optuna.samplers.TPESampler(seed=seed + len(study.trials), n_startup_trials=8)


def recipe_table(methods: list[str], combine: str) -> str:
    """The spec table a winner belongs in: ``neutral`` where both methods were scored and the worse
    counted (it favours neither), ``tuned`` where CAMAL alone was, else a name saying how it was found."""
    if {"camal", "vanilla"} <= set(methods) and combine == "worst":
        return "neutral"
    if list(methods) == ["camal"]:
        return "tuned"
    return "tuned_" + "_".join(methods) + ("" if len(methods) == 1 else f"_{combine}")


def write_results(study, settings: dict, out: Path) -> None:
    """``trials.csv`` (every complete trial, best first) and ``best.toml`` (the winner), each stating the
    search's stored settings, so a resumed search reports the budget its trials had."""
    done = completed(study)
    if not done:
        print("no trial completed: nothing to write")
        return
    names = sorted({k for t in done for k in t.params})
    objective = settings["objective"]
    methods = settings["methods"]
    lines = [f"trial,{objective}," + ",".join(names) + "," + ",".join(f"{m}_scores" for m in methods)
             + ",wall_seconds"]
    for t in sorted(done, key=lambda t: -t.value):
        scores = t.user_attrs.get("scores", {})
        lines.append(f"{t.number},{t.value:.4f}," + ",".join(str(t.params.get(n, "")) for n in names) + ","
                     + ",".join(f"\"{scores.get(m)}\"" for m in methods)
                     + f",{t.user_attrs.get('wall_seconds', 0):.0f}")
    best = study.best_trial
    recipe = {**best.params, "reward_scale": best.params.get("reward_scale", 1.0)}
    body = "\n".join(f"{k} = {str(v).lower() if isinstance(v, bool) else v}" for k, v in sorted(recipe.items()))
    budget_steps = settings["total_timesteps"] if objective == "wall" else settings["steps"]
    budget = (f"the first {settings['minutes']:g} wall-clock minutes of runs toward {settings['total_timesteps']:,} "
              f"agent steps" if objective == "wall" else f"{settings['steps']:,} agent steps")
    write_text_atomic(out / "trials.csv", "\n".join(lines) + "\n")
    write_text_atomic(out / "best.toml",
                      f"# Optuna TPE, {len(done)} trials ({search_hours(study):.2f} h), {budget} x seeds "
                      f"{settings['seeds']}, methods {' '.join(methods)} ({settings['combine']} counts), objective: "
                      f"{OBJECTIVES[objective]} ({best.value:.3f})\n"
                      f"[recipes.{recipe_table(methods, settings['combine'])}]\n{body}\n"
                      f"total_timesteps = {budget_steps}  # the budget its trials trained toward\n"
                      f"# trials ran at the spec's frame skip; keep a frame_skip the table it replaces set\n")
    print(f"best trial {best.number}: {objective} {best.value:.3f}; wrote {out / 'best.toml'} and {out / 'trials.csv'}")


if __name__ == "__main__":
    cli()
