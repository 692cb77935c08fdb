"""The trainer's arguments: defaults resolved (recipe, attention, paper frames, frame skip) and
every value checked before an engine starts or a file is written; a fresh run's folder, or a
resume that takes the run's settings from its checkpoint.

Works on ``camal_rl.ppo.Args`` (passed in; this module does not import the trainer).
"""

from __future__ import annotations

import math
import sys
import time
from dataclasses import fields
from pathlib import Path

import torch
from tqdm import tqdm

from camal_rl import camal, doom, recipes, runs
from camal_rl.agent import MIN_OBS_SIZE, default_attention
from camal_rl.errors import ConfigError, RunFolderError
from camal_rl.rollout import PAPER_FRAMES

# What --resume lets a user change; every other flag given with it must match the run.
RESUMABLE_CHANGES = runs.HOW_A_RUN_RUNS | {"total_timesteps"}


def given_fields(argv: list[str], args_class) -> set[str]:
    """The fields of ``args_class`` a command line names (``--num-envs 4``, ``--no-cuda``, ``--lr=1``)."""
    names = {f.name for f in fields(args_class)}
    given = set()
    for token in argv:
        if token.startswith("--"):
            name = token[2:].split("=", 1)[0].replace("-", "_")
            if name not in names and name.startswith("no_"):
                name = name[3:]
            if name in names:
                given.add(name)
    return given


def non_default_fields(args) -> set[str]:
    """What a caller of the Python API set: every field that differs from its default."""
    defaults = type(args)()
    return {f.name for f in fields(args) if getattr(args, f.name) != getattr(defaults, f.name)}


def validate(args, given: set[str] | None = None, *, apply_recipe: bool = True,
             spec: doom.ScenarioSpec | None = None) -> None:
    """Resolve defaults (recipe, attention, paper frames) and refuse what cannot run, before any
    engine starts or file is written. ``given``: the flags the user typed (None: any non-default);
    the recipe fills every hyperparameter not given."""
    spec = spec or doom.load_spec(args.env)  # unknown scenario -> SpecError listing the available ones
    given = non_default_fields(args) if given is None else given
    if apply_recipe:
        recipes.apply(args, spec, given)
    if args.paper_frames:
        clashes = [f"--{name.replace('_', '-')}" for name, value in PAPER_FRAMES.items()
                   if name in given and getattr(args, name) != value]
        if clashes:
            raise ConfigError(f"--paper-frames sets the frames itself (240x320 colour at RES_320X240); "
                              f"drop {', '.join(clashes)} or drop --paper-frames")
        for name, value in PAPER_FRAMES.items():
            setattr(args, name, value)
    if args.attention is None:
        args.attention = default_attention(args.paper_frames)
    if args.attention not in camal.ATTENTION_METHODS:
        raise ConfigError(f"--attention {args.attention!r} is not registered; choose one of {', '.join(camal.ATTENTION_METHODS)}")
    if args.frame_skip is None:
        args.frame_skip = spec.frame_skip
    if args.resolution is not None and not doom.is_resolution(args.resolution):
        raise ConfigError(f"--resolution {args.resolution!r} is not a ViZDoom resolution; e.g. RES_160X120 or RES_320X240")

    def positive_int(name: str, minimum: int = 1) -> None:
        value = getattr(args, name)
        if value < minimum:
            raise ConfigError(f"--{name.replace('_', '-')} must be >= {minimum}, got {value}")

    def finite(name: str, *, low: float = 0.0, high: float = math.inf, low_open: bool = False) -> None:
        value = getattr(args, name)
        inside = math.isfinite(value) and (value > low if low_open else value >= low) and value <= high
        if not inside:
            bound = f"> {low}" if low_open else f">= {low}"
            bound += "" if high == math.inf else f" and <= {high}"
            raise ConfigError(f"--{name.replace('_', '-')} must be a finite number {bound}, got {value}")

    for name in ("num_envs", "num_steps", "num_minibatches", "update_epochs", "checkpoint_interval", "frame_stack",
                 "frame_skip", "total_timesteps"):
        positive_int(name)
    for name in ("eval_interval", "eval_episodes", "eval_image_frames", "threads"):
        positive_int(name, 0)
    finite("learning_rate", low_open=True, high=1.0)
    finite("clip_coef", low_open=True)
    finite("max_grad_norm", low_open=True)
    finite("reward_scale", low_open=True)
    finite("camal_coef")
    finite("ent_coef")
    finite("vf_coef")
    finite("gamma", high=1.0)
    finite("gae_lambda", high=1.0)
    if args.target_kl is not None:
        finite("target_kl", low_open=True)
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
    if args.env_workers is not None and args.env_workers < 0:
        raise ConfigError("--env-workers must be >= 0 (0 = envs in this process)")
    if args.cuda_graph and "cuda_graph" in given and not (args.cuda and torch.cuda.is_available()):
        raise ConfigError("--cuda-graph needs a CUDA GPU (and --cuda); without one the rollout's forward runs as it "
                          "is: drop --cuda-graph")
    if args.env_groups is not None and not 1 <= args.env_groups <= args.num_envs:
        raise ConfigError(f"--env-groups must be between 1 and --num-envs ({args.num_envs})")


