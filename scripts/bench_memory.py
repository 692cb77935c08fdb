"""Resident memory over a long CPU run: is it flat? And what the rollout storage takes.

Trains ``--iterations`` PPO iterations (small rollouts so that 200 iterations take about a minute)
and prints the resident set size of the learner and of its env workers every ``--every``
iterations, then the growth between the first report and the last.

    python scripts/bench_memory.py                     # 200 iterations, 8 envs x 16 steps, in-process
    python scripts/bench_memory.py --env-workers 2     # the worker path

Figures: docs/performance.md, "Memory".
"""
import argparse
import multiprocessing
import os
import tempfile
from pathlib import Path

import benchkit

from camal_rl import ppo


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=200)
    parser.add_argument("--every", type=int, default=20)
    parser.add_argument("--num-envs", type=int, default=8)
    parser.add_argument("--num-steps", type=int, default=16)
    parser.add_argument("--env-workers", type=int, default=0)
    options = parser.parse_args()
    print(benchkit.machine_line())
    readings = []

    def report(iteration, rollout):
        if iteration == 1 or iteration % options.every == 0:
            workers = [p.pid for p in multiprocessing.active_children() if p.name.startswith("camal-env-")]
            learner, children = rss_mib(os.getpid()), sum(rss_mib(pid) for pid in workers)
            readings.append((iteration, learner, children))
            print(f"iteration {iteration:4d}: learner {learner:7.1f} MiB, {len(workers)} env workers "
                  f"{children:7.1f} MiB", flush=True)

    with tempfile.TemporaryDirectory() as root:
        ppo.train(ppo.Args(env="basic", seed=1, recipe="paper", num_envs=options.num_envs, num_steps=options.num_steps,
                           total_timesteps=options.iterations * options.num_envs * options.num_steps, eval_episodes=0,
                           checkpoint_interval=10**9, progress=False, cuda=False, env_workers=options.env_workers,
                           run_dir=f"{root}/run"), on_rollout=report)
    # from after the first iteration's allocations
    (_, learner0, workers0), (_, learner1, workers1) = readings[1], readings[-1]
    print(f"growth from iteration {readings[1][0]} to {readings[-1][0]}: learner {learner1 - learner0:+.1f} MiB, "
          f"env workers {workers1 - workers0:+.1f} MiB")


if __name__ == "__main__":
    main()
