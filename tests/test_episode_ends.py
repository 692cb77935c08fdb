"""scripts/episode_ends.py: how a trained agent's episodes end, read from the real engine's variables."""

import shutil
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "episode_ends.py"


def test_kills_and_shots_agree_with_how_basic_episodes_end(load_script, finished_run, tmp_path):
    episode_ends = load_script("episode_ends")
    run_dir = tmp_path / finished_run.name
    shutil.copytree(finished_run, run_dir)
    result = episode_ends.diagnose(run_dir, episodes=6)
    assert result["episodes"] == len(result["played"]) == 6
    for episode in result["played"]:
        # Basic ends before its time limit exactly when the one monster dies
        assert episode["kills"] in (0, 1)
        assert (episode["kills"] == 1) == episode["ended_early"]
        # no ammunition is handed out in Basic: every round fired is counted, and a kill needs one
        assert episode["shots"] is not None and episode["kills"] <= episode["shots"] <= episode["length"]
        assert episode["ammo_start"] - episode["ammo_left"] == episode["shots"]
        assert 0 <= episode["dry_share"] <= 1
    kills = sum(episode["kills"] for episode in result["played"])
    shots = sum(episode["shots"] for episode in result["played"])
    assert result["kills_per_shot"] == (kills / shots if shots else None)


def test_writes_the_table_it_prints(load_script, finished_run, tmp_path):
    episode_ends = load_script("episode_ends")
    out = tmp_path / "ends.md"
    text = episode_ends.main([str(finished_run), "--episodes", "2", "--out", str(out)])
    assert out.read_text() == text + "\n"
    row = text.splitlines()[2].split(" | ")
    assert row[0] == f"| {finished_run.name}" and row[2] == "2"


def test_bad_input_is_one_line_and_writes_nothing(tmp_path):
    out = tmp_path / "ends.md"
    for argv, said in ((["--episodes", "0", str(tmp_path), "--out", str(out)], "--episodes must be at least 1"),
                       ([str(tmp_path / "missing"), "--out", str(out)], "missing"),
                       ([str(tmp_path / "missing"), "--out", str(tmp_path)], "is a folder")):
        done = subprocess.run([sys.executable, str(SCRIPT), *argv], capture_output=True, text=True)
        assert done.returncode != 0
        assert said in done.stderr and "Traceback" not in done.stderr, done.stderr
        assert not out.exists()
