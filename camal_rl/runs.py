"""The run folder: what the trainer writes and what every other command reads.

A run folder ``runs/<env>__<method>__<seed>__<time>/`` holds one run, never more:

- ``checkpoint.pt``: weights, optimiser, random streams, each env's place in its episode, the
  carried rollout frames, progress, the run's arguments and its scenario (``SCENARIO_KEY``), so a
  run can be resumed bit for bit and recorded or evaluated even after its spec file moved.
- ``summary.json``: the final numbers, the scenario, the full arguments (``schema.SUMMARY``).
- TensorBoard events with the scalars in ``Tag``: the only tags analysis reads.

Everything is written beside its target and renamed (``camal_rl.files``), so a crash or a full
disk leaves the last good file in place.
"""

from __future__ import annotations

import json
import os
import typing
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from camal_rl import checkpoints, schema
from camal_rl.errors import CamalError, RunFolderError
from camal_rl.files import write_json

CHECKPOINT = "checkpoint.pt"
SUMMARY = "summary.json"
# camal-classify's folder holds one result per fold (and, while a fold trains, its checkpoint)
FOLD_RESULTS = "fold_*.json"


def fold_result(fold: int) -> str:
    return f"fold_{fold:02d}.json"


def fold_checkpoint(fold: int) -> str:
    return f"fold_{fold:02d}.ckpt.pt"


def fold_log(fold: int) -> str:
    return f"fold_{fold:02d}.log"


def fold_lock(fold: int) -> str:
    return f".fold_{fold:02d}.lock"


WRITER_LOCK = ".writer.lock"  # held by the one process that writes a run folder
SCENARIO_KEY = "scenario"
# What a checkpoint must hold to be resumed or played (older files may lack the last two).
# Trainer settings that say how a run ran, not what it learned: a resume, a sweep or a comparison
# may see them differ between runs that still count as the same experiment.
HOW_A_RUN_RUNS = frozenset({"progress", "cuda", "cuda_graph", "compile", "threads", "env_workers", "resume", "run_dir",
                            "track", "wandb_project_name", "wandb_entity", "wandb_group", "checkpoint_interval",
                            "checkpoint_minutes", "eval_image_frames"})


class Tag:
    """TensorBoard scalar tags (CleanRL's names plus CAMAL's); analysis reads these, nothing else."""

    EPISODIC_RETURN = "charts/episodic_return"
    EPISODIC_LENGTH = "charts/episodic_length"
    LEARNING_RATE = "charts/learning_rate"
    SPS = "charts/SPS"
    ROLLOUT_SECONDS = "perf/rollout_seconds"
    UPDATE_SECONDS = "perf/update_seconds"
    VALUE_LOSS = "losses/value_loss"
    POLICY_LOSS = "losses/policy_loss"
    ENTROPY = "losses/entropy"
    OLD_APPROX_KL = "losses/old_approx_kl"
    APPROX_KL = "losses/approx_kl"
    CLIPFRAC = "losses/clipfrac"
    EXPLAINED_VARIANCE = "losses/explained_variance"
    CAMAL_LOSS = "losses/camal_loss"
    ALPHA = "attention/alpha"
    BETA = "attention/beta"
    IOU = "attention/iou"
    ZERO_MAP_FRACTION = "attention/zero_map_fraction"
    EMPTY_MASK_FRACTION = "attention/empty_mask_fraction"
    EVAL_RETURN = "eval/return_mean"
    EVAL_IOU = "eval/iou_mean"
    EVAL_ZERO_MAP_FRACTION = "eval/zero_map_fraction"
    EVAL_IMAGE = "eval/attention"


# summary.json key -> the TensorBoard tag holding the same number at each evaluation
EVAL_SUMMARY_TAGS = {"eval_return_mean": Tag.EVAL_RETURN, "eval_iou_mean": Tag.EVAL_IOU,
                     "eval_zero_map_fraction": Tag.EVAL_ZERO_MAP_FRACTION}


# ---------------------------------------------------------------------------------------
# Writing
# ---------------------------------------------------------------------------------------
def save_json(obj: Any, path: Path) -> None:
    write_json(path, obj)


