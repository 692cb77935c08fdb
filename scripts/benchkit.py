"""What the benchmark scripts share, so that each script keeps only its question.

- ``old_tree``: an older revision of the package (and its scenario specs) extracted into a folder;
- ``run_child``: one configuration in a fresh Python whose first ``PYTHONPATH`` entry is a tree
  (this checkout or an old one), its result read back from one ``RESULT {json}`` line;
- ``alternating`` / ``interleave``: rounds over a grid, odd rounds in reverse order, so that a
  machine whose speed drifts within minutes moves every configuration alike;
- ``median``, ``round_ratios``, ``ratio_summary``: figures over rounds. A ratio is taken within each
  round (runs minutes apart) and the median of those is reported, not the ratio of two medians;
- ``machine_line``: CPU model, cores, RAM, GPU, Python and torch, printed first by every benchmark.

The scripts are run as files (``python scripts/bench_train.py``), so this folder is on ``sys.path``
and they ``import benchkit``. How to read the figures: docs/performance.md.
"""

from __future__ import annotations

import importlib
import json
import os
import platform
import statistics
import subprocess
import sys
import tarfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TypeVar

REPO = Path(__file__).resolve().parents[1]
SCRIPTS = Path(__file__).resolve().parent
RESULT = "RESULT "

T = TypeVar("T")
V = TypeVar("V")


class BenchError(Exception):
    """A benchmark that cannot run as asked; the message is one line."""


def old_tree(revision: str, folder: Path) -> Path:
    """The package at git ``revision`` (with ``envs/`` where that revision has it), extracted into
    ``folder/old``; put that path first on a child's ``PYTHONPATH`` to run the old code."""
    commit = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--verify", "--quiet", f"{revision}^{{commit}}"],
                            capture_output=True, text=True)
    if commit.returncode != 0:
        raise BenchError(f"{revision!r} is not a commit of {REPO}")
    sha = commit.stdout.strip()
    listed = subprocess.run(["git", "-C", str(REPO), "ls-tree", "--name-only", sha, "camal_rl", "envs"],
                            capture_output=True, text=True, check=True).stdout.split()
    if "camal_rl" not in listed:
        raise BenchError(f"revision {revision} has no camal_rl package")
    archive, target = folder / "old.tar", folder / "old"
    with open(archive, "wb") as out:
        subprocess.run(["git", "-C", str(REPO), "archive", sha, *listed], stdout=out, check=True)
    with tarfile.open(archive) as tar:
        tar.extractall(target, filter="data")
    archive.unlink()
    return target


def child_environment(root: Path, extra: dict[str, str] | None = None) -> dict[str, str]:
    """This process's environment with ``root`` first on ``PYTHONPATH`` (before the editable install)."""
    paths = [str(root), *filter(None, [os.environ.get("PYTHONPATH")])]
    return {**os.environ, **(extra or {}), "PYTHONPATH": os.pathsep.join(paths)}


def run_child(function: str, config: dict, *, root: Path = REPO, timeout: float = 600,
              env: dict[str, str] | None = None) -> dict:
    """Call ``function`` ("script:name", a function of a script in this folder) with ``config`` in a
    fresh Python that imports ``camal_rl`` from ``root`` and runs in it; the function's dict comes
    back. A child that fails or runs out of time comes back as ``{"error": "<its last line>"}``."""
    module, name = function.split(":")
    code = f"import sys; sys.path.append({str(SCRIPTS)!r}); import benchkit; benchkit.child({module!r}, {name!r})"
    try:
        result = subprocess.run([sys.executable, "-c", code, json.dumps(config)], capture_output=True, text=True,
                                env=child_environment(root, env), cwd=root, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout:g} s"}
    return read_result(result.stdout, result.stderr)


def read_result(stdout: str, stderr: str) -> dict:
    """The last ``RESULT`` line's dict, else the error as the child's last line on stderr."""
    lines = [line for line in stdout.splitlines() if line.startswith(RESULT)]
    if lines:
        return json.loads(lines[-1][len(RESULT):])
    return {"error": (stderr.strip().splitlines() or ["no output"])[-1][:200]}


def child(module: str, name: str) -> None:
    """The child's side of ``run_child``: call the function on ``sys.argv[1]`` and print its result."""
    result = getattr(importlib.import_module(module), name)(json.loads(sys.argv[1]))
    print(RESULT + json.dumps(result), flush=True)


def package_root(config: dict) -> dict:
    """In a child: where it imported ``camal_rl`` from (a check that a tree is first on its path)."""
    import camal_rl

    return {"camal_rl": str(Path(camal_rl.__file__).resolve().parent), "config": config}


def alternating(grid: Sequence[T], rounds: int) -> list[tuple[int, T]]:
    """(round, item) for every item once per round, odd rounds in reverse order: no configuration
    always runs right after another one on a machine whose speed drifts."""
    return [(r, item) for r in range(rounds) for item in (grid if r % 2 == 0 else list(grid)[::-1])]


def interleave(kinds: Sequence[T], rounds: int, measure: Callable[[T], V]) -> dict[T, list[V]]:
    """``measure(kind)`` for every kind once per round in ``alternating`` order; each kind's results
    in round order, so that index r of any two kinds is one round's pair."""
    results: dict[T, list[V]] = {kind: [] for kind in kinds}
    for _, kind in alternating(kinds, rounds):
        results[kind].append(measure(kind))
    return results


def seconds(function: Callable[..., object], *args) -> float:
    """Wall-clock seconds of one call."""
    start = time.perf_counter()
    function(*args)
    return time.perf_counter() - start


def median(values: Sequence[float | None]) -> float | None:
    """The median of the measured values (``None``: a failed run, left out); ``None`` if none."""
    measured = [v for v in values if v is not None]
    return statistics.median(measured) if measured else None


def round_ratios(top: Sequence[float | None], bottom: Sequence[float | None]) -> list[float]:
    """``top[r] / bottom[r]`` for every round r where both were measured, sorted. Both lists are
    indexed by round, so their lengths must match."""
    return sorted(t / b for t, b in zip(top, bottom, strict=True) if t and b)


def ratio_summary(ratios: Sequence[float], unit: str = "") -> str:
    """"0.87 (0.80-1.09, 6 rounds)": the median of within-round ratios and their range."""
    if not ratios:
        return "-"
    rounds = f"{len(ratios)} round" + ("s" if len(ratios) != 1 else "")
    return f"{statistics.median(ratios):.2f}{unit} ({min(ratios):.2f}-{max(ratios):.2f}, {rounds})"


def machine_line() -> str:
    """CPU model, cores, RAM, GPU (if any), Python and torch: the line every benchmark prints first."""
    model = platform.processor() or platform.machine()
    try:
        model = next(line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                     if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    memory = ""
    try:
        kib = next(int(line.split()[1]) for line in Path("/proc/meminfo").read_text().splitlines()
                   if line.startswith("MemTotal:"))
        memory = f", {kib / 2**20:.0f} GiB"
    except (OSError, StopIteration, ValueError):
        pass
    try:
        import torch

        gpu = f"{torch.cuda.get_device_name(0)}" if torch.cuda.is_available() else "no GPU"
        software = f"torch {torch.__version__}"
    except ImportError:
        gpu, software = "GPU unknown", "no torch"
    return (f"machine: {model}, {os.cpu_count()} CPU cores{memory}, {gpu}; Python {platform.python_version()}, "
            f"{software}; {time.strftime('%Y-%m-%d')}")
