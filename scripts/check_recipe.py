"""Check recipes on seeds a search did not see: time to an agent that plays, per recipe and method.

    python scripts/check_recipe.py --env basic --recipes neutral paper --seeds 1 2 3 4 5 --steps 50000 \
        --eval-interval 10000 --runs runs/check_basic --out reports/recipe_search/basic

Trains every recipe x method x seed with ``camal-sweep`` (finished runs are skipped, stopped ones
resumed), then writes ``check.md`` and ``check.json`` into ``--out``: per run, the evaluation return
at each evaluation, the first agent step and wall-clock second at which the training mean (the last
20 episodes, as the trainer's progress bar shows it) reached ``--train-threshold``, and steps/s; per
recipe and method, how many seeds evaluated at or above ``--eval-target`` by the last evaluation,
the normalised evaluation return (the spec's random and reference scores) and, with two or more
recipes, the first recipe's against the second's; and CAMAL / Vanilla steps/s.

``--earlier DIR/check.json`` brings in the runs of an earlier check of the same scenario, steps and
evaluation interval that this check does not train (by recipe, method and seed): Table 8's, so a
new recipe is not trained beside it again, or a recipe's first seeds when this check adds one. They
are compared by their recorded evaluations, and only where each run's recorded trainer settings
are those its recipe gives now (a recipe edited since, a frame skip moved, is refused, naming what
differs); their training curves are not redrawn, as run folders are not kept. The report says which
runs came from where.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path

import numpy as np

from camal_rl import doom, recipes, runs, sweep
from camal_rl.errors import CamalError, run_cli
from camal_rl.files import save_figure, write_json, write_text_atomic


def scalar_events(run_dir: Path, tag: str) -> list[tuple[float, int, float]]:
    """(wall time, step, value) of one TensorBoard scalar."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    accumulator = EventAccumulator(str(run_dir), size_guidance={"scalars": 0})
    accumulator.Reload()
    if tag not in accumulator.Tags().get("scalars", []):
        return []
    return [(e.wall_time, e.step, e.value) for e in accumulator.Scalars(tag)]


def first_training_mean_at(run_dir: Path, threshold: float) -> tuple[int | None, float | None]:
    """(agent step, seconds since the run started) when the mean of the last 20 training episodes
    first reached ``threshold``; the start is the first iteration's time less its steps / steps-per-second."""
    sps = scalar_events(run_dir, runs.Tag.SPS)
    if not sps:
        return None, None
    wall, step, rate = sps[0]
    start = wall - step / max(rate, 1e-9)
    recent: deque = deque(maxlen=20)
    for wall_time, step, value in scalar_events(run_dir, runs.Tag.EPISODIC_RETURN):
        recent.append(value)
        if len(recent) == recent.maxlen and np.mean(recent) >= threshold:
            return step, wall_time - start
    return None, None


def describe_run(run_dir: Path, threshold: float) -> dict:
    summary = runs.read_summary(run_dir)
    evaluations = [(step, value) for _, step, value in scalar_events(run_dir, runs.Tag.EVAL_RETURN)]
    step, seconds = first_training_mean_at(run_dir, threshold)
    return {"run": str(run_dir), "method": summary["method"], "seed": summary["seed"], "recipe": summary.get("recipe"),
            "evaluations": evaluations, "final_eval_return": summary["eval_return_mean"],
            "eval_iou": summary["eval_iou_mean"], "sps": summary["sps"], "train_time_s": summary["train_time_s"],
            "first_train_mean_step": step, "first_train_mean_seconds": seconds,
            "settings": learned_settings(summary.get("args"))}


def learned_settings(args: dict | None) -> dict | None:
    """A run's trainer settings that decide what it learned: not how it ran, nor the scenario's
    name or path (the check compares the scenario). None for a summary without them (an older run)."""
    if not isinstance(args, dict):
        return None
    return {name: value for name, value in args.items() if name not in runs.HOW_A_RUN_RUNS | {"env"}}


def finished_on(described: list[dict]) -> str:
    """The day the last of the runs finished (their summaries' time), not the day the report was redrawn."""
    stamps = [(Path(d["run"]) / runs.SUMMARY).stat().st_mtime for d in described if "earlier" not in d]
    return time.strftime("%Y-%m-%d", time.localtime(max(stamps))) if stamps else time.strftime("%Y-%m-%d")


