"""What tests that drive the real commands share: tiny training flags, running a command, and the
one-line-error check."""

import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

TINY = ["--total-timesteps", "256", "--num-envs", "2", "--num-steps", "64", "--num-minibatches", "2",
        "--update-epochs", "1", "--eval-episodes", "1", "--eval-image-frames", "0", "--checkpoint-interval", "1",
        "--no-progress", "--no-cuda", "--threads", "1"]


def tiny(total_timesteps: int) -> list[str]:
    return ["--total-timesteps", str(total_timesteps), *TINY[2:]]


def command(program: str, *args, timeout: float = 300, env=None, cwd=None) -> subprocess.CompletedProcess:
    modules = {"train": "camal_rl.ppo", "compare": "camal_rl.analysis", "record": "camal_rl.record",
               "sweep": "camal_rl.sweep", "eval": "camal_rl.evaluation", "classify": "camal_rl.vision.train",
               "export": "camal_rl.export"}
    return subprocess.run([sys.executable, "-m", modules[program], *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, **(env or {})}, cwd=cwd)


def one_line_error(result: subprocess.CompletedProcess, *words: str) -> str:
    """The command failed with exactly one line on stderr, no traceback, containing ``words``."""
    lines = result.stderr.strip().splitlines()
    assert result.returncode != 0, result.stdout[-2000:]
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr[-3000:]
    for word in words:
        assert word in lines[0], lines[0]
    return lines[0]


def fingerprint(folder: Path) -> dict:
    """Every file of a run folder and its hash (the writer's lock file, which names its pid, left out)."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file() and not p.name.endswith(".lock")}


def copy_of(run_dir: Path, tmp_path: Path, name: str | None = None) -> Path:
    target = tmp_path / (name or run_dir.name)
    shutil.copytree(run_dir, target)
    return target
