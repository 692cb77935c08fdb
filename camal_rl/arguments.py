"""The trainer's arguments: one configuration path from a command line or from Python to the
settings a run trains with, every value checked before an engine starts or a file is written.

What a caller gives always wins. What it leaves out comes, in order, from the run it resumes, or
from the scenario's recipe (``camal_rl.recipes``), the frames (``--paper-frames``) and the
scenario spec. On the command line those become the defaults before the flags are read
(``parse``), so ``--help`` shows a scenario's own values; in Python the dataclass remembers which
fields its caller set (``remembers_given``), so a value given equal to a default still wins.

Works on ``camal_rl.ppo.Args`` (passed in; this module does not import the trainer).
"""

from __future__ import annotations

import dataclasses
import math
import os
import sys
import time
import typing
from pathlib import Path

import torch
import tyro
from tqdm import tqdm

from camal_rl import camal, doom, recipes, runs, schema
from camal_rl.agent import MIN_OBS_SIZE, default_attention
from camal_rl.errors import ConfigError, RunFolderError
from camal_rl.rollout import PAPER_FRAMES
from camal_rl.schema import check_seed, tuple_if_list

# What --resume lets a user change; every other setting given with it must match the run.
RESUMABLE_CHANGES = runs.HOW_A_RUN_RUNS | {"total_timesteps"}
# Settings of this machine and session, never taken from a resumed run unless given.
THIS_SESSION = ("cuda", "progress")
# The flags that choose the defaults of the others: read first (``parse``).
CHOOSERS = ("env", "recipe", "paper_frames", "resume")


# ---------------------------------------------------------------------------------------
# Which fields a caller gave
# ---------------------------------------------------------------------------------------
def remembers_given(cls):
    """Class decorator for a dataclass: each instance remembers the fields its caller set, in the
    constructor or by assignment afterwards (``given``), even where the value equals the default."""
    generated_init = cls.__init__
    names = [f.name for f in dataclasses.fields(cls)]

    def __init__(self, *args, **kwargs):
        object.__setattr__(self, "_building", True)
        generated_init(self, *args, **kwargs)
        object.__setattr__(self, "_given", set(names[: len(args)]) | set(kwargs))
        object.__setattr__(self, "_building", False)

    def __setattr__(self, name, value):
        object.__setattr__(self, name, value)
        if not self.__dict__.get("_building", False) and name in names:
            self._given.add(name)

    cls.__init__, cls.__setattr__ = __init__, __setattr__
    return cls


def given(args) -> frozenset[str]:
    return frozenset(args._given)


def with_values(args, **values):
    """A copy of ``args`` with ``values``; every field of the copy counts as given."""
    return dataclasses.replace(args, **values)


# ---------------------------------------------------------------------------------------
# Defaults: recipe, frames, attention, frame skip
# ---------------------------------------------------------------------------------------
def resolve(args, spec: doom.ScenarioSpec | None = None):
    """``args`` with what the caller left out filled in (the recipe's hyperparameters, the frames,
    the attention, the frame skip) and every value checked; raises ``ConfigError`` / ``SpecError``."""
    spec = spec or doom.load_spec(args.env)  # an unknown scenario names the available ones
    chosen = given(args)
    try:
        recipe_name, recipe = recipes.resolve(args.recipe, spec.recipes)
    except KeyError:
        raise ConfigError(f"--recipe {args.recipe!r}: scenario {spec.name} has no such recipe; "
                          f"choose one of {recipes.available(spec.recipes)}") from None
    values = {name: value for name, value in recipe.items() if name not in chosen}
    values["obs_size"] = tuple(args.obs_size)
    if args.paper_frames:
        clashes = [f"--{name.replace('_', '-')}" for name, value in PAPER_FRAMES.items()
                   if name in chosen and tuple_if_list(getattr(args, name)) != value]
        if clashes:
            raise ConfigError(f"--paper-frames sets the frames itself (240x320 colour at RES_320X240); "
                              f"drop {', '.join(clashes)} or drop --paper-frames")
        values.update(PAPER_FRAMES)
    if args.attention is None:
        values["attention"] = default_attention(args.paper_frames)
    if args.frame_skip is None:  # the recipe's frame skip, else the spec's (also where None was given)
        values["frame_skip"] = recipe.get("frame_skip", spec.frame_skip)
    resolved = with_values(args, recipe=recipe_name, **values)
    check(resolved, spec)
    return resolved


