"""The fc layer's matrix products through torch's default (MKL on x86) against oneDNN (``camal_rl.matmul``),
alone and inside the trainer's minibatch step, Vanilla and CAMAL, in alternating rounds.

    python scripts/bench_matmul.py                 # minibatch 64 (DefendCenter's and Basic's recipes)
    python scripts/bench_matmul.py --batch 64 128  # and DefendLine's

Prints, per minibatch size: microseconds and GFLOP/s of each of the step's five fc-size products
(the layer's forward, its two backward products, and the exact gradient of V(s) with its backward,
which CAMAL adds), then ms per minibatch step of each method with each library and CAMAL / Vanilla,
then ms to pull a rollout's masks back to the feature grid (``camal.grid_mask``, once per iteration
with CAMAL): all at once with torch's products, as before, against cache-sized chunks through oneDNN.
Medians over rounds; ratios are taken within rounds. Figures: docs/performance.md ("Matrix products").
"""

from __future__ import annotations

import argparse
import contextlib
import time

import benchkit
import torch
from camal_step_profile import make_step, method_args, step_ms

from camal_rl import camal, matmul

LIBRARIES = ("torch default", "oneDNN")


def fc_products(batch: int, inputs: int = 1536, outputs: int = 512) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """The step's fc-size products as (left, right) operands, with the layouts the step gives them."""
    torch.manual_seed(0)
    x, weight = torch.randn(batch, inputs), torch.randn(outputs, inputs)
    grad_out, grad_features = torch.randn(batch, outputs), torch.randn(batch, inputs)
    gate = (torch.randn(batch, outputs) > 0).float()
    return {"forward: x @ W^T": (x, weight.T), "backward to x: dy @ W": (grad_out, weight),
            "backward to W: dy^T @ x": (grad_out.T, x),
            "CAMAL, gradient of V(s): (gate * head) @ W": (gate, weight),
            "CAMAL, its backward: gate^T @ H": (gate.T, grad_features)}


def product_us(library: str, left: torch.Tensor, right: torch.Tensor, repeats: int) -> float:
    multiply = matmul.product if library == "oneDNN" else torch.mm
    for _ in range(5):
        multiply(left, right)
    start = time.perf_counter()
    for _ in range(repeats):
        multiply(left, right)
    return (time.perf_counter() - start) / repeats * 1e6


def with_library(library: str, measure):
    """``measure()`` with camal_rl.matmul on oneDNN, or on torch's default products."""
    with contextlib.nullcontext() if library == "oneDNN" else matmul.torch_products():
        return measure()


def report(batch: int, rounds: int, repeats: int, steps: int) -> None:
    print(f"\nminibatch {batch}: the fc layer's products (1536 -> 512), us (GFLOP/s), medians of {rounds} rounds")
    print("| product | torch default | oneDNN | speed-up |")
    print("|---|---|---|---|")
    for name, (left, right) in fc_products(batch).items():
        flop = 2 * left.shape[0] * left.shape[1] * right.shape[1]
        times = benchkit.interleave(LIBRARIES, rounds,
                                    lambda library, left=left, right=right: product_us(library, left, right, repeats))
        default, onednn = (benchkit.median(times[library]) for library in LIBRARIES)
        speedup = benchkit.ratio_summary(benchkit.round_ratios(times["torch default"], times["oneDNN"]), "x")
        print(f"| {name} | {default:,.0f} ({flop / default / 1e3:.0f}) | {onednn:,.0f} ({flop / onednn / 1e3:.0f}) "
              f"| {speedup} |")

    def measure_step(kind: tuple[str, str]) -> float:
        agent, optimizer, minibatch = make_step(batch, (4, 60, 80))  # the same fresh agent for every kind
        return with_library(kind[0], lambda: step_ms(agent, optimizer, minibatch, method_args(kind[1]), steps))

    kinds = [(library, method) for library in LIBRARIES for method in ("vanilla", "camal")]
    times = benchkit.interleave(kinds, rounds, measure_step)
    print(f"\nminibatch {batch}: the trainer's minibatch step (60x80 grey, LayerCAM), ms, medians of {rounds} rounds")
    print("| products | Vanilla ms | CAMAL ms | CAMAL / Vanilla |")
    print("|---|---|---|---|")
    for library in LIBRARIES:
        ratio = benchkit.round_ratios(times[(library, "camal")], times[(library, "vanilla")])
        print(f"| {library} | {benchkit.median(times[(library, 'vanilla')]):.2f} | "
              f"{benchkit.median(times[(library, 'camal')]):.2f} | {benchkit.ratio_summary(ratio, 'x')} |")
    for method in ("vanilla", "camal"):
        gain = benchkit.round_ratios(times[("torch default", method)], times[("oneDNN", method)])
        print(f"{method}: oneDNN's step is {benchkit.ratio_summary(gain, 'x')} as fast as the default's")


def report_masks(masks: int, rounds: int) -> None:
    mask = torch.zeros(masks, 120, 160, dtype=torch.uint8)
    mask[: masks // 2, 40:60, 50:70] = 1
    ways = {"all at once, torch default": (mask.shape[0], "torch default"),
            f"chunks of {camal.CPU_MASK_CHUNK}, oneDNN": (camal.CPU_MASK_CHUNK, "oneDNN")}

    def pull_back_ms(way: str) -> float:
        chunk, library = ways[way]
        return with_library(library, lambda: 1e3 * benchkit.seconds(lambda: camal.grid_mask(mask, (4, 6), chunk=chunk)))

    times = benchkit.interleave(list(ways), rounds, pull_back_ms)
    old, new = list(ways)
    print(f"\n{masks} masks of 120x160 pulled back to a 4x6 grid (camal.grid_mask), ms, medians of {rounds} rounds: "
          + ", ".join(f"{way} {benchkit.median(times[way]):.1f}" for way in ways)
          + f"; speed-up {benchkit.ratio_summary(benchkit.round_ratios(times[old], times[new]), 'x')}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, nargs="+", default=[64], help="minibatch sizes")
    parser.add_argument("--rounds", type=int, default=5, help="rounds (order alternating)")
    parser.add_argument("--repeats", type=int, default=200, help="products timed per round")
    parser.add_argument("--steps", type=int, default=40, help="minibatch steps timed per round")
    parser.add_argument("--masks", type=int, default=2048, help="a rollout's masks (DefendCenter's: 16 x 128)")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: all cores, as the trainer)")
    options = parser.parse_args()
    if min(options.batch) < 1 or min(options.rounds, options.repeats, options.steps, options.masks) < 1:
        parser.error("--batch, --rounds, --repeats, --steps and --masks must be at least 1")
    if not matmul.onednn_available():
        parser.exit(2, "bench_matmul: this torch build has no oneDNN linear (mkldnn._linear_pointwise); "
                       "use an x86-64 build of torch\n")
    if options.threads:
        torch.set_num_threads(options.threads)
    print(benchkit.machine_line())
    for batch in options.batch:
        report(batch, options.rounds, options.repeats, options.steps)
    report_masks(options.masks, options.rounds)


if __name__ == "__main__":
    main()