def earlier_runs(path: Path, setting: dict, trained_now: set[tuple[str, str, int]],
                 settings_now: Callable[[str, str, int], dict]) -> list[dict]:
    """The runs of an earlier check (its ``check.json``) whose (recipe, method, seed) is not trained
    now, each marked ``earlier`` with the check that trained it and its day (a mark it already has is
    kept); ``ValueError`` if the file is not comparable, or a run's recorded settings are not what
    ``settings_now(recipe, method, seed)`` (this check's ``learned_settings``) gives today."""
    try:
        earlier = json.loads(path.read_text())
        before, described = earlier["setting"], earlier["runs"]
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise ValueError(f"--earlier {path}: not a check.json written by this script ({error})") from None
    for key in ("env", "steps", "eval_interval", "eval_episodes"):
        if before.get(key) != setting[key]:
            raise ValueError(f"--earlier {path}: its {key} is {before.get(key)!r}, this check's {setting[key]!r}; "
                             "compare runs of the same scenario, steps and evaluations")
    try:
        kept = [{**d, "earlier": d.get("earlier", f"{path} ({before.get('date', '?')})")} for d in described
                if (d["recipe"], d["method"], d["seed"]) not in trained_now]
    except (KeyError, TypeError) as error:
        raise ValueError(f"--earlier {path}: not a check.json written by this script (a run without {error})") from None
    if not kept:
        raise ValueError(f"--earlier {path}: every run in it is trained again by this check; nothing to bring in")
    for d in kept:
        run = f"{d['recipe']}/{d['method']}/{d['seed']}"
        try:
            now = settings_now(d["recipe"], d["method"], d["seed"])
        except CamalError as error:  # its recipe is gone from the spec, or no longer resolves
            raise ValueError(f"--earlier {path}: its run {run} cannot be matched with this check's settings "
                             f"({error}); leave out --earlier, or check that recipe again") from None
        differ = settings_differ(d, now)
        if differ:
            raise ValueError(f"--earlier {path}: its run {run} {differ}; train it here instead (add its recipe to "
                             "--recipes and its seed to --seeds) or leave out --earlier")
    return kept


def settings_differ(run: dict, now: dict) -> str | None:
    """What keeps an earlier run from counting as trained with ``now``, or None."""
    recorded = run.get("settings")
    if not isinstance(recorded, dict):
        return "does not record its trainer settings (a check.json from before 2026-12-07)"
    # JSON holds a tuple as a list; a setting one side lacks is a newer or older camal-rl's default
    now = json.loads(json.dumps(now))
    differ = [f"{name} {recorded[name]!r} then, {now[name]!r} now" for name in sorted(set(recorded) & set(now))
              if recorded[name] != now[name]]
    return f"was trained with other settings: {', '.join(differ[:4])}{' and more' if len(differ) > 4 else ''}" \
        if differ else None


def settings_now(options, spec) -> Callable[[str, str, int], dict]:
    """(recipe, method, seed) -> the ``learned_settings`` this check's flags give such a run today."""
    def resolved(recipe: str, method: str, seed: int) -> dict:
        flags = ("--env", options.env, "--seed", str(seed), *sweep.METHOD_FLAGS[method], *train_flags(options),
                 "--recipe", recipe)
        return learned_settings(dataclasses.asdict(sweep.train_settings(flags)))  # as a summary records them
    return resolved


def compared_in_order(recipes_now: list[str], earlier: list[dict]) -> list[str]:
    """The recipes of the report in its order: those checked now, then the earlier runs' with Table 8
    first (the report compares the first recipe with the second: a new recipe with Table 8)."""
    others = {d["recipe"] for d in earlier} - set(recipes_now)
    return recipes_now + sorted(others, key=lambda recipe: (recipe != "paper", recipe))


def normalised_by_evaluation(described: list[dict], spec, interval: int) -> dict[str, dict[int, float]]:
    """Per recipe/method, the mean normalised evaluation return at each evaluation (its step rounded
    to the evaluation interval, as recipes' batch sizes put the same evaluation a few steps apart)."""
    by_group: dict[str, dict[int, list[float]]] = {}
    for d in described:
        for step, value in d["evaluations"]:
            at = max(1, round(step / interval)) * interval
            group = by_group.setdefault(f"{d['recipe']}/{d['method']}", {})
            group.setdefault(at, []).append(spec.normalize_return(value))
    return {group: {at: float(np.mean(values)) for at, values in sorted(steps.items())}
            for group, steps in by_group.items()}


