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
    python scripts/bench_train.py --paths new --compile off on --repeats 3    # eager vs torch.compile

Prints one line per run as it finishes, then a table with CAMAL / Vanilla and new / old ratios:
the best run of each configuration and, over ``--repeats`` rounds (odd rounds run the grid
backwards), the median of the ratios taken within each round. Figures: docs/performance.md.
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
import tempfile
from pathlib import Path

import benchkit

FRAMES = {"60x80": {"obs_size": [60, 80]}, "paper": {"paper_frames": True}}


def measure(values: dict) -> dict:
    """In the child: train with ``values`` (``ppo.Args`` fields; those this tree's ``Args`` lacks are
    dropped) and read back steady steps/s and the median rollout and update seconds per iteration."""
    import dataclasses
    import statistics

    from camal_rl import ppo

    known = {f.name for f in dataclasses.fields(ppo.Args)}
    if "recipe" in values and "recipe" not in known:
        sys.exit("this revision has no recipes; give --old-rev a later one")
    args = {k: tuple(v) if isinstance(v, list) else v for k, v in values.items() if k in known}
    if "recipe" in known:
        args.setdefault("recipe", "paper")  # Table 8 sizes, as older revisions (without recipes) train
    with tempfile.TemporaryDirectory() as root:
        summary = ppo.train(ppo.Args(run_dir=f"{root}/run", **args))
        scalars = read_scalars(f"{root}/run")
    result = {"steady_sps": steady_sps(scalars["sps"]), "sps": summary["sps"], "workers": summary.get("env_workers"),
              "groups": summary.get("env_groups")}
    for phase in ("rollout", "update"):  # after the first iteration, as steady_sps
        timings = [value for _, value in scalars.get(phase, [])]
        if timings:
            result[f"{phase}_seconds"] = statistics.median(timings[1:] or timings)
    return result


def read_scalars(run_dir: str) -> dict[str, list[tuple[int, float]]]:
    """(step, value) of steps/s and of the phase timers, by the tags of the tree that wrote them."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    try:
        from camal_rl.runs import Tag

        tags = {"sps": Tag.SPS, "rollout": Tag.ROLLOUT_SECONDS, "update": Tag.UPDATE_SECONDS}
    except ImportError:  # revisions before runs.py wrote these names
        tags = {"sps": "charts/SPS", "rollout": "perf/rollout_seconds", "update": "perf/update_seconds"}
    events = EventAccumulator(run_dir, size_guidance={"scalars": 0})
    events.Reload()
    present = set(events.Tags()["scalars"])
    return {name: [(e.step, e.value) for e in events.Scalars(tag)] for name, tag in tags.items() if tag in present}


def steady_sps(points: list[tuple[int, float]]) -> float:
    """Steps/s over the iterations after the first, from the cumulative steps/s the trainer logs."""
    (first_step, first_sps), (last_step, last_sps) = points[0], points[-1]
    if len(points) == 1:
        return last_sps
    return (last_step - first_step) / (last_step / last_sps - first_step / first_sps)


def recipe_sizes(options, parser) -> dict | None:
    """The scenario's recipe values where ``--recipe`` is not Table 8 (it sets the envs and steps)."""
    if options.recipe == "paper":
        return None
    from camal_rl import doom, recipes

    spec = doom.load_spec(options.env)
    try:
        name, values = recipes.resolve(options.recipe, spec.recipes)
    except KeyError:
        parser.error(f"--recipe {options.recipe!r}: {spec.name} has {recipes.available(spec.recipes)}")
    options.recipe = name  # every tree trains the recipe by the name it resolved to here, not "default"
    values = {"frame_skip": spec.frame_skip, **values}  # a recipe's own frame skip, else the spec's
    print(f"recipe {name}: {values['num_envs']} envs x {values['num_steps']} steps, "
          f"{values['update_epochs']} epochs of {values['num_minibatches']} minibatches, "
          f"frame skip {values['frame_skip']}")
    return values


