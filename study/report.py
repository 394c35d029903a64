"""python -m study.report: a stored study at a glance, without training anything.

Prints a leaderboard (top trials with params, value, state and peak memory), the trial counts by state, the
accuracy-vs-memory Pareto front (what QLoRA's memory saving costs in accuracy) and parameter importances once
there are enough completed trials. ``--plots DIR`` saves the optimization history, the intermediate values (in epochs),
the param importances and the Pareto front as PNG (study/plots.py).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import warnings
from pathlib import Path

import optuna
from optuna.trial import TrialState

from study.artifacts import dashboard_command
from study.cli import add_settings_arguments, run_main
from study.errors import UsageError
from study.plots import save_plots
from study.progress import format_mib, params_text, state_counts
from study.settings import StudySettings
from study.studies import MEMORY_ATTR, artifact_location, load_stored_study, pareto_front

# Importances from fewer completed trials say more about the noise than about the parameters.
MIN_TRIALS_FOR_IMPORTANCE = 5


def importances(study: optuna.Study) -> tuple[dict[str, float] | None, str]:
    """Param importances for val accuracy, or None and why not."""
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if len(complete) < MIN_TRIALS_FOR_IMPORTANCE:
        return None, f"need at least {MIN_TRIALS_FOR_IMPORTANCE} completed trials (have {len(complete)})"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            values = optuna.importance.get_param_importances(study, target=lambda t: t.values[0])
    except (RuntimeError, ValueError) as error:  # e.g. no parameter varies across the completed trials
        return None, str(error).splitlines()[0]
    return (values, "") if values else (None, "no parameter varies across the completed trials")


def steps_per_epoch(study: optuna.Study) -> int | None:
    """Optimizer steps per epoch as training counts them, ceil(training sentences / batch size), so that the
    intermediate values plot can show epochs. The batch size is in the settings study.run stores, the sentences in
    each trial's user attr n_train (the data actually used: max_train_samples is only a cap). None when either is
    unknown, or when trials disagree on n_train."""
    batch_size = study.user_attrs.get("settings", {}).get("batch_size")
    sizes = {t.user_attrs["n_train"] for t in study.get_trials(deepcopy=False) if "n_train" in t.user_attrs}
    if not batch_size or len(sizes) != 1:
        return None
    return math.ceil(sizes.pop() / batch_size)


def leaderboard(study: optuna.Study, top: int) -> list[dict]:
    """The finished trials ranked by validation accuracy, best first; a pruned trial's value is its last report
    (Optuna stores it so)."""
    frame = study.trials_dataframe(attrs=("number", "value", "state", "params", "user_attrs"))
    if not len(frame):
        return []
    value = next(c for c in frame.columns if c.startswith("value"))  # value, values_0, value_<metric name>, ...
    frame = frame[frame["state"].isin([TrialState.COMPLETE.name, TrialState.PRUNED.name])]
    frame = frame.assign(pruned=frame["state"] != TrialState.COMPLETE.name).sort_values(["pruned", value], ascending=[True, False])
    records = frame.head(top).astype(object).where(frame.head(top).notna(), None).to_dict("records")
    return [
        {
            "trial": int(r["number"]),
            "state": r["state"].lower(),
            "val_accuracy": r[value],
            "peak_memory_mib": r.get(f"user_attrs_{MEMORY_ATTR}"),
            "weights_mib": r.get("user_attrs_weights_mib"),
            "train_seconds": r.get("user_attrs_train_seconds"),
            "variant": r.get("user_attrs_variant"),
            "params": {k.removeprefix("params_"): v for k, v in r.items() if k.startswith("params_") and v is not None},
        }
        for r in records
    ]


def summarize(study: optuna.Study, top: int = 10) -> dict:
    """Everything the report prints, as data (also what --json writes)."""
    values, why_not = importances(study)
    stored = study.user_attrs.get("settings", {})
    return {
        "study_name": study.study_name,
        "objective": stored.get("objective", "accuracy"),
        "directions": [d.name.lower() for d in study.directions],
        "counts": state_counts(study),
        "leaderboard": leaderboard(study, top),
        "pareto_front": [
            {"trial": t.number, "val_accuracy": t.values[0], "peak_memory_mib": t.user_attrs.get(MEMORY_ATTR), "variant": t.user_attrs.get("variant"),
             "params": t.params}
            for t in pareto_front(study)
        ],
        "importances": values,
        "importances_note": why_not,
        "test_accuracy": study.user_attrs.get("test_accuracy"),
        "final_trial": study.user_attrs.get("final_trial"),
    }


def _mib(value) -> str:
    return format_mib(value) if isinstance(value, (int, float)) else "-"


def format_summary(summary: dict) -> str:
    lines = [f"study {summary['study_name']!r} (objective: {summary['objective']})"]
    lines.append("trials: " + (", ".join(f"{n} {state}" for state, n in summary["counts"].items()) or "none"))
    if summary["test_accuracy"] is not None:
        lines.append(f"final: trial {summary['final_trial']} retrained, test accuracy {summary['test_accuracy']:.4f}")
    lines += ["", "leaderboard (val accuracy; a pruned trial by its last report):"]
    lines.append(f"{'rank':>4} {'trial':>5} {'state':<8} {'val_acc':>7} {'variant':<7} {'peak MiB':>8} {'train s':>7}  params")
    for rank, row in enumerate(summary["leaderboard"], start=1):
        accuracy = f"{row['val_accuracy']:.4f}" if row["val_accuracy"] is not None else "-"
        seconds = f"{row['train_seconds']:.0f}" if row["train_seconds"] is not None else "-"
        params = params_text({k: v for k, v in row["params"].items() if k != "variant"})
        lines.append(
            f"{rank:>4} {row['trial']:>5} {row['state']:<8} {accuracy:>7} {row['variant'] or '-':<7} {_mib(row['peak_memory_mib']):>8} "
            f"{seconds:>7}  {params}"
        )
    if not summary["leaderboard"]:
        lines.append("   (no finished trial)")
    lines += ["", "Pareto front, accuracy vs peak training memory (least memory first):"]
    for row in summary["pareto_front"]:
        lines.append(f"  trial {row['trial']:>4} {row['variant'] or '-':<7} val_acc={row['val_accuracy']:.4f} peak={_mib(row['peak_memory_mib'])} MiB")
    if not summary["pareto_front"]:
        lines.append("  (no completed trial with a memory measurement)")
    lines += ["", "parameter importances for val accuracy:"]
    if summary["importances"]:
        lines += [f"  {name:<14} {value:.3f}" for name, value in summary["importances"].items()]
    else:
        lines.append(f"  not computed: {summary['importances_note']}")
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m study.report",
        description="Print a stored study's leaderboard, trial counts by state, accuracy-vs-memory Pareto front and "
        "parameter importances. Trains nothing.",
    )
    add_settings_arguments(parser, ["storage", "study_name", "artifact_store", "output_dir"])
    parser.add_argument("--top", type=int, default=10, help="how many trials the leaderboard shows (default: 10)")
    parser.add_argument("--plots", metavar="DIR", help="save optimization history, intermediate values, importances and Pareto plots here")
    parser.add_argument("--json", action="store_true", help="print the report as JSON instead of text")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.top <= 0:
        raise UsageError(f"--top must be positive, got {args.top}")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    side = sys.stderr if args.json else sys.stdout  # --json keeps stdout for the JSON alone
    study = load_stored_study(args.storage, args.study_name, say=lambda line: print(line, file=side))
    summary = summarize(study, args.top)
    print(json.dumps(summary, indent=2) if args.json else format_summary(summary))
    if args.plots:
        has_importances = summary["importances"] is not None
        written = save_plots(study, Path(args.plots), has_importances, steps_per_epoch(study))
        print(f"\nplots: {', '.join(str(p) for p in written) or 'none (no completed trial)'}", file=side)
    settings = StudySettings(storage=args.storage, study_name=study.study_name, output_dir=args.output_dir, artifact_store=args.artifact_store)
    print(f"\ndashboard: {dashboard_command(args.storage, artifact_location(study, settings), settings.home)}", file=side)
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