# ---------------------------------------------------------------------------------------
# Reading
# ---------------------------------------------------------------------------------------
CHECKPOINT_FORMAT = 2  # 2: data only (weights-only loading), the storage env-major


def checkpoint_schema(for_resume: bool) -> dict:
    resume = {name: replace(key, required=for_resume) for name, key in schema.CHECKPOINT_TO_RESUME.items()}
    return {**schema.CHECKPOINT_TO_PLAY, **resume}


def load_checkpoint(run_dir: str | Path, *, purpose: str = "--resume", for_resume: bool = False) -> dict:
    """The checkpoint of ``run_dir``, data only (nothing in it runs), checked against its schema for what
    ``purpose`` needs; ``RunFolderError`` otherwise."""
    path = Path(run_dir) / CHECKPOINT
    if not path.is_file():
        raise RunFolderError(f"no checkpoint at {path}; {purpose} needs a run folder written by camal-train "
                             f"(it saves {CHECKPOINT} every --checkpoint-interval iterations)")
    checkpoint = checkpoints.load(path)
    if checkpoint.get("format") != CHECKPOINT_FORMAT and "format" in checkpoint:
        raise RunFolderError(f"{path} has checkpoint format {checkpoint['format']!r}; this camal-rl reads format "
                             f"{CHECKPOINT_FORMAT}")
    try:
        schema.check_record(checkpoint, checkpoint_schema(for_resume), f"checkpoint {path}")
        schema.check_record(checkpoint["scenario"], schema.SCENARIO, f"the scenario recorded in {path}")
    except schema.SchemaError as error:
        raise RunFolderError(f"{error}; {purpose} needs a checkpoint written by camal-train") from None
    return checkpoint


# An exported agent's folder (``camal-export``): its weights as safetensors and what plays them as JSON
EXPORTED_WEIGHTS = "model.safetensors"
EXPORTED_CONFIG = "config.json"
EXPORT_FORMAT = 1


HUB_PREFIX = "hf:"  # hf:user/name plays an agent someone published on the Hugging Face Hub


def hub_folder(source: str | Path) -> Path:
    """The local copy of a Hub repository holding an exported agent (downloaded into the Hub's cache)."""
    repo = str(source)[len(HUB_PREFIX):]
    try:
        from huggingface_hub import snapshot_download
    except ImportError:
        raise RunFolderError(f"{source}: playing an agent from the Hugging Face Hub needs huggingface_hub: "
                             f"pip install 'camal-rl[hub]'") from None
    try:
        return Path(snapshot_download(repo_id=repo, allow_patterns=[EXPORTED_CONFIG, EXPORTED_WEIGHTS, "README.md"]))
    except Exception as error:  # offline, no such repository, a bad name: the Hub raises many types
        said = (str(error).strip().splitlines() or [type(error).__name__])[0][:160]
        raise RunFolderError(f"{source}: the Hugging Face Hub did not give it ({type(error).__name__}: {said}); "
                             f"offline, download it where there is a network (hf download {repo} "
                             f"--local-dir DIR) and give DIR") from None


def is_exported_agent(folder: str | Path) -> bool:
    folder = Path(folder)
    return (folder / EXPORTED_WEIGHTS).is_file() and (folder / EXPORTED_CONFIG).is_file()


def load_agent(source: str | Path, *, purpose: str) -> dict:
    """What playing an agent needs (weights, settings, scenario, shapes; the keys of a checkpoint),
    from a run folder (``checkpoint.pt``) or an exported agent's folder (safetensors and JSON): data
    only either way. ``_source`` names the file the weights came from."""
    source = hub_folder(source) if str(source).startswith(HUB_PREFIX) else Path(source)
    if not is_exported_agent(source):
        return {**load_checkpoint(source, purpose=purpose), "_source": source / CHECKPOINT}
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    config_path, weights_path = source / EXPORTED_CONFIG, source / EXPORTED_WEIGHTS
    try:
        config = json.loads(config_path.read_text())
        schema.check_record(config, schema.EXPORTED_AGENT, str(config_path))
        schema.check_record(config["scenario"], schema.SCENARIO, f"the scenario in {config_path}")
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise RunFolderError(f"{config_path} is not valid JSON ({error})") from None
    except schema.SchemaError as error:
        raise RunFolderError(f"{error}; {purpose} needs an agent exported by camal-export") from None
    if config["format"] != EXPORT_FORMAT:
        raise RunFolderError(f"{config_path} has export format {config['format']}; this camal-rl reads format "
                             f"{EXPORT_FORMAT}")
    try:
        weights = load_file(weights_path)
    except (SafetensorError, OSError, ValueError) as error:
        raise RunFolderError(f"{weights_path} is not a safetensors file ({error}); export the agent again") from None
    return {**config, "agent": weights, "_source": weights_path}


