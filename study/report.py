"""python -m study.report: a stored study at a glance, without training anything.

Prints a leaderboard (top trials with params, value, state and peak memory), the trial counts by state, the
accuracy-vs-memory Pareto front (what QLoRA's memory saving costs in accuracy) and parameter importances once
there are enough completed trials. ``--plots DIR`` saves Optuna's plots as PNG (and HTML where plotly is installed).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
import warnings
from pathlib import Path

import optuna
from optuna.trial import FrozenTrial, TrialState

from study.cli import UsageError, add_settings_arguments, run_main
from study.progress import params_text, state_counts
from study.settings import StudySettings
from study.storage import mask_url, open_storage

# Importances from fewer completed trials say more about the noise than about the parameters.
MIN_TRIALS_FOR_IMPORTANCE = 5
MEMORY_ATTR = "peak_memory_mib"
PARETO_TARGETS = ["val accuracy", "peak memory (MiB)"]


def load_stored_study(storage_url: str, name: str | None) -> optuna.Study:
    """The study ``name``; without a name, the default study name or else the storage's only study."""
    storage = open_storage(storage_url, heartbeat=False)
    names = optuna.get_all_study_names(storage)
    if name is None:
        default = StudySettings().resolved_study_name()
        name = default if default in names or len(names) != 1 else names[0]
    if name not in names:
        known = f"it holds {', '.join(sorted(names))}" if names else "it holds no study"
        raise UsageError(f"no study {name!r} in {mask_url(storage_url)} ({known}); run python -m study.run first or pass --study-name")
    return optuna.load_study(study_name=name, storage=storage)


def is_multi_objective(study: optuna.Study) -> bool:
    return len(study.directions) > 1


def accuracy_of(trial: FrozenTrial) -> float | None:
    """Validation accuracy: the (first) value of a complete trial, the last report of a pruned one."""
    if trial.values is not None:
        return trial.values[0]
    if trial.intermediate_values:
        return trial.intermediate_values[max(trial.intermediate_values)]
    return None


def pick_trial(study: optuna.Study, number: int | None = None) -> FrozenTrial:
    """The trial study.final retrains: ``number`` when given, else the best trial; for an accuracy,memory study the
    Pareto-front trial with the highest validation accuracy (the lower memory breaks a tie)."""
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if number is not None:
        chosen = next((t for t in complete if t.number == number), None)
        if chosen is None:
            raise UsageError(f"study {study.study_name!r} has no completed trial {number}; completed: {[t.number for t in complete]}")
        return chosen
    if not complete:
        raise UsageError(f"study {study.study_name!r} has no completed trial yet; run python -m study.run first")
    if is_multi_objective(study):
        return max(study.best_trials, key=lambda t: (t.values[0], -t.values[1]))
    return study.best_trial


def pareto_study(study: optuna.Study) -> optuna.Study:
    """A study whose two values are (val accuracy, peak memory) for each completed trial that measured memory.

    A multi-objective study is that already. For a single-objective one the values are copied into an in-memory
    two-objective study, so that Optuna computes the front and plots it as for any other study; each copy keeps the
    original trial number as its user attr ``trial`` (its params stay with the original: an enqueued trial may lie
    outside the search space, which a copy would refuse).
    """
    if is_multi_objective(study):
        return study
    view = optuna.create_study(directions=["maximize", "minimize"], study_name=f"{study.study_name} (accuracy vs memory)")
    for trial in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        memory = trial.user_attrs.get(MEMORY_ATTR)
        if memory is not None:
            view.add_trial(optuna.trial.create_trial(values=[trial.value, float(memory)], user_attrs={**trial.user_attrs, "trial": trial.number}))
    return view


def pareto_front(study: optuna.Study) -> list[FrozenTrial]:
    """The study's trials on the accuracy-vs-memory front, least memory first."""
    view = pareto_study(study)
    by_number = {t.number: t for t in study.get_trials(deepcopy=False)}
    front = [(by_number[t.user_attrs.get("trial", t.number)], t.values) for t in view.best_trials]
    return [trial for trial, values in sorted(front, key=lambda item: (item[1][1], -item[1][0]))]


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


