"""What CAMAL costs in arithmetic: FLOPs of one PPO minibatch step, Vanilla against CAMAL, counted by
torch's FlopCounterMode on the real agent and loss (no timing, so a busy machine does not move it).

    python scripts/camal_flops.py                      # 60x80 grey and the paper's 240x320 colour
    python scripts/camal_flops.py --epochs 6 4         # the bound for recipes with 6 and 4 epochs

CAMAL's extra work is the attention of V(s) (the gradient at the features, through the critic's fc
layer) and its backward. Taken by autograd with its graph kept (the column "full gradient") that is
three matrix products the size of the fc layer's. The trainer names the fc layer and the critic head
(``camal.LinearAbove``): LayerCAM (the CPU default), which needs every location's gradient, then
takes it in closed form with a one-product backward (two products in all); Grad-CAM needs only each
channel's mean gradient, taken through the fc weight's spatial means (products with K columns). The
last columns give the steps/s ratio CAMAL / Vanilla a machine would reach if time followed FLOPs
exactly: (rollout forward + epochs x Vanilla step) / (rollout forward + epochs x CAMAL step), per
agent step. Engines and Python cost no FLOPs, so measured ratios sit above this bound. Figures:
docs/performance.md.
"""

from __future__ import annotations

import argparse

import benchkit
import torch
from torch.utils.flop_counter import FlopCounterMode

from camal_rl import camal, matmul
from camal_rl.agent import Agent, default_attention
from camal_rl.rollout import PAPER_FRAMES


def minibatch_flops(obs_shape: tuple[int, int, int], mask_size: tuple[int, int], batch: int, use_camal: bool,
                    attention: str, through_linear: bool = True) -> tuple[int, int]:
    """(FLOPs of the forward pass alone, FLOPs of a whole minibatch step) for ``batch`` samples;
    ``through_linear=False``: the attention's gradient w.r.t. the features in full, as before."""
    with matmul.torch_products():  # the counter knows torch's products only; oneDNN's do the same maths
        return _counted_flops(obs_shape, mask_size, batch, use_camal, attention, through_linear)


def _counted_flops(obs_shape, mask_size, batch, use_camal, attention, through_linear) -> tuple[int, int]:
    agent = Agent(obs_shape, 3)
    frames = torch.rand(batch, *obs_shape)
    masks = torch.rand(batch, *mask_size) > 0.8
    with FlopCounterMode(display=False) as forward_only:
        with torch.no_grad():
            agent(frames)
    grid_masks = camal.grid_mask(masks, agent.feature_grid)  # once per rollout in the trainer, not per step
    with FlopCounterMode(display=False) as step:
        logits, value, features, fc_layer = agent.forward_with_linear(frames)
        loss = logits.logsumexp(-1).mean() + value.pow(2).mean()  # stands in for PPO's: no FLOPs to speak of
        if use_camal:
            maps = camal.normalize(camal.attention(features, value.flatten(), method=attention, create_graph=True,
                                                   linear=fc_layer if through_linear else None))
            loss = loss + camal.camal_loss(maps, grid_masks)
        loss.backward()
    return forward_only.get_total_flops(), step.get_total_flops()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=64, help="minibatch size (the tuned Basic recipe: 64)")
    parser.add_argument("--epochs", type=int, nargs="+", default=[6, 4], help="update epochs (tuned: 6, Table 8: 4)")
    options = parser.parse_args()
    settings = {  # (observation, mask = engine screen, attention) as camal-train uses them
        "60x80 grey (CPU default), LayerCAM": ((4, 60, 80), (120, 160), default_attention(False)),
        "60x80 grey, Grad-CAM": ((4, 60, 80), (120, 160), "gradcam"),
        "240x320 colour (paper), Grad-CAM": ((3 * 4, *PAPER_FRAMES["obs_size"]), PAPER_FRAMES["obs_size"],
                                             default_attention(True)),
    }
    print(benchkit.machine_line())
    print(f"| frames, attention | Vanilla step (GFLOP) | CAMAL step, full gradient (GFLOP) | CAMAL step (GFLOP) | "
          f"CAMAL / Vanilla FLOPs | {' | '.join(f'steps/s bound, {e} epochs' for e in options.epochs)} |")
    print("|---|---|---|---|---|" + "---|" * len(options.epochs))
    for name, (obs_shape, mask_size, attention) in settings.items():
        forward, vanilla = minibatch_flops(obs_shape, mask_size, options.batch, False, attention)
        _, full_gradient = minibatch_flops(obs_shape, mask_size, options.batch, True, attention, through_linear=False)
        _, with_camal = minibatch_flops(obs_shape, mask_size, options.batch, True, attention)
        bounds = [(forward + epochs * vanilla) / (forward + epochs * with_camal) for epochs in options.epochs]
        print(f"| {name} | {vanilla / 1e9:.3f} | {full_gradient / 1e9:.3f} | {with_camal / 1e9:.3f} | "
              f"{with_camal / vanilla:.3f} | {' | '.join(f'{b:.3f}' for b in bounds)} |")


if __name__ == "__main__":
    main()
