"""Picking a study and a trial: the study a command reads, the settings it was made with, the trial that final
retrains, and the accuracy-vs-memory Pareto front."""

from __future__ import annotations

import dataclasses
import datetime

import optuna
from optuna.storages import BaseStorage
from optuna.trial import FrozenTrial, TrialState

from study import records
from study._backends import open_storage, storage_exists, study_exists
from study._errors import UsageError
from study._inputs import fingerprints
from study._urls import mask_url
from study.settings import StudySettings, flag

FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)


def count_finished(study: optuna.Study) -> int:
    return len(study.get_trials(deepcopy=False, states=FINISHED))


def _last_run(storage: BaseStorage, summary: optuna.study.StudySummary) -> datetime.datetime:
    """When a trial of the study last started."""
    trials = storage.get_all_trials(storage.get_study_id_from_name(summary.study_name), deepcopy=False)
    return max((t.datetime_start for t in trials if t.datetime_start is not None), default=datetime.datetime.min)


def _final_time(summary: optuna.study.StudySummary) -> str:
    final = records.FinalRecord.read(summary)
    return final.time if final is not None else ""


def load_stored_study(storage_url: str, name: str | None, *, say=print, final: bool = False) -> tuple[BaseStorage, optuna.Study]:
    """The storage and its study ``name``; without a name, the storage's only study, or else the most recently run one
    (with ``final``, the one whose final model is the newest), and say which."""
    if not storage_exists(storage_url):
        raise UsageError(f"no storage at {mask_url(storage_url)}; run emotion-study run first (or pass --storage)")
    storage = open_storage(storage_url, heartbeat=False)
    summaries = optuna.get_all_study_summaries(storage, include_best_trial=False)
    names = sorted(s.study_name for s in summaries)
    if name is None and summaries:
        if final and any(_final_time(s) for s in summaries):
            chosen, why = max(summaries, key=_final_time), "the one with the newest final model"
        else:
            chosen, why = max(summaries, key=lambda s: _last_run(storage, s)), "the most recently run"
        name = chosen.study_name
        if len(summaries) > 1:
            say(f"study {name!r}: {why} of the {len(summaries)} in {mask_url(storage_url)} ({', '.join(names)}); "
                "pass --study-name for another")
    if name not in names:
        known = f"it holds {', '.join(names)}" if names else "it holds no study"
        raise UsageError(f"no study {name!r} in {mask_url(storage_url)} ({known}); run emotion-study run first or pass --study-name")
    return storage, optuna.load_study(study_name=name, storage=storage)


def stored_record(study: optuna.Study) -> records.StudyRecord:
    record = records.StudyRecord.read(study)
    if record is None:
        raise UsageError(f"study {study.study_name!r} was not made by emotion-study run: it stores no settings")
    return record


def stored_settings(study: optuna.Study, **overrides) -> StudySettings:
    """The settings ``study`` was made with (run stores them), with ``overrides`` (storage, output folder; the model,
    tokenizer or data where this machine keeps them elsewhere, which must hold the same content). An override of None
    keeps the stored value."""
    record = stored_record(study)
    known = {f.name for f in dataclasses.fields(StudySettings)}
    given = {k: v for k, v in overrides.items() if v is not None}
    stored = {**StudySettings.EARLIER, **record.settings}
    settings = StudySettings(**{**{k: v for k, v in stored.items() if k in known}, "study_name": study.study_name, **given})
    if any(k in given for k in StudySettings.SOURCES):
        differences = _source_differences(record, settings)
        if differences:
            raise UsageError(f"study {study.study_name!r} was made with another model or data ({'; '.join(differences)})")
    return settings


def _source_differences(record: records.StudyRecord, settings: StudySettings) -> list[str]:
    """The model, tokenizer and data given that hold other content than the study was made with."""
    stored, prints = record.settings, record.fingerprints
    if not prints:  # a study made before fingerprints: compare as given
        return [f"--{k}: stored {stored.get(k)!r}, given {settings.identity()[k]!r}" for k in StudySettings.SOURCES
                if stored.get(k) != settings.identity()[k]]
    now = fingerprints(settings)
    return [f"--{k}: stored {stored.get(k)!r} ({prints[k]}), given {getattr(settings, k) or settings.model!r} ({now[k]}, other content)"
            for k in StudySettings.SOURCES if prints.get(k) != now[k]]