def _saved_value(run_dir: str | Path, key: str):
    """``key`` of a run folder's summary, else of its last checkpoint (cheap: the checkpoint's tensors
    are mapped, not read), else None: a damaged folder counts as empty here; the commands that use it
    say what is wrong."""
    run_dir = Path(run_dir)
    try:
        if (run_dir / SUMMARY).is_file():
            return read_summary(run_dir / SUMMARY).get(key)
        if (run_dir / CHECKPOINT).is_file():
            return checkpoints.load(run_dir / CHECKPOINT, mmap=True).get(key)
    except (OSError, CamalError):
        pass
    return None


def trained_steps(run_dir: str | Path) -> int:
    """Agent steps a run folder holds: its summary's, else its last checkpoint's, else 0."""
    steps = _saved_value(run_dir, "global_step")
    return int(steps) if isinstance(steps, (int, float)) else 0


def saved_args(run_dir: str | Path) -> dict | None:
    """The settings a run folder was trained with (its summary's, else its last checkpoint's), or None."""
    args = _saved_value(run_dir, "args")
    return dict(args) if isinstance(args, dict) else None


def restore_agent(agent: torch.nn.Module, checkpoint: dict, source: Path) -> None:
    """Load the weights of a checkpoint (or ``load_agent``'s result) into ``agent``
    (``camal_rl.agent.Agent``), checking they fit."""
    if tuple(checkpoint.get("obs_shape", ())) != agent.obs_shape or checkpoint.get("num_actions") != agent.num_actions:
        raise RunFolderError(
            f"checkpoint {source} is for a network with observations {checkpoint.get('obs_shape')} and "
            f"{checkpoint.get('num_actions')} actions, this run has {agent.obs_shape} and {agent.num_actions}"
        )
    try:
        agent.load_state_dict(checkpoint["agent"])
    except (RuntimeError, KeyError, TypeError) as error:
        raise RunFolderError(f"checkpoint {source} does not fit this network: {str(error).splitlines()[0]}") from None


def read_summary(path: str | Path) -> dict:
    """A run's ``summary.json``, checked against its schema; ``RunFolderError`` naming the file and why
    when it cannot be used."""
    path = Path(path)
    if path.is_dir():
        path = path / SUMMARY
    try:
        record = json.loads(path.read_text())
    except FileNotFoundError:
        raise RunFolderError(f"{path} does not exist (the run has not finished; compare unfinished runs with "
                             f"--at-step)") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise RunFolderError(f"{path} is not valid JSON ({error})") from None
    try:
        record = schema.check_record(record, schema.SUMMARY, str(path))
        if "scenario" in record:
            schema.check_record(record["scenario"], schema.SCENARIO, f"the scenario recorded in {path}")
    except schema.SchemaError as error:
        raise RunFolderError(str(error)) from None
    return record


def read_fold(path: str | Path) -> dict:
    """One ``camal-classify`` fold result, checked against its schema (NaN, as older files wrote a missing
    value, reads as null); ``RunFolderError`` naming the file and why otherwise."""
    path = Path(path)
    try:
        record = json.loads(path.read_text())
        return schema.check_record(record, schema.FOLD, str(path))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise RunFolderError(f"{path} is not valid JSON ({error})") from None
    except schema.SchemaError as error:
        raise RunFolderError(str(error)) from None


