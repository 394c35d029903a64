"""What every command shares: its flags made from its settings dataclass, quiet logging, and exit codes (2 for bad
input, 130 after Ctrl-C, 1 for anything else, with the traceback in a log)."""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import sys
import types
import typing
from collections.abc import Callable
from dataclasses import MISSING, dataclass
from pathlib import Path
from typing import Any

from emotion_core.errors import InputError
from study import _errors
from study._urls import redact
from study.settings import Settings, flag


def _base_type(hint: Any) -> Any:
    """int for ``int | None``; list[str] stays list[str]."""
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        hint = next(a for a in typing.get_args(hint) if a is not type(None))
    return hint


def _declaring_class(cls: type, name: str) -> type:
    """The settings class or group that declares field ``name``: the first in ``cls``'s MRO whose own fields hold it."""
    return next(klass for klass in cls.__mro__ if name in vars(klass).get("__annotations__", {}))


def add_settings_arguments(parser: argparse.ArgumentParser, cls: type[Settings]) -> None:
    """A flag for each field of ``cls``, typed by its type hint, with its default and help; in argument groups named
    by the docstring of the group that declares them, the command's own first."""
    hints = typing.get_type_hints(cls)
    fields = dataclasses.fields(cls)
    owners = {f.name: _declaring_class(cls, f.name) for f in fields}
    groups = {klass: parser.add_argument_group((klass.__doc__ or "options").strip().splitlines()[0])
              for klass in cls.__mro__ if klass in owners.values()}
    for f in sorted(fields, key=lambda f: cls.__mro__.index(owners[f.name])):
        meta = f.metadata
        if meta.get("flag") is False:  # a value no flag can spell (the search space)
            continue
        group = groups[owners[f.name]]
        default = f.default if f.default is not MISSING else f.default_factory() if f.default_factory is not MISSING else None
        kind = _base_type(hints[f.name])
        help_text = meta.get("help", "")
        options: dict[str, Any] = {"help": help_text, "default": default}
        if kind is bool:
            options["action"] = argparse.BooleanOptionalAction if default else "store_true"
        else:
            item = typing.get_args(kind)[0] if typing.get_origin(kind) is list else kind
            options["type"] = _parser_of(meta.get("parse") or item, f.name)
            if typing.get_origin(kind) is list and "parse" not in meta:
                options["nargs"] = meta.get("nargs", "+")
            for key in ("choices", "metavar", "nargs"):
                if key in meta and not (key == "choices" and "parse" in meta):
                    options[key] = meta[key]
            shown = meta.get("default_text", default)
            if shown not in (None, []) and not meta.get("positional"):
                options["help"] = f"{help_text} (default: {shown})"
        if meta.get("positional"):
            group.add_argument(f.name, **options)
        else:
            group.add_argument(flag(f.name), **options)


def _parser_of(convert: Callable[[str], Any], name: str) -> Callable[[str], Any]:
    """argparse's type: ``convert``, with the flag's name in argparse's message when it fails."""

    def parse(text: str) -> Any:
        try:
            return convert(text)
        except (TypeError, ValueError) as error:
            raise argparse.ArgumentTypeError(f"invalid value {text!r}") from error

    parse.__name__ = name
    return parse


def settings_from(cls: type[Settings], args: argparse.Namespace, argv: list[str] | None = None) -> Settings:
    """The settings the parsed flags give; they check themselves (Settings.__post_init__). They know which fields
    ``argv`` gave (Settings.given)."""
    names = {f.name for f in dataclasses.fields(cls)}
    settings = cls(**{k: v for k, v in vars(args).items() if k in names})
    settings.given = frozenset(given_fields(argv if argv is not None else sys.argv[1:], names))
    return settings