def _named(setting: str) -> str:
    """A setting as the user gives it: its flag, or its name where it has none (the search section)."""
    return setting if StudySettings.__dataclass_fields__[setting].metadata.get("flag") is False else flag(setting)


def check_stored_settings(storage: BaseStorage, settings: StudySettings) -> None:
    """Refuse a run whose identity settings differ from those the stored study was made with (the model, tokenizer
    and data by content, wherever they lie)."""
    name = settings.resolved_study_name()
    if not study_exists(storage, name):
        return
    record = records.StudyRecord.read(optuna.load_study(study_name=name, storage=storage))
    if record is None:
        return
    current = settings.identity()
    stored = {**StudySettings.EARLIER, **record.settings}  # a setting added after the study was made: what it ran with
    differences = [f"{_named(k)}: stored {stored.get(k)!r}, given {current[k]!r}" for k in current
                   if k not in StudySettings.SOURCES and stored.get(k) != current[k]]
    differences += _source_differences(record, settings)
    if differences:
        raise UsageError(
            f"study {name!r} in {mask_url(settings.storage)} was made with other settings ({'; '.join(differences)}). "
            "Rerun with the stored settings, or pass another --study-name."
        )


def is_multi_objective(study: optuna.Study) -> bool:
    return len(study.directions) > 1


def pick_trial(study: optuna.Study, number: int | None = None) -> FrozenTrial:
    """The trial final retrains: ``number`` when given, else the best trial; for an accuracy,memory study the
    Pareto-front trial with the highest validation accuracy (the lower memory breaks a tie)."""
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if number is not None:
        chosen = next((t for t in complete if t.number == number), None)
        if chosen is None:
            raise UsageError(f"study {study.study_name!r} has no completed trial {number}; completed: {[t.number for t in complete]}")
        return chosen
    if not complete:
        raise UsageError(f"study {study.study_name!r} has no completed trial yet; run emotion-study run first")
    if is_multi_objective(study):
        return max(study.best_trials, key=lambda t: (t.values[0], -t.values[1]))
    return study.best_trial


def top_trials(study: optuna.Study, k: int) -> list[FrozenTrial]:
    """The ``k`` completed trials with the best validation accuracy, best first."""
    complete = [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)) if t.values]
    if not complete:
        raise UsageError(f"study {study.study_name!r} has no completed trial yet; run emotion-study run first")
    return sorted(complete, key=lambda t: (-t.values[0], t.number))[:k]


def pareto_study(study: optuna.Study) -> tuple[optuna.Study, list[FrozenTrial]]:
    """A study whose two values are (val accuracy, peak memory) for each completed trial that measured memory, and
    the original trial of each of its trials, by number.

    A multi-objective study is that already. For a single-objective one the values are copied into an in-memory
    two-objective study, so that Optuna computes the front and plots it as for any other study (its params stay with
    the original: an enqueued trial may lie outside the search space, which a copy would refuse).
    """
    if is_multi_objective(study):
        return study, study.get_trials(deepcopy=False)
    view = optuna.create_study(directions=["maximize", "minimize"], study_name=f"{study.study_name} (accuracy vs memory)")
    originals = []
    for trial in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        memory = records.TrialResult.read(trial).peak_memory_mib
        if memory is not None:
            view.add_trial(optuna.trial.create_trial(values=[trial.value, float(memory)]))
            originals.append(trial)
    return view, originals


def pareto_front(study: optuna.Study) -> list[FrozenTrial]:
    """The study's trials on the accuracy-vs-memory front, least memory first."""
    view, originals = pareto_study(study)
    front = [(originals[t.number], t.values) for t in view.best_trials]
    return [trial for trial, values in sorted(front, key=lambda item: (item[1][1], -item[1][0]))]


def artifact_location(study: optuna.Study, settings) -> str:
    """The study's artifact store: --artifact-store when given, else the one it was made with, else the default."""
    record = records.StudyRecord.read(study)
    return settings.artifact_store or (record.artifact_store if record is not None else None) or settings.artifact_location
