"""Attention-overlay videos of trained agents: ``camal-record RUN_DIR [RUN_DIR2] --episodes N --out FILE.mp4``.

Each frame is the native-resolution screen with the attention of V(s) (the run's own method) as
a heat overlay, the label mask's outline, and step / return / value captions; one frame per agent
step. With two
runs (say CAMAL and Vanilla) both play the same episode seeds side by side, their actions drawn
from a generator seeded by the episode, so a recording is the same every time. The MP4 is H.264
(yuv420p), which browsers play; ``--gif`` writes a GIF beside it. ``--out x.avi`` writes Motion
JPEG with OpenCV alone (machines without imageio-ffmpeg); ``transcode`` turns it into H.264.

``camal-record --panel CAMAL_RUN VANILLA_RUN [CAMAL_RUN VANILLA_RUN ...] --out panel.png``
draws a Figure-11-style panel: per pair, one frame chosen by a rule, its mask, and both agents'
attention on it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated

import cv2
import imageio.v2 as imageio
import numpy as np
import torch
import tyro
from tqdm import tqdm

from camal_rl import camal, doom, overlay, runs
from camal_rl.agent import act_with_attention, value_attention
from camal_rl.errors import ConfigError, run_cli
from camal_rl.files import atomic_path, to_json
from camal_rl.rollout import env_options
from camal_rl.schema import SEED_LIMIT, check_seed

CAPTION_HEIGHT = 34


class Player:
    """One trained agent in its own env, producing annotated frames step by step."""

    def __init__(self, run_dir: str | Path, *, scale: int, device: torch.device):
        trained = runs.open_trained_agent(Path(run_dir), purpose="camal-record")
        self.run, self.spec = trained.run, trained.spec
        self.label = f"{self.spec.name} / {self.run.method} / seed {self.run.seed}"
        self.env = doom.make_env(self.spec, seed=self.run.seed, render_mode="rgb_array", **env_options(self.run))
        try:
            self.agent = trained.network(self.env.observation_space["image"].shape, self.env.action_space.n, device)
        except Exception:
            self.env.close()
            raise
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
        action, value, attention = act_with_attention(self.agent, image, self.agent.feature_grid,
                                                      method=self.run.attention, generator=self.generator)
        self.frame = self._annotate(attention[0].cpu().numpy(), value.item())
        self.obs, _, terminated, truncated, info = self.env.step(int(action))
        self.steps += 1
        self.episode_return += info["raw_reward"]
        self.done = terminated or truncated
        return self.frame

    def _annotate(self, attention: np.ndarray, value: float) -> np.ndarray:
        frame = overlay.draw_attention(self.env.render(), attention, self.env.mask, scale=self.scale)
        caption = np.zeros((CAPTION_HEIGHT, frame.shape[1], 3), np.uint8)
        cv2.putText(caption, self.label, (4, 13), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (255, 255, 255), 1, cv2.LINE_AA)
        status = f"step {self.steps + 1}  return {self.episode_return:.0f}  V(s) {value:.2f}"
        cv2.putText(caption, status, (4, 28), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (255, 255, 0), 1, cv2.LINE_AA)
        return np.concatenate([caption, frame], axis=0)

    def close(self):
        self.env.close()


def check_comparable(players: list[Player]) -> None:
    """Side by side only what can be shown honestly: one scenario, one screen size."""
    if len(players) < 2:
        return
    first, second = players
    if first.spec.name != second.spec.name:
        raise ConfigError(f"{first.label} and {second.label} play different scenarios ({first.spec.name}, "
                          f"{second.spec.name}); a side-by-side needs the same episodes: record them one at a time")
    if first.env.screen_size != second.env.screen_size:
        raise ConfigError(f"{first.label} and {second.label} have different screens ({first.env.screen_size} vs "
                          f"{second.env.screen_size}, e.g. one trained with --paper-frames); pair runs of one setting "
                          f"or record them one at a time")


class _MotionJpegWriter:
    """AVI with Motion JPEG through OpenCV: needs no ffmpeg (transcode to H.264 elsewhere)."""

    def __init__(self, path: Path, fps: int):
        self.path, self.fps, self.writer = path, fps, None

    def append_data(self, frame: np.ndarray) -> None:
        if self.writer is None:
            height, width = frame.shape[:2]
            self.writer = cv2.VideoWriter(str(self.path), cv2.VideoWriter_fourcc(*"MJPG"), self.fps, (width, height))
            self.writer.set(cv2.VIDEOWRITER_PROP_QUALITY, 90)
        self.writer.write(np.ascontiguousarray(frame[..., ::-1]))

    def close(self) -> None:
        if self.writer is not None:
            self.writer.release()


def _video_writer(path: Path, fps: int):
    if path.suffix.lower() == ".avi":
        return _MotionJpegWriter(path, fps)
    return imageio.get_writer(path, fps=fps, codec="libx264", pixelformat="yuv420p", macro_block_size=2,
                              ffmpeg_log_level="error")


def transcode(source: str | Path, out: str | Path, *, crf: int = 28) -> Path:
    """Any video ffmpeg reads (a Motion JPEG AVI) -> H.264 MP4 (yuv420p), atomically."""
    import subprocess

    import imageio_ffmpeg

    out = Path(out)
    with atomic_path(out) as partial:
        subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-loglevel", "error", "-y", "-i", str(source),
                        "-c:v", "libx264", "-pix_fmt", "yuv420p", "-crf", str(crf), "-movflags", "+faststart",
                        str(partial)], check=True)
    return out


def record(run_dirs: list[str], out: str | Path, *, episodes: int = 1, seed: int = 0, fps: int = 10,
           scale: int = 3, gif: bool = False, max_steps: int | None = None, max_frames: int | None = None,
           cuda: bool = False, progress: bool = True) -> dict:
    """Play ``episodes`` episodes with each run and write the video; returns frame counts.

    ``max_steps`` cuts each episode, ``max_frames`` the whole video (fps x seconds)."""
    if not 1 <= len(run_dirs) <= 2:
        raise ConfigError("give one run folder, or two to compare side by side")
    out = Path(out)
    check_out(out, panel=False)
    device = torch.device("cuda" if cuda and torch.cuda.is_available() else "cpu")
    players = []
    try:
        for run_dir in run_dirs:
            players.append(Player(run_dir, scale=scale, device=device))
        check_comparable(players)
        out.parent.mkdir(parents=True, exist_ok=True)
        frames_for_gif = []
        steps_played = [0] * len(players)
        frames_written = 0
        with atomic_path(out) as partial:
            writer = _video_writer(partial, fps)
            bar = tqdm(total=episodes, unit="episode", disable=not progress, desc=out.name)
            try:
                for episode in range(episodes):
                    if max_frames is not None and frames_written >= max_frames:
                        break
                    for p in players:
                        p.reset(seed + episode)
                    while not all(p.done for p in players):
                        if max_steps is not None and max(p.steps for p in players) >= max_steps:
                            break
                        if max_frames is not None and frames_written >= max_frames:
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


PANEL_MAX_MASK_SHARE = 0.25


def panel_frame(player: Player, seed: int, max_steps: int = 300) -> dict:
    """The frame of the run's episode ``seed`` whose label mask is largest (ties: the earliest) while
    covering at most a quarter of the screen: the labelled object in plain view, not a fireball
    bursting in the player's face. A rule, so the same runs always give the same panel."""
    player.reset(seed)
    best = None
    while not player.done and player.steps < max_steps:
        area = int(player.env.mask.sum())
        in_view = 0 < area <= PANEL_MAX_MASK_SHARE * player.env.mask.size
        if in_view and (best is None or area > best["area"]):
            best = {"area": area, "image": player.obs["image"].copy(), "screen": player.env.render(),
                    "mask": player.env.mask.copy(), "step": player.steps}
        player.step()
    if best is None:
        raise ConfigError(f"{player.label}: no frame of episode {seed} shows a labelled object")
    return best


