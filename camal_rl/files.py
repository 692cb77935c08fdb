"""Writing files, and stopping, so that a crash never leaves a half-written one behind."""

from __future__ import annotations

import os
import signal
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def atomic_path(path: str | os.PathLike):
    """Yield a temporary path beside ``path`` to write to; it replaces ``path`` only on success.

    The temporary name keeps the suffix (``x.partial.mp4``) so writers that pick a format by
    extension (numpy, ffmpeg) still do.
    """
    path = Path(path)
    partial = path.with_name(f"{path.stem}.partial{path.suffix}")
    try:
        yield partial
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    with atomic_path(path) as partial:
        partial.write_text(text)


def exit_on_sigterm() -> None:
    """Let SIGTERM (a cluster taking the node back, a launcher that died) unwind like Ctrl-C:
    ``finally`` blocks run, partial files go, games close, and the last checkpoint stays."""

    def stop(signum, frame):
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, stop)
