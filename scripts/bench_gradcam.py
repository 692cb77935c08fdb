"""Attention extraction per-sample (B backward calls) vs batch-level (one), and one optimiser
step Vanilla vs CAMAL, on CleanRL's Nature CNN (4x84x84) and, with torchvision, ResNet-18; then the
Doom agent's update step with the attention of V(s) taken by autograd at the features and through
the fc layer and critic head (``camal.LinearAbove``, what the trainer does: Grad-CAM's channel means
through the fc weight, LayerCAM's full gradient in closed form), at 60x80 and the paper's frames.

Usage: python scripts/bench_gradcam.py [--batches 32 128 256] [--resnet-batches 32 128] [--repeats 3]
       python scripts/bench_gradcam.py --only-doom [--doom-batch 64] [--doom-attention layercam]

Figures: docs/performance.md, "CAMAL's extra cost per minibatch step" and "Batch-level attention".
"""
import argparse
import statistics
from functools import partial

import benchkit
import torch
import torch.nn.functional as F

from camal_rl import camal
from camal_rl.agent import Agent


def per_sample(features, scores):
    maps = []
    for b in range(scores.shape[0]):  # one backward per sample, as per-sample Grad-CAM does
        (grad,) = torch.autograd.grad(scores[b], features, retain_graph=True)
        weights = grad[b : b + 1].mean(dim=(2, 3), keepdim=True)
        maps.append(F.relu((weights * features[b : b + 1]).mean(1)))
    return torch.cat(maps)


def best_of(fn, repeats):
    return min(benchkit.seconds(fn) for _ in range(repeats))


def nature_model():
    agent = Agent((4, 84, 84), 6)

    def forward(x):
        _, value, features = agent(x)
        return value, features
    return agent, forward, lambda b: torch.randint(0, 255, (b, 4, 84, 84), dtype=torch.uint8), (84, 84)


def resnet_model():
    from camal_rl.vision.models import create

    model = create("resnet18", 10)
    model.eval()  # BatchNorm in eval mode: samples independent (Proposition 1)

    def forward(x):
        logits, features = model(x)
        return logits[:, 0], features
    return model, forward, lambda b: torch.randn(b, 3, 224, 224), (224, 224)


def extraction(name, build, batches, repeats):
    model, forward, make_input, size = build()
    for batch in batches:
        x = make_input(batch)
        scores, features = forward(x)
        t_sample = best_of(partial(per_sample, features, scores), repeats)
        t_batch = best_of(partial(camal.gradcam, features, scores, create_graph=False), repeats)
        check = (per_sample(features, scores) - camal.gradcam(features, scores, create_graph=False)).abs().max().item()
        print(f"{name:12s} B={batch:4d}  per-sample {t_sample * 1e3:9.1f} ms  batch-level {t_batch * 1e3:7.2f} ms  "
              f"ratio {t_sample / t_batch:7.1f}x  (max |diff| {check:.1e})", flush=True)


def optimiser_step(name, build, batch, repeats):
    model, forward, make_input, size = build()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
    x = make_input(batch)
    mask = (torch.rand(batch, *size) > 0.95).float()

    def step(with_camal):
        scores, features = forward(x)
        loss = scores.pow(2).mean()  # stands in for the task loss: same graph, same backward
        if with_camal:
            maps = camal.normalize(camal.gradcam(features, scores))
            loss = loss + camal.camal_loss(maps, mask)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    for warm in (False, True):
        step(warm)
    times = benchkit.interleave([False, True], 2 * repeats, partial(benchkit.seconds, step))
    vanilla, with_camal = min(times[False]), min(times[True])
    print(f"{name:12s} B={batch:4d}  optimiser step vanilla {vanilla * 1e3:8.1f} ms  CAMAL {with_camal * 1e3:8.1f} ms  "
          f"ratio {with_camal / vanilla:5.2f}x", flush=True)


