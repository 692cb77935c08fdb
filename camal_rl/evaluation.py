"""Evaluating a trained agent: return, attention IoU and all-zero maps over seeded episodes.

The trainer's periodic evaluation and ``camal-eval RUN [RUN ...] --episodes N`` are this one
function, so both give the same numbers for the same run and seed. Evaluation draws actions from
its own generator and plays its own envs: it never touches the training streams.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated

import numpy as np
import torch
import tyro

from camal_rl import camal, doom, overlay, vector
from camal_rl.agent import Agent, act_with_attention, value_attention
from camal_rl.errors import ConfigError, run_cli
from camal_rl.files import to_json, write_json
from camal_rl.runs import Tag
from camal_rl.schema import check_seed

# Evaluation envs are seeded apart from the training envs (seed + this), and so is its generator.
EVAL_SEED_OFFSET = 10_000


def evaluate(agent: Agent, envs: vector.DoomVector, *, episodes: int, frame_stack: int, attention: str, seed: int,
             device: torch.device, keep_frames: int = 0) -> dict:
    """``episodes`` episodes spread over the parallel ``envs`` (env ``e`` plays its ``e``-th,
    ``(e+n)``-th, ... share, with its own seeded episodes), actions drawn from a generator seeded
    with ``seed + EVAL_SEED_OFFSET``.

    IoU and the share of all-zero maps are over frames whose mask is non-empty. With
    ``keep_frames`` it also returns that many evenly spaced such frames of env 0's first episode.
    """
    generator = torch.Generator(device=device).manual_seed(seed + EVAL_SEED_OFFSET)
    n = envs.num_envs
    share = np.array([len(range(e, episodes, n)) for e in range(n)])
    played = np.zeros(n, dtype=int)
    returns: list[tuple[int, int, float]] = []
    ious, zero_maps, skipped = [], 0, 0
    candidates: list[tuple[torch.Tensor, torch.Tensor]] = []
    envs.reset()
    newest = torch.as_tensor(envs.frames, device=device)
    stacking = doom.FrameStack(frame_stack, newest.shape[1])
    stacks = stacking.first(newest)
    while (played < share).any():
        active = played < share
        masks = torch.as_tensor(envs.masks, device=device)
        action, _, maps = act_with_attention(agent, stacks, tuple(masks.shape[-2:]), method=attention,
                                             generator=generator)
        has_object = masks.flatten(1).any(1).bool() & torch.as_tensor(active, device=device)
        if has_object.any():
            ious += camal.attention_iou(maps[has_object], masks[has_object]).tolist()
            zero_maps += int((maps[has_object].flatten(1).amax(1) == 0).sum())
        skipped += int((active & ~has_object.cpu().numpy()).sum())
        if keep_frames and played[0] == 0 and bool(has_object[0]):
            candidates.append((stacks[0].clone(), masks[0].clone()))
        envs.step(np.where(active, action.cpu().numpy(), -1))
        for e in np.flatnonzero(envs.episode_starts & active):
            returns.append((e, played[e], float(envs.finished_returns[e])))
            played[e] += 1
        newest = torch.as_tensor(envs.frames, device=device)
        stacks = stacking.push(stacks, newest, torch.as_tensor(envs.episode_starts, device=device))
    values = [r for _, _, r in sorted(returns)]
    result = {
        "return_mean": float(np.mean(values)),
        "return_std": float(np.std(values, ddof=1)) if len(values) > 1 else 0.0,
        "returns": values,
        "episodes": len(values),
        "iou_mean": float(np.mean(ious)) if ious else float("nan"),
        "iou_frames": len(ious),
        "iou_skipped_empty_mask": skipped,
        "zero_map_fraction": zero_maps / len(ious) if ious else float("nan"),
    }
    if keep_frames and candidates:
        picks = np.linspace(0, len(candidates) - 1, min(keep_frames, len(candidates))).round().astype(int)
        result["frames"] = (torch.stack([candidates[i][0] for i in picks]),
                            torch.stack([candidates[i][1] for i in picks]))
    return result


def attention_grid(agent: Agent, stacks: torch.Tensor, masks: torch.Tensor, *, frame_stack: int, attention: str,
                   tile_height: int = 120) -> np.ndarray:
    """Fixed evaluation frames with the agent's current attention and the mask outline, one image."""
    size = tuple(masks.shape[-2:])
    maps = value_attention(agent, stacks, size, method=attention)  # no sampling: the training RNG stays untouched
    channels = stacks.shape[1] // frame_stack
    tiles = []
    for stack, mask, heat in zip(stacks.cpu().numpy(), masks.cpu().numpy(), maps.cpu().numpy(), strict=True):
        newest = overlay.to_rgb(stack[-channels:])
        screen = overlay.fit_height(newest, size[0])  # the frame at the mask's resolution
        tiles.append(overlay.fit_height(overlay.draw_attention(screen, heat, mask), tile_height))
    return overlay.tile(tiles, columns=min(4, len(tiles)))