def plot_curves(described: list[dict], spec, path: Path) -> None:
    """Training return (mean of the last 20 episodes) and evaluation return against agent steps, one
    colour per recipe and method, one line per seed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (train_axis, eval_axis) = plt.subplots(1, 2, figsize=(11, 4))
    colours = {}
    for d in described:
        name = f"{d['recipe']}/{d['method']}"
        colour = colours.setdefault(name, f"C{len(colours)}")
        events = [] if "earlier" in d else scalar_events(Path(d["run"]), runs.Tag.EPISODIC_RETURN)
        if events:
            values = np.array([value for _, _, value in events])
            window = min(20, len(values))
            smooth = np.convolve(values, np.ones(window) / window, mode="valid")
            steps = [step for _, step, _ in events][window - 1 :]
            shown = name not in train_axis.get_legend_handles_labels()[1]
            train_axis.plot(steps, smooth, color=colour, alpha=0.7, label=name if shown else None)
        if d["evaluations"]:
            steps, values = zip(*d["evaluations"], strict=True)
            eval_axis.plot(steps, values, marker="o", color=colour, alpha=0.7,
                           label=name if name not in eval_axis.get_legend_handles_labels()[1] else None)
    # an earlier check's run folders are not kept: its runs have evaluations but no training curve
    earlier = any("earlier" in d for d in described)
    train_title = "training return (last 20 episodes)" + ("; this check's runs" if earlier else "")
    for axis, title in ((train_axis, train_title), (eval_axis, "evaluation return")):
        axis.axhline(spec.random_score, color="grey", linestyle=":", linewidth=1)
        axis.set_xlabel("agent steps")
        axis.set_title(f"{spec.name}: {title}", fontsize=10)
        if axis.get_legend_handles_labels()[1]:
            axis.legend(loc="best", fontsize=8)
    figure.tight_layout()
    save_figure(figure, path, dpi=90)
    plt.close(figure)


class CheckError(CamalError):
    """A check that cannot give a report; the message is the whole story."""


def parse_options(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--env", default="basic")
    parser.add_argument("--recipes", nargs="+",
                        help="recipe names (folder names too); default: the one --recipe default takes, and paper")
    parser.add_argument("--methods", nargs="+", default=["camal", "vanilla"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[1, 2, 3, 4, 5])
    parser.add_argument("--steps", type=int, default=50_000)
    parser.add_argument("--eval-interval", type=int, default=10_000)
    parser.add_argument("--eval-episodes", type=int, default=10)
    parser.add_argument("--eval-target", type=float, default=75.0, help="evaluation return a seed must reach")
    parser.add_argument("--train-threshold", type=float, default=60.0,
                        help="training mean whose first time is reported")
    parser.add_argument("--workers", type=int, default=1, help="runs at a time (1: wall-clock times are not shared)")
    parser.add_argument("--earlier", type=Path, help="an earlier check.json whose other recipes' runs to compare with")
    parser.add_argument("--runs", required=True)
    parser.add_argument("--out", required=True)
    options = parser.parse_args(argv)
    for flag in ("steps", "eval_interval", "eval_episodes", "workers"):
        if getattr(options, flag) < 1:
            parser.error(f"--{flag.replace('_', '-')} must be >= 1, got {getattr(options, flag)}")
    return options


def recipe_names(asked: list[str] | None, spec) -> list[str]:
    """The recipes to check, by the names their folders and report use: ``default`` as the name it
    resolves to (its meaning can change; a name cannot), every one known to the scenario, checked
    before anything trains."""
    names = asked or ["default", "paper"]
    resolved = []
    for name in names:
        try:
            name = recipes.resolve(name, spec.recipes)[0]
        except KeyError:
            raise CheckError(f"--recipes {name}: {spec.name} has {recipes.available(spec.recipes)}") from None
        if name not in resolved:
            resolved.append(name)
    return resolved


def train(options, spec) -> None:
    """Every recipe x method x seed with ``camal-sweep`` (finished runs skipped, stopped ones resumed);
    ``CheckError`` naming the runs that failed or left no summary: a report without them would read as
    complete."""
    failed = []
    for recipe in options.recipes:
        result = sweep.sweep([options.env], options.methods, options.seeds, Path(options.runs) / recipe,
                             train_args=[*train_flags(options), "--recipe", recipe], workers=options.workers,
                             compare=False)
        failed += [f"{recipe}/{name}" for name in result.get("failed", [])]
    missing = [f"{recipe}/{run_dir.name}" for recipe, run_dir in expected_runs(options, spec)
               if not (run_dir / runs.SUMMARY).exists() and f"{recipe}/{run_dir.name}" not in failed]
    if failed or missing:
        raise CheckError(f"{len(failed) + len(missing)} run(s) did not finish: {', '.join(failed + missing)} (their "
                         f".log files are in {options.runs}/<recipe>); no report written. Run the same command to "
                         "train them again")


def train_flags(options) -> list[str]:
    """camal-train's flags for every run of this check, less the recipe."""
    return ["--total-timesteps", str(options.steps), "--eval-interval", str(options.eval_interval),
            "--eval-episodes", str(options.eval_episodes), "--checkpoint-interval", "20"]


