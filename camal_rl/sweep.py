"""Grids of training runs, on this machine or on a Ray cluster.

    camal-sweep --envs basic take_cover --methods camal vanilla --seeds 1 2 3 --out runs/drl -- --total-timesteps 500000
    camal-sweep --task classify --models resnet18 --datasets oxford_pets --methods vanilla camal --folds 10 \\
                --out runs/cls -- --data-root /data --epochs 500
    camal-sweep ... --launcher ray --ray-address auto --storage /shared/runs --cpus-per-run 4 --gpus-per-run 0.25

Every run's folder lives in the storage (``--out``, or ``--storage`` for a cluster): a path every
node sees (a shared file system), or an fsspec URI (``s3://bucket/runs``, ``gs://...``,
``file:///...``) into which each run's folder is mirrored while it trains. A finished run (its
``summary.json``, or a fold's ``fold_XX.json``) is skipped, a checkpointed one resumed, the rest
started, so a sweep killed halfway and started again finishes only what was missing. Ctrl-C or
SIGTERM stops a local sweep: no queued run starts, and each running trainer finishes its iteration,
saves it and ends (trainers run in sessions of their own, so a terminal's Ctrl-C reaches the sweep
only, which stops each trainer once).

On Ray each run is a task with ``--cpus-per-run`` CPUs and ``--gpus-per-run`` GPUs (fractions
let several small runs share a card; with GPUs the runs get ``--cuda``). Ray places the tasks and
retries a task whose worker or node dies (``--max-retries``); the retry finds the run's last
checkpoint in the storage and resumes from it, so nothing restarts from zero or is counted twice.
The training process is tied to its Ray worker (it gets SIGTERM when the worker dies and closes
its games), so a dead node leaves no second writer behind. A GPU request that no node can meet
is refused up front instead of waiting forever (``--wait-for-resources`` waits, for autoscalers).

Runs at a time (``--workers auto``, the default) follow the box: without a GPU, one run per core
(each with cores / runs torch threads); with a GPU, as many as its free memory holds (an estimate
per run, ``--gpu-memory-per-run`` to override) and at most one per core, each with the cores left
over as env worker processes (none: the engines run in the learner's process). ``--workers N`` and
``-- --env-workers N`` override either. At the end the sweep prints the box's agent steps per second
over all its runs.

Classification sweeps run ``camal-classify --only-folds k`` per (model, dataset, method, fold); the
fold files gather in ``<storage>/<model>__<dataset>__<method>/``, which ``camal-compare`` turns into
the Table 1/2/5 shapes. When all runs are done the report is written to ``<storage>/report``
(local storage only).
"""

from __future__ import annotations

import contextlib
import io
import itertools
import math
import os
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Literal

import tyro
from tqdm import tqdm

from camal_rl import analysis, arguments, doom, runs, schema
from camal_rl.errors import CamalError, Interrupted, run_cli
from camal_rl.files import die_with_parent

METHOD_FLAGS = {
    "camal": ["--regularizer", "camal"],
    "suppress": ["--regularizer", "suppress"],
    "vanilla": ["--camal-coef", "0"],
}
CLASSIFY_METHODS = ("vanilla", "camal", "suppress", "prior")


class SweepError(CamalError, ValueError):
    """A grid or cluster request that cannot run; the message says what would."""


