"""What every rule script shares: its log file, and ClearError, a failure the console shows as its message alone."""

from __future__ import annotations

import contextlib
import faulthandler
import sys
import traceback
from pathlib import Path
from typing import Iterator


class ClearError(RuntimeError):
    """A failure whose message says what happened and what to do: the console gets just that line."""


@contextlib.contextmanager
def logged(snakemake) -> Iterator[None]:
    """Send the job's stdout and stderr (progress bars included) to its log file.

    A failure is written to the log and raised again, so Snakemake reports the
    job as failed and deletes its outputs. A fatal signal (SIGBUS from a file
    rewritten under a memory map, SIGSEGV) leaves the Python trace in the log.
    A ClearError reaches the console as its message alone, without the
    traceback (which stays in the log).
    """
    path = Path(snakemake.log[0])
    path.parent.mkdir(parents=True, exist_ok=True)
    clear = None
    with open(path, "w", buffering=1) as log:
        faulthandler.enable(file=log)
        with contextlib.redirect_stdout(log), contextlib.redirect_stderr(log):
            try:
                yield
            except ClearError as error:
                traceback.print_exc(file=log)
                clear = error
            except BaseException:
                traceback.print_exc(file=log)
                raise
            finally:
                faulthandler.disable()
    sys.stdout.flush()
    if clear is not None:
        raise SystemExit(f"{type(clear).__name__}: {clear}")
