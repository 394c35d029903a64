"""Paired evidence between the trials of a study: each completed trial's Evidence record says which validation
sentences it got right, so any two trials can be compared on the same sentences (McNemar's exact test, which decides,
with its own interval of their difference). On it rest the gain over the baseline, the count of trials tied with the
best, and the patience stop rule: stop starting trials once ``patience`` finished in a row without a significantly
better best.
"""

from __future__ import annotations

import datetime
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import optuna
from optuna.trial import FrozenTrial, TrialState

from emotion_core.stats import mcnemar_against, mcnemar_correct, mcnemar_difference
from study import records

SIGNIFICANCE = 0.05  # McNemar's p below this: two trials differ beyond what the validation sentences' luck explains


def _value(trial: FrozenTrial) -> float:
    return trial.values[0]


def in_finishing_order(study: optuna.Study) -> list[FrozenTrial]:
    """The study's complete and pruned trials, in the order they finished."""
    trials = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED))
    return sorted(trials, key=lambda t: (t.datetime_complete or datetime.datetime.max, t.number))


def compare(first: FrozenTrial, second: FrozenTrial) -> dict | None:
    """McNemar's test of two trials on the same validation sentences; None when either lacks evidence or they were
    evaluated on other sentences."""
    a, b = records.Evidence.read(first), records.Evidence.read(second)
    if a is None or b is None or a.data != b.data or len(a.correct) != len(b.correct):
        return None
    return mcnemar_correct(a.correct, b.correct)


def significantly_better(trial: FrozenTrial, than: FrozenTrial) -> bool:
    test = compare(trial, than)
    return test is not None and _value(trial) > _value(than) and significant(test["p_value"])


def completed(trials: Iterable[FrozenTrial]) -> list[FrozenTrial]:
    """The completed trials with a value, of a study's trials as read once (study.get_trials)."""
    return [t for t in trials if t.state == TrialState.COMPLETE and t.values]


def best_completed(trials: Iterable[FrozenTrial]) -> FrozenTrial | None:
    return max(completed(trials), key=_value, default=None)


def baselines(trials: Iterable[FrozenTrial]) -> list[FrozenTrial]:
    """The completed baseline trials (a searched variant's default parameters)."""
    return [t for t in completed(trials) if records.TrialStart.read(t).baseline]


def significant(p_value: float) -> bool:
    """The one rule every report decides by: McNemar's exact p below SIGNIFICANCE."""
    return p_value < SIGNIFICANCE


@dataclass(frozen=True)
class Gain:
    """The best trial against the baseline on the same validation sentences: the difference in points, McNemar's exact
    p, which decides, and that test's own 95% interval (emotion_core.stats.mcnemar_difference), which leaves out 0
    exactly when p < SIGNIFICANCE."""

    best_trial: int
    baseline_trial: int
    best_value: float
    baseline_value: float
    points: float
    ci95: tuple[float, float]
    p_value: float
    only_best_right: int
    only_baseline_right: int

    @property
    def significant(self) -> bool:
        return significant(self.p_value)

    def as_dict(self) -> dict:
        return {"best_trial": self.best_trial, "baseline_trial": self.baseline_trial, "best_val_accuracy": self.best_value,
                "baseline_val_accuracy": self.baseline_value, "points": self.points, "ci95_points": list(self.ci95),
                "p_value": self.p_value, "significant": self.significant, "decided_by": DECIDED_BY,
                "only_best_right": self.only_best_right, "only_baseline_right": self.only_baseline_right}


DECIDED_BY = (f"McNemar's exact test, p < {SIGNIFICANCE}; ci95_points is that test's exact (Clopper-Pearson) interval on the "
              "sentences only one of the two got right, in points")


def setup(trial: FrozenTrial) -> tuple[str, str | None]:
    """What a trial's baseline shares with it: its variant and, in a study of several models, its model."""
    return records.TrialStart.read(trial).variant, trial.params.get("model")


def gain_over_baseline(trials: Sequence[FrozenTrial]) -> tuple[Gain | None, str]:
    """The best completed trial of a study's ``trials`` against the baseline of its variant (or the best baseline);
    None and why not."""
    best, bases = best_completed(trials), baselines(trials)
    if not bases:
        return None, "the study has no baseline trial (made with --no-baseline, or before baselines were enqueued)"
    if best is None:
        return None, "no trial completed"
    # a baseline of the best trial's model and variant, where there is one
    base = max((t for t in bases if setup(t) == setup(best)), key=_value, default=None) or max(bases, key=_value)
    a, b = records.Evidence.read(best), records.Evidence.read(base)
    if a is None or b is None or a.data != b.data or len(a.correct) != len(b.correct):
        return None, "the best trial or the baseline has no paired evidence on the same validation sentences"
    test = mcnemar_difference(a.correct, b.correct)
    return Gain(best_trial=best.number, baseline_trial=base.number, best_value=_value(best), baseline_value=_value(base),
                points=100 * test["difference"], ci95=tuple(100 * x for x in test["ci95"]), p_value=test["p_value"],
                only_best_right=test["only_first_right"], only_baseline_right=test["only_second_right"]), ""


