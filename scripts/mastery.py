"""The mastery table: each scenario's evaluation return per method against a target, with time per run.

    python scripts/mastery.py runs/drl_master [--out reports/drl_master/mastery.md]

Reads finished runs (``summary.json``, schema-checked; unfinished ones are listed, not counted). The
targets are about 80 % of the best published scores: Sample Factory's APPO agents on the Hugging Face
Hub for Basic, DefendCenter and DefendLine, AttentionAgent and World Models on TakeCover. Where the
runs evaluated during training (``--eval-interval``), a second table gives the evaluation return at
each evaluation, mean over seeds, and what the second half of the steps added: the evidence of
whether more steps of the same recipe would reach a target.
"""
from __future__ import annotations

import argparse
import statistics
import sys
from collections import defaultdict
from pathlib import Path

from camal_rl import analysis
from camal_rl.errors import run_cli

TARGETS = {"basic": 80.0, "defend_the_center": 20.0, "defend_the_line": 28.0, "take_cover": 900.0}


def table(found: analysis.Found) -> list[str]:
    grouped = defaultdict(list)
    for run in found.runs:
        grouped[(run["env"], run["method"])].append(run)
    lines = ["| scenario | target | method | recipe | frame skip | seeds | eval return (mean +- sd, min-max) | "
             "seeds at target | agent steps | minutes per run | steps/s |", "|---" * 11 + "|"]
    speed = {}
    for (env, method), group in sorted(grouped.items()):
        returns = [run["eval_return_mean"] for run in group]
        target = TARGETS.get(env)
        reached = "-" if target is None else f"{sum(value >= target for value in returns)} of {len(returns)}"
        spread = statistics.stdev(returns) if len(returns) > 1 else 0.0
        speed[env, method] = statistics.mean(run["sps"] for run in group)
        seeds = ", ".join(str(run["seed"]) for run in sorted(group, key=lambda run: run["seed"]))
        steps = ", ".join(f"{step:,}" for step in sorted({run["global_step"] for run in group}))
        minutes = statistics.mean(run["wall_time_s"] for run in group) / 60
        recipe, frame_skip = (", ".join(sorted({str(run.get("args", {}).get(key, "-")) for run in group}))
                              for key in ("recipe", "frame_skip"))
        lines.append(f"| {env} | {'-' if target is None else f'{target:g}'} | {method} | {recipe} | {frame_skip} | "
                     f"{seeds} | "
                     f"{statistics.mean(returns):.1f} +- {spread:.1f} ({min(returns):.1f}-{max(returns):.1f}) | "
                     f"{reached} | {steps} | {minutes:.1f} | {speed[env, method]:.0f} |")
    ratios = [f"{env} {speed[env, 'camal'] / speed[env, 'vanilla']:.2f}" for env in sorted({e for e, _ in speed})
              if (env, "camal") in speed and (env, "vanilla") in speed]
    if ratios:
        lines += ["", f"CAMAL / Vanilla steps/s (runs two at a time): {', '.join(ratios)}."]
    if found.left_out:
        lines += ["", "Not counted (unfinished or unreadable):", *[f"- {why}" for why in found.left_out]]
    return lines


def curves(found: analysis.Found) -> list[str]:
    """The evaluation return over training per scenario and method, and the second half's gain."""
    rows = []
    for env, methods in sorted(analysis.learning_curves(found.runs).items()):
        for method, metrics in sorted(methods.items()):
            curve = metrics.get("return")
            if curve is None or len(curve.steps) < 2:
                continue
            points = ", ".join(f"{value:.1f} at {step:,}" for step, value in zip(curve.steps, curve.point, strict=True))
            half = min(range(len(curve.steps) - 1), key=lambda i: abs(curve.steps[i] - curve.steps[-1] / 2))
            gain = curve.point[-1] - curve.point[half]
            rows.append(f"| {env} | {method} | {curve.runs} | {points} | {gain:+.1f} since {curve.steps[half]:,} |")
    if not rows:
        return []
    return ["", "Evaluation return during training (mean over seeds at the steps every seed evaluated):", "",
            "| scenario | method | seeds | eval return at each evaluation | second half's gain |",
            "|---|---|---|---|---|", *rows]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", help="folders holding run folders")
    parser.add_argument("--out", help="also write the table to this Markdown file")
    options = parser.parse_args()
    found = analysis.find_results(options.runs, skip_broken=True)
    if not found.runs:
        sys.exit(f"mastery: no finished run under {' '.join(options.runs)}; give folders that hold runs with a "
                 f"summary.json")
    analysis.check_same_settings(found.runs)  # one recipe per scenario, as in a comparison
    text = "\n".join(table(found) + curves(found)) + "\n"
    print(text, end="")
    if options.out:
        out = Path(options.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        partial = out.with_name(out.name + ".partial")
        partial.write_text(text)
        partial.replace(out)


if __name__ == "__main__":
    run_cli("mastery", main)
