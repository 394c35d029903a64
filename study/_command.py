"""What every command shares: its parser, made by jsonargparse from its settings dataclass (a flag for each field, a
YAML --config file whose keys are the field names, --print-config), quiet logging, and exit codes (2 for bad input,
130 after Ctrl-C, 1 for anything else, with the traceback in a log)."""

from __future__ import annotations

import argparse
import dataclasses
import functools
import logging
import os
import sys
import types
import typing
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from jsonargparse import ActionConfigFile, ArgumentParser, DefaultHelpFormatter, Namespace

from emotion_core.errors import InputError
from study import _errors
from study._urls import redact
from study.settings import Settings, flag


class SettingsParser(ArgumentParser):
    """jsonargparse's parser for one settings class: add_class_arguments makes an argument of each field from its type
    hint and default, and add_argument spells it as this command line's flag (:func:`as_flag`)."""

    settings: type[Settings] | None = None

    def add_argument(self, *names: str, **kwargs: Any) -> argparse.Action:
        # jsonargparse gives argument groups a copy of this method: their settings are their parser's.
        names, kwargs = as_flag(getattr(self, "parser", self).settings, names, kwargs)
        return super().add_argument(*names, **kwargs)


def as_flag(cls: type[Settings] | None, names: Sequence[str], kwargs: dict[str, Any]) -> tuple[Sequence[str], dict[str, Any]]:
    """The argument jsonargparse made of a field of ``cls``, as the flag users type: hyphens for underscores (the parsed
    key, and so a config file's, stays the field's name), the help, choices and metavar of its option(), and where
    argparse has a spelling of its own, that: a switch for a bool (--baseline/--no-baseline), nargs for a list, a
    positional, or the field's parse function. jsonargparse's own arguments pass as they are."""
    typed = typed_fields(cls) if cls else {}
    field, hint = typed.get(names[0].removeprefix("--"), (None, None)) if names and names[0].startswith("--") else (None, None)
    if field is None:
        return names, kwargs
    meta = field.metadata
    item = typing.get_args(hint)[0] if typing.get_origin(hint) is list else None
    kwargs = {**kwargs, "help": meta.get("help", "")}
    if hint is bool or item is not None or "parse" in meta:  # argparse's spelling, not jsonargparse's type
        kwargs = {key: value for key, value in kwargs.items() if key not in ("type", "action")}
    if hint is bool:
        kwargs["action"] = Switch
    elif "parse" in meta or item is not None:
        # A plain function, not a type hint: jsonargparse applies it to a config file's value too, and names the key
        # when it fails.
        kwargs["type"] = _named(meta.get("parse", item), field.name)
        if "parse" not in meta:
            kwargs["nargs"] = meta.get("nargs", "+")
    kwargs.update({key: meta[key] for key in ("choices", "metavar") if key in meta})
    if meta.get("positional"):  # left out, it leaves a config file's value, else the field's default
        return [field.name], {**kwargs, "default": argparse.SUPPRESS}
    return [flag(field.name)], kwargs


class Switch(argparse.BooleanOptionalAction):
    """A bool field's flag: --baseline, --no-baseline. Its type checks a config file's value, so that jsonargparse's
    message about one it refuses names the key."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.type = _boolean


def _boolean(value: Any) -> bool:
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    if not isinstance(value, bool):
        raise ValueError(f"not true or false: {value!r}")
    return value


@functools.cache
def typed_fields(cls: type[Settings]) -> dict[str, tuple[dataclasses.Field, Any]]:
    """Each field of ``cls`` by name, with its type hint less ``None`` (list[str] for ``list[str] | None``)."""
    hints = typing.get_type_hints(cls)
    return {f.name: (f, _without_none(hints[f.name])) for f in dataclasses.fields(cls)}


def _without_none(hint: Any) -> Any:
    """list[str] for ``list[str] | None``."""
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        return next(a for a in typing.get_args(hint) if a is not type(None))
    return hint


def _named(parse: Callable[[Any], Any], name: str) -> Callable[[Any], Any]:
    """``parse`` under the field's name, which argparse's message about a value it refuses shows."""

    def convert(value: Any) -> Any:
        return parse(value)

    convert.__name__ = name
    return convert


class HelpFormatter(DefaultHelpFormatter):
    """jsonargparse's help, less the types (the metavars and the help say them) and a default of none (the flag left out)."""

    def _get_type_str(self, action: argparse.Action) -> str | None:
        return None

    def _get_help_string(self, action: argparse.Action) -> str:
        return (action.help or "") if action.default is None else super()._get_help_string(action)


def owners(cls: type[Settings]) -> dict[type, list[str]]:
    """Each settings group in ``cls`` (``cls`` first) and the fields it declares: the help's argument groups."""
    groups: dict[type, list[str]] = {}
    for f in dataclasses.fields(cls):
        klass = next(k for k in cls.__mro__ if f.name in vars(k).get("__annotations__", {}))
        groups.setdefault(klass, []).append(f.name)
    return dict(sorted(groups.items(), key=lambda item: cls.__mro__.index(item[0])))


def add_settings_arguments(parser: SettingsParser, cls: type[Settings]) -> None:
    """A flag for each field of ``cls``, made by jsonargparse from its type hint and default, in argument groups named by
    the docstring of the group that declares them, the command's own first."""
    parser.settings = cls
    every = {f.name for f in dataclasses.fields(cls)}
    for klass, names in owners(cls).items():
        group = parser.add_argument_group((klass.__doc__ or "options").strip().splitlines()[0])
        group.add_class_arguments(cls, as_group=False, instantiate=False, skip=every - set(names))