def holds_a_run(folder: Path) -> list[str]:
    """The files in ``folder`` that belong to a run (events, summary, checkpoint)."""
    if not folder.is_dir():
        return []
    names = [p.name for p in folder.iterdir() if p.name.startswith("events.out.tfevents.")]
    return names + [name for name in (SUMMARY, CHECKPOINT) if (folder / name).exists()]


def method_name(camal_coef: float, regularizer: str) -> str:
    """What reports call a run's method: vanilla (no CAMAL term), camal or suppress."""
    return "vanilla" if camal_coef == 0 else regularizer


@dataclass(frozen=True)
class PlaySettings:
    """What playing a run reads of its saved arguments, each checked against these types."""

    env: str
    seed: int = 1
    camal_coef: float = 1.0
    regularizer: str = "camal"
    paper_frames: bool = False
    attention: str | None = None
    frame_stack: int = 4
    frame_skip: int | None = None
    obs_size: tuple[int, int] = (60, 80)
    grayscale: bool = True
    resolution: str | None = None
    num_envs: int = 8


class SavedRun:
    """The settings a recorded or evaluated run needs, read from its saved arguments and checked."""

    def __init__(self, saved_args: dict):
        from camal_rl.agent import default_attention
        from camal_rl.camal import ATTENTION_METHODS
        from camal_rl.doom import is_resolution
        from camal_rl.rollout import PAPER_FRAMES

        self.args = dict(saved_args)
        read = {f.name: self.args[f.name] for f in fields(PlaySettings) if f.name in self.args}
        try:
            schema.check_types(read, typing.get_type_hints(PlaySettings), "the run's saved settings")
            settings = PlaySettings(**{name: schema.tuple_if_list(value) for name, value in read.items()})
        except (schema.SchemaError, TypeError) as error:
            raise RunFolderError(f"{str(error).splitlines()[0]}; it was not written by this camal-rl") from None
        self.env, self.seed = settings.env, settings.seed
        self.method = method_name(settings.camal_coef, settings.regularizer)
        self.attention = settings.attention or default_attention(settings.paper_frames)
        self.frame_stack, self.frame_skip = settings.frame_stack, settings.frame_skip
        frames = PAPER_FRAMES if settings.paper_frames else {}
        self.obs_size = tuple(frames.get("obs_size", settings.obs_size))
        self.grayscale = frames.get("grayscale", settings.grayscale)
        self.resolution = frames.get("resolution", settings.resolution)
        self.num_envs = settings.num_envs
        frame_skip_problem = None if self.frame_skip is None else schema.value_problem(self.frame_skip,
                                                                                        schema.FRAME_SKIP)
        problem = (f"attention {self.attention!r} is not registered" if self.attention not in ATTENTION_METHODS else
                   f"resolution {self.resolution!r} is not ViZDoom's" if self.resolution is not None
                   and not is_resolution(self.resolution) else
                   "frame_stack and num_envs must be >= 1" if min(self.frame_stack, self.num_envs) < 1 else
                   f"frame_skip {frame_skip_problem}" if frame_skip_problem else
                   f"obs_size {self.obs_size} is not a frame size" if min(self.obs_size) < 1 else None)
        if problem:
            raise RunFolderError(f"the run's saved settings: {problem}; it was not written by this camal-rl")


def saved_run(checkpoint_or_summary: dict) -> SavedRun:
    return SavedRun(checkpoint_or_summary["args"])


@dataclass(frozen=True)
class TrainedAgent:
    """A trained agent ready to play: its checkpoint (``load_agent``'s keys), its checked settings and
    its own scenario (even if its spec file moved). ``network`` builds the Agent with its weights."""

    checkpoint: dict
    run: SavedRun
    spec: Any  # camal_rl.doom.ScenarioSpec

    def network(self, obs_shape: tuple[int, int, int], num_actions: int,
                device: torch.device | str = "cpu") -> torch.nn.Module:
        """The agent for observations ``obs_shape`` and ``num_actions`` (the env's), its weights restored
        and checked to fit, in eval mode, on ``device``."""
        from camal_rl.agent import Agent

        agent = Agent(tuple(obs_shape), int(num_actions)).to(device)
        restore_agent(agent, self.checkpoint, self.checkpoint["_source"])
        return agent.eval()