def doom_update_step(frames: str, batch: int, repeats: int, attention: str) -> None:
    """One minibatch step of the Doom agent, with the trainer's optimiser (fused Adam): Vanilla, CAMAL with
    autograd's gradient at the features, CAMAL through the fc layer (the trainer; the same gradients as
    autograd's, tested), and CAMAL through the fc layer without differentiating the channel weights
    (``camal-train --no-create-graph``: the loss then reaches only the layers below the features).
    Kinds interleave, alternating their order each round; best-of and median, CAMAL / Vanilla."""
    from camal_rl.rollout import PAPER_FRAMES

    obs_shape, mask_size = {"60x80": ((4, 60, 80), (120, 160)),
                            "paper": ((12, *PAPER_FRAMES["obs_size"]), PAPER_FRAMES["obs_size"])}[frames]
    torch.manual_seed(0)
    agent = Agent(obs_shape, 3)
    optimizer = torch.optim.Adam(agent.parameters(), lr=1e-4, eps=1e-5, fused=True)
    x = torch.randint(0, 255, (batch, *obs_shape), dtype=torch.uint8)
    grid_masks = camal.grid_mask(torch.rand(batch, *mask_size) > 0.9, agent.feature_grid)

    def step(kind):
        logits, value, features, fc_layer = agent.forward_with_linear(x)
        loss = logits.logsumexp(-1).mean() + value.pow(2).mean()  # stands in for PPO's loss
        if kind != "vanilla":
            maps = camal.attention(features, value, method=attention, create_graph=kind != "no create-graph",
                                   linear=None if kind == "full gradient" else fc_layer)
            loss = loss + camal.camal_loss(camal.normalize(maps), grid_masks)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    kinds = ("vanilla", "full gradient", "through fc", "no create-graph")
    for kind in kinds:
        step(kind)
    # interleaved, so that a slow spell of the machine hits every kind alike
    times = benchkit.interleave(kinds, repeats, partial(benchkit.seconds, step))
    best = {kind: min(t) for kind, t in times.items()}
    median = {kind: statistics.median(t) for kind, t in times.items()}
    print(f"doom {frames:6s} {attention:8s} B={batch:4d}  update step, best of {repeats} (median): vanilla "
          f"{best['vanilla'] * 1e3:.1f} ms ({median['vanilla'] * 1e3:.1f})" + "".join(
              f"  CAMAL {kind} {best[kind] / best['vanilla']:.3f}x ({median[kind] / median['vanilla']:.3f}x)"
              for kind in kinds[1:]), flush=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--batches", type=int, nargs="+", default=[32, 128, 256])
    parser.add_argument("--resnet-batches", type=int, nargs="+", default=[32, 128, 256])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--doom-batch", type=int, default=64, help="the Doom agent's minibatch (tuned Basic: 64)")
    parser.add_argument("--only-doom", action="store_true", help="only the Doom agent's update step")
    parser.add_argument("--doom-attention", nargs="+", default=["gradcam", "layercam"],
                        choices=sorted(camal.ATTENTION_METHODS))
    parser.add_argument("--doom-frames", nargs="+", default=["60x80", "paper"], choices=["60x80", "paper"])
    args = parser.parse_args()
    print(benchkit.machine_line() + f"; {torch.get_num_threads()} torch threads")
    for frames in args.doom_frames:
        for attention in args.doom_attention:
            doom_update_step(frames, args.doom_batch, args.repeats, attention)
    if args.only_doom:
        raise SystemExit(0)
    extraction("nature-cnn", nature_model, args.batches, args.repeats)
    optimiser_step("nature-cnn", nature_model, 256, args.repeats)
    try:
        import torchvision  # noqa: F401
    except ImportError:
        print("torchvision not installed (pip install -e '.[vision]'): ResNet-18 rows skipped")
    else:
        extraction("resnet18", resnet_model, args.resnet_batches, args.repeats)
        optimiser_step("resnet18", resnet_model, 32, args.repeats)
