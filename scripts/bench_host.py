"""The learner's host overhead per agent step, with the engines and the network taken out.

The trainer's real rollout and update code runs (``ppo.train``) with two stand-ins: every env is a
``StoredEnv`` that hands back stored frames and masks at once (no ViZDoom), and the agent is a
``TinyAgent`` with the trainer's interface and a network of negligible cost. What is left of an
iteration's rollout time is the plumbing: Python, the env vector, the rollout storage, tensor
conversions, sampling. The stand-in network's forward passes in the rollout are timed and taken
out. Printed in microseconds per agent step (median over iterations after the first), for each
frame size x env count x env mode, for this checkout and, with ``--old-rev``,
for an earlier revision in the same run (machines are noisy; compare within one run).

    python scripts/bench_host.py                      # this checkout only
    python scripts/bench_host.py --old-rev 630491f    # before / after in one run
    python scripts/bench_host.py --old-rev 630491f --rounds 5 --frames 60x80 --num-envs 32 --modes in-process

With ``--rounds N`` each row is measured N times, old and new alternating, so that a machine that
slows down or speeds up during the run moves both trees alike; the table gives the medians over
rounds and the median of the rounds' new / old ratios (with their range).

The last line states the 32-env figure: "... <N> us per agent step ...". Figures:
docs/performance.md, "Host overhead".
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import benchkit
import numpy as np

FRAMES = {"60x80": {"obs_size": [60, 80]}, "240x320": {"paper_frames": True}}


class StoredEnv:
    """DoomEnv's trainer-facing interface; frames and masks come from a small stored ring."""

    def __init__(self, spec, *, seed=0, frame_stack=1, obs_size=(60, 80), grayscale=True, resolution=None, **_):
        height, width = obs_size
        channels = 1 if grayscale else 3
        screen = (240, 320) if (resolution or "RES_160X120") == "RES_320X240" else (120, 160)
        rng = np.random.default_rng(seed)
        self.frames = rng.integers(0, 256, size=(16, channels, height, width), dtype=np.uint8)
        self.masks = (rng.random((16, *screen)) < 0.01).astype(np.uint8)
        self.frame, self.mask = self.frames[0], self.masks[0]
        self.action_names = ["LEFT", "RIGHT", "ATTACK"]
        self.action_space = type("Space", (), {"n": 3})()
        self.t, self.length, self.episode_return = 0, 0, 0.0

    def play(self, action):
        self.t += 1
        self.length += 1
        self.frame, self.mask = self.frames[self.t % 16], self.masks[self.t % 16]
        finished = None
        if self.length == 50:  # an episode ends every 50 steps, as a short Doom episode does
            finished = {"r": self.episode_return, "l": self.length}
            self.length, self.episode_return = 0, 0.0
        return -1.0, finished is not None, False, finished

    def reset(self, seed=None, options=None):
        self.t, self.length = 0, 0
        return {"image": self.frame, "mask": self.mask}, {}

    def episode_state(self):
        return {"t": self.t}

    def replay(self, state):
        self.t = state["t"]

    def close(self):
        pass


