"""Attention-overlay videos of trained agents: ``camal-record RUN_DIR [RUN_DIR2] --episodes N --out FILE.mp4``.

Each frame is the native-resolution screen with the Grad-CAM of V(s) as a heat overlay, the
label mask's outline, and step / return / value captions; one frame per agent step. With two
runs (say CAMAL and Vanilla) both play the same episode seeds side by side. The MP4 is H.264
(yuv420p), which browsers play; ``--gif`` writes a GIF beside it.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import cv2
import imageio.v2 as imageio
import numpy as np
import torch
from tqdm import tqdm

from camal_rl import doom, overlay, ppo
from camal_rl.files import atomic_path

CAPTION_HEIGHT = 34


class Player:
    """One trained agent in its own env, producing annotated frames step by step."""

    def __init__(self, run_dir: str | Path, *, scale: int, device: torch.device):
        run_dir = Path(run_dir)
        checkpoint = ppo.load_checkpoint(run_dir, purpose="camal-record")
        self.args = ppo.Args.from_saved(checkpoint["args"])
        self.label = f"{Path(self.args.env).stem} / {self.args.method} / seed {self.args.seed}"
        self.env = doom.make_env(self.args.env, seed=self.args.seed, render_mode="rgb_array", **ppo.env_kwargs(self.args))
        self.agent = ppo.Agent(self.env.observation_space["image"].shape, int(self.env.action_space.n)).to(device)
        try:
            ppo.restore_agent(self.agent, checkpoint, self.args.env, run_dir / ppo.CHECKPOINT)
        except Exception:
            self.env.close()
            raise
        self.agent.eval()
        self.device, self.scale = device, scale
        self.done = True

    def reset(self, seed: int) -> None:
        self.obs, _ = self.env.reset(seed=seed)
        self.done, self.steps, self.episode_return = False, 0, 0.0
        # actions drawn from a generator of the episode's seed: the same recording every time
        self.generator = torch.Generator(device=self.device).manual_seed(seed)

    def step(self) -> np.ndarray:
        """The annotated frame the agent acts on, then act; a finished player repeats its last frame."""
        if self.done:
            return self.frame
        image = torch.as_tensor(self.obs["image"][None], device=self.device)
        action, value, attention = ppo.act_with_attention(self.agent, image, self.agent.feature_grid,
                                                          method=self.args.attention, generator=self.generator)
        self.frame = self._annotate(attention[0].cpu().numpy(), value.item())
        self.obs, _, terminated, truncated, info = self.env.step(int(action))
        self.steps += 1
        self.episode_return += info["raw_reward"]
        self.done = terminated or truncated
        return self.frame

    def _annotate(self, attention: np.ndarray, value: float) -> np.ndarray:
        frame = overlay.draw_attention(self.env.render(), attention, self.env.screen_mask, scale=self.scale)
        caption = np.zeros((CAPTION_HEIGHT, frame.shape[1], 3), np.uint8)
        cv2.putText(caption, self.label, (4, 13), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (255, 255, 255), 1, cv2.LINE_AA)
        status = f"step {self.steps + 1}  return {self.episode_return:.0f}  V(s) {value:.2f}"
        cv2.putText(caption, status, (4, 28), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (255, 255, 0), 1, cv2.LINE_AA)
        return np.concatenate([caption, frame], axis=0)

    def close(self):
        self.env.close()


def record(run_dirs: list[str], out: str | Path, *, episodes: int = 1, seed: int = 0, fps: int = 10,
           scale: int = 3, gif: bool = False, max_steps: int | None = None, cuda: bool = False,
           progress: bool = True) -> dict:
    """Play ``episodes`` episodes with each run and write the video; returns frame counts."""
    if not 1 <= len(run_dirs) <= 2:
        raise ppo.TrainingError("give one run folder, or two to compare side by side")
    out = Path(out)
    if out.suffix.lower() != ".mp4":
        raise ppo.TrainingError(f"--out must end in .mp4, got {out.name}")
    device = torch.device("cuda" if cuda and torch.cuda.is_available() else "cpu")
    players = []
    try:
        for run_dir in run_dirs:
            players.append(Player(run_dir, scale=scale, device=device))
        out.parent.mkdir(parents=True, exist_ok=True)
        frames_for_gif = []
        steps_played = [0] * len(players)
        frames_written = 0
        with atomic_path(out) as partial:
            writer = imageio.get_writer(partial, fps=fps, codec="libx264", pixelformat="yuv420p",
                                        macro_block_size=2, ffmpeg_log_level="error")
            bar = tqdm(total=episodes, unit="episode", disable=not progress, desc=out.name)
            try:
                for episode in range(episodes):
                    for p in players:
                        p.reset(seed + episode)
                    while not all(p.done for p in players):
                        if max_steps is not None and max(p.steps for p in players) >= max_steps:
                            break
                        frame = np.concatenate([p.step() for p in players], axis=1)
                        writer.append_data(frame)
                        frames_written += 1
                        if gif:
                            frames_for_gif.append(frame[::2, ::2])
                    for i, p in enumerate(players):
                        steps_played[i] += p.steps
                    bar.update(1)
                    bar.set_postfix(returns=" / ".join(f"{p.episode_return:.0f}" for p in players))
            finally:
                writer.close()
                bar.close()
        if gif and frames_for_gif:
            with atomic_path(out.with_suffix(".gif")) as partial:
                imageio.mimsave(partial, frames_for_gif, duration=1 / fps, loop=0)
    finally:
        for p in players:
            p.close()
    return {"frames": frames_written, "steps": steps_played, "out": str(out)}


def cli(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="camal-record", description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", metavar="RUN_DIR", help="one run folder, or two (side by side)")
    parser.add_argument("--episodes", type=int, default=1)
    parser.add_argument("--out", default=None, help="MP4 path (default videos/<env>__<method>.mp4)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the first episode (episode i uses seed + i)")
    parser.add_argument("--fps", type=int, default=10)
    parser.add_argument("--scale", type=int, default=3, help="upscaling of the native screen")
    parser.add_argument("--max-steps", type=int, default=None, help="cut each episode after this many steps")
    parser.add_argument("--gif", action="store_true", help="also write a GIF")
    parser.add_argument("--cuda", action=argparse.BooleanOptionalAction, default=torch.cuda.is_available())
    options = parser.parse_args(argv)
    out = options.out or str(Path("videos") / ("__".join(Path(r).name for r in options.runs) + ".mp4"))
    try:
        result = record(options.runs, out, episodes=options.episodes, seed=options.seed, fps=options.fps,
                        scale=options.scale, gif=options.gif, max_steps=options.max_steps, cuda=options.cuda)
    except (ppo.TrainingError, doom.SpecError) as error:
        print(f"camal-record: error: {error}", file=sys.stderr)
        raise SystemExit(2)
    print(f"wrote {result['out']}: {result['frames']} frames")


if __name__ == "__main__":
    cli()