def attention_stats(maps: torch.Tensor, masks: torch.Tensor) -> dict[str, float | None]:
    """alpha, beta, IoU (over frames with an object), all-zero and empty-mask shares of normalised maps."""
    with torch.no_grad():
        maps = maps.detach()
        alpha, beta = camal.alpha_beta(maps, masks)
        iou = camal.attention_iou(maps, masks)
        has_object = torch.isfinite(iou)
        return {
            Tag.ALPHA: alpha[has_object].mean().item() if has_object.any() else None,
            Tag.BETA: beta.mean().item(),
            Tag.IOU: iou[has_object].mean().item() if has_object.any() else None,
            Tag.ZERO_MAP_FRACTION: (maps.flatten(1).amax(1) == 0).float().mean().item(),
            Tag.EMPTY_MASK_FRACTION: 1.0 - has_object.float().mean().item(),
        }


# ---------------------------------------------------------------------------------------
# camal-eval: play trained runs' checkpoints
# ---------------------------------------------------------------------------------------
def evaluate_run(run_dir: str | Path, *, episodes: int, seed: int | None = None, device: torch.device,
                 num_envs: int | None = None) -> dict:
    """Play ``run_dir``'s checkpoint for ``episodes`` seeded episodes. With the defaults (the run's own
    seed, as many envs as its trainer's evaluation used) the numbers are the trainer's own evaluation."""
    from camal_rl import runs
    from camal_rl.rollout import env_options

    run_dir = Path(run_dir)
    trained = runs.open_trained_agent(run_dir, purpose="camal-eval")
    run, spec = trained.run, trained.spec
    seed = run.seed if seed is None else seed
    num_envs = num_envs or min(episodes, run.num_envs)
    envs = vector.DoomVector(spec, num_envs=min(num_envs, episodes), seed=seed + EVAL_SEED_OFFSET, workers=0,
                             **env_options(run))
    try:
        agent = trained.network((run.frame_stack * envs.frame_shape[0], *envs.frame_shape[1:]), envs.num_actions,
                                device)
        result = evaluate(agent, envs, episodes=episodes, frame_stack=run.frame_stack, attention=run.attention,
                          seed=seed, device=device)
    finally:
        envs.close()
    result.update(run=str(run_dir), env=spec.name, method=run.method, seed=seed, attention=run.attention,
                  global_step=int(trained.checkpoint.get("global_step", 0)),
                  normalised_return=spec.normalize_return(result["return_mean"]))
    return result


def format_table(results: list[dict]) -> str:
    header = ("| run | env | method | seed | step | episodes | return (mean ± std) | normalised "
              "| eval IoU | all-zero maps |\n"
              "|---|---|---|---|---|---|---|---|---|---|")
    rows = [f"| {Path(r['run']).name} | {r['env']} | {r['method']} | {r['seed']} | {r['global_step']:,} "
            f"| {r['episodes']} | "
            f"{r['return_mean']:.1f} ± {r['return_std']:.1f} | {r['normalised_return']:.3f} | "
            + ("-" if not np.isfinite(r["iou_mean"]) else f"{r['iou_mean']:.3f}") + " | "
            + ("-" if not np.isfinite(r["zero_map_fraction"]) else f"{r['zero_map_fraction']:.0%}") + " |"
            for r in results]
    return "\n".join([header, *rows])


@dataclass
class EvalArgs:
    """Play trained runs' checkpoints for seeded episodes: return, normalised return, attention IoU, all-zero maps."""

    runs: Annotated[tyro.conf.Positional[list[str]], tyro.conf.arg(metavar="RUN_DIR [RUN_DIR ...]")]
    """run folders written by camal-train"""
    episodes: int = 10
    """episodes per run"""
    seed: int | None = None
    """evaluation seed (None: each run's own, which repeats the trainer's evaluation)"""
    num_envs: int | None = None
    """parallel envs (None: as the trainer's evaluation, min(episodes, the run's --num-envs))"""
    json: str | None = None
    """also write the results to this JSON file"""
    cuda: bool = field(default_factory=torch.cuda.is_available)
    """play on the GPU (on by default when one is available)"""


def check_eval_args(options: EvalArgs) -> None:
    """Every flag, before a checkpoint is read: a ``ConfigError`` (one line through ``run_cli``) otherwise."""
    if not options.runs:
        raise ConfigError("give at least one run folder: camal-eval RUN_DIR [RUN_DIR ...]")
    if options.episodes < 1:
        raise ConfigError(f"--episodes must be >= 1, got {options.episodes}")
    if options.seed is not None:
        check_seed(options.seed, "seed")
    if options.num_envs is not None and not 1 <= options.num_envs <= doom.MAX_ENGINES:
        raise ConfigError(f"--num-envs must be between 1 and {doom.MAX_ENGINES} (each is an engine process), got "
                          f"{options.num_envs}")


def cli(argv: list[str] | None = None) -> None:
    options = tyro.cli(EvalArgs, args=argv, prog="camal-eval")

    def main() -> list[dict]:
        check_eval_args(options)
        device = torch.device("cuda" if options.cuda and torch.cuda.is_available() else "cpu")
        results = [evaluate_run(run, episodes=options.episodes, seed=options.seed, device=device,
                                num_envs=options.num_envs) for run in options.runs]
        if options.json:
            write_json(options.json, results)
        return results

    results = run_cli("camal-eval", main)
    print(format_table(results))
    print(to_json(results, indent=None))


if __name__ == "__main__":
    cli()
