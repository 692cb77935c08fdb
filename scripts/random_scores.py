"""Measure each scenario's random-policy return (the specs' ``random_score``).

Usage: python scripts/random_scores.py [--episodes 20] [scenario ...]
"""
import argparse

from camal_rl.doom import available_scenarios, random_policy_score


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("scenarios", nargs="*")
    parser.add_argument("--episodes", type=int, default=20)
    args = parser.parse_args()
    for name in args.scenarios or available_scenarios():
        print(f"{name:20s} {random_policy_score(name, episodes=args.episodes):10.3f}", flush=True)


if __name__ == "__main__":
    main()
