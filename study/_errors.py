"""Errors that tell the truth: a fault the user can fix is one line and exit code 2; anything else keeps its type and
traceback, which goes to a log file in the study's output folder (and to the terminal with --verbose)."""

from __future__ import annotations

import datetime
import shlex
import sys
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from emotion_core.errors import InputError, first_line
from study._urls import redact

LOG_NAME = "errors.log"
DEFAULT_LOG_FOLDER = Path("storage") / "logs"  # for an error before a command knows its output folder


class UsageError(InputError):
    """Bad input from the user (a flag, a study name): printed without a traceback, exit code 2."""


def out_of_memory(error: BaseException, batch_size: int | None) -> str | None:
    """What to say about an out-of-memory error (CUDA or CPU), with the batch size to try; None for any other error."""
    text = str(error)
    if type(error).__name__ == "OutOfMemoryError" or "CUDA out of memory" in text:
        where = "GPU"
    elif isinstance(error, MemoryError) or "DefaultCPUAllocator" in text or "not enough memory" in text:
        where = "CPU"
    else:
        return None
    advice = f"at batch size {batch_size}; try --batch-size {max(1, batch_size // 2)}" if batch_size else "; try a smaller --batch-size"
    return f"out of {where} memory {advice} ({type(error).__name__}: {first_line(error)})"


def describe(error: BaseException, batch_size: int | None = None) -> str:
    """One line that keeps the error's type and message (a trial's fail_reason)."""
    return out_of_memory(error, batch_size) or f"{type(error).__name__}: {' '.join(str(error).split())}"


def append_traceback(folder: Path, title: str, error: BaseException) -> Path:
    """Append ``error``'s traceback, under a dated ``title``, to ``folder``/errors.log; returns its path."""
    path = Path(folder) / LOG_NAME
    path.parent.mkdir(parents=True, exist_ok=True)
    stamp = datetime.datetime.now().isoformat(timespec="seconds")
    text = "".join(traceback.format_exception(error))
    with path.open("a", encoding="utf-8") as log:
        log.write(redact(f"== {stamp} {title}\n{text}\n"))
    return path


@contextmanager
def logged_to(folder: Path, batch_size: int | None = None) -> Iterator[None]:
    """Inside, an unexpected error is logged to ``folder`` by :func:`report` (the study's output folder), and an
    out-of-memory error names ``batch_size``."""
    try:
        yield
    except InputError:
        raise
    except Exception as error:
        if not hasattr(error, "emotion_log_folder"):
            error.emotion_log_folder = folder
            error.emotion_batch_size = batch_size
        raise


def report(error: Exception, command_line: list[str], verbose: bool, log_folder: Path | None = None) -> int:
    """An unexpected error of a command (``command_line``: emotion-study final ...): one line naming it and its log
    (the traceback too with --verbose); exit 1. The log is the study's, else ``log_folder``."""
    folder = getattr(error, "emotion_log_folder", None) or log_folder or DEFAULT_LOG_FOLDER
    command = shlex.join(command_line)
    try:
        where = f"traceback in {append_traceback(folder, command, error)}"
    except OSError as log_error:  # a full disk must not hide the error itself
        where = f"its traceback could not be logged ({log_error})"
    if verbose:
        print(redact("".join(traceback.format_exception(error))), file=sys.stderr, end="")
    memory = out_of_memory(error, getattr(error, "emotion_batch_size", None))
    headline = memory or f"{type(error).__name__}: {first_line(error, 300)}"
    print(redact(f"error: {headline} ({where}{'' if verbose else '; --verbose prints it'})"), file=sys.stderr)
    return 1
