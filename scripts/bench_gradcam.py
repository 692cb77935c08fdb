"""Attention extraction per-sample (B backward calls) vs batch-level (one), and one optimiser
step Vanilla vs CAMAL, on CleanRL's Nature CNN (4x84x84) and, with torchvision, ResNet-18.

Usage: python scripts/bench_gradcam.py [--batches 32 128 256] [--resnet-batches 32 128] [--repeats 3]
"""
import argparse
import time

import torch
import torch.nn.functional as F

from camal_rl import camal
from camal_rl.ppo import Agent


def per_sample(features, scores):
    maps = []
    for b in range(scores.shape[0]):  # one backward per sample, as per-sample Grad-CAM does
        (grad,) = torch.autograd.grad(scores[b], features, retain_graph=True)
        weights = grad[b : b + 1].mean(dim=(2, 3), keepdim=True)
        maps.append(F.relu((weights * features[b : b + 1]).mean(1)))
    return torch.cat(maps)


def best_of(fn, repeats):
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


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
        t_sample = best_of(lambda: per_sample(features, scores), repeats)
        t_batch = best_of(lambda: camal.gradcam(features, scores, create_graph=False), repeats)
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
    vanilla = min(best_of(lambda: step(False), repeats) for _ in range(2))
    with_camal = min(best_of(lambda: step(True), repeats) for _ in range(2))
    print(f"{name:12s} B={batch:4d}  optimiser step vanilla {vanilla * 1e3:8.1f} ms  CAMAL {with_camal * 1e3:8.1f} ms  "
          f"ratio {with_camal / vanilla:5.2f}x", flush=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--batches", type=int, nargs="+", default=[32, 128, 256])
    parser.add_argument("--resnet-batches", type=int, nargs="+", default=[32, 128, 256])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, CPU")
    extraction("nature-cnn", nature_model, args.batches, args.repeats)
    optimiser_step("nature-cnn", nature_model, 256, args.repeats)
    try:
        import torchvision  # noqa: F401
    except ImportError:
        print("torchvision not installed (pip install -e '.[vision]'): ResNet-18 rows skipped")
    else:
        extraction("resnet18", resnet_model, args.resnet_batches, args.repeats)
        optimiser_step("resnet18", resnet_model, 32, args.repeats)