VIDEO_SUFFIXES = {".mp4": "H.264", ".avi": "Motion JPEG"}
PICTURE_SUFFIXES = (".png", ".jpg", ".jpeg", ".pdf", ".svg")


def check_out(out: str | Path, *, panel: bool) -> None:
    """A video is .mp4 or .avi, a panel a picture: the suffix chooses the writer."""
    suffix = Path(out).suffix.lower()
    if panel and suffix not in PICTURE_SUFFIXES:
        raise ConfigError(f"--panel draws a picture: --out must end in {', '.join(PICTURE_SUFFIXES)}, got "
                          f"{Path(out).name}")
    if not panel and suffix not in VIDEO_SUFFIXES:
        raise ConfigError(f"--out must end in .mp4 (H.264) or .avi (Motion JPEG), got {Path(out).name}")


def attention_panel(pairs: list[tuple[str, str]], out: str | Path, *, seed: int = 0, cuda: bool = False) -> list[dict]:
    """Figure-11-style panel: per (CAMAL run, Vanilla run) pair one row with the frame, its label
    mask, and each agent's attention of V(s) on that same observation (IoU at tau 0.7 in the title)."""
    check_out(out, panel=True)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    device = torch.device("cuda" if cuda and torch.cuda.is_available() else "cpu")
    rows = []
    for camal_run, vanilla_run in pairs:
        players = []
        try:
            players += [Player(run, scale=1, device=device) for run in (camal_run, vanilla_run)]
            check_comparable(players)
            if players[0].agent.obs_shape != players[1].agent.obs_shape:
                raise ConfigError(f"{camal_run} and {vanilla_run} see different observations; pair runs of one setting")
            frame = panel_frame(players[0], seed)
            image = torch.as_tensor(frame["image"][None], device=device)
            mask = torch.as_tensor(frame["mask"][None], device=device)
            row = {"env": players[0].spec.name, "frame": frame, "maps": [], "ious": [], "labels": [],
                   "methods": [player.run.method for player in players]}
            for player in players:
                maps = value_attention(player.agent, image, player.agent.feature_grid, method=player.run.attention)
                row["maps"].append(maps[0].cpu().numpy())
                row["ious"].append(float(camal.attention_iou(camal.resize(maps, tuple(mask.shape[-2:])), mask)[0]))
                row["labels"].append(f"{player.run.method}: {camal.ATTENTION_METHODS[player.run.attention].title}")
            rows.append(row)
        finally:
            for player in players:
                player.close()
    figure, axes = plt.subplots(len(rows), 4, figsize=(13, 2.9 * len(rows)), squeeze=False)
    for axis_row, row in zip(axes, rows, strict=True):
        frame = row["frame"]
        axis_row[0].imshow(frame["screen"])
        axis_row[0].set_title(f"{row['env']}: frame (step {frame['step']})", fontsize=9)
        axis_row[1].imshow(frame["mask"], cmap="gray", vmin=0, vmax=1)
        axis_row[1].set_title(f"label mask ({frame['area']} px)", fontsize=9)
        panels = zip(row["maps"], row["ious"], row["labels"], strict=True)
        for column, (attention, iou, label) in enumerate(panels, start=2):
            axis_row[column].imshow(overlay.draw_attention(frame["screen"], attention, frame["mask"]))
            dead = ", map all zero" if float(attention.max()) == 0 else ""
            axis_row[column].set_title(f"{label} of V(s), IoU {iou:.2f}{dead}", fontsize=9)
        for axis in axis_row:
            axis.axis("off")
    figure.tight_layout()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(out) as partial:
        figure.savefig(partial, dpi=110)
    plt.close(figure)
    return [{"env": r["env"], "step": r["frame"]["step"], "mask_pixels": r["frame"]["area"],
             **{f"iou_{method}": iou for method, iou in zip(r["methods"], r["ious"], strict=True)}} for r in rows]