def configurations(options, recipe: dict | None) -> list[tuple[dict, str, dict]]:
    """(row labels, tree, ``ppo.Args`` values) of every run in one round."""
    env_counts = [recipe["num_envs"]] if recipe else options.num_envs
    grid = itertools.product(options.frames, env_counts, options.env_workers, options.env_groups, options.cuda_graph,
                             options.compile, options.paths, options.methods)
    firsts = (options.env_workers[0], options.env_groups[0], options.cuda_graph[0], options.compile[0])
    runs = []
    for frames, num_envs, workers_option, groups_option, graph, compiled, path, method in grid:
        if path == "old" and (workers_option, groups_option, graph, compiled) != firsts:
            continue  # the old path has one parallel option and no compilation: run it once per (frames, envs)
        workers = None if workers_option == "auto" else int(workers_option)
        groups = None if groups_option == "auto" else int(groups_option)
        iterations = options.old_iterations if path == "old" and options.old_iterations else options.iterations
        steps = recipe["num_steps"] if recipe else 128
        values = {"env": options.env, "seed": 1, "num_envs": num_envs, "num_steps": steps,
                  "total_timesteps": iterations * num_envs * steps, "camal_coef": 1.0 if method == "camal" else 0.0,
                  "eval_episodes": 0, "checkpoint_interval": 10**9, "progress": False, "cuda": options.cuda,
                  **FRAMES[frames], "env_workers": workers, "env_groups": groups,
                  # the old path's parallel option, gymnasium's AsyncVectorEnv: for more than the 8 envs of
                  # Table 8, or where the new path is told to use workers (the old default is in-process)
                  "async_envs": num_envs > 8 if workers is None else workers > 0}
        if graph == "on":
            values["cuda_graph"] = True
        if compiled == "on":
            values["compile"] = True
        if recipe:
            values["recipe"] = options.recipe
            # the old tree resolves the recipe from its own envs/: both run at the frame skip the new one resolves
            values["frame_skip"] = recipe["frame_skip"]
        labels = {"frames": frames, "num_envs": num_envs, "path": path, "method": method,
                  "workers": workers_option, "groups": groups_option, "graph": graph, "compile": compiled}
        runs.append((labels, path, values))
    return runs


def path_label(labels: dict, result: dict) -> str:
    if labels["path"] == "old":
        return "old"
    label = f"new, workers {result.get('workers', labels['workers'])}, groups {result.get('groups', labels['groups'])}"
    return label + (", CUDA graph" if labels["graph"] == "on" else "") + (COMPILED if labels["compile"] == "on" else "")


COMPILED = ", compiled"


def run_rounds(options, trees: dict[str, Path], recipe: dict | None) -> list[dict]:
    rows = []
    for round_index, (labels, path, values) in benchkit.alternating(configurations(options, recipe), options.repeats):
        result = benchkit.run_child("bench_train:measure", values, root=trees[path], timeout=options.timeout)
        row = {"round": round_index, "frames": labels["frames"], "num_envs": labels["num_envs"],
               "path": path_label(labels, result), "method": labels["method"], **result}
        rows.append(row)
        shown = f"{result['steady_sps']:8.0f} steps/s" if "steady_sps" in result else result["error"]
        if "rollout_seconds" in result:  # the new path says where an iteration's time goes
            shown += (f"  (rollout {result['rollout_seconds']:.2f} s + update {result['update_seconds']:.2f} s "
                      "per iteration)")
        print(f"{labels['frames']:6s} {labels['num_envs']:3d} envs  {row['path']:26s} {labels['method']:7s} {shown}",
              flush=True)
    return rows


def report(rows: list[dict], options) -> None:
    """The best run of each configuration, then ratios within rounds (the figure to quote)."""
    by_round: dict[tuple, dict[str, list]] = {}  # (frames, envs, path) -> method -> steps/s by round
    for row in rows:
        methods = by_round.setdefault((row["frames"], row["num_envs"], row["path"]), {})
        methods.setdefault(row["method"], [None] * options.repeats)[row["round"]] = row.get("steady_sps")
    best = {key: {method: max(filter(None, values), default=None) for method, values in methods.items()}
            for key, methods in by_round.items()}
    print("\n| frames | envs | path | Vanilla steps/s | CAMAL steps/s | CAMAL / Vanilla |"
          f"  (best of {options.repeats})")
    print("|---|---|---|---|---|---|")
    for (frames, num_envs, path), methods in best.items():
        vanilla, camal = methods.get("vanilla"), methods.get("camal")
        ratio = f"{camal / vanilla:.2f}" if vanilla and camal else "-"
        cells = [f"{v:.0f}" if v else "-" for v in (vanilla, camal)]
        print(f"| {frames} | {num_envs} | {path} | {cells[0]} | {cells[1]} | {ratio} |")
    for (frames, num_envs, path), methods in by_round.items():
        if "camal" in methods and "vanilla" in methods:
            ratios = benchkit.round_ratios(methods["camal"], methods["vanilla"])
            if ratios:
                print(f"CAMAL / Vanilla, {path}, {frames}, {num_envs} envs: within rounds median "
                      f"{benchkit.ratio_summary(ratios)}")
    for (frames, num_envs, path), methods in by_round.items():
        old = by_round.get((frames, num_envs, "old"), {})
        for method in options.methods:
            if path == "old" or method not in old or method not in methods:
                continue
            ratios = benchkit.round_ratios(methods[method], old[method])
            best_new, best_old = best[(frames, num_envs, path)][method], best[(frames, num_envs, "old")][method]
            if ratios and best_new and best_old:
                print(f"{path} / old, {frames}, {num_envs} envs, {method}: {best_new / best_old:.2f}x best vs best; "
                      f"within rounds median {benchkit.ratio_summary(ratios, 'x')}")
    compiled_ratios(by_round, options.methods)


