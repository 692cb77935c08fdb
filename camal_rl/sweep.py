"""A grid of env x method x seed: ``camal-sweep --envs basic take_cover --methods camal vanilla --seeds 1 2 3``.

Runs go into ``OUT/<env>__<method>__<seed>``. Finished runs (``summary.json``) are skipped,
checkpointed ones resumed, the rest started; as parallel local processes (``--workers``) or as
tasks on a Ray cluster (``--launcher ray``, the ``ray`` extra). When all are done the
comparison report is written to ``OUT/report`` (``camal-compare``).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from camal_rl import analysis, doom

METHOD_FLAGS = {
    "camal": ["--regularizer", "camal"],
    "suppress": ["--regularizer", "suppress"],
    "vanilla": ["--camal-coef", "0"],
}


@dataclass(frozen=True)
class Job:
    env: str
    method: str
    seed: int
    run_dir: Path

    @property
    def name(self) -> str:
        return self.run_dir.name

    def state(self) -> str:
        if (self.run_dir / "summary.json").exists():
            return "finished"
        if (self.run_dir / "checkpoint.pt").exists():
            return "resumable"
        return "new"

    def command(self, train_args: list[str], threads: int) -> list[str]:
        base = [sys.executable, "-m", "camal_rl.ppo"]
        if self.state() == "resumable":
            return base + ["--resume", str(self.run_dir), "--no-progress"]
        return base + ["--env", self.env, "--seed", str(self.seed), "--run-dir", str(self.run_dir),
                       "--threads", str(threads), "--no-progress", *METHOD_FLAGS[self.method], *train_args]


def plan(envs: list[str], methods: list[str], seeds: list[int], out: Path) -> list[Job]:
    for env in envs:
        doom.load_spec(env)  # fail now, with the list of scenarios, rather than in every worker
    unknown = sorted(set(methods) - set(METHOD_FLAGS))
    if unknown:
        raise ValueError(f"unknown method(s) {unknown}; choose from {sorted(METHOD_FLAGS)}")
    return [Job(env, method, seed, out / f"{Path(env).stem}__{method}__{seed}") for env in envs for method in methods for seed in seeds]


def run_job(command: list[str], log_path: str) -> int:
    """Run one training process, its output going to a log beside the run folder."""
    Path(log_path).parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "a") as log:
        return subprocess.call(command, stdout=log, stderr=subprocess.STDOUT)


def run_local(jobs: list[Job], train_args: list[str], workers: int, threads: int) -> dict[str, int]:
    codes = {}
    with ThreadPoolExecutor(max_workers=workers) as pool:
        futures = {pool.submit(run_job, job.command(train_args, threads), str(job.run_dir) + ".log"): job for job in jobs}
        bar = tqdm(total=len(jobs), unit="run", desc="sweep")
        for future in as_completed(futures):
            codes[futures[future].name] = future.result()
            bar.update(1)
        bar.close()
    return codes


def run_ray(jobs: list[Job], train_args: list[str], address: str | None, num_cpus: int | None, threads: int) -> dict[str, int]:
    try:
        import ray
    except ImportError:
        raise SystemExit("camal-sweep: error: --launcher ray needs the ray extra: pip install -e '.[ray]'") from None
    if address:
        ray.init(address=address, ignore_reinit_error=True)
    else:
        ray.init(num_cpus=num_cpus, include_dashboard=False, ignore_reinit_error=True,
                 runtime_env={"env_vars": {"PYTHONPATH": os.pathsep.join(sys.path)}})
    remote = ray.remote(num_cpus=1)(run_job)
    refs = {remote.remote(job.command(train_args, threads), str(job.run_dir) + ".log"): job for job in jobs}
    codes = {}
    pending = list(refs)
    bar = tqdm(total=len(jobs), unit="run", desc="sweep (ray)")
    while pending:
        done, pending = ray.wait(pending, num_returns=1)
        for ref in done:
            codes[refs[ref].name] = ray.get(ref)
            bar.update(1)
    bar.close()
    if not address:
        ray.shutdown()
    return codes


def sweep(envs, methods, seeds, out, *, train_args=(), workers=2, launcher="local", ray_address=None,
          compare=True, reps=2000) -> dict:
    out = Path(out)
    jobs = plan(envs, methods, seeds, out)
    todo = [job for job in jobs if job.state() != "finished"]
    skipped = [job.name for job in jobs if job.state() == "finished"]
    for name in skipped:
        print(f"skip (finished): {name}")
    threads = max(1, (os.cpu_count() or 1) // max(1, workers))
    started = time.time()
    if not todo:
        codes = {}
    elif launcher == "ray":
        codes = run_ray(todo, list(train_args), ray_address, workers, threads)
    else:
        codes = run_local(todo, list(train_args), workers, threads)
    failed = sorted(name for name, code in codes.items() if code != 0)
    for name in failed:
        print(f"failed: {name} (see {out / name}.log)", file=sys.stderr)
    result = {"ran": sorted(codes), "skipped": skipped, "failed": failed, "seconds": time.time() - started}
    if compare:
        try:
            analysis.compare([out], out / "report", reps=reps)
            result["report"] = str(out / "report" / "report.md")
        except analysis.AnalysisError as error:
            print(f"camal-sweep: no report: {error}", file=sys.stderr)
    return result


def cli(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="camal-sweep", description=__doc__.splitlines()[0],
                                     epilog="Arguments after -- go to camal-train, e.g. -- --total-timesteps 500000")
    parser.add_argument("--envs", nargs="+", default=["basic", "defend_the_line", "defend_the_center", "take_cover"])
    parser.add_argument("--methods", nargs="+", default=["camal", "vanilla"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[1, 2, 3, 4, 5])
    parser.add_argument("--out", default="runs/sweep")
    parser.add_argument("--workers", type=int, default=2, help="runs at a time (local) / CPUs (ray, local cluster)")
    parser.add_argument("--launcher", choices=["local", "ray"], default="local")
    parser.add_argument("--ray-address", default=None, help="an existing Ray cluster (default: start one here)")
    parser.add_argument("--no-compare", action="store_true")
    parser.add_argument("--reps", type=int, default=2000)
    argv = sys.argv[1:] if argv is None else list(argv)
    train_args = []
    if "--" in argv:
        split = argv.index("--")
        argv, train_args = argv[:split], argv[split + 1 :]
    options = parser.parse_args(argv)
    try:
        result = sweep(options.envs, options.methods, options.seeds, options.out, train_args=train_args,
                       workers=options.workers, launcher=options.launcher, ray_address=options.ray_address,
                       compare=not options.no_compare, reps=options.reps)
    except (ValueError, doom.SpecError) as error:
        print(f"camal-sweep: error: {error}", file=sys.stderr)
        raise SystemExit(2)
    print(f"ran {len(result['ran'])}, skipped {len(result['skipped'])}, failed {len(result['failed'])}"
          + (f"; report: {result['report']}" if "report" in result else ""))
    if result["failed"]:
        raise SystemExit(1)


if __name__ == "__main__":
    cli()
