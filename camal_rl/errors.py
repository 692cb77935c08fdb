"""The errors every command prints as one line, and the one place that prints them.

Each module raises its own subclass of ``CamalError`` with a message that names what was wrong
and what would be right; ``run_cli`` turns those, the machine's faults (disk full, a read-only
or missing folder, a name too long) and Ctrl-C / SIGTERM into one line on stderr and a non-zero
exit instead of a traceback.
"""

from __future__ import annotations

import errno
import signal
import sys
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


class CamalError(Exception):
    """Bad input or state that a user can fix; the message is the whole story."""


class ConfigError(CamalError, ValueError):
    """A flag, file or combination of them that cannot be used."""


class RunFolderError(CamalError):
    """A run folder or checkpoint that cannot be used as asked."""


class Interrupted(KeyboardInterrupt):
    """Ctrl-C or SIGTERM; ``message`` says where the work stopped and how to continue it."""

    def __init__(self, message: str = "", signum: int = signal.SIGINT):
        super().__init__(message)
        self.message, self.signum = message, signum


def stop_on_sigterm() -> None:
    """SIGTERM (a cluster taking the node back, a launcher that died) unwinds like Ctrl-C:
    ``finally`` blocks run, partial files go, games close, the last checkpoint stays."""

    def stop(signum, frame):
        raise Interrupted(signum=signum)

    signal.signal(signal.SIGTERM, stop)


FAULT_ADVICE = {
    errno.ENOSPC: "the disk is full; free space or write elsewhere",
    errno.EDQUOT: "the disk quota is used up; free space or write elsewhere",
    errno.EROFS: "the file system is read-only; choose a writable folder",
    errno.EACCES: "permission denied; choose a folder you can write to",
    errno.EPERM: "permission denied; choose a folder you can write to",
    errno.ENOENT: "no such file or folder",
    errno.ENAMETOOLONG: "a name in the path is too long; choose a shorter folder or name",
    errno.ENOTDIR: "a part of the path is a file, not a folder",
    errno.EISDIR: "the path is a folder, not a file",
}


def describe_os_error(error: OSError) -> str:
    where = error.filename or "(unknown path)"
    advice = FAULT_ADVICE.get(error.errno, error.strerror or str(error))
    return f"cannot use {where}: {advice}"


def run_cli(prog: str, main: Callable[[], T]) -> T:
    """Call ``main``; print a ``CamalError``, an OS fault or an interruption as one line and exit non-zero."""
    stop_on_sigterm()
    try:
        return main()
    except CamalError as error:
        print(f"{prog}: error: {error}", file=sys.stderr)
        raise SystemExit(2) from None
    except OSError as error:
        print(f"{prog}: error: {describe_os_error(error)}", file=sys.stderr)
        raise SystemExit(1) from None
    except (MemoryError, RuntimeError) as error:  # torch's out-of-memory errors are RuntimeErrors
        if not isinstance(error, MemoryError) and "OutOfMemory" not in type(error).__name__ \
                and "can't allocate memory" not in str(error):
            raise
        print(f"{prog}: error: out of memory ({type(error).__name__}); choose smaller settings (fewer envs or "
              f"steps, smaller frames or batches)", file=sys.stderr)
        raise SystemExit(1) from None
    except KeyboardInterrupt as interruption:  # Ctrl-C, or SIGTERM through stop_on_sigterm
        signum = getattr(interruption, "signum", signal.SIGINT)
        message = getattr(interruption, "message", "") or "interrupted"
        name = signal.Signals(signum).name
        print(f"{prog}: stopped by {name}: {message}", file=sys.stderr)
        raise SystemExit(128 + int(signum)) from None
