"""What each file the package reads back may hold, checked where it is read.

A schema names every key a record may have, the type of its value, whether it may be missing or
null, and the range of a number (finite always: JSON written by this package holds null where a
value does not exist, never NaN). A record that breaks its schema is refused with one line naming
the file, the key and what would be right; a key the schema does not know is refused too (a newer
camal-rl, or a hand edit, wrote it). Names that become file or folder names must stay inside their
folder (``safe_name``). Pure Python: env workers and the scenario loader import it.
"""

from __future__ import annotations

import math
import re
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from camal_rl.errors import CamalError, ConfigError


class SchemaError(CamalError, ValueError):
    """A file whose content is not what its schema allows; the message names the file and the key."""


NUMBER = "number"  # int or float, never bool
INTEGER = "integer"
TEXT = "text"
FLAG = "flag"
LIST = "list"
TABLE = "table"
TENSOR = "tensor"


@dataclass(frozen=True)
class Key:
    kind: str
    required: bool = True
    nullable: bool = False
    low: float = -math.inf
    high: float = math.inf
    choices: tuple = ()
    check: Callable[[Any], str | None] | None = None  # an extra rule: what is wrong, or None


def _kind_of(value: Any) -> str | None:
    if isinstance(value, bool):
        return FLAG
    if isinstance(value, int):
        return INTEGER
    if isinstance(value, float):
        return NUMBER
    if isinstance(value, str):
        return TEXT
    if isinstance(value, (list, tuple)):
        return LIST
    if isinstance(value, dict):
        return TABLE
    if hasattr(value, "dtype") and hasattr(value, "shape"):
        return TENSOR
    return None


def value_problem(value: Any, key: Key) -> str | None:
    """What is wrong with ``value`` as the value of ``key``, or None."""
    if value is None or (key.nullable and isinstance(value, float) and math.isnan(value)):  # NaN: older files' null
        return None if key.nullable else "is null"
    kind = _kind_of(value)
    fits = kind == key.kind or (key.kind == NUMBER and kind == INTEGER)
    if not fits:
        wanted = {NUMBER: "a number", INTEGER: "a whole number", TEXT: "text", FLAG: "true or false", LIST: "a list",
                  TABLE: "a table", TENSOR: "a tensor"}[key.kind]
        return f"is {type(value).__name__} {str(value)[:40]!r}, not {wanted}"
    if key.kind in (NUMBER, INTEGER):
        if not math.isfinite(value):
            return f"is {value}, not a finite number"
        if not key.low <= value <= key.high:
            return f"is {value}, outside [{_bound(key.low)}, {_bound(key.high)}]"
    if key.choices and value not in key.choices:
        return f"is {value!r}, not one of {', '.join(map(str, key.choices))}"
    return key.check(value) if key.check is not None else None


def type_problem(value: Any, annotation: Any) -> str | None:
    """What is wrong with ``value`` as a value of the type ``annotation`` (a dataclass field's: bool,
    int, float, str, ``X | None``, ``Literal[...]``, ``tuple[int, int]``), or None. Numbers must be finite."""
    origin, members = typing.get_origin(annotation), typing.get_args(annotation)
    if annotation is type(None):
        return None if value is None else "is not null"
    if origin in (typing.Union, types.UnionType):
        problems = [type_problem(value, member) for member in members]
        return None if any(problem is None for problem in problems) else next(p for p in problems if p)
    if origin is typing.Literal:
        return None if value in members else f"is {value!r}, not one of {', '.join(map(repr, members))}"
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            return f"is {type(value).__name__} {str(value)[:40]!r}, not a list"
        wanted = members if not (len(members) == 2 and members[1] is Ellipsis) else (members[0],) * len(value)
        if len(value) != len(wanted):
            return f"holds {len(value)} values, not {len(wanted)}"
        problems = (type_problem(item, kind) for item, kind in zip(value, wanted, strict=True))
        return next((problem for problem in problems if problem), None)
    kind = {bool: FLAG, int: INTEGER, float: NUMBER, str: TEXT}.get(annotation)
    if kind is None:
        return None  # a type this check does not know: the user of the value checks it
    return value_problem(value, Key(kind))


def tuple_if_list(value: Any) -> Any:
    """A JSON list read back where a tuple was written (a frame size, a shape)."""
    return tuple(value) if isinstance(value, list) else value


def check_types(values: dict, annotations: dict[str, Any], where: str) -> None:
    """Every value of ``values`` of its field's type (``annotations``: ``typing.get_type_hints`` of a dataclass)."""
    for name, value in values.items():
        problem = type_problem(value, annotations[name]) if name in annotations else None
        if problem:
            raise SchemaError(f"{where}: {name!r} {problem}")


def _bound(value: float) -> str:
    return str(int(value)) if math.isfinite(value) and value == int(value) else f"{value:g}"