def expected_runs(options, spec) -> list[tuple[str, Path]]:
    return [(recipe, Path(options.runs) / recipe / f"{spec.name}__{method}__{seed}")
            for recipe in options.recipes for method in options.methods for seed in options.seeds]


def group_figures(mine: list[dict], options, spec) -> dict:
    """One recipe/method's seeds: how many reached the target, the final evaluation, time to the
    training threshold, steps/s."""
    reached = [d for d in mine if d["final_eval_return"] is not None and d["final_eval_return"] >= options.eval_target]
    timed = [d["first_train_mean_seconds"] for d in mine if d["first_train_mean_seconds"] is not None]
    return {"seeds": len(mine), "final_eval_at_or_above_target": len(reached),
            "final_eval_mean": float(np.mean([d["final_eval_return"] for d in mine])),
            "final_eval_normalised": float(np.mean([spec.normalize_return(d["final_eval_return"]) for d in mine])),
            "train_mean_reached": len(timed),
            "median_seconds_to_train_mean": float(np.median(timed)) if timed else None,
            "sps_mean": float(np.mean([d["sps"] for d in mine]))}


def summarise(described: list[dict], recipes_compared: list[str], options, spec) -> dict[str, dict]:
    """Per recipe/method: ``group_figures``, the first recipe's normalised evaluation against the
    second's, and CAMAL / Vanilla steps/s."""
    groups = {}
    for recipe in recipes_compared:
        for method in options.methods:
            mine = [d for d in described if d["recipe"] == recipe and d["method"] == method]
            if mine:
                groups[f"{recipe}/{method}"] = group_figures(mine, options, spec)
    if len(recipes_compared) >= 2:  # the first recipe against the second (e.g. tuned vs paper), per method
        first, second = recipes_compared[:2]
        for method in options.methods:
            mine, theirs = groups.get(f"{first}/{method}"), groups.get(f"{second}/{method}")
            if mine and theirs and theirs["final_eval_normalised"] > 0:
                mine[f"normalised_vs_{second}"] = mine["final_eval_normalised"] / theirs["final_eval_normalised"]
    for recipe in recipes_compared:
        camal, vanilla = groups.get(f"{recipe}/camal"), groups.get(f"{recipe}/vanilla")
        if camal and vanilla:
            camal["sps_vs_vanilla"] = camal["sps_mean"] / vanilla["sps_mean"]
    return groups


def machine() -> str:
    import torch

    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return f"{platform.machine()}, {os.cpu_count()} cores, {gpu}"