# ---------------------------------------------------------------------------------------
# Storage: a shared path, or an fsspec URI mirrored to a local scratch folder
# ---------------------------------------------------------------------------------------
class Storage:
    def __init__(self, location: str | os.PathLike):
        self.location = str(location)
        self.seen: dict = {}  # what the mirrored files looked like at the last upload (fsspec storage)
        self.is_local = "://" not in self.location
        if self.is_local:
            self.root = Path(self.location)
        else:
            protocol = self.location.split("://", 1)[0]
            try:
                import fsspec

                self.fs, self.remote_root = fsspec.core.url_to_fs(self.location)
            except (ImportError, ValueError) as error:
                raise SweepError(f"storage {self.location} needs fsspec's {protocol!r} driver ({error}); install it "
                                 f"(for s3://: pip install s3fs; gs://: gcsfs) or use a shared path") from None

    def fetch(self, job: Job, scratch: Path) -> Path:
        """A local copy of what tells a job's settings (its summary, else its checkpoint; a fold's result)."""
        target = scratch / job.folder
        target.mkdir(parents=True, exist_ok=True)
        names = [runs.fold_result(job.fold)] if job.fold is not None else [runs.SUMMARY, runs.CHECKPOINT]
        for name in names:
            if self.exists(f"{job.folder}/{name}"):
                self.fs.get_file(self.remote(f"{job.folder}/{name}"), str(target / name))
                break
        return target

    def remote(self, relative: str) -> str:
        return f"{self.remote_root.rstrip('/')}/{relative}"

    def exists(self, relative: str) -> bool:
        return (self.root / relative).exists() if self.is_local else self.fs.exists(self.remote(relative))

    def download(self, folder: str, local_root: Path) -> dict:
        """Copy ``folder`` to ``local_root/folder``; returns what each file looked like (for uploads)."""
        target = local_root / folder
        target.mkdir(parents=True, exist_ok=True)
        remote = self.remote(folder)
        if self.fs.exists(remote):
            for path in self.fs.find(remote):
                local = target / Path(path).relative_to(remote)
                local.parent.mkdir(parents=True, exist_ok=True)
                self.fs.get_file(path, str(local))
        return _snapshot(target)

    def upload(self, folder: str, local_root: Path, seen: dict) -> dict:
        """Mirror the files of ``local_root/folder`` that changed since ``seen`` (other tasks' files stay theirs)."""
        now = _snapshot(local_root / folder)
        for relative, stamp in now.items():
            if seen.get(relative) != stamp and ".partial" not in relative:
                remote = self.remote(f"{folder}/{relative}")
                self.fs.makedirs(str(Path(remote).parent), exist_ok=True)
                self.fs.put_file(str(local_root / folder / relative), remote)
        return now


def _snapshot(folder: Path) -> dict:
    if not folder.exists():
        return {}
    return {str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns)
            for p in folder.rglob("*") if p.is_file()}


# ---------------------------------------------------------------------------------------
# Jobs
# ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Job:
    """One training process: a camal-train run, or one fold of camal-classify."""

    name: str  # what reports call it
    folder: str  # its folder in the storage
    program: str  # camal_rl.ppo or camal_rl.vision.train
    args: tuple[str, ...]
    fold: int | None = None
    settings: object = field(default=None, compare=False, hash=False, repr=False)  # a training job's Args

    @property
    def result_file(self) -> str:
        return f"{self.folder}/{runs.SUMMARY if self.fold is None else runs.fold_result(self.fold)}"

    def state(self, storage: Storage) -> str:
        if storage.exists(self.result_file):
            return "finished"
        if self.fold is None and storage.exists(f"{self.folder}/{runs.CHECKPOINT}"):
            return "resumable"
        if self.fold is not None and storage.exists(f"{self.folder}/{runs.fold_checkpoint(self.fold)}"):
            return "resumable"  # camal-classify continues the fold from its last finished epoch
        return "new"

    def command(self, root: Path, state: str, threads: int, device_flags: list[str]) -> list[str]:
        base = [sys.executable, "-m", self.program]
        if self.fold is None:
            if state == "resumable":
                return base + ["--resume", str(root / self.folder), "--no-progress", *device_flags]
            return base + [*self.args, "--run-dir", str(root / self.folder), "--threads", str(threads), "--no-progress",
                           *device_flags]
        return base + [*self.args, "--only-folds", str(self.fold), "--out", str(root), "--no-progress", *device_flags]

    @property
    def log(self) -> str:
        return f"{self.name}.log" if self.fold is None else f"{self.folder}/{runs.fold_log(self.fold)}"


def plan(envs: list[str], methods: list[str], seeds: list[int], train_args=()) -> list[Job]:
    # a spec file is passed on by its absolute path: runs may start in another folder (or node)
    envs = [str(Path(env).resolve()) if env.endswith(".toml") or Path(env).is_file() else env for env in envs]
    for env in envs:
        doom.load_spec(env)  # fail now, with the list of scenarios, rather than in every worker
    _check_known("method(s)", methods, sorted(METHOD_FLAGS))
    _check_unique("seeds", seeds)
    _check_unique("envs", [doom.load_spec(env).name for env in envs])
    _check_unique("methods", methods)
    jobs = []
    for env, method, seed in itertools.product(envs, methods, seeds):
        name = f"{doom.load_spec(env).name}__{method}__{seed}"
        args = ("--env", env, "--seed", str(seed), *METHOD_FLAGS[method], *train_args)
        settings = train_settings(args)
        _check_axes(settings, name, env, method, seed)
        jobs.append(Job(name, name, "camal_rl.ppo", args, settings=settings))
    return jobs


