"""Shared fixtures. Tests marked ``slow`` (whole training runs, sweeps, clusters) are left out by
``python -m pytest -m "not slow"``, the quick tier for working; README's command and CI run all."""

import importlib.util
import sys
from pathlib import Path

import pytest

SCRIPTS = Path(__file__).resolve().parents[1] / "scripts"


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: trains, sweeps or records for real (seconds to minutes); "
                                       "deselect with -m 'not slow' while working")


@pytest.fixture(scope="session")
def load_script():
    """A script under scripts/ (not a package) as a module: ``load_script("tune_recipe")``. Its folder
    goes on sys.path, as when it runs, so its sibling imports (``benchkit``) resolve."""
    def load(name: str):
        if str(SCRIPTS) not in sys.path:
            sys.path.insert(0, str(SCRIPTS))
        spec = importlib.util.spec_from_file_location(name, SCRIPTS / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module

    return load


@pytest.fixture
def short_scenario(tmp_path):
    """Make a Basic spec file outside envs/ whose episodes end after ``episode_timeout`` tics (4 per agent step)."""
    def make(episode_timeout: int = 60, actions=(("MOVE_LEFT",), ("MOVE_RIGHT",), ("ATTACK",)),
             name: str = "short_basic"):
        spec = tmp_path / f"{name}.toml"
        listed = ", ".join("[" + ", ".join(f'"{b}"' for b in action) + "]" for action in actions)
        spec.write_text(f'config = "basic"\nmask_categories = ["Monster"]\nactions = [{listed}]\n'
                        f"episode_timeout = {episode_timeout}\nrandom_score = -70.0\nreference_score = 95.0\n")
        return str(spec)

    return make


@pytest.fixture
def short_basic(short_scenario):
    """Basic with 15-step episodes (several resets in a short test), as a spec file outside envs/."""
    return short_scenario(60)


def vizdoom_engines() -> set[str]:
    """PIDs of every ViZDoom engine process on the machine, from /proc: ``ps`` cuts its lines to the
    terminal's width under pytest, and a checkout at a long path pushes the engine's name past it."""
    found = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:  # gone since the listing
            continue
        if argv[0].endswith(b"vizdoom/vizdoom") and b"-iwad" in argv:
            found.add(entry.name)
    return found


@pytest.fixture
def engines():
    return vizdoom_engines


@pytest.fixture(scope="session")
def finished_run(tmp_path_factory):
    """One tiny finished CAMAL run on Basic, trained once per session; tests copy it before touching it."""
    from cli_helpers import TINY, command

    run_dir = tmp_path_factory.mktemp("finished") / "basic__camal__1"
    result = command("train", "--env", "basic", "--seed", "1", "--run-dir", run_dir, *TINY)
    assert result.returncode == 0, result.stderr[-3000:]
    return run_dir