def group_lines(groups: dict, recipes_compared: list[str], options) -> list[str]:
    versus = recipes_compared[1] if len(recipes_compared) > 1 else "-"
    lines = [f"| recipe / method | seeds | final eval >= {options.eval_target:g} | final eval mean | normalised | "
             f"vs {versus} (normalised) | training mean >= {options.train_threshold:g} reached | "
             "median seconds to it | steps/s | CAMAL / Vanilla steps/s |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for name, g in groups.items():
        seconds = "-" if g["median_seconds_to_train_mean"] is None else f"{g['median_seconds_to_train_mean']:.0f}"
        ratio = f"{g['sps_vs_vanilla']:.2f}" if "sps_vs_vanilla" in g else "-"
        against = next((f"{v:.2f}x" for k, v in g.items() if k.startswith("normalised_vs_")), "-")
        lines.append(f"| {name} | {g['seeds']} | {g['final_eval_at_or_above_target']} of {g['seeds']} | "
                     f"{g['final_eval_mean']:.1f} | {g['final_eval_normalised']:.2f} | {against} | "
                     f"{g['train_mean_reached']} of {g['seeds']} | {seconds} | {g['sps_mean']:.0f} | {ratio} |")
    return lines


def evaluation_lines(curves: dict, recipes_compared: list[str], methods: list[str]) -> list[str]:
    """The first recipe against the second at every evaluation, not only the last."""
    if len(recipes_compared) < 2:
        return []
    first, second = recipes_compared[:2]
    lines = []
    for method in methods:
        mine, theirs = curves.get(f"{first}/{method}", {}), curves.get(f"{second}/{method}", {})
        shared = [at for at in mine if at in theirs]
        if not shared:
            continue
        lines += ["", f"| {method}: evaluation at | {first} (normalised, mean of seeds) | {second} | "
                      f"{first} / {second} |",
                  "|---|---|---|---|"]
        for at in shared:
            ratio = f"{mine[at] / theirs[at]:.2f}x" if theirs[at] > 0 else "-"
            lines.append(f"| {at:,} | {mine[at]:.2f} | {theirs[at]:.2f} | {ratio} |")
    return lines


def run_lines(described: list[dict]) -> list[str]:
    lines = ["", "| run | evaluations (agent step: return) | first training mean >= threshold (step, s) | steps/s |",
             "|---|---|---|---|"]
    for d in described:
        evals = ", ".join(f"{s // 1000}k: {v:.0f}" for s, v in d["evaluations"])
        first = ("-" if d["first_train_mean_step"] is None
                 else f"{d['first_train_mean_step']:,}, {d['first_train_mean_seconds']:.0f}")
        where = " (earlier check)" if "earlier" in d else ""
        lines.append(f"| {d['recipe']}/{d['method']}/{d['seed']}{where} | {evals} | {first} | {d['sps']} |")
    return lines


def main(argv=None) -> None:
    options = parse_options(argv)
    spec = doom.load_spec(options.env)
    options.recipes = recipe_names(options.recipes, spec)
    setting = {"env": spec.name, "steps": options.steps, "seeds": options.seeds, "eval_interval": options.eval_interval,
               "eval_episodes": options.eval_episodes}
    earlier = []
    if options.earlier:
        trained_now = {(r, m, s) for r in options.recipes for m in options.methods for s in options.seeds}
        try:
            earlier = earlier_runs(options.earlier, setting, trained_now, settings_now(options, spec))
        except (ValueError, CamalError) as error:
            raise CheckError(str(error)) from None
    train(options, spec)
    described = [{**describe_run(run_dir, options.train_threshold), "recipe": recipe}
                 for recipe, run_dir in expected_runs(options, spec)]
    recipes_compared = compared_in_order(options.recipes, earlier)
    described += earlier
    groups = summarise(described, recipes_compared, options, spec)
    setting.update({"eval_target": options.eval_target, "train_threshold": options.train_threshold,
                    "runs_at_a_time": options.workers, "machine": machine(), "date": finished_on(described),
                    "seeds": sorted({d["seed"] for d in described})})
    if earlier:
        setting["trained_by_this_check"] = f"{', '.join(options.recipes)}: seeds {options.seeds}"
        setting["earlier_runs"] = ", ".join(sorted({f"{d['recipe']}: {d['earlier']}" for d in earlier}))
    curves = normalised_by_evaluation(described, spec, options.eval_interval)
    lines = [f"# Recipe check on {spec.name}: seeds {setting['seeds']} (none of them used by a recipe search)", "",
             "| setting | value |", "|---|---|", *[f"| {k} | {v} |" for k, v in setting.items()], "",
             *group_lines(groups, recipes_compared, options),
             *evaluation_lines(curves, recipes_compared, options.methods),
             *run_lines(described)]
    out = Path(options.out)
    out.mkdir(parents=True, exist_ok=True)
    if described:
        plot_curves(described, spec, out / "curves.png")
        lines += ["", "![training and evaluation curves](curves.png)"]
    write_json(out / "check.json", {"setting": setting, "groups": groups, "runs": described,
                                    "normalised_by_evaluation": curves})
    write_text_atomic(out / "check.md", "\n".join(lines) + "\n")
    print("\n".join(lines[: 7 + len(setting) + len(groups)]))


def cli(argv=None) -> None:
    run_cli("check_recipe", lambda: main(argv))


if __name__ == "__main__":
    cli()