def check_record(record: Any, schema: dict[str, Key], where: str) -> dict:
    """``record`` if it fits ``schema`` (a copy, a NaN where null is allowed read as null); ``SchemaError``
    naming ``where`` and the first key that does not."""
    if not isinstance(record, dict):
        raise SchemaError(f"{where}: holds {type(record).__name__}, not a table of named values")
    unknown = sorted(str(name) for name in set(record) - set(schema))
    if unknown:  # repr: a key holding a line break still makes one line
        raise SchemaError(f"{where}: has key(s) this camal-rl does not know ({', '.join(map(repr, unknown[:5]))}); "
                          f"a newer version or a hand edit wrote it")
    for name, key in schema.items():
        if name not in record:
            if key.required:
                raise SchemaError(f"{where}: lacks {name!r}; it was not written by this camal-rl")
            continue
        problem = value_problem(record[name], key)
        if problem:
            raise SchemaError(f"{where}: {name!r} {problem}")
    return {name: None if isinstance(value, float) and math.isnan(value) else value for name, value in record.items()}


SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.+-]{0,99}")


def safe_name(name: Any) -> str | None:
    """What is wrong with ``name`` as a file or folder name inside another folder, or None."""
    if not isinstance(name, str) or not SAFE_NAME.fullmatch(name) or ".." in name:
        return (f"{str(name)[:40]!r} cannot name a file: use letters, digits and _ . + - (starting with a letter or "
                f"digit, no '..', at most 100 characters)")
    return None


def a_path(value: Any) -> str | None:
    """What is wrong with ``value`` as a path a file names, or None: a control character (a NUL, which
    no file system takes and Python's path functions raise ``ValueError`` on; a line break, which would
    split the one line that names the path)."""
    bad = next((c for c in value if ord(c) < 32 or ord(c) == 127), None) if isinstance(value, str) else None
    return None if bad is None else f"holds the control character {bad!r}; give a plain path"


def list_of(kind: str, *, low: float = -math.inf, high: float = math.inf) -> Callable[[Any], str | None]:
    """A rule for a list whose items are all of ``kind`` (numbers within [low, high])."""
    item = Key(kind, low=low, high=high)

    def check(values) -> str | None:
        for value in values:
            problem = value_problem(value, item)
            if problem:
                return f"holds an item that {problem}"
        return None

    return check


SEED_LIMIT = 2**32  # numpy's seeds: 0 to 2**32 - 1


def check_seed(seed: Any, name: str = "seed") -> None:
    """Every command's seeds, in one place: whole numbers numpy, torch and the engines all take."""
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < SEED_LIMIT:
        raise ConfigError(f"--{name.replace('_', '-')} must be a whole number from 0 to {SEED_LIMIT - 1}, "
                          f"got {seed!r}")


# ---------------------------------------------------------------------------------------
# The records the package writes and reads back
# ---------------------------------------------------------------------------------------
SEED = Key(INTEGER, low=0, high=SEED_LIMIT - 1)
FRACTION = Key(NUMBER, nullable=True, low=0.0, high=1.0)
COUNT = Key(INTEGER, nullable=True, low=0)
SECONDS = Key(NUMBER, low=0.0)
METHODS = ("camal", "vanilla", "suppress")
# engine tics per agent step, wherever one is set (a spec, a recipe, --frame-skip): 1000 tics are 28 seconds
FRAME_SKIP = Key(INTEGER, low=1, high=1000)

# A scenario as a run records it (``ScenarioSpec.record``): enough to rebuild the env without the spec file.
SCENARIO = {
    "name": Key(TEXT, check=safe_name), "config": Key(TEXT, check=a_path),
    "mask_categories": Key(LIST, check=list_of(TEXT)),
    "mask_objects": Key(LIST, check=list_of(TEXT)), "actions": Key(LIST, check=list_of(LIST)),
    "frame_skip": FRAME_SKIP, "resolution": Key(TEXT), "episode_timeout": COUNT,
    "random_score": Key(NUMBER), "reference_score": Key(NUMBER), "description": Key(TEXT, required=False),
    "source": Key(TEXT, required=False), "recipes": Key(TABLE, required=False),
}

# a scenario spec file (envs/*.toml, or a user's): its keys and their types; ``doom.load_spec`` checks the rest
SPEC_FILE = {
    "name": Key(TEXT, required=False, check=safe_name), "description": Key(TEXT, required=False),
    "config": Key(TEXT, check=a_path), "mask_categories": Key(LIST, required=False, check=list_of(TEXT)),
    "mask_objects": Key(LIST, required=False, check=list_of(TEXT)),
    "custom_objects": Key(LIST, required=False, check=list_of(TEXT)),
    "actions": Key(LIST, required=False, check=list_of(LIST)),
    "frame_skip": replace(FRAME_SKIP, required=False),
    "resolution": Key(TEXT, required=False), "episode_timeout": Key(INTEGER, required=False, low=1),
    "random_score": Key(NUMBER, required=False), "reference_score": Key(NUMBER, required=False),
    "recipes": Key(TABLE, required=False),
}

