"""Writing files so that a crash never leaves a half-written one behind (text, torch files, figures),
and child processes that end with their parent."""

from __future__ import annotations

import ctypes
import io
import json
import math
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


def strict_json_value(value: Any) -> Any:
    """``value`` as strict JSON data: NaN and infinities become null (JSON has neither; Python's
    reader accepts them, strict readers do not), tuples become lists, numpy scalars plain numbers."""
    if isinstance(value, dict):
        return {str(key): strict_json_value(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [strict_json_value(item) for item in value]
    if hasattr(value, "item") and callable(value.item) and getattr(value, "ndim", 1) == 0:
        value = value.item()  # numpy and torch scalars
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    raise TypeError(f"{type(value).__name__} is not JSON data")


def to_json(value: Any, *, indent: int | None = 2) -> str:
    """Strict JSON text (``strict_json_value``): what every file and ``--json`` output of the package holds."""
    return json.dumps(strict_json_value(value), indent=indent, allow_nan=False)


def write_json(path: str | os.PathLike, value: Any) -> None:
    """Strict JSON written whole or not at all."""
    write_text_atomic(path, to_json(value))


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
