"""Trainer steps/s: old vs new rollout path, Vanilla vs CAMAL, frame settings and env counts, in one run.

Every configuration trains in its own fresh process for ``--iterations`` PPO iterations (Table 8
sizes: 128 steps per env, 4 epochs, 4 minibatches) and reports the steady-state steps/s of the
iterations after the first (the first pays for start-up and kernel selection). "old" is the
trainer at git revision ``--old-rev`` (the landed in-process gymnasium path that ships whole
frame stacks), extracted into a temporary folder; "new" is this checkout.

    python scripts/bench_train.py                                   # 2-core CPU: 60x80, 8 envs
    python scripts/bench_train.py --cuda --frames paper 60x80 --num-envs 8 32 --paths old new
    python scripts/bench_train.py --sb3                             # + stable-baselines3 as a peer
    python scripts/bench_train.py --paths new --recipe default --repeats 5   # the scenario's CPU default recipe

Prints one line per run as it finishes, then a table with CAMAL / Vanilla and new / old ratios.
"""
from __future__ import annotations

import argparse
import itertools
import json
import os
import statistics
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
FRAMES = {"60x80": {"obs_size": [60, 80]}, "paper": {"paper_frames": True}}

# Runs inside the child process, against whichever camal_rl is first on PYTHONPATH.
RUNNER = r"""
import dataclasses, json, statistics, sys, tempfile
from camal_rl import ppo
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
config = json.loads(sys.argv[1])
known = {f.name for f in dataclasses.fields(ppo.Args)}
values = {k: (tuple(v) if isinstance(v, list) else v) for k, v in config.items() if k in known}
if "recipe" in config and "recipe" not in known:
    sys.exit("this revision has no recipes; give --old-rev a later one")
if "recipe" in known:
    values.setdefault("recipe", "paper")  # Table 8 sizes, as older revisions (without recipes) train
with tempfile.TemporaryDirectory() as root:
    summary = ppo.train(ppo.Args(run_dir=root + "/run", **values))
    events = EventAccumulator(root + "/run", size_guidance={"scalars": 0})
    events.Reload()
    points = [(e.step, e.value) for e in events.Scalars("charts/SPS")]
    phases = {tag: [e.value for e in events.Scalars(tag)] for tag in ("perf/rollout_seconds", "perf/update_seconds")
              if tag in events.Tags()["scalars"]}
    phases = {tag: values[1:] or values for tag, values in phases.items()}  # after the first iteration, as steady_sps
(first_step, first_sps), (last_step, last_sps) = points[0], points[-1]
steady = (last_step - first_step) / (last_step / last_sps - first_step / first_sps) if len(points) > 1 else last_sps
print("RESULT " + json.dumps({"steady_sps": steady, "sps": summary["sps"], "workers": summary.get("env_workers"),
                             "groups": summary.get("env_groups"),
                             **{tag.split("/")[1]: statistics.median(values) for tag, values in phases.items()}}))
"""


def old_tree(revision: str, folder: Path) -> Path:
    """The package as it was at ``revision``, for the "old" rows, with its scenario specs (``envs/``,
    read from the working folder) where the revision has them."""
    archive = folder / "old.tar"
    has_specs = subprocess.run(["git", "-C", str(REPO), "ls-tree", "--name-only", revision, "envs"],
                               capture_output=True, text=True, check=True).stdout.strip()
    with open(archive, "wb") as out:
        subprocess.run(["git", "-C", str(REPO), "archive", revision, "camal_rl", *(["envs"] if has_specs else [])],
                       stdout=out, check=True)
    with tarfile.open(archive) as tar:
        tar.extractall(folder / "old", filter="data")
    return folder / "old"


