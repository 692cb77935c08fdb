"""What the trainer tells a person when a run ends or stops: how good the agent is, in words and
numbers, and the commands to watch, evaluate, share and compare it, with the run folder filled in.
Scripts read the same numbers from ``summary.json``."""

from __future__ import annotations

import math
import shlex
from pathlib import Path


def duration(seconds: float) -> str:
    seconds = max(0, round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, seconds = divmod(rest, 60)
    if hours:
        return f"{hours} h {minutes:02d} min"
    return f"{minutes} min {seconds:02d} s" if minutes else f"{seconds} s"


def ending_text(summary: dict, run_dir: Path) -> str:
    """The ending of a run (``summary`` as ``runs.make_summary`` makes it; ``stopped`` when a stop ended it)."""
    folder = shlex.quote(str(run_dir))
    who = f"{summary['env']} / {summary['method']} / seed {summary['seed']}"
    how = "stopped (its last iteration is saved)" if summary.get("stopped") else "finished"
    steps_per_second = summary["global_step"] / max(summary["train_time_s"], 1e-9)
    lines = [f"camal-train: {who} {how} in {run_dir}",
             f"  agent steps        {summary['global_step']:,} in {duration(summary['train_time_s'])} "
             f"({steps_per_second:,.0f} steps/s) + {duration(summary['eval_time_s'])} of evaluation"]
    if summary.get("eval_return_mean") is not None:
        normalised = summary.get("eval_normalised_return")
        lines.append(f"  evaluation return  {summary['eval_return_mean']:.1f} ± {summary['eval_return_std'] or 0:.1f} "
                     f"over {summary['eval_episodes']} episodes"
                     + ("" if normalised is None else f" (normalised {normalised:.2f}: 0 random, 1 reference)"))
        iou, dead = summary.get("eval_iou_mean"), summary.get("eval_zero_map_fraction")
        if iou is not None and math.isfinite(iou) and dead is not None and math.isfinite(dead):
            lines.append(f"  attention IoU      {iou:.2f} with the label mask (all-zero maps on {dead:.0%} of frames "
                         f"with an object)")
    else:
        recent = summary.get("train_return_recent")
        lines.append("  evaluation return  not evaluated yet (it evaluates every --eval-interval agent steps and "
                     "at the end)" + ("" if recent is None else f"; training return of the last episodes {recent:.1f}"))
    if summary.get("stopped"):
        lines += ["Continue it:", f"  camal-train --resume {folder}"]
    lines += ["Next:",
              f"  camal-record {folder} --episodes 3 --out {shlex.quote(str(run_dir / 'replay.mp4'))}"
              "   # watch it play, its attention over the screen",
              f"  camal-eval {folder} --episodes 20   # its return and IoU on more episodes",
              f"  camal-export {folder} --out {shlex.quote('agents/' + run_dir.name)}"
              "   # share it: weights, model card and replay, in the Hugging Face Hub's layout",
              f"  camal-compare {shlex.quote(str(run_dir.parent))} --out report/ --skip-broken"
              "   # methods and seeds compared, once that folder holds several runs",
              f"  tensorboard --logdir {shlex.quote(str(run_dir.parent))}   # its curves"]
    return "\n".join(lines)
