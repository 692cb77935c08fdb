"""Training speed: Vanilla vs CAMAL in one run (same seed and settings), and stable-baselines3's
PPO as a peer on the same env, preprocessing and PPO sizes (optional: pip install -e '.[bench]').

Usage: python scripts/bench_train.py [--env basic] [--iterations 4] [--async-envs] [--no-sb3] [--cuda]
"""
import argparse
import tempfile
import time

import gymnasium as gym
import torch

from camal_rl import doom, ppo

parser = argparse.ArgumentParser()
parser.add_argument("--env", default="basic")
parser.add_argument("--iterations", type=int, default=4)
parser.add_argument("--num-envs", type=int, default=8)
parser.add_argument("--num-steps", type=int, default=128)
parser.add_argument("--obs-size", type=int, nargs=2, default=list(ppo.Args.obs_size))
parser.add_argument("--async-envs", action="store_true")
parser.add_argument("--no-sb3", action="store_true")
parser.add_argument("--cuda", action="store_true")
args = parser.parse_args()
total = args.iterations * args.num_envs * args.num_steps
common = dict(env=args.env, seed=1, total_timesteps=total, num_envs=args.num_envs, num_steps=args.num_steps,
              obs_size=tuple(args.obs_size), async_envs=args.async_envs, eval_episodes=0,
              checkpoint_interval=10**9, progress=False, cuda=args.cuda)
device = "cuda" if args.cuda and torch.cuda.is_available() else "cpu"
print(f"{args.env}: {args.iterations} iterations x {args.num_envs} envs x {args.num_steps} steps, "
      f"obs {tuple(args.obs_size)}, {'async' if args.async_envs else 'sync'} envs, {device}, "
      f"{torch.get_num_threads()} torch threads")

results = {}
with tempfile.TemporaryDirectory() as root:
    for method, coef in [("vanilla", 0.0), ("camal", 1.0), ("vanilla (2nd)", 0.0), ("camal (2nd)", 1.0)]:
        summary = ppo.train(ppo.Args(camal_coef=coef, run_dir=f"{root}/{method.split()[0]}{len(results)}", **common))
        results[method] = summary["sps"]
        print(f"  ours {method:14s} {summary['sps']:6d} steps/s", flush=True)

vanilla = max(results["vanilla"], results["vanilla (2nd)"])
camal_sps = max(results["camal"], results["camal (2nd)"])
print(f"CAMAL / Vanilla steps/s: {camal_sps / vanilla:.2f} (target >= 0.90)")

if not args.no_sb3:
    try:
        from stable_baselines3 import PPO
        from stable_baselines3.common.vec_env import DummyVecEnv, SubprocVecEnv
    except ImportError:
        print("stable-baselines3 not installed (pip install -e '.[bench]'): peer comparison skipped")
    else:
        class ImageOnly(gym.ObservationWrapper):
            def __init__(self, env):
                super().__init__(env)
                self.observation_space = env.observation_space["image"]

            def observation(self, observation):
                return observation["image"]

        def factory(i):
            return lambda: ImageOnly(doom.make_env(args.env, seed=1 + i, obs_size=tuple(args.obs_size)))

        factories = [factory(i) for i in range(args.num_envs)]
        # fork, like ours: SB3's default forkserver re-runs this script in every worker
        venv = SubprocVecEnv(factories, start_method="fork") if args.async_envs else DummyVecEnv(factories)
        model = PPO("CnnPolicy", venv, n_steps=args.num_steps, batch_size=args.num_envs * args.num_steps // 4,
                    n_epochs=4, learning_rate=2.5e-4, gamma=0.99, gae_lambda=0.95, clip_range=0.1,
                    ent_coef=0.01, vf_coef=0.5, max_grad_norm=0.5, seed=1, device=device, verbose=0)
        start = time.perf_counter()
        model.learn(total_timesteps=total)
        sb3 = total / (time.perf_counter() - start)
        venv.close()
        print(f"  stable-baselines3 PPO CnnPolicy {sb3:6.0f} steps/s")
        print(f"ours CAMAL / SB3 steps/s: {camal_sps / sb3:.2f} (target >= 3)")
