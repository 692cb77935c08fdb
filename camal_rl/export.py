"""``camal-export RUN --out DIR``: a trained agent as a folder people can share, in the layout the
Hugging Face Hub's Doom agents use (Sample Factory, Stable-Baselines3 and CleanRL publish theirs so).

    DIR/model.safetensors   the agent's weights (data only: opening it runs nothing)
    DIR/config.json         what rebuilds and plays it: the scenario as recorded, the frames, the
                            attention method, the recipe, the method and seed, its evaluation
    DIR/README.md           a model card: Hub metadata (``model-index`` with the evaluation), what
                            CAMAL is (arXiv:2605.08325), how to play and publish it
    DIR/replay.mp4          one episode with the attention of V(s) over the screen (``camal-record``)

``camal-eval DIR`` and ``camal-record DIR`` play it as they play a run folder. Publishing is the
Hub's own tool: ``hf upload DIR user/name`` (``huggingface-cli upload`` before huggingface_hub 1.0);
``camal-eval hf:user/name`` plays it
back (``pip install 'camal-rl[hub]'``). The folder is written beside ``DIR`` and renamed into place:
a failure leaves no half-written export.
"""

from __future__ import annotations

import dataclasses
import math
import shutil
import sys
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import torch
import tyro

from camal_rl import doom, runs
from camal_rl.errors import ConfigError, run_cli
from camal_rl.files import to_json, write_json, write_text_atomic
from camal_rl.schema import check_seed

REPLAY = "replay.mp4"
MODEL_CARD = "README.md"


@dataclasses.dataclass
class ExportArgs:
    """Write a trained agent as a shareable folder (weights, config, model card, replay video)."""

    run: tyro.conf.Positional[str]
    """the run folder written by camal-train"""
    out: str
    """the folder to write (it must not exist yet, unless --overwrite)"""
    episodes: int = 10
    """evaluation episodes whose return and IoU the model card states"""
    seed: int | None = None
    """evaluation seed (default: the run's own, which repeats the trainer's evaluation)"""
    video_episodes: int = 1
    """episodes in the replay video (0: no video)"""
    overwrite: bool = False
    """replace an existing export at --out"""
    cuda: bool = dataclasses.field(default_factory=torch.cuda.is_available)
    """play on the GPU (default: on when one is available)"""


def check_export_args(args: ExportArgs) -> None:
    if args.episodes < 1:
        raise ConfigError(f"--episodes must be >= 1, got {args.episodes}")
    if args.video_episodes < 0:
        raise ConfigError(f"--video-episodes must be >= 0, got {args.video_episodes}")
    if args.seed is not None:
        check_seed(args.seed)
    out = Path(args.out)
    if out.exists() and not args.overwrite:
        raise ConfigError(f"{out} exists; choose another --out, or give --overwrite to replace it")
    if out.exists() and not runs.is_exported_agent(out) and any(out.iterdir()):
        raise ConfigError(f"{out} holds files that are not an exported agent; choose another --out")


def package_version() -> str:
    try:
        return version("camal-rl")
    except PackageNotFoundError:
        return "unknown"


def portable_scenario(record: dict) -> dict:
    """The recorded scenario without this machine's paths: a config by its file name (the scenario is
    found again by name where the agent is played)."""
    return {**record, "config": Path(record["config"]).name, "source": Path(record.get("source", "")).name}