# ---------------------------------------------------------------------------------------
# Run folder: a fresh run in an empty folder, or a resume with the run's own settings
# ---------------------------------------------------------------------------------------
def default_run_dir(args) -> Path:
    return Path("runs") / f"{Path(args.env).stem}__{args.method}__{args.seed}__{int(time.time())}"


def start_or_resume(args, given: set[str] | None = None) -> tuple[object, Path, dict | None]:
    """(the run's args, its folder, the checkpoint to continue from or None); nothing is written."""
    if not args.resume:
        validate(args, given)
        run_dir = Path(args.run_dir) if args.run_dir else default_run_dir(args)
        runs.check_fresh_run_dir(run_dir)
        args.run_dir = str(run_dir)
        return args, run_dir, None
    run_dir = Path(args.resume)
    checkpoint = runs.load_checkpoint(run_dir, for_resume=True)
    saved = type(args).from_saved(checkpoint["args"])
    given = non_default_fields(args) if given is None else given
    spec = doom.spec_of_run(checkpoint, saved.env)  # the run's own scenario, even if its spec file moved
    if "env" in given and doom.load_spec(args.env).name != spec.name:
        raise RunFolderError(f"{run_dir} is a run on {saved.env!r}, not {args.env!r}; drop --env to resume it")
    disagree = [f"--{name.replace('_', '-')} {getattr(args, name)} (the run has {getattr(saved, name)})"
                for name in sorted(given - RESUMABLE_CHANGES - {"env"}) if getattr(args, name) != getattr(saved, name)]
    if disagree:
        raise RunFolderError(f"--resume keeps the run's own settings, and these flags disagree with it: "
                             f"{'; '.join(disagree)}; drop them (or start a new run)")
    if args.run_dir is not None and Path(args.run_dir).resolve() != run_dir.resolve():
        raise RunFolderError(f"--run-dir {args.run_dir} differs from --resume {run_dir}; a run stays in its folder")
    overrides = {name: getattr(args, name) for name in given & RESUMABLE_CHANGES | {"cuda", "progress"}}
    resumed = type(args).from_saved(checkpoint["args"], **{**overrides, "resume": str(run_dir), "run_dir": str(run_dir)})
    validate(resumed, set(), apply_recipe=False, spec=spec)
    reached = int(checkpoint["global_step"])
    if "total_timesteps" in given and resumed.total_timesteps != saved.total_timesteps:
        if resumed.num_iterations <= checkpoint["iteration"]:
            raise RunFolderError(f"--total-timesteps {resumed.total_timesteps:,} is not beyond the {reached:,} agent "
                                 f"steps {run_dir} has trained; give more to train it further")
        tqdm.write(f"camal-train: training {run_dir} on to {resumed.total_timesteps:,} agent steps (it was set for "
                   f"{saved.total_timesteps:,}); an annealed learning rate follows the longer schedule from here",
                   file=sys.stderr)
    return resumed, run_dir, checkpoint


def is_finished(args, checkpoint: dict | None, run_dir: Path) -> bool:
    return checkpoint is not None and checkpoint["iteration"] >= args.num_iterations and (run_dir / runs.SUMMARY).exists()