def train_settings(flags: tuple[str, ...]):
    """The ``camal_rl.ppo.Args`` a job's flags give, read as ``camal-train`` reads them."""
    from camal_rl import ppo

    tyro_says = io.StringIO()
    try:
        with contextlib.redirect_stderr(tyro_says):
            parsed = arguments.parse(ppo.Args, list(flags))
    except SystemExit:
        raise SweepError(f"the flags after -- are not camal-train's ({_tyro_reason(tyro_says)}); "
                         f"check them with camal-train --help") from None
    return arguments.resolve(parsed)


def _check_axes(settings, name: str, env: str, method: str, seed: int) -> None:
    """Flags after -- may not move a run off its cell of the grid."""
    cell = (("--env", doom.load_spec(settings.env).name == doom.load_spec(env).name), ("--seed", settings.seed == seed),
            ("--camal-coef / --regularizer", settings.method == method))
    moved = [axis for axis, same in cell if not same]
    if moved:
        raise SweepError(f"the flags after -- change {', '.join(moved)} of {name}; the grid sets those: "
                         f"give --envs / --seeds / --methods instead")


def _check_unique(what: str, values: list) -> None:
    repeated = sorted({str(value) for value in values if values.count(value) > 1})
    if repeated:
        raise SweepError(f"--{what} names {', '.join(repeated)} twice; a grid cell is one run folder, "
                         f"so each must be given once")


def plan_classify(models: list[str], datasets: list[str], methods: list[str], folds: int,
                  classify_args=()) -> list[Job]:
    _check_known("classification method(s)", methods, list(CLASSIFY_METHODS))
    for what, names in (("models", models), ("datasets", datasets), ("methods", methods)):
        _check_unique(what, names)
        for name in names:
            unsafe = schema.safe_name(name)
            if unsafe:
                raise SweepError(f"--{what}: {unsafe}")
    jobs = []
    for model, dataset, method in itertools.product(models, datasets, methods):
        folder = f"{model}__{dataset}__{method}"
        args = ("--model", model, "--dataset", dataset, "--method", method, "--folds", str(folds), *classify_args)
        settings = classify_settings(args)
        moved = [name for name, value in (("--model", model), ("--dataset", dataset), ("--method", method),
                                          ("--folds", folds)) if getattr(settings, name[2:]) != value]
        if moved or settings.only_folds is not None:
            raise SweepError(f"the flags after -- change {', '.join(moved) or '--only-folds'} of {folder}; the grid "
                             f"sets those: give --models / --datasets / --methods / --folds instead")
        jobs += [Job(f"{folder}__fold{fold:02d}", folder, "camal_rl.vision.train", args, fold, settings=settings)
                 for fold in range(folds)]
    return jobs


def classify_settings(flags: tuple[str, ...]):
    """The ``ClassifyArgs`` a classification job's flags give, checked as ``camal-classify`` checks them."""
    import tyro

    from camal_rl.vision import train as classify

    tyro_says = io.StringIO()
    try:
        with contextlib.redirect_stderr(tyro_says):
            settings = tyro.cli(classify.ClassifyArgs, args=list(flags))
    except SystemExit:
        raise SweepError(f"the flags after -- are not camal-classify's ({_tyro_reason(tyro_says)}); check them "
                         f"with camal-classify --help") from None
    classify.check_args(settings)
    return settings


def _tyro_reason(said: io.StringIO) -> str:
    lines = [line.strip(" │╭╮╰╯─") for line in said.getvalue().splitlines()]
    lines = [line for line in lines if line]
    return lines[1] if len(lines) > 1 else "see --help"


def _check_known(what: str, given: list[str], known: list[str]) -> None:
    unknown = sorted(set(given) - set(known))
    if unknown:
        raise SweepError(f"unknown {what} {unknown}; choose from {known}")