def given_fields(argv: list[str], names: set[str]) -> set[str]:
    """The fields whose flags ``argv`` holds (``--batch-size 8``, ``--epochs=2``, ``--no-baseline``)."""
    given = set()
    for token in argv:
        if token.startswith("--"):
            name = token[2:].split("=", 1)[0].replace("-", "_")
            given.add(name.removeprefix("no_") if name not in names and name.startswith("no_") else name)
    return given & names


@dataclass(frozen=True)
class Command:
    """One subcommand of ``emotion-study``: its settings (and so its flags), its help texts, and what it does."""

    name: str
    summary: str  # a line in emotion-study --help
    description: str
    settings: type[Settings]
    execute: Callable[[Any], int]
    epilog: str = ""

    @property
    def prog(self) -> str:
        return f"emotion-study {self.name}"

    def configure(self, parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
        parser.description, parser.epilog = self.description, self.epilog or None
        add_settings_arguments(parser, self.settings)
        return parser

    def parser(self) -> argparse.ArgumentParser:
        return self.configure(argparse.ArgumentParser(prog=self.prog))

    def main(self, argv: list[str] | None = None) -> int:
        """Parse ``argv`` (default: the command line), run, and return the exit code."""
        return self.run(self.parser().parse_args(argv), argv)

    def run(self, args: argparse.Namespace, argv: list[str] | None) -> int:
        global _INVOCATION
        _INVOCATION = [*self.prog.split(), *(sys.argv[1:] if argv is None else argv)]
        try:
            settings = settings_from(self.settings, args, argv)
            configure_logging(getattr(settings, "verbose", False))
            return self.execute(settings) or 0
        except InputError as error:
            print(redact("error: " + " ".join(str(error).split())), file=sys.stderr)  # one line, whatever a library said
            return 2
        except KeyboardInterrupt:
            print("interrupted", file=sys.stderr)
            return 130
        except Exception as error:
            output = getattr(args, "output_dir", None)  # where the command writes: its log too, study or not
            return _errors.report(error, _INVOCATION, verbose=bool(getattr(args, "verbose", False)),
                                  log_folder=Path(output) / "logs" if output else None)


_INVOCATION: list[str] = ["emotion-study"]


def invocation() -> list[str]:
    """The command line of the command this process runs (emotion-study run --trials 30 ...), as it was given."""
    return list(_INVOCATION)


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
    """Quiet the training libraries, unless --verbose. A command calls it once it is about to use them (they are
    imported after parsing, so that --help needs none); it imports transformers, whose bars only code can turn off."""
    import warnings

    import optuna

    if os.environ.get("EMOTION_STUDY_VERBOSE"):
        return
    import transformers  # noqa: F401 - its weight-loading bars are switched off below
    # Optuna's warnings repeat what the progress lines say (a failed trial's reason), with a traceback.
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    if "transformers" in sys.modules:
        import huggingface_hub
        from huggingface_hub import constants

        transformers = sys.modules["transformers"]
        transformers.logging.set_verbosity_error()
        # Its own bars (loading and writing weights) off; the hub's download bars, which the same call switches off, on:
        # the first run downloads the model and the data. Not where HF_HUB_DISABLE_PROGRESS_BARS=1 says otherwise (the
        # hub would warn that it cannot).
        transformers.logging.disable_progress_bar()
        if constants.HF_HUB_DISABLE_PROGRESS_BARS is not True:
            huggingface_hub.utils.enable_progress_bars()
    if "datasets" in sys.modules:
        sys.modules["datasets"].disable_progress_bars()
        sys.modules["datasets"].logging.set_verbosity_error()
    # bitsandbytes (imported by QLoRA only, emotion_core/quantization.py) fetches, at import on CPUs with AVX512-BF16, a
    # CPU inference kernel that QLoRA training does not use (emotion_core/variants/qlora.py) through the `kernels`
    # package; both warn when it is not to be had (offline, say).
    logging.getLogger("bitsandbytes").setLevel(logging.ERROR)
    logging.getLogger("kernels").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", category=UserWarning)
    warnings.filterwarnings("ignore", category=FutureWarning)
