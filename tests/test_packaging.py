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


def imported_after(statement: str) -> set[str]:
    """The modules a fresh interpreter holds after ``statement`` (what importing it pulls in)."""
    probe = f"import sys\n{statement}\nprint(' '.join(sorted(sys.modules)))"
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=REPO)
    assert result.returncode == 0, result.stderr[-2000:]
    return set(result.stdout.split())


def test_env_workers_never_import_torch():
    """docs/design.md: doom and vector (what every env worker process imports) never import torch,
    so a worker starts in a fraction of a second and holds no torch memory."""
    modules = imported_after("import camal_rl.vector, camal_rl.doom, camal_rl.files, camal_rl.recipes, camal_rl.errors")
    assert "camal_rl.vector" in modules and "torch" not in modules


def test_the_loss_core_imports_nothing_of_ours_but_its_products():
    # docs/design.md: camal.py may import matmul (torch only), and matmul nothing of ours
    modules = imported_after("import camal_rl.camal")
    assert {name for name in modules if name.startswith("camal_rl.")} == {"camal_rl.camal", "camal_rl.matmul"}
    products = imported_after("import camal_rl.matmul")
    assert {name for name in products if name.startswith("camal_rl.")} == {"camal_rl.matmul"}