def run_job(job: Job, location: str, threads: int = 1, device_flags: tuple[str, ...] = (), sync_seconds: float = 30.0,
            stop: threading.Event | None = None) -> int:
    """Run one job against the storage (on this machine or a Ray worker); returns its exit code.
    Setting ``stop`` ends the job's process with SIGTERM (it keeps its last checkpoint)."""
    storage = Storage(location)
    state = job.state(storage)
    if state == "finished":
        return 0
    scratch = None
    if storage.is_local:
        root = storage.root
    else:
        scratch = tempfile.TemporaryDirectory(prefix="camal-sweep-")
        root = Path(scratch.name)
        storage.seen = storage.download(job.folder, root)
    (root / job.log).parent.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    for _ in range(LOCK_RETRIES):
        returncode = _run_trainer(job, root, state, threads, device_flags, env, stop, storage, scratch, sync_seconds)
        if not (returncode == 2 and _held_by_another(root / job.log)) or (stop is not None and stop.is_set()):
            break
        # a trainer whose worker died (Ray retries the task) may still be saving its last iteration
        time.sleep(LOCK_WAIT_SECONDS)
    if scratch is not None:
        storage.upload(job.folder, root, storage.seen)
        if job.fold is None:
            storage.fs.put_file(str(root / job.log), storage.remote(job.log))
        scratch.cleanup()
    return returncode


LOCK_RETRIES, LOCK_WAIT_SECONDS = 10, 30.0


def _held_by_another(log: Path) -> bool:
    lines = log.read_text(errors="replace").strip().splitlines()
    return bool(lines) and "is being written by another process" in lines[-1]


def _run_trainer(job: Job, root: Path, state: str, threads: int, device_flags, env: dict, stop, storage: Storage,
                 scratch, sync_seconds: float) -> int:
    """One try at a job's process: until it ends or ``stop`` is set (then SIGTERM, and wait for it)."""
    with open(root / job.log, "a") as log:
        # a session of its own: a terminal's Ctrl-C reaches the sweep only, which then stops the trainer once
        # (SIGTERM: it finishes its iteration and saves it; a second signal would stop it at once)
        process = subprocess.Popen(job.command(root, state, threads, list(device_flags)), stdout=log,
                                   stderr=subprocess.STDOUT, env=env, preexec_fn=die_with_parent,
                                   start_new_session=True)
        try:
            last_sync = time.monotonic()
            while process.poll() is None and not (stop is not None and stop.is_set()):
                try:
                    process.wait(timeout=min(1.0, sync_seconds))
                except subprocess.TimeoutExpired:
                    if scratch is not None and time.monotonic() - last_sync >= sync_seconds:  # mirror checkpoints
                        storage.seen = storage.upload(job.folder, root, storage.seen)
                        last_sync = time.monotonic()
        finally:
            if process.poll() is None:
                process.terminate()
                process.wait()
    return process.returncode


# ---------------------------------------------------------------------------------------
# How many runs one box takes
# ---------------------------------------------------------------------------------------
GiB = 2**30
# GPU memory one camal-train run holds, rounded up from its rollout storage (frames and masks on the
# GPU), the network and optimiser, a minibatch's activations with CAMAL's second backward, and the
# CUDA context: paper frames (240x320 RGB, Table 8 sizes) and the 60x80 default.
GPU_MEMORY_PER_RUN = {"paper_frames": 6 * GiB, "default": 2 * GiB}


@dataclass(frozen=True)
class BoxPlan:
    runs: int  # runs at a time
    threads: int  # torch threads per run
    env_workers: int | None  # env worker processes per run (None: the trainer's own default)
    why: str