def open_trained_agent(source: str | Path, *, purpose: str) -> TrainedAgent:
    """A run folder's or an exported agent's agent, data only (``load_agent``), with its settings and scenario."""
    from camal_rl.doom import spec_of_run

    checkpoint = load_agent(source, purpose=purpose)
    run = saved_run(checkpoint)
    return TrainedAgent(checkpoint, run, spec_of_run(checkpoint, run.env))


# ---------------------------------------------------------------------------------------
# The trainer's side: one run per folder, its checkpoint and its summary
# ---------------------------------------------------------------------------------------
@contextmanager
def one_writer(folder: Path, lock_name: str = WRITER_LOCK) -> Iterator[None]:
    """Hold an OS lock (``flock``) on ``folder/lock_name`` for the block: a second process that wants to
    write there is refused at once with one line naming the holder. The OS frees the lock when its
    holder ends, killed or not, so nothing stale is left to clean up."""
    import fcntl

    path = folder / lock_name
    handle = open(path, "a+")  # noqa: SIM115 (held open for the block)
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        if not path.exists() or os.fstat(handle.fileno()).st_ino != path.stat().st_ino:
            raise BlockingIOError  # the lock file was replaced after we opened it: another writer came and went
    except BlockingIOError:
        handle.close()
        raise _being_written(folder, path) from None
    try:
        handle.seek(0)
        handle.truncate()
        handle.write(f"{os.getpid()}\n")
        handle.flush()
        yield
    finally:
        handle.close()  # closing releases the lock


@contextmanager
def run_folder(run_dir: Path, *, fresh: bool) -> Iterator[Path]:
    """The folder of a run for the run's life: made where missing (a read-only or missing parent fails
    here, before any engine starts) and written by this process alone (``one_writer``). A fresh run
    checks again, holding the lock, that no other run has landed there since its arguments were
    checked; a run that ends having written nothing removes the folder it made, still holding the lock
    (a process refused the lock never touches the folder)."""
    made = not run_dir.exists()
    run_dir.mkdir(parents=True, exist_ok=True)
    with one_writer(run_dir):
        try:
            if fresh:
                check_fresh_run_dir(run_dir)
            yield run_dir
        except BaseException:
            if made and not holds_a_run(run_dir):
                (run_dir / WRITER_LOCK).unlink(missing_ok=True)
                try:
                    run_dir.rmdir()
                except OSError:
                    pass
            raise


def reload_if_moved_on(run_dir: Path, checkpoint: dict) -> dict:
    """The checkpoint a resume continues from, read again under the folder's lock: a writer that ended
    between the first reading and the lock may have moved the run on, and its settings must still hold."""
    again = load_checkpoint(run_dir, for_resume=True)
    if again["iteration"] != checkpoint["iteration"] or again["args"] != checkpoint["args"]:
        raise RunFolderError(f"{run_dir} was written by another process while this one started (it is at "
                             f"iteration {again['iteration']} now); start the resume again")
    return again


def _being_written(folder: Path, path: Path) -> RunFolderError:
    try:
        holder = path.read_text().strip() or "unknown"
    except OSError:
        holder = "unknown"
    return RunFolderError(f"{folder} is being written by another process (pid {holder}); a folder has one "
                          f"writer: wait for it to end, or choose another folder")


def check_no_writer(folder: Path, lock_name: str = WRITER_LOCK) -> None:
    """Refuse a folder whose writer is alive (its lock is held) before reading what it is half-way
    through writing; takes nothing. Call it before taking the lock: flock sees this process's own lock as
    another's."""
    import fcntl

    path = Path(folder) / lock_name
    try:
        handle = open(path)  # noqa: SIM115 (closed below)
    except OSError:  # no lock file, or none we may read: no writer to name
        return
    with handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            raise _being_written(Path(folder), path) from None


def check_fresh_run_dir(run_dir: Path) -> None:
    """A fresh run never writes into a folder that holds another run's files."""
    from camal_rl.errors import ConfigError

    too_long = [part for part in run_dir.parts if len(part.encode()) > 255]
    if too_long:  # before anything looks into the folder: the OS would say only "name too long"
        raise ConfigError(f"the run folder name {too_long[0][:40]}... is too long: {len(too_long[0].encode())} bytes, "
                          f"more than a file system allows (255); choose a shorter --run-dir")
    earlier = holds_a_run(run_dir)
    if earlier:
        raise RunFolderError(f"{run_dir} already holds a run ({', '.join(sorted(earlier)[:3])}); continue it with "
                             f"--resume {run_dir}, or choose another --run-dir (or delete the folder)")