# summary.json (``runs.make_summary``)
SUMMARY = {
    "env": Key(TEXT, check=safe_name), "scenario": Key(TABLE, required=False), "method": Key(TEXT, choices=METHODS),
    "seed": SEED, "recipe": Key(TEXT, required=False, nullable=True), "global_step": Key(INTEGER, low=0),
    "eval_return_mean": Key(NUMBER, required=False, nullable=True),
    "eval_return_std": Key(NUMBER, required=False, nullable=True, low=0.0),
    "eval_episodes": Key(INTEGER, required=False, nullable=True, low=0),
    "eval_iou_mean": Key(NUMBER, required=False, nullable=True, low=0.0, high=1.0),
    "eval_iou_frames": Key(INTEGER, required=False, nullable=True, low=0),
    "eval_iou_skipped_empty_mask": Key(INTEGER, required=False, nullable=True, low=0),
    "eval_zero_map_fraction": Key(NUMBER, required=False, nullable=True, low=0.0, high=1.0),
    "eval_normalised_return": Key(NUMBER, required=False, nullable=True),
    "train_return_recent": Key(NUMBER, required=False, nullable=True),
    "attention_dead": Key(FLAG, required=False), "attention_dead_since_step": Key(INTEGER, required=False,
                                                                                 nullable=True, low=0),
    "sps": Key(INTEGER, required=False, low=0), "train_time_s": Key(NUMBER, required=False, low=0.0),
    "eval_time_s": Key(NUMBER, required=False, low=0.0), "wall_time_s": Key(NUMBER, required=False, low=0.0),
    "device": Key(TEXT, required=False), "env_workers": Key(INTEGER, required=False, low=0),
    "env_groups": Key(INTEGER, required=False, low=1), "stopped": Key(FLAG, required=False),
    "args": Key(TABLE, required=False),
}

# fold_XX.json (``camal_rl.vision.train``): fractions are fractions, AUCs too
FOLD = {
    "task": Key(TEXT, choices=("classification",)), "model": Key(TEXT, check=safe_name),
    "dataset": Key(TEXT, check=safe_name), "method": Key(TEXT, choices=("vanilla", "camal", "suppress", "prior")),
    "fold": Key(INTEGER, low=0), "folds": Key(INTEGER, required=False, low=2),
    "epochs": Key(INTEGER, required=False, low=1), "train_seconds": Key(NUMBER, required=False, low=0.0),
    "test_accuracy": Key(NUMBER, low=0.0, high=1.0), "test_iou": Key(NUMBER, required=False, nullable=True, low=0.0,
                                                                     high=1.0),
    "iou_samples": Key(INTEGER, required=False, nullable=True, low=0),
    "iou_skipped_empty_mask": Key(INTEGER, required=False, nullable=True, low=0),
    "deletion_auc": Key(NUMBER, required=False, nullable=True, low=0.0, high=1.0),
    "insertion_auc": Key(NUMBER, required=False, nullable=True, low=0.0, high=1.0),
    "faithfulness_samples": Key(INTEGER, required=False, nullable=True, low=0),
    "test_accuracy_matched_decoy": Key(NUMBER, required=False, nullable=True, low=0.0, high=1.0),
    "args": Key(TABLE, required=False),  # the settings that made it; a fold without them is never reused
}

# checkpoint.pt (``runs.save_checkpoint``): what playing it needs, and what resuming it needs besides
CHECKPOINT_TO_PLAY = {
    "agent": Key(TABLE), "args": Key(TABLE), "env": Key(TEXT), "scenario": Key(TABLE),
    "obs_shape": Key(LIST, check=list_of(INTEGER, low=1)), "num_actions": Key(INTEGER, low=1),
    "action_names": Key(LIST, check=list_of(TEXT)),
}
CHECKPOINT_TO_RESUME = {
    "optimizer": Key(TABLE), "rng": Key(TABLE), "env_states": Key(LIST, check=list_of(TABLE)), "storage": Key(TABLE),
    "iteration": Key(INTEGER, low=0), "global_step": Key(INTEGER, low=0), "next_done": Key(TENSOR),
    "train_time_s": SECONDS, "eval_time_s": SECONDS, "recent_returns": Key(LIST, check=list_of(NUMBER)),
    "last_eval": Key(TABLE), "dead_attention_step": COUNT, "grid": Key(LIST, nullable=True, check=list_of(TENSOR)),
    "format": Key(INTEGER, low=1),
}

# config.json of an exported agent (``camal_rl.export``): what rebuilds and plays it, beside model.safetensors
EXPORTED_AGENT = {
    "format": Key(INTEGER, low=1), "library": Key(TEXT, choices=("camal-rl",)), "env": Key(TEXT, check=safe_name),
    "scenario": Key(TABLE), "obs_shape": Key(LIST, check=list_of(INTEGER, low=1)), "num_actions": Key(INTEGER, low=1),
    "action_names": Key(LIST, check=list_of(TEXT)), "global_step": Key(INTEGER, low=0), "method": Key(TEXT,
                                                                                                      choices=METHODS),
    "seed": SEED, "recipe": Key(TEXT, nullable=True), "args": Key(TABLE), "evaluation": Key(TABLE, required=False),
}
