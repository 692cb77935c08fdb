"""Hyperparameter recipes: the paper's Table 8, and per-scenario recipes in the scenario specs.

A recipe names values for the trainer's learning hyperparameters (``HYPERPARAMETERS``) and its
budget (``total_timesteps``: what ``camal-train --env X`` trains for unless told), and may name a
frame skip (``OPTIONAL``; without one a run takes its scenario spec's). The
paper's is ``PAPER`` (CleanRL's Atari recipe, Table 8 of arXiv:2605.08325). A scenario spec may
carry its own under ``[recipes.<name>]``; a user's scenario carries its recipes the same way.
``--recipe default`` takes the first of ``DEFAULT_ORDER`` the scenario has, else ``paper``; a
value a caller gives (a flag, or in Python a field set in the constructor or afterwards, even to its
default) always wins over its recipe value (``camal_rl.arguments``). Pure Python: no torch here.
"""

from __future__ import annotations

from camal_rl import schema

PAPER = {
    "learning_rate": 2.5e-4, "num_envs": 8, "num_steps": 128, "anneal_lr": True, "gamma": 0.99, "gae_lambda": 0.95,
    "num_minibatches": 4, "update_epochs": 4, "clip_coef": 0.1, "clip_vloss": True, "ent_coef": 0.01, "vf_coef": 0.5,
    "clip_reward": True, "reward_scale": 1.0,
    "total_timesteps": 10_000_000,  # the budget: the paper trained 10M agent steps per run
}
# A recipe's budget (as rl-baselines3-zoo's files carry n_timesteps): what a run trains for unless told.
BUDGET = "total_timesteps"
HYPERPARAMETERS = tuple(PAPER)
# Settings a recipe may carry that PAPER leaves to the scenario spec: Table 8's frame skip (4) is the
# bundled specs' own, and a user's spec keeps its frame skip under the paper's recipe.
OPTIONAL = {"frame_skip": schema.FRAME_SKIP}
# What ``default`` means, best first: a recipe searched with both methods (it favours neither),
# then one searched with CAMAL alone; a scenario with neither trains with the paper's.
DEFAULT_ORDER = ("neutral", "tuned")
TYPES = {name: type(value) for name, value in PAPER.items()}


def check(recipe: dict, where: str) -> None:
    """Refuse unknown names and wrongly typed values in a recipe table (``where`` names it)."""
    unknown = sorted(set(recipe) - set(TYPES) - set(OPTIONAL))
    if unknown:
        raise ValueError(f"{where}: unknown hyperparameter(s) {unknown}; a recipe sets {[*TYPES, *OPTIONAL]}")
    for name, value in recipe.items():
        if name in OPTIONAL:
            problem = schema.value_problem(value, OPTIONAL[name])
            if problem:
                raise ValueError(f"{where}: {name} {problem}")
            continue
        wanted = TYPES[name]
        ok = isinstance(value, bool) if wanted is bool else (
            isinstance(value, (int, float)) and not isinstance(value, bool) if wanted is float else
            isinstance(value, int) and not isinstance(value, bool))
        if not ok:
            raise ValueError(f"{where}: {name} = {value!r} should be a {wanted.__name__}")


def resolve(name: str, scenario_recipes: dict) -> tuple[str, dict]:
    """(the recipe's resolved name, its full set of values) for ``--recipe name``."""
    if name == "default":
        name = next((known for known in DEFAULT_ORDER if known in scenario_recipes), "paper")
    if name == "paper":
        return name, dict(PAPER)
    if name not in scenario_recipes:
        raise KeyError(name)
    return name, {**PAPER, **scenario_recipes[name]}


def available(scenario_recipes: dict) -> str:
    """The recipe names a scenario can train with, for an error that names them."""
    return ", ".join(["default", "paper", *sorted(scenario_recipes)])


def first_of(names: list[str], scenario_recipes: dict) -> str:
    """The first of ``names`` that a scenario can train with (``paper`` and ``default`` always can):
    how a study gives each scenario its best recipe, e.g. ``["tuned", "from_basic"]``. ``KeyError``
    (naming what it has) when none is there."""
    for name in names:
        if name in ("paper", "default") or name in scenario_recipes:
            return name
    raise KeyError(f"none of {names}; it has {available(scenario_recipes)}")
