"""Agent steps/s: raw DoomGame loop vs our env (labels -> mask, resize, stack), and 8 envs sync vs async.

Usage: python scripts/bench_env.py [--env basic] [--steps 3000]

The raw loop and ours interleave over 3 rounds, their order alternating (the machine drifts); the
best of each is kept. Figures: docs/performance.md.
"""
import argparse
import time

import benchkit
import numpy as np
import vizdoom as vzd

from camal_rl import doom


def raw_loop(args, spec, rng, labels: bool) -> float:
    game = vzd.DoomGame()
    game.load_config(str(spec.config))
    game.set_window_visible(False)
    game.set_screen_format(vzd.ScreenFormat.GRAY8)  # the format our grey env asks the engine for
    game.set_screen_resolution(getattr(vzd.ScreenResolution, spec.resolution))
    game.set_labels_buffer_enabled(labels)
    game.init()
    buttons = game.get_available_buttons_size()
    actions = [[float(i == j) for j in range(buttons)] for i in range(buttons)]
    game.new_episode()
    start = time.perf_counter()
    for _ in range(args.steps):
        if game.is_episode_finished():
            game.new_episode()
        state = game.get_state()  # read the buffers as an agent would
        _ = state.screen_buffer, (state.labels_buffer if labels else None)
        game.make_action(actions[rng.integers(buttons)], spec.frame_skip)
    elapsed = time.perf_counter() - start
    game.close()
    return args.steps / elapsed


def our_env(args, rng) -> float:
    env = doom.make_env(args.env, seed=0)
    env.reset(seed=0)
    start = time.perf_counter()
    for _ in range(args.steps):
        _, _, terminated, truncated, _ = env.step(int(rng.integers(env.action_space.n)))
        if terminated or truncated:
            env.reset()
    elapsed = time.perf_counter() - start
    env.close()
    return args.steps / elapsed


def vector(args, rng, asynchronous: bool) -> float:
    envs = doom.make_vector_env(args.env, num_envs=args.num_envs, seed=0, asynchronous=asynchronous)
    envs.reset(seed=0)
    iterations = max(1, args.steps // args.num_envs)
    start = time.perf_counter()
    for _ in range(iterations):
        envs.step(rng.integers(envs.single_action_space.n, size=args.num_envs))
    elapsed = time.perf_counter() - start
    envs.close()
    return iterations * args.num_envs / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--env", default="basic")
    parser.add_argument("--steps", type=int, default=3000)
    parser.add_argument("--num-envs", type=int, default=8)
    args = parser.parse_args()
    spec = doom.load_spec(args.env)
    rng = np.random.default_rng(0)
    print(benchkit.machine_line())
    loops = {"raw": lambda: raw_loop(args, spec, rng, labels=True), "ours": lambda: our_env(args, rng)}
    rates = benchkit.interleave(list(loops), 3, lambda name: loops[name]())
    raw_labels, ours = max(rates["raw"]), max(rates["ours"])
    raw_plain = raw_loop(args, spec, rng, labels=False)
    sync = vector(args, rng, False)
    asyn = vector(args, rng, True)
    print(f"scenario {args.env}, {spec.resolution}, frame skip {spec.frame_skip}, {args.steps} agent steps each")
    print(f"{'loop':42s} {'steps/s':>9s} {'vs raw':>7s}")
    print(f"{'raw DoomGame (grey, labels buffer on)':42s} {raw_labels:9.0f} {1.0:7.2f}")
    print(f"{'raw DoomGame (grey, labels buffer off)':42s} {raw_plain:9.0f} {raw_plain / raw_labels:7.2f}")
    print(f"{'ours: mask + 60x80 grey + stack 4':42s} {ours:9.0f} {ours / raw_labels:7.2f}")
    print(f"{f'{args.num_envs} envs SyncVectorEnv':42s} {sync:9.0f} {sync / raw_labels:7.2f}")
    print(f"{f'{args.num_envs} envs AsyncVectorEnv':42s} {asyn:9.0f} {asyn / raw_labels:7.2f}")
    winner = "async" if asyn > sync else "sync"
    print(f"vector winner on this machine: {winner} ({max(asyn, sync) / min(asyn, sync):.2f}x)")


if __name__ == "__main__":
    main()