def tiny_agent(base: type, camal, network: dict) -> type:
    """The trainer's agent class ``base`` with a network of negligible cost: one pixel, a small fc
    layer and two heads, shaped like the real one (the critic on the fc layer's ReLU), so the update's
    attention takes the same closed-form path. Its act / get_action_and_value are the trainer's own
    (inherited). The rollout's forward passes (no gradients, outside get_value) are timed into
    ``network``, so their cost can be taken out of the figure."""
    import torch
    import torch.nn as nn

    class TinyAgent(base):
        def __init__(self, obs_shape, num_actions):
            nn.Module.__init__(self)
            self.obs_shape, self.num_actions, self.feature_grid = tuple(obs_shape), num_actions, (1, 1)
            self.body, self.fc = nn.Conv2d(obs_shape[0], 4, 1), nn.Linear(4, 4)
            self.actor, self.critic = nn.Linear(4, num_actions), nn.Linear(4, 1)

        def _pass(self, x):
            features = torch.relu(self.body(x[:, :, :1, :1].float() / 255.0))  # one pixel: no real work
            fc_output = self.fc(features.flatten(1))
            hidden = torch.relu(fc_output)
            return self.actor(hidden), self.critic(hidden).squeeze(-1), features, fc_output

        def forward(self, x):
            start = time.perf_counter()
            out = self._pass(x)[:3]
            if not torch.is_grad_enabled():
                network["seconds"] += time.perf_counter() - start
            return out

        def forward_with_linear(self, x):
            logits, value, features, fc_output = self._pass(x)
            if "relu_head" not in getattr(getattr(camal, "LinearAbove", None), "_fields", ()):
                return logits, value, features, None  # older trees: autograd's gradient at the features
            return logits, value, features, camal.LinearAbove(fc_output, self.fc.weight, self.critic.weight[0])

        def get_value(self, x):
            # GAE's bootstrap value comes right after each rollout: close that rollout's network time
            network["per_rollout"].append(network["seconds"])
            with torch.enable_grad():
                value = super().get_value(x)
            network["seconds"] = 0.0
            return value.detach()

    return TinyAgent


def measure(config: dict) -> dict:
    """In the child: the trainer with ``StoredEnv`` engines and a ``tiny_agent`` network; microseconds
    of rollout host work per agent step (the stand-in network's time taken out) and that time."""
    import dataclasses

    import torch
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from camal_rl import camal, doom, ppo

    torch.set_num_threads(1)
    network = {"seconds": 0.0, "per_rollout": []}
    doom.make_env = lambda spec, **kwargs: StoredEnv(spec, **kwargs)
    ppo.Agent = tiny_agent(ppo.Agent, camal, network)
    values = dict(env="basic", seed=1, total_timesteps=config["iterations"] * config["num_envs"] * 128,
                  num_envs=config["num_envs"], num_steps=128, num_minibatches=4, update_epochs=1, camal_coef=0.0,
                  eval_episodes=0, checkpoint_interval=1000, progress=False, cuda=False, threads=1,
                  env_workers=config["workers"], env_groups=1, **config["frames"])
    if "recipe" in {f.name for f in dataclasses.fields(ppo.Args)}:
        values["recipe"] = "paper"  # Table 8 sizes, as older revisions (without recipes) train
    with tempfile.TemporaryDirectory() as root:
        ppo.train(ppo.Args(run_dir=root + "/run", **values))
        events = EventAccumulator(root + "/run", size_guidance={"scalars": 0})
        events.Reload()
        try:
            from camal_rl.runs import Tag

            tag = Tag.ROLLOUT_SECONDS
        except ImportError:  # revisions before runs.py
            tag = "perf/rollout_seconds"
        rollout = [e.value for e in events.Scalars(tag)][1:]
    in_network = network["per_rollout"][1:]
    steps = config["num_envs"] * 128
    host = statistics.median(r - n for r, n in zip(rollout, in_network, strict=True))
    return {"us_per_step": host / steps * 1e6, "network_us_per_step": statistics.median(in_network) / steps * 1e6}


def summarise(row: dict, measured: dict[str, list]) -> dict:
    """A row's figures from its rounds: each tree's median, and the median of the rounds' new / old
    ratios (a round's two trees ran back to back). Any failed round makes the row's figure that error."""
    for name, results in measured.items():
        errors = [result["error"] for result in results if "error" in result]
        if errors:
            row[name] = errors[0]
            continue
        row[name] = statistics.median(result["us_per_step"] for result in results)
        row[f"{name} network"] = statistics.median(result["network_us_per_step"] for result in results)
    if "old" in measured and isinstance(row.get("old"), float) and isinstance(row.get("new"), float):
        ratios = benchkit.round_ratios([new["us_per_step"] for new in measured["new"]],
                                       [old["us_per_step"] for old in measured["old"]])
        row["ratio"], row["ratio range"] = statistics.median(ratios), (ratios[0], ratios[-1])
    return row


def measure_rows(options, trees: dict[str, Path]) -> list[dict]:
    rows = []
    for frames in options.frames:
        for num_envs in options.num_envs:
            for mode in options.modes:
                config = {"frames": FRAMES[frames], "num_envs": num_envs, "iterations": options.iterations,
                          "workers": 0 if mode == "in-process" else num_envs}
                row = {"frames": frames, "envs": num_envs, "mode": mode}

                def one(name: str, config=config, row=row) -> dict:
                    result = benchkit.run_child("bench_host:measure", config, root=trees[name], timeout=900,
                                                env={"OMP_NUM_THREADS": "1"})
                    print(json.dumps({**row, name: result}), flush=True)
                    return result

                rows.append(summarise(row, benchkit.interleave(list(trees), options.rounds, one)))
    return rows


def print_table(rows: list[dict], names: list[str], rounds: int) -> None:
    print("\nHost work per agent step in microseconds, the stand-in network's forward passes taken out "
          "(their time in brackets)" + (f"; medians over {rounds} rounds, trees alternating." if rounds > 1 else "."))
    print("\n| frames | envs | mode | " + " | ".join(f"{n} (us / agent step)" for n in names)
          + (" | new / old |" if "old" in names else " |"))
    print("|---|---|---|" + "---|" * (len(names) + ("old" in names)))
    for row in rows:
        cells = [f"{row[n]:.1f} ({row[n + ' network']:.1f})" if isinstance(row[n], float) else row[n] for n in names]
        ratio = ""
        if "ratio" in row:
            low, high = row["ratio range"]
            ratio = f" | {row['ratio']:.2f}" + (f" ({low:.2f}-{high:.2f})" if rounds > 1 else "")
        elif "old" in names:
            ratio = " | -"
        print(f"| {row['frames']} | {row['envs']} | {row['mode']} | " + " | ".join(cells) + ratio + " |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--old-rev", default=None, help="also measure this git revision (before / after in one run)")
    parser.add_argument("--frames", nargs="+", default=list(FRAMES), choices=list(FRAMES))
    parser.add_argument("--num-envs", nargs="+", type=int, default=[8, 32])
    parser.add_argument("--modes", nargs="+", default=["in-process", "workers"], choices=["in-process", "workers"])
    parser.add_argument("--iterations", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=1, help="measure each row this many times, trees alternating")
    options = parser.parse_args()
    if options.rounds < 1 or options.iterations < 2:
        parser.error(f"--rounds must be >= 1 and --iterations >= 2 (the first iteration is not timed), "
                     f"got {options.rounds} and {options.iterations}")
    print(benchkit.machine_line())
    with tempfile.TemporaryDirectory() as scratch:
        trees = {"new": benchkit.REPO}
        if options.old_rev:
            try:
                trees = {"old": benchkit.old_tree(options.old_rev, Path(scratch)), "new": benchkit.REPO}
            except benchkit.BenchError as error:
                parser.error(f"--old-rev: {error}")
        rows = measure_rows(options, trees)
    names = list(trees)
    print_table(rows, names, options.rounds)
    failed = [f"{row['frames']} x {row['envs']} {row['mode']} ({name}): {row[name]}" for row in rows for name in names
              if not isinstance(row[name], float)]
    if failed:  # a figure that is missing must not pass for a measured one
        sys.exit("bench_host: these measurements failed: " + "; ".join(failed))
    at32 = [row for row in rows if row["envs"] == 32 and isinstance(row["new"], float)]
    if at32:
        best = min(at32, key=lambda row: row["new"])
        print(f"host overhead at 32 envs (best: {best['frames']}, {best['mode']}): {best['new']:.1f} us per agent step"
              + (f", {best['old']:.1f} before ({best['ratio']:.2f}x)" if "ratio" in best else ""))


if __name__ == "__main__":
    main()