# (field, lowest allowed, whether the lowest is excluded, highest allowed)
NUMBER_RANGES = (
    ("learning_rate", 0.0, True, 1.0), ("clip_coef", 0.0, True, math.inf), ("max_grad_norm", 0.0, True, math.inf),
    ("reward_scale", 0.0, True, math.inf), ("camal_coef", 0.0, False, math.inf), ("ent_coef", 0.0, False, math.inf),
    ("vf_coef", 0.0, False, math.inf), ("gamma", 0.0, False, 1.0), ("gae_lambda", 0.0, False, 1.0),
    ("checkpoint_minutes", 0.0, False, math.inf),
)
AT_LEAST_ONE = ("num_envs", "num_steps", "num_minibatches", "update_epochs", "checkpoint_interval", "frame_stack",
                "total_timesteps")
AT_LEAST_ZERO = ("eval_interval", "eval_episodes", "eval_image_frames", "threads")


def check(args, spec: doom.ScenarioSpec) -> None:
    """Refuse what cannot run on ``spec`` (the run's scenario), with one line that says what would."""
    if args.attention not in camal.ATTENTION_METHODS:
        raise ConfigError(f"--attention {args.attention!r} is not registered; "
                          f"choose one of {', '.join(camal.ATTENTION_METHODS)}")
    if args.resolution is not None and not doom.is_resolution(args.resolution):
        raise ConfigError(f"--resolution {args.resolution!r} is not a ViZDoom resolution; "
                          f"e.g. RES_160X120 or RES_320X240")
    check_seed(args.seed)
    for name, minimum in [(name, 1) for name in AT_LEAST_ONE] + [(name, 0) for name in AT_LEAST_ZERO]:
        if getattr(args, name) < minimum:
            raise ConfigError(f"--{flag(name)} must be >= {minimum}, got {getattr(args, name)}")
    for name, low, low_open, high in NUMBER_RANGES:
        check_number(name, getattr(args, name), low=low, low_open=low_open, high=high)
    frame_skip_problem = schema.value_problem(args.frame_skip, schema.FRAME_SKIP)
    if frame_skip_problem:
        raise ConfigError(f"--frame-skip {frame_skip_problem} (engine tics per agent step)")
    if args.target_kl is not None:
        check_number("target_kl", args.target_kl, low=0.0, low_open=True)
    check_sizes(args, spec)
    if args.env_workers is not None and args.env_workers < 0:
        raise ConfigError("--env-workers must be >= 0 (0 = envs in this process)")
    if args.env_groups is not None and not 1 <= args.env_groups <= args.num_envs:
        raise ConfigError(f"--env-groups must be between 1 and --num-envs ({args.num_envs})")
    if args.cuda_graph and not (args.cuda and torch.cuda.is_available()):
        raise ConfigError("--cuda-graph needs a CUDA GPU (and --cuda); drop --cuda-graph")


def check_sizes(args, spec: doom.ScenarioSpec) -> None:
    height, width = args.obs_size
    if min(height, width) < MIN_OBS_SIZE:
        raise ConfigError(f"--obs-size {height} {width} is too small for the Nature CNN (its three convolutions "
                          f"need at least {MIN_OBS_SIZE}x{MIN_OBS_SIZE}); e.g. --obs-size 60 80")
    if args.batch_size % args.num_minibatches:
        raise ConfigError(f"num_envs x num_steps = {args.batch_size} is not divisible by --num-minibatches "
                          f"{args.num_minibatches}; pick values whose product it divides")
    if args.total_timesteps < args.batch_size:
        raise ConfigError(f"--total-timesteps {args.total_timesteps} is below one rollout "
                          f"(num_envs x num_steps = {args.batch_size})")
    if args.num_envs > MAX_ENVS or args.frame_stack > MAX_FRAME_STACK:
        raise ConfigError(f"--num-envs must be <= {MAX_ENVS} (each is an engine process) and --frame-stack <= "
                          f"{MAX_FRAME_STACK}; got {args.num_envs} and {args.frame_stack}")
    needed, memory = rollout_bytes(args, spec), physical_memory()
    if memory and needed > 0.8 * memory:
        raise ConfigError(f"the rollout storage of --num-envs {args.num_envs} x --num-steps {args.num_steps} at "
                          f"{height}x{width} needs {needed / 2**30:.1f} GiB, more than this machine's "
                          f"{memory / 2**30:.0f} GiB allow; choose fewer envs, steps or smaller frames")


