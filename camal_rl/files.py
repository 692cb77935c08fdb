"""Writing files so that a crash never leaves a half-written one behind (text, torch files, figures),
and child processes that end with their parent."""

from __future__ import annotations

import ctypes
import io
import os
import signal
from contextlib import contextmanager
from pathlib import Path
from typing import Any


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
    except OSError as error:
        if error.filename is None:  # a failed write or close (a full disk) names no file: name it
            raise OSError(error.errno, error.strerror, str(path)) from None
        raise
    finally:
        partial.unlink(missing_ok=True)


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    with atomic_path(path) as partial:
        partial.write_text(text)


def save_torch(obj: Any, path: str | os.PathLike) -> None:
    """A torch file written whole or not at all. Serialised in memory first, so a full disk is an
    ``OSError`` naming the file (torch's own writer says only ``enforce fail at inline_container``)."""
    import torch  # here, not above: env worker processes import this module and never need torch

    buffer = io.BytesIO()
    torch.save(obj, buffer)
    with atomic_path(path) as partial:
        partial.write_bytes(buffer.getbuffer())


def save_figure(figure: Any, path: str | os.PathLike, **savefig_options: Any) -> None:
    """A matplotlib figure written whole or not at all (the format still follows ``path``'s suffix)."""
    with atomic_path(path) as partial:
        figure.savefig(partial, **savefig_options)


def die_with_parent(signum: int = signal.SIGTERM) -> None:
    """In a child process: get ``signum`` when the process that started it dies (Linux), so a
    killed learner or launcher leaves no worker behind. Elsewhere a no-op."""
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, int(signum))  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass
