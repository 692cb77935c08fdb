"""camal-record on a tiny checkpoint trained here: H.264 MP4, one frame per agent step."""

import re
import subprocess
import sys

import imageio_ffmpeg
import numpy as np
import pytest
import torch

from camal_rl import overlay, ppo, record


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("runs") / "basic_tiny"
    ppo.train(ppo.Args(env="basic", seed=2, total_timesteps=128, num_envs=2, num_steps=64, num_minibatches=2,
                       update_epochs=1, eval_episodes=1, progress=False, cuda=False, run_dir=str(run_dir)))
    return run_dir


def video_info(path):
    probe = subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-hide_banner", "-i", str(path)],
                           capture_output=True, text=True)
    codec = re.search(r"Video: (\w+)", probe.stderr).group(1)
    frames, _ = imageio_ffmpeg.count_frames_and_secs(str(path))
    return codec, frames


@pytest.mark.slow
def test_record_writes_h264_with_one_frame_per_step(tiny_run, tmp_path):
    out = tmp_path / "videos" / "tiny.mp4"
    result = record.record([str(tiny_run)], out, episodes=2, max_steps=15, gif=True, progress=False)
    codec, frames = video_info(out)
    assert codec == "h264"
    assert frames == result["frames"] == sum(result["steps"]) and frames > 2
    assert out.with_suffix(".gif").stat().st_size > 0
    assert not list(out.parent.glob("*.partial*"))


@pytest.mark.slow
def test_side_by_side_of_two_runs(tiny_run, tmp_path):
    out = tmp_path / "pair.mp4"
    result = record.record([str(tiny_run), str(tiny_run)], out, episodes=1, max_steps=5, progress=False)
    codec, frames = video_info(out)
    assert codec == "h264" and frames == result["frames"] == 5


def test_bad_run_dir_is_one_line_error(tmp_path):
    out = tmp_path / "x.mp4"
    result = subprocess.run([sys.executable, "-m", "camal_rl.record", str(tmp_path / "missing"), "--out", str(out)],
                            capture_output=True, text=True)
    assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1
    assert "no checkpoint" in result.stderr and "camal-record needs a run folder" in result.stderr
    assert "--resume" not in result.stderr and not out.exists()


@pytest.mark.slow
def test_two_recordings_of_the_same_run_are_identical(tiny_run, tmp_path):
    """Actions come from a generator seeded by the episode: the same video every time."""
    first, second = tmp_path / "a.avi", tmp_path / "b.avi"
    for out in (first, second):
        record.record([str(tiny_run)], out, episodes=2, seed=5, max_steps=25, scale=1, progress=False)
    # Motion JPEG codes every frame on its own, deterministically: equal frames give equal bytes
    assert first.stat().st_size > 10_000 and first.read_bytes() == second.read_bytes()


def test_overlay_puts_the_hottest_cell_where_the_map_says():
    """A 4x6 map with one hot cell: the reddest region of the drawn frame lies over that cell."""
    screen = np.full((120, 160, 3), 90, np.uint8)
    for row, col in [(0, 0), (2, 4), (3, 1)]:
        attention = np.zeros((4, 6), np.float32)
        attention[row, col] = 1.0
        frame = overlay.draw_attention(screen, attention, None, scale=2)
        redness = frame[..., 0].astype(int) - frame[..., 2].astype(int)
        y, x = np.unravel_index(np.argmax(redness), redness.shape)
        cell_h, cell_w = frame.shape[0] / 4, frame.shape[1] / 6
        assert int(y // cell_h) == row and int(x // cell_w) == col, ((y, x), (row, col))
    # and the mask outline is drawn in green around the masked block
    mask = np.zeros((120, 160), np.uint8)
    mask[40:60, 60:100] = 1
    frame = overlay.draw_attention(screen, np.zeros((4, 6)), mask)
    assert tuple(frame[40, 80]) == overlay.MASK_COLOUR and tuple(frame[50, 80]) != overlay.MASK_COLOUR


@pytest.mark.slow
def test_panel_picks_the_largest_in_view_mask(tiny_run, tmp_path, monkeypatch):
    """The panel's frame: the largest label mask of the episode that covers at most
    PANEL_MAX_MASK_SHARE of the screen (checked against a replay of the same seeded episode)."""
    player = record.Player(str(tiny_run), scale=1, device=torch.device("cpu"))
    areas = []
    try:
        player.reset(0)
        while not player.done and player.steps < 300:
            areas.append(int(player.env.mask.sum()))
            player.step()
        screen_pixels = player.env.mask.size
    finally:
        player.close()
    assert max(areas) > 0

    def expected(cap_share):
        in_view = [(area, -step) for step, area in enumerate(areas) if 0 < area <= cap_share * screen_pixels]
        area, neg_step = max(in_view)
        return area, -neg_step

    rows = record.attention_panel([(str(tiny_run), str(tiny_run))], tmp_path / "panel.png", seed=0)
    assert (rows[0]["mask_pixels"], rows[0]["step"]) == expected(record.PANEL_MAX_MASK_SHARE)
    assert (tmp_path / "panel.png").stat().st_size > 10_000
    # a cap below the largest mask moves the choice to a smaller, in-view one
    sizes = sorted({a for a in areas if a > 0})
    assert len(sizes) > 1, "the episode should show its monster at more than one size"
    cap = (sizes[-2] + 0.5) / screen_pixels
    monkeypatch.setattr(record, "PANEL_MAX_MASK_SHARE", cap)
    rows = record.attention_panel([(str(tiny_run), str(tiny_run))], tmp_path / "panel2.png", seed=0)
    assert (rows[0]["mask_pixels"], rows[0]["step"]) == expected(cap) and rows[0]["mask_pixels"] < max(areas)
