"""What tuning bought in a study, as every report says it: the best trial against the baseline (points, 95% interval,
McNemar's p), how many trials are tied with the best, the parameter importances with their spread over fANOVA seeds,
how far the completed trials spread, and which parameter values failed (diverged, failed, or far below the baseline).
"""

from __future__ import annotations

import statistics
import warnings
from collections.abc import Sequence

import numpy as np
import optuna
from optuna.trial import FrozenTrial

from study import records
from study._evidence import (SIGNIFICANCE, baselines, completed, gain_over_baseline, setup, significant, tests_against,
                             tied_with_best)
from study._show.text import first_few, params_text

# Importances from fewer completed trials say more about the noise than about the parameters.
MIN_TRIALS_FOR_IMPORTANCE = 5
IMPORTANCE_SEEDS = (0, 1, 2, 3, 4)
# Optuna's fANOVA takes each tree's marginals in Python, split by split against the whole tree: its time grows about
# with the trees times the square of the trials (seconds for 64 trees on 100 trials, minutes on a thousand). Up to
# FULL_FOREST_MAX completed trials each seed's forest is Optuna's default of 64 trees on every trial; above it,
# SAMPLE_TREES trees (the original fANOVA's default), and above IMPORTANCE_SAMPLE each seed's on its own random sample
# of IMPORTANCE_SAMPLE trials, so that a long study reports in seconds and the spread over seeds holds the sampling's
# noise too.
FULL_FOREST_MAX = 50
# Every searched parameter on the summary's line, up to this many (a study file may search many more).
IMPORTANCES_SHOWN = 8
IMPORTANCE_SAMPLE = 100
SAMPLE_TREES = 16


