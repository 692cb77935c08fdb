"""Where CAMAL's extra time in a minibatch step goes, against its FLOPs: Vanilla and CAMAL steps of the
real agent and loss (``ppo.update``), timed in alternating rounds and then profiled op by op.

    python scripts/camal_step_profile.py                   # minibatch 64 (DefendCenter's and Basic's recipes)
    python scripts/camal_step_profile.py --batch 128 256   # DefendLine's, Table 8's

For each minibatch size it prints the wall-clock ms per step of each method and their ratio (median
of the ratios within rounds), the FLOP ratio (``camal_flops.py``), and each method's self-CPU time
per step in four classes of torch op (medians over profiled rounds, the methods alternating): the
matrix products with the fc layer's size (the exact gradient of V(s) at the features and its
backward add two per step with LayerCAM), elementwise passes over tensors the fc weight's size,
the convolutions, and everything else: the attention map, its normalisation, the contrast sum and
their backward (many small calls), Adam (its fused step records no shapes) and views. The products
cost what their FLOPs say; the small calls cost per call, which a FLOP count cannot see.
Figures: docs/performance.md ("Where CAMAL's extra time goes").
"""

from __future__ import annotations

import argparse
import time
from collections import defaultdict

import benchkit
import torch
from torch.profiler import profile

from camal_rl import camal, ppo
from camal_rl.agent import Agent

CLASSES = ("fc-size products", "fc-size elementwise passes", "convolutions", "small ops and the rest")


def make_step(batch: int, obs_shape: tuple[int, int, int], seed: int = 0):
    """The agent, its optimiser and one minibatch whose masks are half empty (as in Doom rollouts)."""
    torch.manual_seed(seed)
    agent = Agent(obs_shape, 3)
    optimizer = torch.optim.Adam(agent.parameters(), lr=1e-5, eps=1e-5, fused=True)
    masks = torch.zeros(batch, 120, 160, dtype=torch.uint8)
    masks[: batch // 2, 40:60, 50:70] = 1
    minibatch = ppo.Minibatch(torch.randint(0, 256, (batch, *obs_shape), dtype=torch.uint8),
                              torch.randint(0, 3, (batch,)), torch.full((batch,), -1.1), torch.randn(batch),
                              torch.randn(batch), torch.randn(batch), camal.grid_mask(masks, agent.feature_grid))
    return agent, optimizer, minibatch


def method_args(method: str) -> ppo.Args:
    return ppo.Args(camal_coef=1.0 if method == "camal" else 0.0, attention="layercam", clip_coef=0.2)


def step_ms(agent, optimizer, minibatch, args: ppo.Args, steps: int) -> float:
    for _ in range(3):  # warm: kernel choice, allocator
        ppo.update(agent, optimizer, minibatch, args)
    start = time.perf_counter()
    for _ in range(steps):
        ppo.update(agent, optimizer, minibatch, args)["loss"].item()  # the trainer reads the loss each step
    return (time.perf_counter() - start) / steps * 1e3


# Ops that move no data (a view of the fc weight is not a pass over it).
VIEWS = {"aten::t", "aten::transpose", "aten::as_strided", "aten::detach", "aten::view", "aten::reshape",
         "aten::_reshape_alias", "aten::expand", "aten::permute", "aten::unsqueeze", "aten::squeeze", "aten::linear",
         "aten::matmul", "aten::numpy_T", "aten::alias", "detach"}


PRODUCTS = {"aten::mm", "aten::addmm", "aten::bmm", "mkldnn::_linear_pointwise"}  # the last: camal_rl.matmul


def classify(name: str, shapes: list, fc_numel: int, flat: int) -> str:
    dims = [shape for shape in shapes if isinstance(shape, list) and shape]
    if name in VIEWS:
        return CLASSES[3]
    if "convolution" in name:
        return CLASSES[2]
    if name in PRODUCTS and any(flat in shape for shape in dims):
        return CLASSES[0]
    if any(torch.Size(shape).numel() == fc_numel for shape in dims):
        return CLASSES[1]
    return CLASSES[3]


def profiled_classes(agent, optimizer, minibatch, args: ppo.Args, steps: int) -> dict[str, float]:
    """Self-CPU microseconds per step in each class, from one profiled round of ``steps`` steps."""
    fc_weight = agent.fc[1].weight
    for _ in range(3):
        ppo.update(agent, optimizer, minibatch, args)
    with profile(record_shapes=True) as recorded:
        for _ in range(steps):
            ppo.update(agent, optimizer, minibatch, args)["loss"].item()
    totals = defaultdict(float)
    for event in recorded.key_averages(group_by_input_shape=True):
        kind = classify(event.key, event.input_shapes, fc_weight.numel(), fc_weight.shape[1])
        totals[kind] += event.self_cpu_time_total
    return {name: totals[name] / steps for name in CLASSES}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, nargs="+", default=[64], help="minibatch sizes")
    parser.add_argument("--rounds", type=int, default=7, help="timed rounds per method (alternating order)")
    parser.add_argument("--steps", type=int, default=60, help="minibatch steps per timed round and per profile")
    parser.add_argument("--profile-rounds", type=int, default=3, help="profiled rounds per method (alternating order)")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: all cores, as the trainer)")
    options = parser.parse_args()
    if min(options.batch) < 2 or min(options.rounds, options.steps, options.profile_rounds) < 1:
        parser.error("--batch must be at least 2, --rounds, --steps and --profile-rounds at least 1")

    if options.threads:
        torch.set_num_threads(options.threads)
    print(benchkit.machine_line())
    for batch in options.batch:
        report(batch, options.rounds, options.steps, options.profile_rounds)


