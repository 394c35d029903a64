"""emotion-study report (also python -m study.report): a stored study at a glance, without training anything.

Prints what tuning bought (the best trial against the baseline, the trials tied with the best, the parameter
importances with their spread, how far the trials spread and which parameter values failed), a leaderboard, the trial
counts by outcome, the accuracy-vs-memory Pareto front and the final model. ``--json`` prints the same as data;
``--plots DIR`` saves the optimization history, the intermediate values (in epochs), the param importances and the
Pareto front as PNG (study._show.plots). The study's note in the dashboard gets the same summary.
"""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from study import records
from study._command import Command
from study.settings import ReportSettings

if TYPE_CHECKING:
    import optuna
    from optuna.trial import FrozenTrial


def steps_per_epoch(study: optuna.Study) -> int | None:
    """Optimizer steps per epoch as training counts them, ceil(training sentences / batch size), so that the
    intermediate values plot can show epochs. The batch size is in the StudyRecord, the sentences in each trial's
    TrialResult (the data actually used: max_train_samples is only a cap). None when either is unknown, or when trials
    disagree on n_train."""
    record = records.StudyRecord.read(study)
    batch_size = record.settings.get("batch_size") if record is not None else None
    sizes = {n for n in (records.TrialResult.read(t).n_train for t in study.get_trials(deepcopy=False)) if n is not None}
    if not batch_size or len(sizes) != 1:
        return None
    return math.ceil(sizes.pop() / batch_size)


def leaderboard(trials: Sequence[FrozenTrial], top: int) -> list[dict]:
    """The finished trials of a study's ``trials`` ranked by validation accuracy, completed ones first; a pruned
    trial's value is its last report (Optuna stores it so)."""
    from optuna.trial import TrialState

    from study._studies import FINISHED

    finished = [t for t in trials if t.state in FINISHED and t.values]
    ranked = sorted(finished, key=lambda t: (t.state != TrialState.COMPLETE, -t.values[0], t.number))[:top]
    rows = []
    for trial in ranked:
        result, start = records.TrialResult.read(trial), records.TrialStart.read(trial)
        rows.append({
            "trial": trial.number,
            "state": records.outcome(trial).value,
            "baseline": start.baseline,
            "val_accuracy": trial.values[0],
            "peak_memory_mib": result.peak_memory_mib,
            "weights_mib": result.weights_mib,
            "train_seconds": result.train_seconds,
            "variant": start.variant,
            "params": dict(trial.params),
        })
    return rows


def summarize(study: optuna.Study, top: int = 10) -> dict:
    """Everything the report prints, as data (also what --json writes)."""
    from study._evidence import models_compared
    from study._show.progress import outcome_counts
    from study._studies import pareto_front, stored_settings
    from study._tuning import summarize as tuning

    record = records.StudyRecord.read(study)
    final = records.FinalRecord.read(study)
    trials = study.get_trials(deepcopy=False)  # read once: every part below works from this list
    return {
        "study_name": study.study_name,
        "objective": (record.settings.get("objective") if record is not None else None) or "accuracy",
        "directions": [d.name.lower() for d in study.directions],
        # What the study was made with (run --print-config --study-name NAME writes it as a study file), and its space.
        "definition": dict(record.settings) if record is not None else None,
        "search_space": stored_settings(study).space().describe() if record is not None else None,
        "counts": outcome_counts(study, trials),
        **tuning(study, trials),
        "models": models_compared(trials),
        "leaderboard": leaderboard(trials, top),
        "pareto_front": [
            {"trial": t.number, "val_accuracy": t.values[0], "peak_memory_mib": records.TrialResult.read(t).peak_memory_mib,
             "variant": records.TrialStart.read(t).variant, "params": t.params}
            for t in pareto_front(study)
        ],
        "final": None if final is None else {"trial": final.trial, "test_accuracy": final.test_accuracy,
                                             "test_accuracy_ci95": final.test_accuracy_ci95, "seeds": final.seeds},
    }


FRONT_LINES = 10


def _mib(value) -> str:
    from study._show.text import format_mib

    return format_mib(value) if isinstance(value, (int, float)) else "-"


def models_lines(rows: list[dict]) -> list[str]:
    """The best model against each other one: how many points it leads by, McNemar's p, which decides, and its interval."""
    from study._tuning import p_text, points_text

    top = rows[0]
    lines = [f"{top['model']} with {top['variant']} (trial {top['trial']}, val accuracy {top['val_accuracy']:.4f}) is the best model"]
    for row in rows[1:]:
        name = f"{row['model']} with {row['variant']} (trial {row['trial']}, {row['val_accuracy']:.4f})"
        if "p_value" not in row:
            lines.append(f"{name}: not comparable sentence by sentence (no paired evidence)")
            continue
        low, high = row["ci95_points"]
        clear = "a difference beyond the validation noise" if row["significant"] else \
            "a difference that the validation sentences cannot tell from noise"
        lines.append(f"{top['model']} beats {name} by {points_text(row['points_behind'])} points (McNemar's exact test p = "
                     f"{p_text(row['p_value'])}, its 95% interval {points_text(low)} to {points_text(high)}): {clear}")
    return lines


