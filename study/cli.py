"""emotion-study: one command with six subcommands, each also ``python -m study.<name>``.

    emotion-study run --trials 30        run or resume a study
    emotion-study report                 what tuning bought, the leaderboard, importances
    emotion-study final --seeds 3        retrain the best setup, test it once
    emotion-study predict "i feel fine"  classify sentences with the final model
    emotion-study compare                head vs LoRA vs QLoRA on one budget
    emotion-study bench                  speed, the feature cache, the pruner, the stop rule

Each takes its settings as flags, from a YAML file (--config FILE) or both; --print-config prints them as such a file.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from jsonargparse import ArgumentParser

from study._command import Command, HelpFormatter, one_line

# Each command's module and its line in emotion-study --help. A module is imported only when its command runs (or its
# parser is built), so that --help answers at once.
COMMANDS: dict[str, tuple[str, str]] = {
    "run": ("study.run", "run or resume a study (rerun the same command to resume)"),
    "report": ("study.report", "what tuning bought, leaderboard, counts, Pareto front, importances (trains nothing)"),
    "final": ("study.final", "retrain the best trial (or the best of the top K), test it once, write the final model"),
    "predict": ("study.predict", "classify sentences with a study's final model"),
    "compare": ("study.compare", "head vs LoRA vs QLoRA on one budget, default or tuned parameters, N seeds, McNemar per pair"),
    "bench": ("study.bench", "measure, side by side: throughput, the head's feature cache, the pruner, the stop rule, the time to a final model"),
}


def command(name: str) -> Command:
    """The command ``name``; imports its module."""
    return importlib.import_module(COMMANDS[name][0]).COMMAND


def build_parser(flags: bool = True, exit_on_error: bool = True) -> ArgumentParser:
    """emotion-study's parser: each command with its flags (every command's module imported), or, without ``flags``,
    the commands listed only."""
    parser = ArgumentParser(
        prog="emotion-study",
        description="An Optuna study of lightweight fine-tuning of a GPT-2-size model for text classification (a classification "
        "head, LoRA, QLoRA and the other variants that emotion-study run --help lists): which variant and which hyperparameters "
        "matter, and by how much.",
        epilog="Each command's flags: emotion-study COMMAND --help. Every command is also python -m study.COMMAND, and takes its "
        "settings from a YAML file too (--config FILE; --print-config writes one).",
        formatter_class=HelpFormatter, exit_on_error=exit_on_error, print_config=None, env_prefix=False,
    )
    commands = parser.add_subcommands(dest="command", metavar="COMMAND", title="commands", description=None)
    for name, (_, summary) in COMMANDS.items():
        commands.add_subcommand(name, command(name).parser() if flags else ArgumentParser(print_config=None), help=summary)
    return parser


def main(argv: list[str] | None = None) -> int:
    """The console script: run the command that ``argv`` names (only its module is imported); returns its exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in COMMANDS:
        return command(argv[0]).main(argv[1:])
    try:
        build_parser(flags=False, exit_on_error=False).parse_args(argv)  # --help, or what is wrong with argv
    except argparse.ArgumentError as error:
        print(one_line(error), file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
