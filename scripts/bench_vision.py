"""One training step, Vanilla vs CAMAL, for the six architectures (batch 8, 224x224, CPU),
next to the paper's Table 6 overheads (GPU, mean over its three data sets).

Usage: python scripts/bench_vision.py [--batch 8] [--repeats 3] [--models resnet18 ...]

The two methods' steps interleave, their order alternating each round (the machine drifts); the
best of each is compared. Figures: docs/performance.md.
"""
import argparse
from functools import partial

import benchkit
import torch

from camal_rl.vision.models import create
from camal_rl.vision.train import ClassifyArgs, training_loss

PAPER_TABLE6 = {  # % overhead: BUSI, Oxford-IIIT-Pet, Oxford-Flower
    "resnet18": (1.0, 5.0, 0.2), "convnext_tiny": (51.2, 65.0, 65.0), "efficientnet_b0": (29.8, 72.6, 69.0),
    "vit_b_16": (55.2, 63.1, 62.7), "swin_v2_t": (52.2, 64.2, 64.0), "maxvit_t": (60.5, 69.2, 68.9),
}


def step_seconds(name: str, batch: int, repeats: int) -> dict[str, float]:
    """The best wall-clock seconds of one optimiser step per method, over ``2 * repeats`` rounds."""
    torch.manual_seed(0)
    model = create(name, 10)
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    images = torch.randn(batch, 3, 224, 224)
    masks = (torch.rand(batch, 224, 224) > 0.7).to(torch.uint8)
    labels = torch.randint(0, 10, (batch,))

    def step(method):
        loss, _, _ = training_loss(model, images, masks, labels, ClassifyArgs(model=name, method=method))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    step("vanilla"), step("camal")  # warm-up
    times = benchkit.interleave(["vanilla", "camal"], 2 * repeats, partial(benchkit.seconds, step))
    return {method: min(values) for method, values in times.items()}


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--models", nargs="+", default=list(PAPER_TABLE6), choices=list(PAPER_TABLE6))
    args = parser.parse_args()
    print(benchkit.machine_line())
    print(f"{'model':16s} {'vanilla s':>10s} {'CAMAL s':>9s} {'overhead':>9s}   paper Table 6 (GPU)")
    for name in args.models:
        timings = step_seconds(name, args.batch, args.repeats)
        overhead = 100 * (timings["camal"] / timings["vanilla"] - 1)
        paper = ", ".join(f"{v:.1f}" for v in PAPER_TABLE6[name])
        print(f"{name:16s} {timings['vanilla']:10.3f} {timings['camal']:9.3f} {overhead:8.1f}%   {paper} %", flush=True)