def format_summary(summary: dict) -> str:
    from study._show.text import params_text
    from study._tuning import answer

    lines = [f"study {summary['study_name']!r} (objective: {summary['objective']})"]
    lines.append("trials: " + (", ".join(f"{n} {kind}" for kind, n in summary["counts"].items()) or "none"))
    if summary["definition"] is not None:
        given = {key: value for key, value in summary["definition"].items() if value is not None and key != "search"}
        lines.append("definition: " + ", ".join(f"{key}={value}" for key, value in given.items()))
        lines.append("searched: " + "; ".join(summary["search_space"]))
    final = summary["final"]
    if final is not None and final["test_accuracy"] is not None:
        low, high = final["test_accuracy_ci95"] or (math.nan, math.nan)
        which = f"trial {final['trial']}" if final["trial"] is not None else "the defaults"
        lines.append(f"final: {which} retrained with seed(s) {', '.join(map(str, final['seeds']))}, test accuracy "
                     f"{final['test_accuracy']:.4f} (95% interval {low:.4f}-{high:.4f})")
    lines += ["", "what tuning bought:", *(f"  {line}" for line in answer(summary))]
    if summary["models"]:
        lines += ["", "which model (the best trial of each, on the same validation sentences):", *(f"  {line}" for line in models_lines(summary["models"]))]
    lines += ["", "leaderboard (val accuracy; a pruned trial by its last report):"]
    lines.append(f"{'rank':>4} {'trial':>5} {'state':<8} {'val_acc':>7} {'variant':<7} {'peak MiB':>8} {'train s':>7}  params")
    for rank, row in enumerate(summary["leaderboard"], start=1):
        seconds = f"{row['train_seconds']:.0f}" if row["train_seconds"] is not None else "-"
        params = params_text({k: v for k, v in row["params"].items() if k != "variant"}) + ("  (baseline)" if row["baseline"] else "")
        lines.append(f"{rank:>4} {row['trial']:>5} {row['state']:<8} {row['val_accuracy']:>7.4f} {row['variant'] or '-':<7} "
                     f"{_mib(row['peak_memory_mib']):>8} {seconds:>7}  {params}")
    if not summary["leaderboard"]:
        lines.append("   (no finished trial)")
    lines += ["", "Pareto front, accuracy vs peak training memory (least memory first):"]
    front = summary["pareto_front"]
    for row in front[:FRONT_LINES]:
        lines.append(f"  trial {row['trial']:>4} {row['variant'] or '-':<7} val_acc={row['val_accuracy']:.4f} peak={_mib(row['peak_memory_mib'])} MiB")
    if len(front) > FRONT_LINES:  # trials at one point all lie on the front: a long study can have many
        lines.append(f"  ... and {len(front) - FRONT_LINES} more trials on the front (--json lists them)")
    if not summary["pareto_front"]:
        lines.append("  (no completed trial with a memory measurement)")
    lines += ["", "parameter importances for val accuracy (fANOVA: mean over seeds, and their range):"]
    if summary["importances"]:
        lines += [f"  {name:<16} {row['mean']:.3f} ({row['min']:.3f}-{row['max']:.3f})" for name, row in summary["importances"].items()]
    else:
        lines.append(f"  not computed: {summary['importances_note']}")
    return "\n".join(lines)


def run_report(settings: ReportSettings) -> int:
    import optuna

    from study._backends.artifacts import dashboard_command
    from study._studies import artifact_location, open_stored
    from study._tuning import save_note

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    side = sys.stderr if settings.json else sys.stdout  # --json keeps stdout for the JSON alone
    study = open_stored(settings.storage, settings.study_name, say=lambda line: print(line, file=side)).study
    summary = summarize(study, settings.top)
    print(json.dumps(summary, indent=2) if settings.json else format_summary(summary))
    if settings.plots:
        from study._show.plots import save_plots

        written = save_plots(study, Path(settings.plots), summary["importances"], steps_per_epoch(study))
        print(f"\nplots: {', '.join(str(p) for p in written) or 'none (no completed trial)'}", file=side)
    if records.FinalRecord.read(study) is None:  # final's note holds its own report, which the summary would replace
        save_note(study, summary=summary)
    print(f"\ndashboard: {dashboard_command(settings.storage, artifact_location(study, settings), settings.storage_folder)}", file=side)
    return 0


COMMAND = Command(
    name="report",
    description="Print what tuning bought in a stored study (gain over the baseline with its interval, trials tied with the best, "
    "parameter importances with their spread), its leaderboard, trial counts by outcome, accuracy-vs-memory Pareto front and "
    "final model. Trains nothing.",
    settings=ReportSettings,
    execute=run_report,
)
main = COMMAND.main

if __name__ == "__main__":
    sys.exit(main())