def plan_box(cores: int, gpu_free_bytes: int | None, jobs: int, *, memory_per_run: int, runs: int | None = None,
             env_workers: int | None = None) -> BoxPlan:
    """Runs at a time, threads and env workers per run for a box with ``cores`` cores and (where
    ``gpu_free_bytes`` is given) one GPU shared by every run; ``runs`` / ``env_workers`` override."""
    cores = max(1, cores)
    if gpu_free_bytes is None:
        count = runs or min(cores, max(1, jobs))
        return BoxPlan(count, max(1, cores // count), env_workers,
                       f"{count} at a time: {'given' if runs else f'one per core of {cores}'}, no GPU")
    by_memory = max(1, int(gpu_free_bytes * 0.9 // memory_per_run))
    count = runs or max(1, min(by_memory, cores, jobs))
    spare = max(0, cores // count - 1)  # each run's learner keeps one core; the rest step its engines
    why = "given" if runs else (f"{by_memory} fit in {gpu_free_bytes / GiB:.0f} GiB of free GPU memory at "
                                f"~{memory_per_run / GiB:.0f} GiB each, {cores} cores, {jobs} runs to do")
    return BoxPlan(count, 1, spare if env_workers is None else env_workers, f"{count} at a time: {why}")


def box_resources() -> tuple[int, int | None]:
    """This machine's cores and its GPU's free memory in bytes (None without CUDA)."""
    import torch

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    if not torch.cuda.is_available():
        return cores, None
    return cores, int(torch.cuda.mem_get_info()[0])


# ---------------------------------------------------------------------------------------
# Launchers
# ---------------------------------------------------------------------------------------
def run_local(jobs: list[Job], location: str, workers: int, threads: int,
              extra_flags: tuple[str, ...] = ()) -> dict[str, int]:
    """Run ``workers`` jobs at a time. Ctrl-C or SIGTERM stops the sweep: no further job starts, the
    running ones get SIGTERM and keep their last checkpoint, and the same command continues them."""
    codes = {}
    stop = threading.Event()
    pool = ThreadPoolExecutor(max_workers=workers)
    futures = {pool.submit(run_job, job, location, threads, extra_flags, stop=stop): job for job in jobs}
    bar = tqdm(total=len(jobs), unit="run", desc="sweep")
    try:
        for future in as_completed(futures):
            codes[futures[future].name] = future.result()
            bar.update(1)
    except KeyboardInterrupt as interruption:
        stop.set()
        pool.shutdown(wait=True, cancel_futures=True)
        raise Interrupted(f"{len(codes)} of {len(jobs)} run(s) had ended; the stopped ones keep their last checkpoint "
                          f"and the same command continues them", getattr(interruption, "signum", 2)) from None
    finally:
        bar.close()
        pool.shutdown(wait=True)
    return codes


def check_cluster(resources: dict, nodes: list[dict], cpus_per_run: float, gpus_per_run: float) -> None:
    """Refuse requests no node can meet (Ray would wait for such a node forever)."""
    alive = [n.get("Resources", {}) for n in nodes if n.get("Alive", True)]
    if gpus_per_run > 0 and not any(r.get("GPU", 0) >= gpus_per_run for r in alive):
        raise SweepError(f"--gpus-per-run {gpus_per_run} but no node of the Ray cluster has that many GPUs "
                         f"(cluster: {resources.get('GPU', 0):g} GPU, {resources.get('CPU', 0):g} CPU); "
                         f"add a GPU node, "
                         f"drop --gpus-per-run, or pass --wait-for-resources if an autoscaler will add one")
    if not any(r.get("CPU", 0) >= cpus_per_run for r in alive):
        largest = max((r.get("CPU", 0) for r in alive), default=0)
        raise SweepError(f"--cpus-per-run {cpus_per_run:g} but the largest node of the Ray cluster "
                         f"has {largest:g} CPUs")


def run_ray(jobs: list[Job], location: str, *, address: str | None, num_cpus: int | None, cpus_per_run: float,
            gpus_per_run: float, max_retries: int, wait_for_resources: bool) -> dict[str, int]:
    try:
        import ray
    except ImportError:
        raise SweepError("--launcher ray needs the ray extra: pip install -e '.[ray]'") from None
    if address:
        ray.init(address=address, ignore_reinit_error=True, log_to_driver=False)
    else:
        ray.init(num_cpus=num_cpus, include_dashboard=False, ignore_reinit_error=True, log_to_driver=False,
                 runtime_env={"env_vars": {"PYTHONPATH": os.pathsep.join(sys.path)}})
    codes: dict[str, int] = {}
    try:
        if not wait_for_resources:
            check_cluster(ray.cluster_resources(), ray.nodes(), cpus_per_run, gpus_per_run)
        device_flags = ("--cuda",) if gpus_per_run > 0 else ("--no-cuda",)
        threads = max(1, int(cpus_per_run))
        remote = ray.remote(run_job).options(num_cpus=cpus_per_run, num_gpus=gpus_per_run, max_retries=max_retries)
        refs = {remote.remote(job, location, threads, device_flags): job for job in jobs}
        pending = list(refs)
        bar = tqdm(total=len(jobs), unit="run", desc="sweep (ray)")
        while pending:
            done, pending = ray.wait(pending, num_returns=1)
            for ref in done:
                try:
                    codes[refs[ref].name] = ray.get(ref)
                except ray.exceptions.RayError as error:  # retries used up: the node or worker kept dying
                    print(f"camal-sweep: {refs[ref].name}: {type(error).__name__} after {max_retries} retries",
                          file=sys.stderr)
                    codes[refs[ref].name] = -1
                bar.update(1)
        bar.close()
    finally:
        ray.shutdown()
    return codes


def settings_clash(storage: Storage, job: Job) -> str | None:
    """What differs between the settings ``job`` asks for and those its existing results were made
    with, budget included (None if nothing does, or there is nothing to compare), on every storage."""
    with tempfile.TemporaryDirectory(prefix="camal-sweep-check-") as scratch:
        folder = storage.root / job.folder if storage.is_local else storage.fetch(job, Path(scratch))
        if job.fold is not None:
            return _fold_clash(folder, job)
        saved = runs.saved_args(folder)
        if saved is None:
            if (folder / runs.CHECKPOINT).exists() or (folder / runs.SUMMARY).exists():
                return f"{job.folder} cannot be read (camal-train --resume {job.folder} says why)"
            return None
        try:
            had = arguments.saved_settings(type(job.settings), saved, folder)
        except CamalError as error:
            return f"{job.folder} cannot be read ({error})"
    asked = job.settings
    differ = [f"{f.name} {getattr(had, f.name)!r} (this sweep: {getattr(asked, f.name)!r})"
              for f in fields(asked) if f.name not in runs.HOW_A_RUN_RUNS
              and getattr(had, f.name) != getattr(asked, f.name)]
    shown = ", ".join(differ[:5]) + (f" and {len(differ) - 5} more" if len(differ) > 5 else "")
    return f"{job.folder} has {shown}" if differ else None


def _fold_clash(folder: Path, job: Job) -> str | None:
    """A finished fold made with other settings than the job asks: what differs."""
    from camal_rl.vision import train as classify

    result = folder / runs.fold_result(job.fold)
    if not result.exists():
        return None
    try:
        classify.check_same_settings(runs.read_fold(result).get("args", {}), job.settings, result)
    except CamalError as error:
        return str(error)
    return None


def refuse_mixed_settings(storage: Storage, jobs: list[Job], states: dict[str, str]) -> None:
    """Skipping or resuming a run trained with other settings would mix them in one report, silently."""
    clashes = [clash for job in jobs if states[job.name] != "new" and (clash := settings_clash(storage, job))]
    if clashes:
        more = f" (and {len(clashes) - 1} more run(s))" if len(clashes) > 1 else ""
        hint = ("; to train finished runs further, camal-train --resume RUN --total-timesteps N"
                if all("total_timesteps" in clash and clash.count("(this sweep") == 1 for clash in clashes) else "")
        raise SweepError(f"{storage.location} holds runs trained with other settings than this sweep asks: "
                         f"{clashes[0]}{more}; give another --out, or the same settings{hint}")


def trained_steps(storage: Storage, job: Job) -> int:
    """Agent steps a training run's folder holds so far (0 for classification folds or remote storage)."""
    if job.fold is not None or not storage.is_local:
        return 0
    return runs.trained_steps(storage.root / job.folder)


def run_grid(jobs: list[Job], location: str, *, workers: int | str = "auto", launcher: str = "local", ray_address=None,
             compare: bool = True, reps: int = 2000, cpus_per_run: float = 1, gpus_per_run: float = 0,
             max_retries: int = 3, wait_for_resources: bool = False, gpu_memory_per_run: int | None = None) -> dict:
    """Skip the finished jobs, run the rest (locally or on Ray), then write the report (local storage).
    ``workers``: runs at a time, or "auto" (``plan_box``) for the local launcher. A local storage has
    one sweep at a time (a second is refused at once)."""
    storage = Storage(location)
    if not storage.is_local:
        return _run_grid(jobs, storage, workers=workers, launcher=launcher, ray_address=ray_address,
                         cpus_per_run=cpus_per_run, gpus_per_run=gpus_per_run, max_retries=max_retries,
                         wait_for_resources=wait_for_resources, gpu_memory_per_run=gpu_memory_per_run)
    storage.root.mkdir(parents=True, exist_ok=True)
    with runs.one_writer(storage.root, SWEEP_LOCK):
        result = _run_grid(jobs, storage, workers=workers, launcher=launcher, ray_address=ray_address,
                           cpus_per_run=cpus_per_run, gpus_per_run=gpus_per_run, max_retries=max_retries,
                           wait_for_resources=wait_for_resources, gpu_memory_per_run=gpu_memory_per_run)
        if compare:
            try:
                analysis.compare([storage.root], storage.root / "report", reps=reps, skip_broken=True)
                result["report"] = str(storage.root / "report" / "report.md")
            except analysis.AnalysisError as error:
                print(f"camal-sweep: no report: {error}", file=sys.stderr)
    return result


SWEEP_LOCK = ".sweep.lock"


def _run_grid(jobs: list[Job], storage: Storage, *, workers, launcher, ray_address, cpus_per_run, gpus_per_run,
              max_retries, wait_for_resources, gpu_memory_per_run) -> dict:
    location = storage.location
    states = {job.name: job.state(storage) for job in jobs}
    refuse_mixed_settings(storage, jobs, states)
    todo = [job for job in jobs if states[job.name] != "finished"]
    skipped = sorted(name for name, state in states.items() if state == "finished")
    for name in skipped:
        print(f"skip (finished): {name}")
    steps_before = {job.name: trained_steps(storage, job) for job in todo}
    started = time.time()
    box = None
    if not todo:
        codes = {}
    elif launcher == "ray":
        codes = run_ray(todo, location, address=ray_address, num_cpus=None if workers == "auto" else workers,
                        cpus_per_run=cpus_per_run, gpus_per_run=gpus_per_run, max_retries=max_retries,
                        wait_for_resources=wait_for_resources)
    else:
        box = local_box_plan(todo, workers, gpu_memory_per_run)
        print(f"camal-sweep: {box.why}; {box.threads} torch thread(s) and "
              f"{'default' if box.env_workers is None else box.env_workers} env worker(s) per run", flush=True)
        flags = () if box.env_workers is None else ("--env-workers", str(box.env_workers))
        codes = run_local(todo, location, box.runs, threads=box.threads, extra_flags=flags)
    seconds = time.time() - started
    failed = sorted(name for name, code in codes.items() if code != 0)
    for name in failed:
        print(f"failed: {name} (see its .log in {location})", file=sys.stderr)
    result = {"ran": sorted(codes), "skipped": skipped, "failed": failed, "seconds": seconds,
              "resumed": sorted(name for name in codes if states[name] == "resumable")}
    steps = sum(trained_steps(storage, job) - steps_before[job.name] for job in todo)
    if steps > 0:
        result.update(box_steps=steps, box_steps_per_second=steps / max(seconds, 1e-9),
                      runs_at_a_time=box.runs if box else workers)
        print(f"camal-sweep: this box trained {steps:,} agent steps in {seconds:,.0f} s over {len(todo)} run(s): "
              f"{result['box_steps_per_second']:,.0f} agent steps/s in all", flush=True)
    return result


def local_box_plan(jobs: list[Job], workers: int | str, gpu_memory_per_run: int | None) -> BoxPlan:
    cores, gpu_free = box_resources()
    training = [job.settings for job in jobs if job.fold is None]
    if any(not settings.cuda for settings in training):
        gpu_free = None
    paper_frames = any(settings.paper_frames for settings in training)
    memory = gpu_memory_per_run or GPU_MEMORY_PER_RUN["paper_frames" if paper_frames else "default"]
    given_workers = (any(settings.env_workers is not None for settings in training)
                     or any(job.fold is not None for job in jobs))
    plan = plan_box(cores, gpu_free, len(jobs), memory_per_run=memory, runs=None if workers == "auto" else int(workers))
    if given_workers:  # the user's --env-workers (or a classification task) wins
        plan = BoxPlan(plan.runs, plan.threads, None, plan.why)
    return plan


def sweep(envs, methods, seeds, out, *, train_args=(), **launch) -> dict:
    """camal-train over envs x methods x seeds into ``out`` (a path or an fsspec URI); ``launch``: ``run_grid``'s."""
    return run_grid(plan(envs, methods, seeds, tuple(train_args)), str(out), **launch)


def sweep_classify(models, datasets, methods, folds, out, *, classify_args=(), **launch) -> dict:
    """camal-classify over models x datasets x methods x folds, one fold per job, into ``out``."""
    return run_grid(plan_classify(models, datasets, methods, folds, tuple(classify_args)), str(out), **launch)


@dataclass
class SweepArgs:
    """Grids of training runs, on this machine or on a Ray cluster. Arguments after -- go to camal-train
    (or camal-classify with --task classify)."""

    task: Literal["train", "classify"] = "train"
    """train: camal-train per env x method x seed; classify: camal-classify per model x dataset x method x fold"""
    envs: list[str] = field(default_factory=lambda: list(doom.PAPER_SCENARIOS))
    """scenarios (names or spec files) of a train sweep"""
    methods: list[str] | None = None
    """None: camal vanilla"""
    seeds: list[int] = field(default_factory=lambda: [1, 2, 3, 4, 5])
    """training seeds, one run each"""
    models: list[str] = field(default_factory=lambda: ["resnet18"])
    """architectures of a classify sweep"""
    datasets: list[str] = field(default_factory=lambda: ["oxford_pets"])
    """datasets of a classify sweep"""
    folds: int = 10
    """cross-validation folds of a classify sweep"""
    out: str = "runs/sweep"
    """where the run folders go (local launcher)"""
    storage: str | None = None
    """a path every node sees, or an fsspec URI (None: --out)"""
    workers: str = "auto"
    """runs at a time (local; auto: from the cores and GPU memory) / CPUs of a Ray cluster started here (auto: all)"""
    gpu_memory_per_run: float | None = None
    """GiB of GPU memory one run needs, for --workers auto (None: 6 at paper frames, else 2)"""
    launcher: Literal["local", "ray"] = "local"
    """run here, or as Ray tasks"""
    ray_address: str | None = None
    """an existing Ray cluster, e.g. auto (None: start one here)"""
    cpus_per_run: float = 1
    """CPUs of one Ray task"""
    gpus_per_run: float = 0
    """GPUs of one Ray task; fractions share a GPU, e.g. 0.25"""
    max_retries: int = 3
    """Ray retries of a run whose worker or node died"""
    wait_for_resources: bool = False
    """submit even if no node can run it yet"""
    compare: bool = True
    """write the camal-compare report when all runs are done (local storage)"""
    reps: int = 2000
    """bootstrap repetitions of the report"""


def check_sweep_args(options: SweepArgs) -> None:
    """Every flag, before a job is planned: a ``SweepError`` (one line through ``run_cli``) otherwise."""
    for name in ("envs", "methods", "seeds", "models", "datasets"):
        if getattr(options, name) == []:  # argparse's nargs="+" refused an empty list too
            raise SweepError(f"--{name} needs at least one value")
    if options.workers != "auto" and not (options.workers.isascii() and options.workers.isdigit()
                                          and int(options.workers) >= 1):
        raise SweepError(f"--workers must be auto or a whole number >= 1, got {options.workers!r}")
    if options.gpu_memory_per_run is not None and not 0 < options.gpu_memory_per_run < math.inf:
        raise SweepError(f"--gpu-memory-per-run must be a number of GiB > 0, got {options.gpu_memory_per_run}")
    for name, minimum in (("folds", 2), ("max_retries", 0), ("reps", analysis.MIN_REPS)):
        if getattr(options, name) < minimum:
            raise SweepError(f"--{name.replace('_', '-')} must be >= {minimum}, got {getattr(options, name)}")
    if not 0 < options.cpus_per_run < math.inf or not 0 <= options.gpus_per_run < math.inf:
        raise SweepError("--cpus-per-run must be > 0 and --gpus-per-run >= 0 (finite numbers)")


def cli(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else list(argv)
    extra = []  # after the first --: the flags of every camal-train (or camal-classify) job
    if "--" in argv:
        split = argv.index("--")
        argv, extra = argv[:split], argv[split + 1 :]
    options = tyro.cli(SweepArgs, args=argv, prog="camal-sweep")

    def main() -> dict:
        check_sweep_args(options)
        gpu_memory = None if options.gpu_memory_per_run is None else int(options.gpu_memory_per_run * GiB)
        common = dict(workers="auto" if options.workers == "auto" else int(options.workers), launcher=options.launcher,
                      gpu_memory_per_run=gpu_memory, ray_address=options.ray_address, compare=options.compare,
                      reps=options.reps, cpus_per_run=options.cpus_per_run, gpus_per_run=options.gpus_per_run,
                      max_retries=options.max_retries, wait_for_resources=options.wait_for_resources)
        location = options.storage or options.out
        if options.task == "classify":
            return sweep_classify(options.models, options.datasets, options.methods or ["vanilla", "camal"],
                                  options.folds, location, classify_args=extra, **common)
        return sweep(options.envs, options.methods or ["camal", "vanilla"], options.seeds, location,
                     train_args=extra, **common)

    result = run_cli("camal-sweep", main)
    print(f"ran {len(result['ran'])} (resumed {len(result['resumed'])}), skipped {len(result['skipped'])}, "
          f"failed {len(result['failed'])}" + (f"; report: {result['report']}" if "report" in result else ""))
    if result["failed"]:
        raise SystemExit(1)


if __name__ == "__main__":
    cli()
