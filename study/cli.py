"""Shared command-line plumbing: flags generated from StudySettings, quiet logging, and exit code 2 for bad input."""

from __future__ import annotations

import argparse
import logging
import os
import sys
import types
import typing
from collections.abc import Callable, Iterable
from dataclasses import MISSING, fields
from pathlib import Path

from emotion_core.errors import InputError
from study import errors
from study.errors import UsageError
from study.settings import StudySettings
from study.urls import redact


def _base_type(annotation):
    """int for ``int | None``, list[str] stays list."""
    if isinstance(annotation, str):
        annotation = eval(annotation, vars(typing))  # noqa: S307 - our own annotations, from __future__ annotations
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union:
        annotation = next(a for a in typing.get_args(annotation) if a is not type(None))
    return annotation


def add_settings_arguments(parser: argparse.ArgumentParser, names: Iterable[str] | None = None) -> None:
    """Add a ``--flag`` for each StudySettings field in ``names`` (all when None), with its type, default and help."""
    wanted = set(names) if names is not None else None
    for f in fields(StudySettings):
        if wanted is not None and f.name not in wanted:
            continue
        flag = "--" + f.name.replace("_", "-")
        kind = _base_type(f.type)
        default = f.default if f.default is not MISSING else None
        extra = {k: v for k, v in f.metadata.items() if k != "help"}
        help_text = f.metadata.get("help", "")
        if kind is bool:
            parser.add_argument(flag, action="store_true", help=help_text)
            continue
        if typing.get_origin(kind) is list:
            kind = typing.get_args(kind)[0]
        if default is not None:
            help_text += f" (default: {default})"
        parser.add_argument(flag, type=kind, default=default, help=help_text, **extra)


def add_source_arguments(parser: argparse.ArgumentParser) -> None:
    """--model, --tokenizer and --data for a command that reads a study made elsewhere: where this machine keeps them,
    if not where the study was run (checked to hold the same content)."""
    for name in StudySettings.SOURCES:
        parser.add_argument(f"--{name}", help=f"the study's {name} on this machine, if not where the study was run "
                            "(it must hold the same content: compared by hash)")


def settings_from_args(args: argparse.Namespace) -> StudySettings:
    """The settings the flags give, checked (StudySettings.check)."""
    names = {f.name for f in fields(StudySettings)}
    settings = StudySettings(**{k: v for k, v in vars(args).items() if k in names})
    settings.check()
    return settings


# Read by the libraries when they are imported: quiet logs, no datasets bars.
QUIET_ENVIRONMENT = {"TRANSFORMERS_VERBOSITY": "error", "DATASETS_VERBOSITY": "error", "HF_DATASETS_DISABLE_PROGRESS_BARS": "1",
                     "TOKENIZERS_PARALLELISM": "false"}


def configure_logging(verbose: bool) -> None:
    """Quiet by default: our own lines only. --verbose brings back the libraries' logs and bars. Imports none of the
    training libraries (a command that needs none answers in a second); ones imported already are told directly."""
    os.environ["EMOTION_STUDY_VERBOSE"] = "1" if verbose else ""  # for quiet_imported_libraries, and processes started later
    if verbose:
        return
    for key, value in QUIET_ENVIRONMENT.items():
        os.environ.setdefault(key, value)
    quiet_imported_libraries()


def quiet_imported_libraries() -> None:
    """Quiet the libraries imported by now, unless --verbose: a command calls it again once it has imported the
    training libraries (they come after parsing, so that --help needs none)."""
    import warnings

    import optuna

    if os.environ.get("EMOTION_STUDY_VERBOSE"):
        return
    # Optuna's warnings repeat what the progress lines say (a failed trial's reason), with a traceback.
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    if "transformers" in sys.modules:
        import huggingface_hub

        transformers = sys.modules["transformers"]
        transformers.logging.set_verbosity_error()
        # Its own bars (loading and writing weights) off; the hub's download bars, which the same call switches off, on:
        # the first run downloads the model and the data.
        transformers.logging.disable_progress_bar()
        huggingface_hub.utils.enable_progress_bars()
    if "datasets" in sys.modules:
        sys.modules["datasets"].disable_progress_bars()
        sys.modules["datasets"].logging.set_verbosity_error()
    # bitsandbytes >= 0.50 warns at import, on CPUs with AVX512-BF16, that the optional `kernels` package is missing
    # for a CPU inference kernel that QLoRA training does not use (see variants/qlora.py).
    logging.getLogger("bitsandbytes").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", category=UserWarning)
    warnings.filterwarnings("ignore", category=FutureWarning)


def run_main(main: Callable[[list[str] | None], int | None], argv: list[str] | None = None) -> int:
    """Run a command's main. Bad input (emotion_core.errors.InputError) prints one clear line and exits 2; Ctrl-C
    exits 130; any other error prints one line naming it and the log that holds its traceback (the traceback itself
    too with --verbose) and exits 1. Storage passwords never show."""
    try:
        return main(argv) or 0
    except InputError as error:
        print(redact("error: " + " ".join(str(error).split())), file=sys.stderr)  # one line, whatever a library said
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as error:
        return errors.report(error, f"python -m {command_name(main)}", argv, verbose="--verbose" in (sys.argv[1:] if argv is None else argv))


def command_name(main: Callable) -> str:
    """study.final for final's main, also when it runs as ``python -m study.final`` (module __main__)."""
    if main.__module__ != "__main__":
        return main.__module__
    spec = getattr(sys.modules["__main__"], "__spec__", None)
    return spec.name if spec is not None else Path(sys.argv[0]).stem


def check_positive(name: str, value: float | None) -> None:
    if value is not None and value <= 0:
        raise UsageError(f"--{name.replace('_', '-')} must be positive, got {value}")