MAX_ENVS = doom.MAX_ENGINES
MAX_FRAME_STACK = 64


def rollout_bytes(args, spec: doom.ScenarioSpec) -> int:
    """Bytes of the rollout storage: a frame per env and step (and the stack's older frames), a mask at
    the engine's screen size per env and step (``camal_rl.rollout.FrameStorage``)."""
    height, width = args.obs_size
    channels = 1 if args.grayscale else 3
    screen_height, screen_width = doom.screen_size(args.resolution or spec.resolution)
    frames = (args.num_steps + args.frame_stack) * args.num_envs * channels * height * width
    return frames + (args.num_steps + 1) * args.num_envs * screen_height * screen_width


def physical_memory() -> int | None:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):  # not a POSIX system
        return None


def check_number(name: str, value, *, low: float = -math.inf, low_open: bool = False, high: float = math.inf) -> None:
    """A finite number in [low, high] ((low, high] with ``low_open``); one line naming the flag otherwise."""
    inside = (isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
              and (value > low if low_open else value >= low) and value <= high)
    if not inside:
        bound = f"> {low}" if low_open else f">= {low}"
        bound += "" if high == math.inf else f" and <= {high}"
        raise ConfigError(f"--{flag(name)} must be a finite number {bound}, got {value}")


def flag(name: str) -> str:
    return name.replace("_", "-")


# ---------------------------------------------------------------------------------------
# The command line: the choosers first, then every flag over their defaults
# ---------------------------------------------------------------------------------------
def parse(args_class, argv: list[str], *, prog: str = "camal-train"):
    """``args_class`` from a command line: ``--env``, ``--recipe``, ``--paper-frames`` and ``--resume``
    are read first and give the defaults (the scenario's recipe, or the resumed run's settings);
    every flag then overrides them."""
    choosers = _read_choosers(args_class, argv)
    if choosers.resume:
        defaults = resumed_defaults(args_class, choosers.resume)
    else:
        plain = args_class(env=choosers.env, recipe=choosers.recipe, paper_frames=choosers.paper_frames)
        defaults = resolve(plain)
    return tyro.cli(args_class, args=argv, default=defaults, prog=prog)


def _read_choosers(args_class, argv: list[str]):
    types = typing.get_type_hints(args_class)
    chooser_class = dataclasses.make_dataclass("Choosers", [
        (f.name, types[f.name], dataclasses.field(default=f.default)) for f in dataclasses.fields(args_class)
        if f.name in CHOOSERS])
    without_help = [token for token in argv if token not in ("-h", "--help")]
    choosers, _ = tyro.cli(chooser_class, args=without_help, return_unknown_args=True, add_help=False)
    return choosers


# ---------------------------------------------------------------------------------------
# Run folder: a fresh run in an empty folder, or a resume with the run's own settings
# ---------------------------------------------------------------------------------------
def default_run_dir(args) -> Path:
    return Path("runs") / f"{Path(args.env).stem}__{args.method}__{args.seed}__{int(time.time())}"


def saved_settings(args_class, saved: dict, source: Path):
    """The settings a run was trained with, from its checkpoint's arguments: every key known, every
    value of its field's type; what the run learned with must all be there (how it ran may be missing)."""
    known = {f.name for f in dataclasses.fields(args_class)}
    unknown = sorted(set(saved) - known)
    if unknown:
        shown = ", ".join(map(repr, unknown[:5]))
        raise RunFolderError(f"{source} holds settings this camal-rl does not know ({shown}); a newer version wrote "
                             f"it: play or resume it with that version")
    missing = sorted(known - set(saved) - runs.HOW_A_RUN_RUNS)
    if missing:
        raise RunFolderError(f"{source} lacks the setting(s) {', '.join(missing[:5])}; it was not written by this "
                             f"camal-rl")
    try:
        schema.check_types(saved, typing.get_type_hints(args_class), f"{source}: its settings")
    except schema.SchemaError as error:
        raise RunFolderError(str(error)) from None
    values = {name: tuple_if_list(value) for name, value in saved.items()}
    return args_class(**values)