def export(run_dir: str | Path, out: str | Path, *, episodes: int = 10, seed: int | None = None,
           video_episodes: int = 1, overwrite: bool = False, device: torch.device | None = None) -> dict:
    """Write ``run_dir``'s agent into ``out``; returns what config.json holds."""
    from safetensors.torch import save_file

    from camal_rl.evaluation import evaluate_run
    from camal_rl.record import record

    run_dir, out = Path(run_dir), Path(out)
    device = device or torch.device("cpu")
    checkpoint = runs.load_checkpoint(run_dir, purpose="camal-export")
    saved = runs.saved_run(checkpoint)
    spec = doom.spec_of_run(checkpoint, saved.env)
    evaluation = evaluate_run(run_dir, episodes=episodes, seed=seed, device=device)
    config = {
        "format": runs.EXPORT_FORMAT, "library": "camal-rl", "env": spec.name,
        "scenario": portable_scenario(checkpoint[runs.SCENARIO_KEY]),
        "obs_shape": list(checkpoint["obs_shape"]), "num_actions": checkpoint["num_actions"],
        "action_names": list(checkpoint["action_names"]), "global_step": int(checkpoint["global_step"]),
        "method": saved.method, "seed": saved.seed, "recipe": saved.args.get("recipe"), "args": saved.args,
        "evaluation": {key: evaluation[key] for key in ("return_mean", "return_std", "episodes", "iou_mean",
                                                        "iou_frames", "zero_map_fraction", "normalised_return",
                                                        "seed")},
    }
    partial = out.with_name(out.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    try:
        weights = {name: tensor.detach().cpu().contiguous() for name, tensor in checkpoint["agent"].items()}
        save_file(weights, partial / runs.EXPORTED_WEIGHTS, metadata={"format": "camal-rl agent",
                                                                       "env": spec.name})
        write_json(partial / runs.EXPORTED_CONFIG, config)
        if video_episodes:
            record([str(run_dir)], partial / REPLAY, episodes=video_episodes, seed=evaluation["seed"],
                   cuda=device.type == "cuda", progress=False)
        write_text_atomic(partial / MODEL_CARD, model_card(config, run_dir.name, spec,
                                                           video=bool(video_episodes)))
        if out.exists() and overwrite:
            shutil.rmtree(out)
        partial.rename(out)
    finally:
        shutil.rmtree(partial, ignore_errors=True)
    return config


def model_card(config: dict, name: str, spec: doom.ScenarioSpec, *, video: bool) -> str:
    """README.md with the Hub's metadata (its ``model-index`` holds the evaluation) and what a reader needs."""
    evaluation, args = config["evaluation"], config["args"]
    reward = f"{evaluation['return_mean']:.2f} +/- {evaluation['return_std']:.2f}"
    method = {"camal": "CAMAL-PPO", "vanilla": "PPO (Vanilla, no CAMAL term)",
              "suppress": "PPO with the suppress-only attention term"}[config["method"]]
    measured = evaluation["iou_mean"] is not None and math.isfinite(evaluation["iou_mean"])
    iou = f"{evaluation['iou_mean']:.3f}" if measured else "not measured (no evaluated frame showed a labelled object)"
    lines = [
        "---",
        "library_name: camal-rl",
        "tags:",
        *(f"- {tag}" for tag in ("reinforcement-learning", "deep-reinforcement-learning", "vizdoom", "doom", "camal",
                                 f"vizdoom-{spec.name}")),
        "model-index:",
        f"- name: {method}",
        "  results:",
        "  - task:",
        "      type: reinforcement-learning",
        "      name: reinforcement-learning",
        "    dataset:",
        f"      name: vizdoom_{spec.name}",
        f"      type: vizdoom_{spec.name}",
        "    metrics:",
        "    - type: mean_reward",
        f"      value: {reward}",
        "      name: mean_reward",
        "      verified: false",
        "---",
        "",
        f"# {method} on ViZDoom {spec.name}",
        "",
        f"A {method} agent trained with [camal-rl](https://arxiv.org/abs/2605.08325) on the ViZDoom scenario "
        f"**{spec.name}** ({spec.description or 'see its spec'}) for {config['global_step']:,} agent steps, "
        f"seed {config['seed']}, recipe `{config['recipe']}`.",
        "",
        "CAMAL (Class Activation Map Attention Learning, arXiv:2605.08325) supervises where a network looks: the "
        "attention of a scalar target (here the critic's value V(s), by "
        f"{args.get('attention', 'its attention method')}) is compared with a segmentation mask from ViZDoom's label "
        "buffer, and `coef * mean(beta - alpha)` (attention outside the mask minus inside it) joins PPO's loss.",
        "",
        "## Evaluation",
        "",
        "| measure | value |",
        "|---|---|",
        f"| return | {reward} over {evaluation['episodes']} seeded episodes (evaluation seed {evaluation['seed']}) |",
        f"| normalised return | {evaluation['normalised_return']:.3f} (0 = a random policy, 1 = the reference "
        f"score {spec.reference_score:g}) |",
        f"| attention IoU with the label mask | {iou} |",
        "",
        "## Play it",
        "",
        "```bash",
        "pip install camal-rl",
        "camal-eval THIS_FOLDER --episodes 20            # return and IoU",
        "camal-record THIS_FOLDER --episodes 3 --out play.mp4  # watch it, its attention over the screen",
        "camal-eval hf:USER/NAME                          # straight from the Hub (pip install 'camal-rl[hub]')",
        "```",
        "",
        "`model.safetensors` holds the weights (data only), `config.json` the scenario, frames, attention method, "
        "recipe and training settings that rebuild the agent"
        + (f", `{REPLAY}` one episode with its attention." if video else "."),
        "",
        "Publish it with the Hub's own tool: `hf upload THIS_FOLDER USER/NAME`.",
        "",
        f"Exported from run `{name}` by camal-rl {package_version()}.",
    ]
    return "\n".join(lines) + "\n"


def cli(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    args = tyro.cli(ExportArgs, args=argv, prog="camal-export")

    def main() -> dict:
        check_export_args(args)
        device = torch.device("cuda" if args.cuda and torch.cuda.is_available() else "cpu")
        return export(args.run, args.out, episodes=args.episodes, seed=args.seed, video_episodes=args.video_episodes,
                      overwrite=args.overwrite, device=device)

    config = run_cli("camal-export", main)
    evaluation = config["evaluation"]
    print(f"camal-export: wrote {args.out}: return {evaluation['return_mean']:.1f} ± {evaluation['return_std']:.1f} "
          f"over {evaluation['episodes']} episodes; publish it with: hf upload {args.out} USER/NAME")
    print(to_json(evaluation, indent=None))


if __name__ == "__main__":
    cli()