def compiled_ratios(by_round: dict, methods: list[str]) -> None:
    """torch.compile against eager: each compiled configuration over its eager twin, within rounds."""
    for (frames, num_envs, path), results in by_round.items():
        eager = by_round.get((frames, num_envs, path.replace(COMPILED, "")))
        if COMPILED not in path or eager is None:
            continue
        for method in methods:
            if method in results and method in eager:
                ratios = benchkit.round_ratios(results[method], eager[method])
                if ratios:
                    print(f"compiled / eager, {path.replace(COMPILED, '')}, {frames}, {num_envs} envs, {method}: "
                          f"within rounds median {benchkit.ratio_summary(ratios, 'x')}")


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
    print(f"stable-baselines3 PPO CnnPolicy, 60x80, 8 in-process envs: {total / (time.perf_counter() - start):.0f} "
          "steps/s (first iteration included)")
    venv.close()


def parse_options() -> tuple[argparse.Namespace, argparse.ArgumentParser]:
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
    parser.add_argument("--env-groups", nargs="+", default=["auto"],
                        help="new path: 'auto' and/or numbers (2 = double-buffered)")
    parser.add_argument("--repeats", type=int, default=1,
                        help="rounds over all configurations, odd rounds backwards; best and within-round ratios")
    parser.add_argument("--iterations", type=int, default=5)
    parser.add_argument("--old-iterations", type=int, default=None,
                        help="iterations for the old path (default: --iterations)")
    parser.add_argument("--old-rev", default="3e77790", help="git revision of the old path")
    parser.add_argument("--old-tree", default=None, help="an extracted old camal_rl (instead of --old-rev)")
    parser.add_argument("--cuda", action="store_true")
    parser.add_argument("--cuda-graph", nargs="+", default=["off"], choices=["off", "on"],
                        help="new path: the rollout's forward from a CUDA graph (on needs --cuda)")
    parser.add_argument("--compile", nargs="+", default=["off"], choices=["off", "on"],
                        help="new path: torch.compile of the update's loss and the policy forward (the first "
                             "iteration, which compiles, is left out of steady steps/s)")
    parser.add_argument("--timeout", type=int, default=600, help="seconds per run")
    parser.add_argument("--sb3", action="store_true",
                        help="also stable-baselines3 PPO on our env (pip install -e '.[bench]')")
    parser.add_argument("--json", default=None, help="write all results here")
    options = parser.parse_args()
    if options.repeats < 1 or options.iterations < 1:
        parser.error(f"--repeats and --iterations must be >= 1, got {options.repeats} and {options.iterations}")
    return options, parser


def main() -> None:
    options, parser = parse_options()
    print(benchkit.machine_line())
    print(storage_figures())
    recipe = recipe_sizes(options, parser)
    with tempfile.TemporaryDirectory() as scratch:
        trees = {"new": benchkit.REPO}
        if "old" in options.paths:
            try:
                trees["old"] = Path(options.old_tree) if options.old_tree else benchkit.old_tree(options.old_rev,
                                                                                                 Path(scratch))
            except benchkit.BenchError as error:
                parser.error(f"--old-rev: {error}")
        rows = run_rounds(options, trees, recipe)
    report(rows, options)
    if options.sb3:
        sb3_peer(options)
    if options.json:
        Path(options.json).write_text(json.dumps(rows, indent=2))
    failed = [f"{row['frames']} x {row['num_envs']} {row['path']} {row['method']} (round {row['round'] + 1}): "
              f"{row['error']}" for row in rows if "error" in row]
    if failed:  # a figure that is missing must not pass for a measured one
        sys.exit("bench_train: these runs failed: " + "; ".join(failed))


if __name__ == "__main__":
    main()
