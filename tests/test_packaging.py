"""The scenario specs live in the top-level envs/ and still install with the package."""

import subprocess
import sys
import zipfile
from pathlib import Path

from camal_rl import doom

REPO = Path(__file__).resolve().parents[1]


def test_specs_are_read_from_the_top_level_envs_folder():
    assert (REPO / "envs" / "basic.toml").is_file() and not (REPO / "camal_rl" / "envs").exists()
    assert doom.BUNDLED_SPECS.resolve() == (REPO / "envs").resolve()  # an editable install reads them in place
    assert {"basic", "defend_the_line", "defend_the_center", "take_cover"} <= set(doom.available_scenarios())


def test_a_built_wheel_carries_the_specs(tmp_path):
    build = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp_path), str(REPO)],
                           capture_output=True, text=True)
    assert build.returncode == 0, build.stderr[-2000:]
    wheel = next(tmp_path.glob("camal_rl-*.whl"))
    names = set(zipfile.ZipFile(wheel).namelist())
    for spec in (REPO / "envs").glob("*.toml"):
        assert f"camal_rl/envs/{spec.name}" in names  # where doom.BUNDLED_SPECS looks in an installed copy
    assert "camal_rl/vector.py" in names and "camal_rl/overlay.py" in names