@dataclass
class RecordArgs:
    """Attention-overlay videos of trained agents, or with --panel a PNG panel of CAMAL/Vanilla pairs."""

    runs: Annotated[tyro.conf.Positional[list[str]], tyro.conf.arg(metavar="RUN_DIR [RUN_DIR ...]")]
    """one run folder, or two (side by side); with --panel, CAMAL_RUN VANILLA_RUN pairs"""
    episodes: int = 1
    """episodes to play (each run plays the same seeds)"""
    out: str | None = None
    """MP4 or AVI path (None: videos/<run folder>[__<run folder>].mp4; with --panel attention_panel.png)"""
    seed: int = 0
    """seed of the first episode (episode i uses seed + i)"""
    fps: int = 10
    """frames per second of the video"""
    scale: int = 3
    """upscaling of the native screen"""
    max_steps: int | None = None
    """cut each episode after this many steps"""
    max_seconds: float | None = None
    """cut the whole video at this length"""
    gif: bool = False
    """also write a GIF"""
    panel: bool = False
    """write a PNG panel instead: RUN_DIRs are CAMAL/Vanilla pairs, one row each"""
    cuda: bool = field(default_factory=torch.cuda.is_available)
    """play on the GPU (on by default when one is available)"""


def check_record_args(options: RecordArgs) -> None:
    """Every flag, before an engine starts: a ``ConfigError`` (one line through ``run_cli``) otherwise."""
    if not options.runs:
        raise ConfigError("give a run folder: camal-record RUN_DIR [RUN_DIR2] (or --panel CAMAL_RUN VANILLA_RUN ...)")
    for name in ("episodes", "fps", "scale"):
        if getattr(options, name) < 1:
            raise ConfigError(f"--{name} must be >= 1, got {getattr(options, name)}")
    check_seed(options.seed, "seed")
    if options.seed + options.episodes > SEED_LIMIT:  # episode i plays seed + i
        raise ConfigError(f"--seed {options.seed} with --episodes {options.episodes} goes past the last seed, "
                          f"{SEED_LIMIT - 1}")
    if options.max_steps is not None and options.max_steps < 1:
        raise ConfigError(f"--max-steps must be >= 1, got {options.max_steps}")
    if options.max_seconds is not None and not 0 < options.max_seconds < math.inf:
        raise ConfigError(f"--max-seconds must be a finite number > 0, got {options.max_seconds}")
    if options.max_seconds is not None and options.max_seconds * options.fps == math.inf:
        raise ConfigError(f"--max-seconds {options.max_seconds} at --fps {options.fps} is too many frames to count")
    if options.panel and len(options.runs) % 2:
        raise ConfigError("--panel takes pairs of run folders: CAMAL_RUN VANILLA_RUN [...]")
    if options.out is not None:
        check_out(options.out, panel=options.panel)


def cli(argv: list[str] | None = None) -> None:
    options = tyro.cli(RecordArgs, args=argv, prog="camal-record")

    def main() -> str:
        check_record_args(options)
        if options.panel:
            out = options.out or "attention_panel.png"
            pairs = list(zip(options.runs[::2], options.runs[1::2], strict=True))
            rows = attention_panel(pairs, out, seed=options.seed, cuda=options.cuda)
            return to_json(rows) + f"\nwrote {out}"
        out = options.out or str(Path("videos") / ("__".join(Path(r).name for r in options.runs) + ".mp4"))
        max_frames = None if options.max_seconds is None else int(options.max_seconds * options.fps)
        result = record(options.runs, out, episodes=options.episodes, seed=options.seed, fps=options.fps,
                        scale=options.scale, gif=options.gif, max_steps=options.max_steps, max_frames=max_frames,
                        cuda=options.cuda)
        return f"wrote {result['out']}: {result['frames']} frames"

    print(run_cli("camal-record", main))


if __name__ == "__main__":
    cli()
