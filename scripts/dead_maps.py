"""How often does the attention of V(s) die? Frame size x attention method x scenario x seed.

Each run trains PPO with the paper's Table 8 sizes (8 envs x 128 steps, 4 epochs, 4 minibatches)
for ``--iterations`` iterations, CAMAL (lambda 1) with one attention method, or Vanilla. Then the
trained agent's maps are computed on 256 frames of its last rollout; a run counts as DEAD when
its map is all zero on more than 90 % of them (the ReLU'd map is then zero, so the CAMAL term
has no gradient and the run is Vanilla PPO in disguise). Vanilla's training does not depend on
the attention method, so one Vanilla run per (size, scenario, seed) is measured with all four.

    python scripts/dead_maps.py --sizes 60x80 84x84 --seeds 1 2 3 4 5 --out runs/dead_maps.jsonl
    python scripts/dead_maps.py --table --out runs/dead_maps.jsonl      # print the table only

Results are appended one JSON line per run; a rerun skips what is already there. The table:
docs/performance.md, "Dead attention".
"""
from __future__ import annotations

import argparse
import json
import tempfile
from collections import defaultdict
from pathlib import Path

import torch

from camal_rl import agent as agent_module
from camal_rl import camal, doom, ppo, runs

METHODS = list(camal.ATTENTION_METHODS)
SCENARIOS = list(doom.PAPER_SCENARIOS)
SIZES = {"60x80": dict(obs_size=(60, 80)), "84x84": dict(obs_size=(84, 84)),
         "120x160": dict(obs_size=(120, 160)), "240x320": dict(paper_frames=True)}
DEAD_ABOVE = 0.9


def run_key(size: str, scenario: str, seed: int, method: str) -> str:
    return f"{size}|{scenario}|{seed}|{method}"


def measure(size: str, scenario: str, seed: int, method: str, iterations: int, cuda: bool, threads: int = 0) -> dict:
    """Train one run and return the all-zero share of each attention method's maps at the end."""
    captured = {}

    def keep_last_rollout(iteration, rollout):
        captured["obs"], captured["masks"] = rollout["obs"], rollout["masks"]

    with tempfile.TemporaryDirectory() as root:
        args = ppo.Args(env=scenario, seed=seed, recipe="paper", total_timesteps=iterations * 8 * 128,
                        camal_coef=0.0 if method == "vanilla" else 1.0,
                        attention="gradcam" if method == "vanilla" else method, eval_episodes=0, progress=False,
                        checkpoint_interval=10**9, cuda=cuda, run_dir=f"{root}/run", threads=threads, **SIZES[size])
        ppo.train(args, on_rollout=keep_last_rollout)
        checkpoint = runs.load_checkpoint(Path(root) / "run")
    device = torch.device("cuda" if cuda and torch.cuda.is_available() else "cpu")
    agent = agent_module.Agent(tuple(checkpoint["obs_shape"]), checkpoint["num_actions"]).to(device)
    agent.load_state_dict(checkpoint["agent"])
    obs = captured["obs"].flatten(0, 1)
    masks = captured["masks"].flatten(0, 1)
    sample = torch.randperm(obs.shape[0], generator=torch.Generator().manual_seed(seed))[:256].to(obs.device)
    zero, maps = {}, {}
    for attention in (METHODS if method == "vanilla" else [method]):
        maps[attention] = agent_module.value_attention(agent, obs[sample].to(device), agent.feature_grid,
                                                       method=attention)
        zero[attention] = (maps[attention].flatten(1).amax(1) == 0).float().mean().item()
    iou = camal.attention_iou(next(iter(maps.values())), masks[sample].to(device))  # the run's own (Vanilla: gradcam)
    return {"size": size, "scenario": scenario, "seed": seed, "method": method, "iterations": iterations,
            "zero_fraction": zero, "iou": float(iou.nanmean()) if torch.isfinite(iou).any() else None}


def _cell(camal_counts, vanilla_counts) -> str:
    """'dead/runs · dead/runs', with '-' for a side that was not run."""
    return " · ".join(f"{dead}/{runs}" if runs else "-" for dead, runs in (camal_counts, vanilla_counts))


def table(records: list[dict]) -> str:
    """Rows (size, method) x scenario: dead CAMAL runs / runs, dead Vanilla runs / runs."""
    camal_dead = defaultdict(lambda: [0, 0])
    vanilla_dead = defaultdict(lambda: [0, 0])
    for record in records:
        for attention, zero in record["zero_fraction"].items():
            target = vanilla_dead if record["method"] == "vanilla" else camal_dead
            cell = target[(record["size"], attention, record["scenario"])]
            cell[0] += zero > DEAD_ABOVE
            cell[1] += 1
    sizes = [s for s in SIZES if any(r["size"] == s for r in records)]
    iterations = sorted({r["iterations"] for r in records})
    lines = [f"Dead runs (map all zero on > {DEAD_ABOVE:.0%} of 256 last-rollout frames after {iterations} "
             "iterations), CAMAL / Vanilla, dead of runs ('-': not run):", "",
             "| frames | attention | " + " | ".join(SCENARIOS) + " | all |",
             "|---|---|" + "---|" * (len(SCENARIOS) + 1)]
    for size in sizes:
        for attention in METHODS:
            cells, total_c, total_v = [], [0, 0], [0, 0]
            for scenario in SCENARIOS:
                c, v = camal_dead.get((size, attention, scenario)), vanilla_dead.get((size, attention, scenario))
                if not c and not v:
                    cells.append("-")
                    continue
                c, v = c or [0, 0], v or [0, 0]
                total_c = [total_c[0] + c[0], total_c[1] + c[1]]
                total_v = [total_v[0] + v[0], total_v[1] + v[1]]
                cells.append(_cell(c, v))
            if any(cell != "-" for cell in cells):
                lines.append(f"| {size} | {attention} | " + " | ".join(cells) + f" | {_cell(total_c, total_v)} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", nargs="+", default=["60x80", "84x84", "120x160"], choices=list(SIZES))
    parser.add_argument("--methods", nargs="+", default=METHODS + ["vanilla"], choices=METHODS + ["vanilla"])
    parser.add_argument("--scenarios", nargs="+", default=SCENARIOS)
    parser.add_argument("--seeds", nargs="+", type=int, default=[1, 2, 3, 4, 5])
    parser.add_argument("--iterations", type=int, default=6)
    parser.add_argument("--out", default="runs/dead_maps.jsonl")
    parser.add_argument("--cuda", action="store_true")
    parser.add_argument("--threads", type=int, default=0, help="torch threads per run (0: all cores)")
    parser.add_argument("--table", action="store_true", help="only print the table of what --out holds")
    options = parser.parse_args()
    out = Path(options.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    records = [json.loads(line) for line in out.read_text().splitlines()] if out.exists() else []
    if not options.table:
        done = {run_key(r["size"], r["scenario"], r["seed"], r["method"]) for r in records}
        todo = [(size, scenario, seed, method) for size in options.sizes for seed in options.seeds
                for scenario in options.scenarios for method in options.methods
                if run_key(size, scenario, seed, method) not in done]
        for index, (size, scenario, seed, method) in enumerate(todo, 1):
            record = measure(size, scenario, seed, method, options.iterations, options.cuda, options.threads)
            with open(out, "a") as stream:
                stream.write(json.dumps(record) + "\n")
            records.append(record)
            zero = ", ".join(f"{k} {v:.2f}" for k, v in record["zero_fraction"].items())
            print(f"[{index}/{len(todo)}] {size} {scenario} seed {seed} {method}: all-zero share {zero}", flush=True)
    print(table(records))


if __name__ == "__main__":
    main()