def importances(study: optuna.Study, trials: Sequence[FrozenTrial] | None = None) -> tuple[dict[str, dict] | None, str]:
    """Each parameter's fANOVA importance for val accuracy over several seeds of the evaluator's forest (each on at
    most IMPORTANCE_SAMPLE completed trials): mean, lowest, highest and each seed's, most important first; or None and
    why not. ``trials``: the study's trials, when they were read already."""
    complete = completed(study.get_trials(deepcopy=False) if trials is None else trials)
    if len(complete) < MIN_TRIALS_FOR_IMPORTANCE:
        return None, f"need at least {MIN_TRIALS_FOR_IMPORTANCE} completed trials (have {len(complete)})"
    runs, why = [], ""
    forest = {"n_trees": SAMPLE_TREES} if len(complete) > FULL_FOREST_MAX else {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for seed in IMPORTANCE_SEEDS:
            evaluator = optuna.importance.FanovaImportanceEvaluator(seed=seed, **forest)
            try:
                runs.append(optuna.importance.get_param_importances(_sample(study, complete, seed), evaluator=evaluator,
                                                                    target=lambda t: t.values[0]))
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


def _sample(study: optuna.Study, complete: list[FrozenTrial], seed: int) -> optuna.Study:
    """The study itself, or above IMPORTANCE_SAMPLE completed trials an in-memory study of a seeded random sample of
    them (what Optuna's evaluators read)."""
    if len(complete) <= IMPORTANCE_SAMPLE:
        return study
    picked = np.random.default_rng(seed).choice(len(complete), size=IMPORTANCE_SAMPLE, replace=False)
    view = optuna.create_study(directions=study.directions)
    view.add_trials([complete[i] for i in sorted(picked)])
    return view


def importance_basis(n_completed: int) -> str:
    """What each seed's forest saw, for a line."""
    seeds = f"{len(IMPORTANCE_SEEDS)} seeds"
    if n_completed <= FULL_FOREST_MAX:
        return seeds
    if n_completed <= IMPORTANCE_SAMPLE:
        return f"{seeds}, each {SAMPLE_TREES} trees"
    return f"{seeds}, each {SAMPLE_TREES} trees on {IMPORTANCE_SAMPLE} of the {n_completed} completed trials"


def spread(trials: Sequence[FrozenTrial]) -> dict | None:
    """The completed trials' validation accuracies: lowest, quartiles, highest. The quartiles interpolate between
    observed values (numpy's default), so they never lie outside the lowest and highest."""
    values = np.sort([t.values[0] for t in completed(trials)])
    if not len(values):
        return None
    q1, median, q3 = (float(q) for q in np.quantile(values, [0.25, 0.5, 0.75]))
    return {"n": len(values), "min": float(values[0]), "q1": q1, "median": median, "q3": q3, "max": float(values[-1])}


def failed_values(trials: Sequence[FrozenTrial]) -> list[dict]:
    """The trials whose parameters did not work: diverged, failed in training, or completed significantly below the
    baseline of their variant and model (McNemar p < SIGNIFICANCE)."""
    bases = {setup(t): t for t in baselines(trials)}
    tested = {}  # the trials of each variant and model against their baseline, at once
    for kind, base in bases.items():
        below = [t for t in completed(trials)
                 if not records.TrialStart.read(t).baseline and setup(t) == kind and t.values[0] < base.values[0]]
        tested.update({number: (base, p) for number, p in tests_against(base, below).items()})
    found = []
    for trial in trials:
        kind = records.outcome(trial)
        why = None
        if kind in (records.Outcome.DIVERGED, records.Outcome.FAILED):
            why = f"{kind.value}: {records.fail_reason(trial)}"
        elif trial.number in tested and significant(tested[trial.number][1]):
            base, p_value = tested[trial.number]
            why = (f"{100 * (base.values[0] - trial.values[0]):.1f} points below the baseline (trial {base.number}), "
                   f"McNemar p = {p_text(p_value)}")
        if why is not None:
            found.append({"trial": trial.number, "params": trial.params, "why": why})
    return found


def summarize(study: optuna.Study, trials: Sequence[FrozenTrial] | None = None) -> dict:
    """What tuning bought, as data (what report --json carries). ``trials``: the study's trials, when they were read
    already (every part reads them from this one list)."""
    trials = study.get_trials(deepcopy=False) if trials is None else trials
    gain, gain_note = gain_over_baseline(trials)
    table, importance_note = importances(study, trials)
    stop = records.StopRecord.read(study)
    tied = tied_with_best(trials)
    return {
        "gain_over_baseline": None if gain is None else {**gain.as_dict(), "verdict": verdict(gain.as_dict())},
        "gain_note": gain_note,
        "tied_with_best": tied,
        "tied_count": len(tied),
        "importances": table,
        "importances_note": importance_note,
        "importances_basis": importance_basis(len(completed(trials))),
        "spread": spread(trials),
        "failed_values": failed_values(trials),
        "stopped": None if stop is None else {"patience": stop.patience, "finished": stop.finished, "best_trial": stop.best_trial},
    }


def points_text(value: float) -> str:
    """Points with a sign and one decimal; more where one decimal would round a value that is not zero to 0.0, so that
    a printed interval's end is never on the wrong side of zero."""
    for digits in range(1, 6):
        text = f"{value:+.{digits}f}"
        if value == 0 or float(text) != 0:
            return text
    return f"{value:+.1e}"


def p_text(p_value: float) -> str:
    """McNemar's p with two significant digits; more where two would round it across SIGNIFICANCE."""
    for digits in range(2, 8):
        text = f"{p_value:.{digits}g}"
        if significant(float(text)) == significant(p_value):
            return text
    return repr(p_value)


def verdict(gain: dict) -> str:
    """The one verdict on a gain that every report prints (text, --json, the dashboard note, run's summary): McNemar's
    exact test decides, and its own interval (``ci95_points``) leaves out 0 exactly when it says significant."""
    if not gain["significant"]:
        return "no gain that the validation sentences can tell from noise"
    return "a gain beyond the validation noise" if gain["points"] > 0 else "worse than the defaults beyond the validation noise"


def answer(summary: dict) -> list[str]:
    """The study's answer to "do the hyperparameters matter here, and by how much?", in a few sentences."""
    lines = []
    gain, rows = summary["gain_over_baseline"], summary["spread"]
    if rows is not None:
        lines.append(f"The {rows['n']} completed trials spread from {rows['min']:.4f} to {rows['max']:.4f} validation accuracy "
                     f"(middle half {rows['q1']:.4f}-{rows['q3']:.4f}).")
    if gain is not None:
        low, high = gain["ci95_points"]
        lines.append(f"Tuning bought {points_text(gain['points'])} points over the defaults (trial {gain['best_trial']} against "
                     f"baseline trial {gain['baseline_trial']}; McNemar's exact test p = {p_text(gain['p_value'])}, its 95% interval "
                     f"{points_text(low)} to {points_text(high)}): {gain['verdict']}.")
    else:
        lines.append(f"What tuning bought is not known: {summary['gain_note']}.")
    tied = summary["tied_with_best"]
    if len(tied) > 1:
        lines.append(f"The best is one of {len(tied)} trials that McNemar's test cannot tell from it (p >= {SIGNIFICANCE}): "
                     f"{first_few(tied)}.")
    elif tied:
        lines.append(f"No other completed trial is tied with the best (trial {tied[0]}).")
    table = summary["importances"]
    if table:
        shown = [f"{name} {row['mean']:.2f} ({row['min']:.2f}-{row['max']:.2f})" for name, row in list(table.items())[:IMPORTANCES_SHOWN]]
        more = f"; and {len(table) - IMPORTANCES_SHOWN} more (the report's table)" if len(table) > IMPORTANCES_SHOWN else ""
        lines.append(f"Importance (fANOVA, {summary['importances_basis']}; mean and range): {'; '.join(shown)}{more}.")
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


def note_markdown(study: optuna.Study, final_report: str | None = None, summary: dict | None = None) -> str:
    """The study's note in the dashboard: what tuning bought (``summary``, when summarize gave it already), then the
    final model's report (``final_report``), or a line on the final model when there is one."""
    parts = [f"# {study.study_name}: what tuning bought", "", *answer(summarize(study) if summary is None else summary)]
    final = records.FinalRecord.read(study)
    if final_report:
        parts += ["", final_report]
    elif final is not None and final.test_accuracy is not None:
        which = f"trial {final.trial}" if final.trial is not None else "the defaults"
        parts += ["", f"Final model: {which} retrained, test accuracy {final.test_accuracy:.4f} (its report.md is "
                  "among the study's artifacts)."]
    return "\n".join(parts) + "\n"


def save_note(study: optuna.Study, final_report: str | None = None, summary: dict | None = None) -> None:
    """Write the study's note in the dashboard (optuna_dashboard.save_note)."""
    from optuna_dashboard import save_note as save

    save(study, note_markdown(study, final_report, summary))
