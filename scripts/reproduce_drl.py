"""The paper's DRL study at a chosen scale, in one command: train, compare, record, draw.

    python scripts/reproduce_drl.py --steps 100000 --seeds 1 2 3                  # CPU default frames
    python scripts/reproduce_drl.py --steps 50000 --paper-frames --concurrent 20  # a GPU machine
    python scripts/reproduce_drl.py --steps budget --recipe neutral               # each recipe's own budget

1. ``camal-sweep``: the paper's four scenarios x {CAMAL, Vanilla} x seeds into ``--runs``
   (finished runs are skipped, checkpointed ones resumed);
2. ``camal-compare`` into ``--report`` (report.md, results.json, SBCI / POI / learning-curve PNGs),
   with the frames, budget, seeds and machine written at the top;
3. one side-by-side CAMAL vs Vanilla video per scenario into ``--videos`` (first seed, the same
   episode seeds, at most 20 s); ``.avi`` (Motion JPEG) where imageio-ffmpeg is missing;
4. the Figure-11-style attention panel ``attention_panel.png`` in the report folder.

Each step can be skipped (``--skip-train``, ``--skip-report``, ``--skip-media``) so the report
regenerates from run folders with one command.
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import torch

from camal_rl import analysis, doom, recipes, record, sweep
from camal_rl.errors import run_cli

VIDEO_FRAMES = 200  # per side-by-side video, at 10 fps
VIDEO_EPISODES = 30  # at most; most scenarios fill the frames in one


def machine() -> str:
    cores = __import__("os").cpu_count()
    if torch.cuda.is_available():
        return f"{torch.cuda.get_device_name(0)}, {cores} CPU cores"
    return f"{platform.processor() or platform.machine()} CPU, {cores} cores, no GPU"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=steps_option, required=True,
                        help="agent steps per run (the paper: 10,000,000), or 'budget': each scenario's recipe's own "
                             "total_timesteps")
    parser.add_argument("--seeds", nargs="+", type=int, default=[1, 2, 3, 4, 5])
    parser.add_argument("--envs", nargs="+", default=list(doom.PAPER_SCENARIOS))
    parser.add_argument("--recipe", nargs="+", default=["paper"],
                        help="camal-train --recipe: paper (Table 8, the default here), or names tried in order per "
                             "scenario, e.g. 'tuned from_basic': each scenario trains with the first its spec has")
    parser.add_argument("--paper-frames", action="store_true",
                        help="240x320 colour frames (the paper); default: the CPU default")
    parser.add_argument("--concurrent", default="auto",
                        help="runs at a time (auto: camal-sweep's plan from the cores and GPU memory)")
    parser.add_argument("--evals", type=int, default=4,
                        help="evaluations per run (learning curves), the last at the end")
    parser.add_argument("--runs", default="runs/drl")
    parser.add_argument("--report", default="reports/drl")
    parser.add_argument("--videos", default="videos")
    parser.add_argument("--video-format", choices=["mp4", "avi"], default=None,
                        help="default: mp4 if imageio-ffmpeg is there")
    parser.add_argument("--skip-train", action="store_true")
    parser.add_argument("--skip-report", action="store_true")
    parser.add_argument("--skip-media", action="store_true")
    parser.add_argument("--reps", type=int, default=2000, help="bootstrap replications")
    parser.add_argument("train_args", nargs="*", help="after --: more camal-train flags")
    options = parser.parse_args()
    if not options.skip_report and options.reps < analysis.MIN_REPS:
        sys.exit(f"reproduce_drl: --reps must be >= {analysis.MIN_REPS} for a 95 % interval, got {options.reps}")
    runs, report = Path(options.runs), Path(options.report)
    recipe_of, steps_of = {}, {}
    for env in options.envs:
        try:
            spec = doom.load_spec(env)
            recipe_of[env] = recipes.first_of(options.recipe, spec.recipes)
        except doom.SpecError as error:
            sys.exit(f"reproduce_drl: {error}")
        except KeyError as error:
            sys.exit(f"reproduce_drl: --recipe {' '.join(options.recipe)}: scenario {env} has {error.args[0]}")
        steps_of[env] = options.steps if options.steps != EACH_BUDGET else recipe_budget(spec, recipe_of[env])
    steps = options.steps if options.steps != EACH_BUDGET else steps_of
    setting = {"steps_per_run": steps, "seeds": options.seeds, "envs": options.envs,
               "recipe": ", ".join(f"{env}: {name}" for env, name in recipe_of.items()),
               "frame_skip": ", ".join(f"{env}: {frame_skip_of(env, name, options.train_args)}"
                                       for env, name in recipe_of.items()),
               "frames": "240x320 RGB (paper)" if options.paper_frames else "CPU default (camal-train defaults)",
               "machine": machine(), "date": time.strftime("%Y-%m-%d")}

    if not options.skip_train:
        runs.mkdir(parents=True, exist_ok=True)
        (runs / "setting.json").write_text(json.dumps(setting, indent=2))
        concurrent = options.concurrent if options.concurrent == "auto" else int(options.concurrent)
        # many runs at once: each keeps one core busy, no extra processes
        workers = ["--env-workers", "0"] if concurrent != "auto" and concurrent > 1 else []
        jobs = [job for env in options.envs
                for job in sweep.plan([env], ["camal", "vanilla"], options.seeds,
                                      ("--recipe", recipe_of[env], "--total-timesteps", str(steps_of[env]),
                                       "--eval-interval", str(max(1, steps_of[env] // options.evals)),
                                       "--checkpoint-interval", "25",
                                       *(["--paper-frames"] if options.paper_frames else []),
                                       *options.train_args, *workers))]
        started = time.time()
        result = sweep.run_grid(jobs, str(runs), workers=concurrent, compare=False)
        print(f"sweep: ran {len(result['ran'])}, skipped {len(result['skipped'])}, failed {len(result['failed'])} "
              f"in {time.time() - started:.0f} s", flush=True)

    if not options.skip_report:
        saved = runs / "setting.json"
        if saved.exists():
            setting = json.loads(saved.read_text())
        # the report lists what it left out
        analysis.compare([runs], report, reps=options.reps, setting=setting, skip_broken=True)
        print(f"wrote {report / 'report.md'}", flush=True)

    if not options.skip_media:
        fmt = options.video_format or ("mp4" if _has_ffmpeg() else "avi")
        pairs = []
        for env in options.envs:
            seed = min(options.seeds)
            camal_run, vanilla_run = runs / f"{env}__camal__{seed}", runs / f"{env}__vanilla__{seed}"
            if not all((run / name).exists() for run in (camal_run, vanilla_run)
                       for name in ("checkpoint.pt", "summary.json")):
                print(f"{env} seed {seed}: a run is unfinished or missing, so no video and no panel row",
                      file=sys.stderr)
                continue
            pairs.append((str(camal_run), str(vanilla_run)))
            out = Path(options.videos) / f"{env}_camal_vs_vanilla.{fmt}"
            scale = 1 if options.paper_frames else 2
            # episodes until 20 s of video: a trained Basic agent ends an episode in a few frames
            done = record.record([str(camal_run), str(vanilla_run)], out, episodes=VIDEO_EPISODES, seed=0, fps=10,
                                 scale=scale, max_frames=VIDEO_FRAMES, cuda=torch.cuda.is_available(), progress=False)
            print(f"wrote {out}: {done['frames']} frames", flush=True)
        if pairs:
            rows = record.attention_panel(pairs, report / "attention_panel.png", seed=0, cuda=torch.cuda.is_available())
            (report / "attention_panel.json").write_text(json.dumps(rows, indent=2))
            print(f"wrote {report / 'attention_panel.png'}", flush=True)


EACH_BUDGET = "budget"


def steps_option(text: str) -> int | str:
    """--steps: a positive number of agent steps, or ``budget``."""
    if text == EACH_BUDGET:
        return EACH_BUDGET
    digits = text.replace("_", "")
    if not (digits.isascii() and digits.isdigit() and int(digits) > 0):
        raise argparse.ArgumentTypeError(f"{text!r}: give a positive number of agent steps, or '{EACH_BUDGET}'")
    return int(digits)


def frame_skip_of(env: str, recipe_name: str, train_args: list[str]) -> int:
    """The frame skip a scenario's runs train at: the recipe's or the spec's, unless the flags after -- say."""
    return sweep.train_settings(("--env", env, "--recipe", recipe_name, *train_args)).frame_skip


def recipe_budget(spec: doom.ScenarioSpec, recipe_name: str) -> int:
    """The agent steps a scenario's recipe trains for unless told (Table 8's 10M where it names none)."""
    return int(recipes.resolve(recipe_name, spec.recipes)[1][recipes.BUDGET])


def _has_ffmpeg() -> bool:
    try:
        import imageio_ffmpeg

        imageio_ffmpeg.get_ffmpeg_exe()
        return True
    except Exception:
        return False


if __name__ == "__main__":
    run_cli("reproduce_drl", main)