def leaderboard(study: optuna.Study, top: int) -> list[dict]:
    """The finished trials ranked by validation accuracy (a pruned trial by its last report), best first."""
    rows = []
    for trial in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED)):
        rows.append(
            {
                "trial": trial.number,
                "state": trial.state.name.lower(),
                "val_accuracy": accuracy_of(trial),
                "peak_memory_mib": trial.user_attrs.get(MEMORY_ATTR),
                "weights_mib": trial.user_attrs.get("weights_mib"),
                "train_seconds": trial.user_attrs.get("train_seconds"),
                "variant": trial.user_attrs.get("variant"),
                "params": trial.params,
            }
        )
    rows.sort(key=lambda r: (r["state"] != "complete", -(r["val_accuracy"] if r["val_accuracy"] is not None else -1)))
    return rows[:top]


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
            {"trial": t.number, "val_accuracy": accuracy_of(t), "peak_memory_mib": t.user_attrs.get(MEMORY_ATTR), "variant": t.user_attrs.get("variant"),
             "params": t.params}
            for t in pareto_front(study)
        ],
        "importances": values,
        "importances_note": why_not,
        "test_accuracy": study.user_attrs.get("test_accuracy"),
        "final_trial": study.user_attrs.get("final_trial"),
    }


def _mib(value) -> str:
    return f"{value:.0f}" if isinstance(value, (int, float)) else "-"


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


def save_plots(study: optuna.Study, folder: Path) -> list[Path]:
    """Optimization history, intermediate values, param importances and the accuracy-vs-memory Pareto front, as PNG
    (optuna.visualization.matplotlib) and as HTML where plotly is installed. Plots without data are skipped."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from optuna import visualization

    folder.mkdir(parents=True, exist_ok=True)
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    accuracy = {"target": (lambda t: t.values[0]), "target_name": "val accuracy"}
    plots = {}
    if complete:
        plots["optimization_history"] = (study, "plot_optimization_history", accuracy)
    if any(t.intermediate_values for t in study.get_trials(deepcopy=False)):
        plots["intermediate_values"] = (study, "plot_intermediate_values", {})
    if importances(study)[0]:
        plots["param_importances"] = (study, "plot_param_importances", accuracy)
    view = pareto_study(study)
    if view.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        plots["pareto_accuracy_memory"] = (view, "plot_pareto_front", {"target_names": PARETO_TARGETS})
    html = importlib.util.find_spec("plotly") is not None
    written = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the matplotlib backend is marked experimental
        for name, (source, function, kwargs) in plots.items():
            axes = getattr(visualization.matplotlib, function)(source, **kwargs)
            figure = axes.flat[0].figure if hasattr(axes, "flat") else axes.figure
            figure.set_size_inches(8, 5)
            figure.tight_layout()
            figure.savefig(folder / f"{name}.png", dpi=100)
            plt.close(figure)
            written.append(folder / f"{name}.png")
            if html:
                getattr(visualization, function)(source, **kwargs).write_html(str(folder / f"{name}.html"))
                written.append(folder / f"{name}.html")
    return written


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m study.report",
        description="Print a stored study's leaderboard, trial counts by state, accuracy-vs-memory Pareto front and "
        "parameter importances. Trains nothing.",
    )
    add_settings_arguments(parser, ["storage", "study_name"])
    parser.add_argument("--top", type=int, default=10, help="how many trials the leaderboard shows (default: 10)")
    parser.add_argument("--plots", metavar="DIR", help="save optimization history, intermediate values, importances and Pareto plots here")
    parser.add_argument("--json", action="store_true", help="print the report as JSON instead of text")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.top <= 0:
        raise UsageError(f"--top must be positive, got {args.top}")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = load_stored_study(args.storage, args.study_name)
    summary = summarize(study, args.top)
    print(json.dumps(summary, indent=2) if args.json else format_summary(summary))
    if args.plots:
        written = save_plots(study, Path(args.plots))
        print(f"\nplots: {', '.join(str(p) for p in written) or 'none (no completed trial)'}", file=sys.stderr if args.json else sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
