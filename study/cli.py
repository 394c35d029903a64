"""emotion-study: one command with six subcommands, each also ``python -m study.<name>``.

    emotion-study run --trials 30        run or resume a study
    emotion-study report                 what tuning bought, the leaderboard, importances
    emotion-study final --seeds 3        retrain the best setup, test it once
    emotion-study predict "i feel fine"  classify sentences with the final model
    emotion-study compare                head vs LoRA vs QLoRA on one budget
    emotion-study bench                  speed, the feature cache, the pruner, the stop rule
"""

from __future__ import annotations

import argparse
import sys

from study import bench, compare, final, predict, report, run
from study._command import Command

COMMANDS: dict[str, Command] = {module.COMMAND.name: module.COMMAND for module in (run, report, final, predict, compare, bench)}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="emotion-study",
        description="An Optuna study of lightweight fine-tuning of a GPT-2-size model for text classification (a classification "
        "head, LoRA, QLoRA and the other variants that emotion-study run --help lists): which variant and which hyperparameters "
        "matter, and by how much.",
        epilog="Each command's flags: emotion-study COMMAND --help. Every command is also python -m study.COMMAND.",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for command in COMMANDS.values():
        command.configure(commands.add_parser(command.name, help=command.summary, prog=command.prog))
    return parser


def main(argv: list[str] | None = None) -> int:
    """The console script: parse, then run the chosen command; returns its exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    return COMMANDS[args.command].run(args, argv[argv.index(args.command) + 1:])


if __name__ == "__main__":
    sys.exit(main())