def report(batch: int, rounds: int, steps: int, profile_rounds: int,
           obs_shape: tuple[int, int, int] = (4, 60, 80)) -> None:
    import camal_flops  # a sibling script: the FLOP count of the same step

    agent, optimizer, minibatch = make_step(batch, obs_shape)
    times = benchkit.interleave(("vanilla", "camal"), rounds,
                                lambda method: step_ms(agent, optimizer, minibatch, method_args(method), steps))
    ratios = benchkit.round_ratios(times["camal"], times["vanilla"])
    flops = {use: camal_flops.minibatch_flops(obs_shape, (120, 160), batch, use, "layercam")[1]
             for use in (False, True)}
    profiled = benchkit.interleave(("vanilla", "camal"), profile_rounds,
                                   lambda method: profiled_classes(agent, optimizer, minibatch, method_args(method),
                                                                   steps))
    classes = {method: {name: benchkit.median([round_[name] for round_ in profiled[method]]) for name in CLASSES}
               for method in profiled}
    vanilla_total, camal_total = (sum(classes[method].values()) for method in ("vanilla", "camal"))
    print(f"\nminibatch {batch}, 60x80 grey, LayerCAM: Vanilla {benchkit.median(times['vanilla']):.2f} ms, "
          f"CAMAL {benchkit.median(times['camal']):.2f} ms a step; CAMAL / Vanilla time "
          f"{benchkit.ratio_summary(ratios, 'x')}, FLOPs {flops[True] / flops[False]:.3f}x")
    print(f"self-CPU us per step, medians of {profile_rounds} profiled rounds per method:")
    print("| op class | Vanilla us/step | CAMAL us/step | CAMAL's extra us | extra / Vanilla step |")
    print("|---|---|---|---|---|")
    rows = [(name, classes["vanilla"][name], classes["camal"][name]) for name in CLASSES]
    for name, vanilla, with_camal in [*rows, ("all (profiled self-CPU)", vanilla_total, camal_total)]:
        print(f"| {name} | {vanilla:,.0f} | {with_camal:,.0f} | {with_camal - vanilla:,.0f} | "
              f"{(with_camal - vanilla) / vanilla_total:.3f} |")

if __name__ == "__main__":
    main()
