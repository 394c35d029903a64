"""What tuning bought in a study, as every report says it: the best trial against the baseline (points, 95% interval,
McNemar's p), how many trials are tied with the best, the parameter importances with their spread over fANOVA seeds,
how far the completed trials spread, and which parameter values failed (diverged, failed, or far below the baseline).
"""

from __future__ import annotations

import statistics
import warnings

import optuna
from optuna.trial import TrialState

from study import records
from study._evidence import SIGNIFICANCE, baselines, compare, gain_over_baseline, tied_with_best
from study._show.text import params_text

# Importances from fewer completed trials say more about the noise than about the parameters.
MIN_TRIALS_FOR_IMPORTANCE = 5
IMPORTANCE_SEEDS = (0, 1, 2, 3, 4)


def importances(study: optuna.Study) -> tuple[dict[str, dict] | None, str]:
    """Each parameter's fANOVA importance for val accuracy over several seeds of the evaluator's forest: mean, lowest,
    highest and each seed's, most important first; or None and why not."""
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if len(complete) < MIN_TRIALS_FOR_IMPORTANCE:
        return None, f"need at least {MIN_TRIALS_FOR_IMPORTANCE} completed trials (have {len(complete)})"
    runs, why = [], ""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for seed in IMPORTANCE_SEEDS:
            evaluator = optuna.importance.FanovaImportanceEvaluator(seed=seed)
            try:
                runs.append(optuna.importance.get_param_importances(study, evaluator=evaluator, target=lambda t: t.values[0]))
            # e.g. no parameter varies across the completed trials; Optuna's fANOVA also asserts on a variance that
            # rounding made negative, for one forest and not another
            except (RuntimeError, ValueError, AssertionError) as error:
                why = (str(error).splitlines() or [f"fANOVA failed ({type(error).__name__})"])[0]
    if not runs or not runs[0]:
        return None, why or "no parameter varies across the completed trials"
    names = sorted(runs[0], key=lambda name: -statistics.mean(run.get(name, 0.0) for run in runs))
    table = {}
    for name in names:
        values = [run.get(name, 0.0) for run in runs]
        table[name] = {"mean": statistics.mean(values), "min": min(values), "max": max(values), "per_seed": values}
    return table, ""


def spread(study: optuna.Study) -> dict | None:
    """The completed trials' validation accuracies: lowest, quartiles, highest."""
    values = sorted(t.values[0] for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)) if t.values)
    if not values:
        return None
    quartiles = statistics.quantiles(values, n=4) if len(values) > 1 else [values[0]] * 3
    return {"n": len(values), "min": values[0], "q1": quartiles[0], "median": quartiles[1], "q3": quartiles[2], "max": values[-1]}


def failed_values(study: optuna.Study) -> list[dict]:
    """The trials whose parameters did not work: diverged, failed in training, or completed significantly below the
    baseline of their variant (McNemar p < SIGNIFICANCE)."""
    bases = {records.TrialStart.read(t).variant: t for t in baselines(study)}
    found = []
    for trial in study.get_trials(deepcopy=False):
        kind = records.outcome(trial)
        why = None
        if kind in (records.Outcome.DIVERGED, records.Outcome.FAILED):
            why = f"{kind.value}: {records.fail_reason(trial)}"
        elif kind == records.Outcome.COMPLETE and not records.TrialStart.read(trial).baseline:
            base = bases.get(records.TrialStart.read(trial).variant)
            test = compare(trial, base) if base is not None else None
            if test is not None and trial.values[0] < base.values[0] and test["p_value"] < SIGNIFICANCE:
                why = (f"{100 * (base.values[0] - trial.values[0]):.1f} points below the baseline (trial {base.number}), "
                       f"McNemar p = {test['p_value']:.2g}")
        if why is not None:
            found.append({"trial": trial.number, "params": trial.params, "why": why})
    return found