def resumed_defaults(args_class, run_dir: str | Path):
    """The defaults of a command line that resumes ``run_dir``: its own settings, with this
    machine's and session's (``THIS_SESSION``)."""
    runs.check_no_writer(Path(run_dir))
    checkpoint = runs.load_checkpoint(run_dir, for_resume=True)
    saved = saved_settings(args_class, checkpoint["args"], Path(run_dir) / runs.CHECKPOINT)
    fresh = args_class()
    this_session = {name: getattr(fresh, name) for name in THIS_SESSION}
    # a run graphed on a GPU resumes on a machine without one
    this_session["cuda_graph"] = saved.cuda_graph and fresh.cuda and torch.cuda.is_available()
    return with_values(saved, resume=str(run_dir), run_dir=str(run_dir), **this_session)


def start_or_resume(args):
    """(the run's resolved arguments, its folder, the checkpoint to continue from or None); nothing is written."""
    if not args.resume:
        if "resume" in given(args) and args.resume is not None:  # --resume "" is not a fresh run
            raise ConfigError("--resume needs a run folder; to start a new run, drop --resume")
        args = resolve(args)
        run_dir = Path(args.run_dir) if args.run_dir else default_run_dir(args)
        runs.check_no_writer(run_dir)  # before its half-written files: they would read as "holds a run"
        runs.check_fresh_run_dir(run_dir)
        return with_values(args, run_dir=str(run_dir)), run_dir, None
    run_dir = Path(args.resume)
    runs.check_no_writer(run_dir)
    checkpoint = runs.load_checkpoint(run_dir, for_resume=True)
    saved = saved_settings(type(args), checkpoint["args"], run_dir / runs.CHECKPOINT)
    spec = doom.spec_of_run(checkpoint, saved.env)  # the run's own scenario, even if its spec file moved
    asked = given(args) - {"resume", "run_dir"}
    if "env" in asked and args.env != saved.env and doom.load_spec(args.env).name != spec.name:
        raise RunFolderError(f"{run_dir} is a run on {saved.env!r}, not {args.env!r}; drop --env to resume it")
    disagree = [f"--{flag(name)} {getattr(args, name)} (the run has {getattr(saved, name)})"
                for name in sorted(asked - RESUMABLE_CHANGES - {"env"})
                if tuple_if_list(getattr(args, name)) != getattr(saved, name)]
    if disagree:
        raise RunFolderError(f"--resume keeps the run's own settings, and these disagree with it: "
                             f"{'; '.join(disagree)}; drop them (or start a new run)")
    if args.run_dir is not None and Path(args.run_dir).resolve() != run_dir.resolve():
        raise RunFolderError(f"--run-dir {args.run_dir} differs from --resume {run_dir}; a run stays in its folder")
    changes = {name: getattr(args, name) for name in asked & RESUMABLE_CHANGES | set(THIS_SESSION)}
    if "cuda_graph" not in asked:  # a run graphed on a GPU resumes on a machine without one
        changes["cuda_graph"] = saved.cuda_graph and changes["cuda"] and torch.cuda.is_available()
    resumed = with_values(saved, **changes, resume=str(run_dir), run_dir=str(run_dir))
    check(resumed, spec)  # the run's own scenario: its spec file may have moved
    if resumed.total_timesteps != saved.total_timesteps:
        _train_further(resumed, saved, checkpoint, run_dir)
    return resumed, run_dir, checkpoint


def _train_further(resumed, saved, checkpoint: dict, run_dir: Path) -> None:
    reached = int(checkpoint["global_step"])
    if resumed.num_iterations <= checkpoint["iteration"]:
        raise RunFolderError(f"--total-timesteps {resumed.total_timesteps:,} is not beyond the {reached:,} agent "
                             f"steps {run_dir} has trained; give more to train it further")
    tqdm.write(f"camal-train: training {run_dir} on to {resumed.total_timesteps:,} agent steps (it was set for "
               f"{saved.total_timesteps:,}); an annealed learning rate follows the longer schedule from here",
               file=sys.stderr)


def is_finished(args, checkpoint: dict | None, run_dir: Path) -> bool:
    return (checkpoint is not None and checkpoint["iteration"] >= args.num_iterations
            and (run_dir / runs.SUMMARY).exists())