def tests_against(reference: FrozenTrial, trials: Iterable[FrozenTrial]) -> dict[int, float]:
    """McNemar's exact p of each of ``trials`` against ``reference`` on the same validation sentences, by trial number:
    each trial's evidence read once and all of them tested at once. A trial without evidence on the reference's
    sentences is left out."""
    against = records.Evidence.read(reference)
    if against is None:
        return {}
    found = []
    for trial in trials:
        evidence = records.Evidence.read(trial)
        if evidence is not None and evidence.data == against.data and len(evidence.correct) == len(against.correct):
            found.append((trial.number, evidence.correct))
    if not found:
        return {}
    p_values = mcnemar_against(np.stack([correct for _, correct in found]), against.correct)["p_value"]
    return {number: float(p) for (number, _), p in zip(found, p_values)}


def tied_with_best(trials: Sequence[FrozenTrial]) -> list[int]:
    """The completed trials that McNemar's test cannot tell from the best (p >= SIGNIFICANCE), the best included: the
    best is "the best of these", not a clear winner."""
    best = best_completed(trials)
    if best is None:
        return []
    others = tests_against(best, (t for t in completed(trials) if t.number != best.number))
    return sorted([best.number, *(number for number, p in others.items() if not significant(p))])


@dataclass(frozen=True)
class Stop:
    """Where the patience rule stops a study: after its ``finished``-th finished trial (trial ``last_trial``), with
    ``best_trial`` the best then."""

    patience: int
    finished: int
    last_trial: int
    best_trial: int | None


def stopping_point(trials: Sequence[FrozenTrial], patience: int) -> Stop | None:
    """Where the rule stops ``trials`` (finished, in finishing order): after ``patience`` trials in a row that finished
    without a new best that beats the previous one significantly (a pruned trial is one such). None: it runs on."""
    if patience <= 0:
        return None
    best: FrozenTrial | None = None
    since = 0
    for index, trial in enumerate(trials, start=1):
        better = trial.state == TrialState.COMPLETE and bool(trial.values) and (best is None or _value(trial) > _value(best))
        if better and (best is None or significantly_better(trial, best)):
            since = 0
        else:
            since += 1
        if better:
            best = trial
        if since >= patience:
            return Stop(patience, index, trial.number, best.number if best is not None else None)
    return None


def patience_rule(patience: int):
    """The trial loop's stop rule for --patience (None when it is 0): the reason to start no more trials, recorded
    once in the study's StopRecord."""
    if patience <= 0:
        return None

    def rule(study: optuna.Study) -> str | None:
        if len(study.directions) > 1:
            return None  # a Pareto front has no single best to beat
        stop = stopping_point(in_finishing_order(study), patience)
        if stop is None:
            return None
        stored = records.StopRecord.read(study)
        if stored is None or (stored.patience, stored.finished) != (stop.patience, stop.finished):
            records.StopRecord(patience=stop.patience, finished=stop.finished, best_trial=stop.best_trial,
                               time=datetime.datetime.now().isoformat(timespec="seconds")).write(study)
        return stop_reason(stop)

    return rule


def stop_reason(stop: Stop) -> str:
    return (f"stopped after {stop.finished} finished trials: the last {stop.patience} brought no significantly better best "
            f"(McNemar p < {SIGNIFICANCE} on the validation sentences) than trial {stop.best_trial}")


def models_compared(trials: Sequence[FrozenTrial]) -> list[dict]:
    """In a study that searched several models (its ``trials``): the best completed trial of each model, best first, and
    each after the first against the first on the same validation sentences (points, McNemar's exact p, which decides,
    and that test's own 95% interval, as for the gain over the baseline). Empty for a one-model study."""
    best: dict[str, FrozenTrial] = {}
    for trial in completed(trials):
        label = trial.params.get("model")
        if label is not None and trial.values and (label not in best or _value(trial) > _value(best[label])):
            best[label] = trial
    if len(best) < 2:
        return []
    ranked = sorted(best.values(), key=lambda t: (-_value(t), t.number))
    rows = []
    for trial in ranked:
        row = {"model": trial.params["model"], "variant": records.TrialStart.read(trial).variant, "trial": trial.number,
               "val_accuracy": _value(trial)}
        a, b = records.Evidence.read(ranked[0]), records.Evidence.read(trial)
        if trial is not ranked[0] and a is not None and b is not None and a.data == b.data and len(a.correct) == len(b.correct):
            test = mcnemar_difference(a.correct, b.correct)
            row.update(points_behind=100 * test["difference"], ci95_points=[100 * x for x in test["ci95"]], p_value=test["p_value"],
                       significant=significant(test["p_value"]))
        rows.append(row)
    return rows