def summarize(study: optuna.Study) -> dict:
    """What tuning bought, as data (what report --json carries)."""
    gain, gain_note = gain_over_baseline(study)
    table, importance_note = importances(study)
    stop = records.StopRecord.read(study)
    tied = tied_with_best(study)
    return {
        "gain_over_baseline": gain.as_dict() if gain is not None else None,
        "gain_note": gain_note,
        "tied_with_best": tied,
        "tied_count": len(tied),
        "importances": table,
        "importances_note": importance_note,
        "spread": spread(study),
        "failed_values": failed_values(study),
        "stopped": None if stop is None else {"patience": stop.patience, "finished": stop.finished, "best_trial": stop.best_trial},
    }


def _points(value: float) -> str:
    return f"{value:+.1f}"


def answer(summary: dict) -> list[str]:
    """The study's answer to "do the hyperparameters matter here, and by how much?", in a few sentences."""
    lines = []
    gain, rows = summary["gain_over_baseline"], summary["spread"]
    if rows is not None:
        lines.append(f"The {rows['n']} completed trials spread from {rows['min']:.4f} to {rows['max']:.4f} validation accuracy "
                     f"(middle half {rows['q1']:.4f}-{rows['q3']:.4f}).")
    if gain is not None:
        low, high = gain["ci95_points"]
        verdict = ("a gain beyond the validation noise" if gain["p_value"] < SIGNIFICANCE and low > 0
                   else "no gain that the validation sentences can tell from noise")
        lines.append(f"Tuning bought {_points(gain['points'])} points over the defaults (trial {gain['best_trial']} against "
                     f"baseline trial {gain['baseline_trial']}; 95% interval {_points(low)} to {_points(high)}, McNemar p = "
                     f"{gain['p_value']:.2g}): {verdict}.")
    else:
        lines.append(f"What tuning bought is not known: {summary['gain_note']}.")
    tied = summary["tied_with_best"]
    if len(tied) > 1:
        lines.append(f"The best is the best of {len(tied)} trials that McNemar's test cannot tell apart (p >= {SIGNIFICANCE}): "
                     f"{', '.join(map(str, tied))}.")
    elif tied:
        lines.append(f"No other completed trial is tied with the best (trial {tied[0]}).")
    table = summary["importances"]
    if table:
        top = [f"{name} {row['mean']:.2f} ({row['min']:.2f}-{row['max']:.2f})" for name, row in list(table.items())[:3]]
        lines.append(f"Importance (fANOVA, {len(IMPORTANCE_SEEDS)} seeds, mean and range): {'; '.join(top)}.")
    for row in summary["failed_values"][:5]:
        lines.append(f"Did not work: trial {row['trial']} ({params_text(row['params'])}): {row['why']}.")
    if len(summary["failed_values"]) > 5:
        lines.append(f"... and {len(summary['failed_values']) - 5} more trials whose parameters did not work (report --json lists them).")
    if summary["stopped"]:
        stop = summary["stopped"]
        lines.append(f"The study stopped after {stop['finished']} finished trials: {stop['patience']} in a row brought no significantly "
                     f"better best than trial {stop['best_trial']}.")
    return lines


def summary_lines(study: optuna.Study) -> list[str]:
    return answer(summarize(study))


def note_markdown(study: optuna.Study, final_report: str | None = None) -> str:
    """The study's note in the dashboard: what tuning bought, then the final model's report (``final_report``), or
    a line on the final model when there is one."""
    parts = [f"# {study.study_name}: what tuning bought", "", *answer(summarize(study))]
    final = records.FinalRecord.read(study)
    if final_report:
        parts += ["", final_report]
    elif final is not None and final.test_accuracy is not None:
        which = f"trial {final.trial}" if final.trial is not None else "the defaults"
        parts += ["", f"Final model: {which} retrained, test accuracy {final.test_accuracy:.4f} (its report.md is "
                  "among the study's artifacts)."]
    return "\n".join(parts) + "\n"


def save_note(study: optuna.Study, final_report: str | None = None) -> None:
    """Write the study's note in the dashboard (optuna_dashboard.save_note)."""
    from optuna_dashboard import save_note as save

    save(study, note_markdown(study, final_report))