def run(path_root: Path, config: dict, timeout: int) -> dict:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(path_root), os.environ.get("PYTHONPATH", "")])}
    try:
        result = subprocess.run([sys.executable, "-c", RUNNER, json.dumps(config)], capture_output=True, text=True,
                                env=env, timeout=timeout, cwd=path_root)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout} s"}
    for line in result.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[7:])
    return {"error": (result.stderr.strip().splitlines() or ["no output"])[-1][:200]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--env", default="basic")
    parser.add_argument("--paths", nargs="+", default=["old", "new"], choices=["old", "new"])
    parser.add_argument("--methods", nargs="+", default=["vanilla", "camal"], choices=["vanilla", "camal"])
    parser.add_argument("--frames", nargs="+", default=["60x80"], choices=list(FRAMES))
    parser.add_argument("--num-envs", nargs="+", type=int, default=[8], help="with --recipe paper only")
    parser.add_argument("--recipe", default="paper",
                        help="paper: Table 8's sizes (128 steps per env, 4 epochs); another name (e.g. default): the "
                             "scenario's recipe, its envs and steps included (an --old-rev with recipes)")
    parser.add_argument("--env-workers", nargs="+", default=["auto"],
                        help="'auto' and/or numbers (0 = in-process); the old path runs async envs where this is > 0")
    parser.add_argument("--env-groups", nargs="+", default=["auto"], help="new path: 'auto' and/or numbers (2 = double-buffered)")
    parser.add_argument("--repeats", type=int, default=1, help="rounds over all configurations; the best of each is kept")
    parser.add_argument("--iterations", type=int, default=5)
    parser.add_argument("--old-iterations", type=int, default=None, help="iterations for the old path (default: --iterations)")
    parser.add_argument("--old-rev", default="3e77790", help="git revision of the old path")
    parser.add_argument("--old-tree", default=None, help="an extracted old camal_rl (instead of --old-rev)")
    parser.add_argument("--cuda", action="store_true")
    parser.add_argument("--cuda-graph", nargs="+", default=["off"], choices=["off", "on"],
                        help="new path: the rollout's forward from a CUDA graph (on needs --cuda)")
    parser.add_argument("--timeout", type=int, default=600, help="seconds per run")
    parser.add_argument("--sb3", action="store_true", help="also stable-baselines3 PPO on our env (pip install -e '.[bench]')")
    parser.add_argument("--json", default=None, help="write all results here")
    options = parser.parse_args()

    print(storage_figures())
    if options.recipe != "paper":
        from camal_rl import doom, recipes

        spec = doom.load_spec(options.env)
        try:
            name, values = recipes.resolve(options.recipe, spec.recipes)
        except KeyError:
            parser.error(f"--recipe {options.recipe!r}: {spec.name} has default, paper{''.join(', ' + r for r in sorted(spec.recipes))}")
        options.num_envs = [values["num_envs"]]
        print(f"recipe {name}: {values['num_envs']} envs x {values['num_steps']} steps, "
              f"{values['update_epochs']} epochs of {values['num_minibatches']} minibatches")
    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        roots = {"new": REPO}
        if "old" in options.paths:
            roots["old"] = Path(options.old_tree) if options.old_tree else old_tree(options.old_rev, Path(scratch))
        grid = list(itertools.product(options.frames, options.num_envs, options.env_workers, options.env_groups,
                                      options.cuda_graph, options.paths, options.methods))
        # odd rounds run the grid backwards, so no configuration always runs after another (this
        # machine's speed drifts within minutes: Vanilla-then-CAMAL in every round favours one of them)
        rounds = [(r, setting) for r in range(options.repeats) for setting in (grid if r % 2 == 0 else grid[::-1])]
        for round_index, (frames, num_envs, workers_option, groups_option, graph, path, method) in rounds:
            workers = None if workers_option == "auto" else int(workers_option)
            groups = None if groups_option == "auto" else int(groups_option)
            if path == "old" and (workers_option, groups_option, graph) != (options.env_workers[0], options.env_groups[0],
                                                                    options.cuda_graph[0]):
                continue  # the old path has one parallel option: run it once per (frames, envs)
            iterations = options.old_iterations if path == "old" and options.old_iterations else options.iterations
            steps = 128 if options.recipe == "paper" else values["num_steps"]
            config = {"env": options.env, "seed": 1, "num_envs": num_envs, "num_steps": steps,
                      "total_timesteps": iterations * num_envs * steps, "camal_coef": 1.0 if method == "camal" else 0.0,
                      "eval_episodes": 0, "checkpoint_interval": 10**9, "progress": False, "cuda": options.cuda,
                      **FRAMES[frames], "env_workers": workers, "env_groups": groups}
            if graph == "on":
                config["cuda_graph"] = True
            if options.recipe != "paper":
                config["recipe"] = options.recipe
            # the old path's parallel option, gymnasium's AsyncVectorEnv: for more than the 8 envs of Table 8,
            # or where the new path is told to use workers (the old default, in-process, otherwise)
            config["async_envs"] = num_envs > 8 if workers is None else workers > 0
            result = run(roots[path], config, options.timeout)
            label = "old" if path == "old" else f"new, workers {result.get('workers', workers_option)}, groups {result.get('groups', groups_option)}"
            label += ", CUDA graph" if graph == "on" and path == "new" else ""
            row = {"round": round_index, "frames": frames, "num_envs": num_envs, "path": label, "method": method, **result}
            rows.append(row)
            shown = f"{result['steady_sps']:8.0f} steps/s" if "steady_sps" in result else result["error"]
            if "rollout_seconds" in result:  # the new path says where an iteration's time goes
                shown += f"  (rollout {result['rollout_seconds']:.2f} s + update {result['update_seconds']:.2f} s per iteration)"
            print(f"{frames:6s} {num_envs:3d} envs  {label:26s} {method:7s} {shown}", flush=True)

    print(f"\n| frames | envs | path | Vanilla steps/s | CAMAL steps/s | CAMAL / Vanilla |  (best of {options.repeats})")
    print("|---|---|---|---|---|---|")
    table = {}
    for row in rows:
        cell = table.setdefault((row["frames"], row["num_envs"], row["path"]), {})
        cell[row["method"]] = max(cell.get(row["method"]) or 0, row.get("steady_sps") or 0) or None
    for (frames, num_envs, path), by_method in table.items():
        vanilla, camal = by_method.get("vanilla"), by_method.get("camal")
        ratio = f"{camal / vanilla:.2f}" if vanilla and camal else "-"
        cells = [f"{v:.0f}" if v else "-" for v in (vanilla, camal)]
        print(f"| {frames} | {num_envs} | {path} | {cells[0]} | {cells[1]} | {ratio} |")
    # This machine's speed drifts by 10-20 % between runs: ratios are also taken within each round
    # (runs minutes apart) and their median is given with the spread over rounds.
    speed = {(r["round"], r["frames"], r["num_envs"], r["path"], r["method"]): r.get("steady_sps") for r in rows}
    for (frames, num_envs, path), by_method in table.items():
        paired = within_rounds(speed, options.repeats, (frames, num_envs, path, "camal"), (frames, num_envs, path, "vanilla"))
        if paired:
            print(f"CAMAL / Vanilla, {path}, {frames}, {num_envs} envs: within rounds median {statistics.median(paired):.2f} "
                  f"(range {paired[0]:.2f}-{paired[-1]:.2f}, {len(paired)} rounds)")
    for (frames, num_envs, path), by_method in table.items():
        old = table.get((frames, num_envs, "old"), {})
        for method in options.methods:
            if path != "old" and old.get(method) and by_method.get(method):
                paired = within_rounds(speed, options.repeats, (frames, num_envs, path, method), (frames, num_envs, "old", method))
                print(f"{path} / old, {frames}, {num_envs} envs, {method}: {by_method[method] / old[method]:.2f}x best vs best; "
                      f"within rounds median {statistics.median(paired):.2f}x (range {paired[0]:.2f}-{paired[-1]:.2f}, "
                      f"{len(paired)} rounds)")
    if options.sb3:
        sb3_peer(options)
    if options.json:
        Path(options.json).write_text(json.dumps(rows, indent=2))


def within_rounds(speed: dict, repeats: int, top: tuple, bottom: tuple) -> list[float]:
    """The sorted ratios speed[top] / speed[bottom] of each round where both ran: runs minutes apart on a
    machine whose speed drifts by 10-30 %, so a ratio within a round says more than one of best runs."""
    return sorted(speed[(r, *top)] / speed[(r, *bottom)] for r in range(repeats)
                  if speed.get((r, *top)) and speed.get((r, *bottom)))


def storage_figures(steps: int = 128, envs: int = 8, stack: int = 4) -> str:
    """Rollout observation storage at the paper's frames (240x320 RGB, screen masks 240x320)."""
    frame, mask = 3 * 240 * 320, 240 * 320
    old = steps * envs * (stack * frame + mask)  # a whole stack per step and env
    new = (steps + stack) * envs * frame + (steps + 1) * envs * mask  # one frame per step and env
    return (f"rollout storage at paper frames, {envs} envs x {steps} steps: old (stacks) {old / 2**20:.0f} MiB, "
            f"new (single frames + masks) {new / 2**20:.0f} MiB ({new / old:.2f}x); per step and env: "
            f"{(new / steps / envs) / 2**10:.0f} KiB vs one stack {stack * frame / 2**10:.0f} KiB")


def sb3_peer(options) -> None:
    """stable-baselines3's PPO (CnnPolicy) on our env, preprocessing and PPO sizes, 60x80, 8 envs."""
    import time

    import gymnasium as gym
    try:
        from stable_baselines3 import PPO
        from stable_baselines3.common.vec_env import DummyVecEnv
    except ImportError:
        print("stable-baselines3 not installed (pip install -e '.[bench]'): peer comparison skipped")
        return
    from camal_rl import doom

    class ImageOnly(gym.ObservationWrapper):
        def __init__(self, env):
            super().__init__(env)
            self.observation_space = env.observation_space["image"]

        def observation(self, observation):
            return observation["image"]

    venv = DummyVecEnv([(lambda i=i: ImageOnly(doom.make_env(options.env, seed=1 + i))) for i in range(8)])
    total = options.iterations * 8 * 128
    model = PPO("CnnPolicy", venv, n_steps=128, batch_size=256, n_epochs=4, learning_rate=2.5e-4, gamma=0.99,
                gae_lambda=0.95, clip_range=0.1, ent_coef=0.01, vf_coef=0.5, max_grad_norm=0.5, seed=1,
                device="cuda" if options.cuda else "cpu", verbose=0)
    start = time.perf_counter()
    model.learn(total_timesteps=total)
    print(f"stable-baselines3 PPO CnnPolicy, 60x80, 8 in-process envs: {total / (time.perf_counter() - start):.0f} steps/s "
          f"(first iteration included)")
    venv.close()


if __name__ == "__main__":
    main()
