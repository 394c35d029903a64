"""Picking a study and a trial: the study a command reads, the settings it was made with, the trial study.final
retrains, and the accuracy-vs-memory Pareto front."""

from __future__ import annotations

from dataclasses import fields

import optuna
from optuna.trial import FrozenTrial, TrialState

from study.errors import UsageError
from study.settings import StudySettings
from study.storage import open_storage, study_exists
from study.urls import mask_url

FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)
MEMORY_ATTR = "peak_memory_mib"


def count_finished(study: optuna.Study) -> int:
    return len(study.get_trials(deepcopy=False, states=FINISHED))


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


def stored_settings(study: optuna.Study, **overrides) -> StudySettings:
    """The settings ``study`` was made with (study.run stores them), with ``overrides`` (storage, output folder)."""
    stored = study.user_attrs.get("settings")
    if stored is None:
        raise UsageError(f"study {study.study_name!r} was not made by study.run: it stores no settings")
    known = {f.name for f in fields(StudySettings)}
    return StudySettings(**{**{k: v for k, v in stored.items() if k in known}, "study_name": study.study_name, **overrides})


def check_stored_settings(storage, settings: StudySettings) -> None:
    """Refuse a run whose identity settings differ from those the stored study was made with."""
    name = settings.resolved_study_name()
    if not study_exists(storage, name):
        return
    stored = optuna.load_study(study_name=name, storage=storage).user_attrs.get("settings")
    if stored is None:
        return
    current = settings.identity()
    # A setting added after the study was made (objective) has its default there.
    stored = {**StudySettings().identity(), **stored}
    differences = [f"--{k.replace('_', '-')}: stored {stored.get(k)!r}, given {current[k]!r}" for k in current if stored.get(k) != current[k]]
    if differences:
        raise UsageError(
            f"study {name!r} in {mask_url(settings.storage)} was made with other settings ({'; '.join(differences)}). "
            "Rerun with the stored settings, or pass another --study-name."
        )


def is_multi_objective(study: optuna.Study) -> bool:
    return len(study.directions) > 1


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