def settings_from(cls: type[Settings], args: Namespace, argv: list[str] | None = None) -> Settings:
    """The settings the parsed flags and config file give; they check themselves (Settings.__post_init__). They know
    which fields ``argv`` gave (Settings.given)."""
    names = {f.name for f in dataclasses.fields(cls)}
    settings = cls(**{k: v for k, v in args.as_dict().items() if k in names})
    settings.given = frozenset(given_fields(argv if argv is not None else sys.argv[1:], names))
    return settings


def given_fields(argv: list[str], names: set[str]) -> set[str]:
    """The fields that ``argv`` gives: its flags (``--batch-size 8``, ``--epochs=2``, ``--no-baseline``) and the keys of
    the files its ``--config`` names."""
    given = set()
    for k, token in enumerate(argv):
        if not token.startswith("--"):
            continue
        name, _, value = token[2:].partition("=")
        name = name.replace("-", "_")
        if name == "config":
            given |= set(_config_keys(value or (argv[k + 1] if k + 1 < len(argv) else "")))
        given.add(name.removeprefix("no_") if name not in names and name.startswith("no_") else name)
    return given & names


def _config_keys(source: str) -> list[str]:
    """The top-level keys of a --config file (or inline YAML), as field names."""
    import yaml

    try:
        text = Path(source).read_text() if Path(source).is_file() else source
        loaded = yaml.safe_load(text)
    except (OSError, ValueError, yaml.YAMLError):
        return []
    return [str(key).replace("-", "_") for key in loaded] if isinstance(loaded, dict) else []


def one_line(message: str) -> str:
    return redact("error: " + " ".join(str(message).split()))


@dataclass(frozen=True)
class Command:
    """One subcommand of ``emotion-study``: its settings (and so its flags and config keys), its help texts, and what it
    does."""

    name: str
    description: str
    settings: type[Settings]
    execute: Callable[[Any], int]
    epilog: str = ""
    # The settings that the command's stored study holds for these (run: the definition of the study they name, joined
    # with them), or None: --print-config then prints those, a study file that reruns the study elsewhere.
    stored: Callable[[Any], Any] | None = None

    @property
    def prog(self) -> str:
        return f"emotion-study {self.name}"

    def parser(self) -> SettingsParser:
        """Its flags, --config FILE (YAML, the same keys as the flags with underscores: batch_size) and --print-config."""
        # No abbreviated flags: a run of a stored study takes what its flags did not give from the study (Settings.given).
        parser = SettingsParser(prog=self.prog, description=self.description, epilog=self.epilog or None, exit_on_error=False,
                                formatter_class=HelpFormatter, print_config="--print-config", env_prefix=False, allow_abbrev=False)
        parser.add_argument("--config", action=ActionConfigFile,
                            help="a YAML file of settings, keyed by the flags' names with underscores (batch_size: 16); flags "
                            "after it override it. --print-config prints one")
        add_settings_arguments(parser, self.settings)
        return parser

    def main(self, argv: list[str] | None = None) -> int:
        """Parse ``argv`` (default: the command line), run, and return the exit code."""
        argv = list(sys.argv[1:] if argv is None else argv)
        try:
            if self.stored is not None and "--print-config" in argv:
                return self.print_stored(argv)
            args = self.parser().parse_args(argv)
        except argparse.ArgumentError as error:
            print(one_line(error), file=sys.stderr)
            return 2
        except InputError as error:
            print(one_line(error), file=sys.stderr)
            return 2
        return self.run(args, argv)

    def print_stored(self, argv: list[str]) -> None:
        """--print-config of a command whose settings name a stored study: its stored definition, joined with what
        ``argv`` gives, as a file that --config takes; the settings as given where no such study exists yet."""
        parser = self.parser()
        given = [a for a in argv if a != "--print-config"]
        settings = settings_from(self.settings, parser.parse_args(given), given)
        joined = self.stored(settings) or settings
        values = {f.name: getattr(joined, f.name) for f in dataclasses.fields(joined)}
        print(parser.dump(parser.parse_object(values), skip_none=False), end="")
        raise SystemExit(0)  # as jsonargparse's --print-config does

    def run(self, args: Namespace, argv: list[str]) -> int:
        global _INVOCATION
        _INVOCATION = [*self.prog.split(), *argv]
        try:
            settings = settings_from(self.settings, args, argv)
            configure_logging(getattr(settings, "verbose", False))
            return self.execute(settings) or 0
        except InputError as error:
            print(one_line(error), file=sys.stderr)  # one line, whatever a library said
            return 2
        except KeyboardInterrupt:
            print("interrupted", file=sys.stderr)
            return 130
        except Exception as error:
            output = args.get("output_dir")  # where the command writes: its log too, study or not
            return _errors.report(error, _INVOCATION, verbose=bool(args.get("verbose")),
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
    quiet_imported_libraries(bring_transformers=False)


def quiet_imported_libraries(bring_transformers: bool = True) -> None:
    """Quiet the training libraries, unless --verbose. A command calls it once it is about to use them (they are
    imported after parsing, so that --help needs none); it imports transformers, whose bars only code can turn off,
    unless ``bring_transformers`` is False (a command that trains nothing, such as report, needs none)."""
    import warnings

    import optuna

    if os.environ.get("EMOTION_STUDY_VERBOSE"):
        return
    if bring_transformers:
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