def save_checkpoint(run_dir: Path, *, agent, optimizer, args: dict, spec, envs, storage, **progress) -> None:
    """Everything a bit-for-bit resume needs; ``args`` is the run's arguments as a dict."""
    checkpoints.save({
        "format": CHECKPOINT_FORMAT, "agent": agent.state_dict(), "optimizer": optimizer.state_dict(),
        "env": args["env"], SCENARIO_KEY: spec.record(), "obs_shape": agent.obs_shape, "num_actions": agent.num_actions,
        "action_names": envs.action_names, "args": args, "rng": checkpoints.rng_state(),
        "env_states": envs.state(),  # each env's episode seed and actions: replayed on resume
        "storage": storage.state(), **progress,
    }, Path(run_dir) / CHECKPOINT)


def restore_checkpoint(checkpoint: dict, run_dir: Path, *, agent, optimizer, envs, storage) -> None:
    """Weights, optimiser, random streams and carried frames back, every env replayed to where it
    stood: the run goes on bit for bit."""
    import sys

    path = Path(run_dir) / CHECKPOINT
    restore_agent(agent, checkpoint, path)
    try:
        if tuple(checkpoint["next_done"].shape) != (envs.num_envs,):
            raise ValueError(f"next_done has shape {tuple(checkpoint['next_done'].shape)} for {envs.num_envs} envs")
        optimizer.load_state_dict(checkpoint["optimizer"])
        envs.restore(checkpoint["env_states"])
        storage.load_state(checkpoint["storage"])
        checkpoints.set_rng_state(checkpoint["rng"])
    except (KeyError, TypeError, ValueError, RuntimeError, AttributeError, IndexError) as error:
        # parts only a resume reads (the optimiser, the envs' places, the carried frames, random streams)
        said = (str(error).strip().splitlines() or [type(error).__name__])[0][:120]
        raise RunFolderError(f"checkpoint {path} cannot be resumed: {type(error).__name__}: {said}; it was not "
                             f"written by this camal-rl") from None
    if not np.array_equal(envs.frames, storage.newest_frames().cpu().numpy()):
        print("camal-train: warning: the replayed environments differ from the checkpoint's frames; "
              "the run continues but not bit-identically", file=sys.stderr)


def make_summary(args: dict, *, method: str, spec, global_step: int, last_eval: dict, recent_returns,
                 dead_attention_step, train_time: float, eval_time: float, **machine) -> dict:
    """``summary.json``: the final numbers (``schema.SUMMARY``), the scenario and the arguments."""
    return {
        "env": spec.name,
        SCENARIO_KEY: spec.record(),
        "method": method,
        "seed": args["seed"],
        "recipe": args.get("recipe"),
        "global_step": global_step,
        "eval_return_mean": last_eval.get("return_mean"),
        "eval_return_std": last_eval.get("return_std"),
        "eval_episodes": last_eval.get("episodes"),
        "eval_iou_mean": last_eval.get("iou_mean"),
        "eval_iou_frames": last_eval.get("iou_frames"),
        "eval_iou_skipped_empty_mask": last_eval.get("iou_skipped_empty_mask"),
        "eval_zero_map_fraction": last_eval.get("zero_map_fraction"),
        "eval_normalised_return": (spec.normalize_return(last_eval["return_mean"])
                                   if last_eval.get("return_mean") is not None else None),
        "train_return_recent": float(np.mean(recent_returns)) if len(recent_returns) else None,
        "attention_dead": dead_attention_step is not None,
        "attention_dead_since_step": dead_attention_step,
        "sps": int(global_step / max(train_time, 1e-9)),
        "train_time_s": train_time,
        "eval_time_s": eval_time,
        "wall_time_s": train_time + eval_time,
        **machine,
        "args": args,
    }
