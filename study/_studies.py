"""Picking a study and a trial: the study a command reads, the settings it was made with, the trial that final
retrains, and the accuracy-vs-memory Pareto front."""

from __future__ import annotations

import dataclasses
import datetime
import time
import warnings

import optuna
from optuna.storages import BaseStorage
from optuna.trial import FrozenTrial, TrialState

from study import records
from study._backends import open_storage, storage_exists, study_exists
from study._errors import UsageError
from study._inputs import fingerprints
from study._opened import OpenedStudy
from study._urls import mask_url
from study.settings import StudySettings, flag

FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)


def count_finished(study: optuna.Study) -> int:
    return len(study.get_trials(deepcopy=False, states=FINISHED))


def _last_run(storage: BaseStorage, name: str) -> datetime.datetime:
    """When a trial of the study ``name`` last started."""
    trials = storage.get_all_trials(storage.get_study_id_from_name(name), deepcopy=False)
    return max((t.datetime_start for t in trials if t.datetime_start is not None), default=datetime.datetime.min)


def _final_time(study) -> str:
    """When the final model of ``study`` (a stored study, as the storage lists it) was made; "" without one."""
    final = records.FinalRecord.read(study)
    return final.time if final is not None else ""


def _choose_study(storage: BaseStorage, storage_url: str, name: str | None, *, say, final: bool) -> str:
    """``name``; without one, the storage's only study, or else the most recently run one (with ``final``, the one
    whose final model is the newest), saying which. Trials are read only to choose (a study summary counts them all)."""
    studies = storage.get_all_studies()
    names = sorted(s.study_name for s in studies)
    if name is None and studies:
        if final and any(_final_time(s) for s in studies):
            chosen, why = max(studies, key=_final_time), "the one with the newest final model"
        else:
            chosen, why = max(studies, key=lambda s: _last_run(storage, s.study_name)), "the most recently run"
        name = chosen.study_name
        if len(studies) > 1:
            say(f"study {name!r}: {why} of the {len(studies)} in {mask_url(storage_url)} ({', '.join(names)}); "
                "pass --study-name for another")
    if name is None:
        raise UsageError(f"{mask_url(storage_url)} holds no study yet; run emotion-study run first")
    if name not in names:
        known = f"it holds {', '.join(names)}" if names else "it holds no study"
        raise UsageError(f"no study {name!r} in {mask_url(storage_url)} ({known}); run emotion-study run first or pass --study-name")
    return name


def open_stored(storage_url: str, name: str | None, *, say=print, final: bool = False, **overrides) -> OpenedStudy:
    """The stored study ``name`` (see _choose_study) with its definition: the settings it was made with, and
    ``overrides`` (this machine's storage URL, outputs, artifact store, and its paths to the same model, tokenizer or
    data). A study made by hand opens without a definition."""
    if not storage_exists(storage_url):
        raise UsageError(f"no storage at {mask_url(storage_url)}; run emotion-study run first (or pass --storage)")
    storage = open_storage(storage_url, heartbeat=False)
    name = _choose_study(storage, storage_url, name, say=say, final=final)
    study = optuna.load_study(study_name=name, storage=storage)
    settings = None
    if records.StudyRecord.read(study) is not None:
        settings = stored_settings(study, storage=storage_url, **overrides)
        settings = dataclasses.replace(settings, artifact_store=artifact_location(study, settings))
    return OpenedStudy(storage, study, settings)


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
    differences = [f"{flag(k)}: stored {stored.get(k)!r}, given {current[k]!r}" for k in current
                   if k not in StudySettings.SOURCES and stored.get(k) != current[k]]
    differences += _source_differences(record, settings)
    if differences:
        raise UsageError(
            f"study {name!r} in {mask_url(settings.storage)} was made with other settings ({'; '.join(differences)}). "
            "Rerun with the stored settings, or pass another --study-name."
        )


RECORD_WAIT_S = 60.0  # how long a worker that did not make the study waits for the maker's StudyRecord
CLAIM_WAIT_S = 2.0  # how long it waits for a study that is not (yet) claimed by its maker


def join_definition(given: StudySettings, record: records.StudyRecord) -> StudySettings:
    """The settings a run of a stored study trains with: every definition key that the command line or file did not
    give (Settings.given; for settings built in code, one left at its default) takes the stored value, so that a worker
    given only --storage and --study-name joins the study as it was defined; a key given stays as given
    (check_stored_settings refuses an identity key that differs)."""
    defaults = StudySettings(study_name=given.study_name)
    stored = {**StudySettings.EARLIER, **record.settings}

    def not_given(key: str) -> bool:
        return key not in given.given if given.given is not None else getattr(given, key) == getattr(defaults, key)

    taken = {key: stored[key] for key in StudySettings.DEFINITION if key in stored and not_given(key) and stored[key] != getattr(given, key)}
    return dataclasses.replace(given, **taken) if taken else given


def find_for_run(settings: StudySettings) -> OpenedStudy | None:
    """The study a run names, opened with its stored definition joined (join_definition) and checked against it; None
    when the study does not exist yet (nothing is made here)."""
    if not storage_exists(settings.storage):
        return None
    storage = open_storage(settings.storage)
    name = settings.resolved_study_name()
    if not study_exists(storage, name):
        return None
    study = optuna.load_study(study_name=name, storage=storage)
    record = records.StudyRecord.read(study)
    if record is not None:
        settings = join_definition(settings, record)
        check_stored_settings(storage, settings)
        settings = dataclasses.replace(settings, study_name=name, artifact_store=artifact_location(study, settings))
    return OpenedStudy(storage, study, settings)


def open_for_run(settings: StudySettings, inputs, found: OpenedStudy | None = None) -> OpenedStudy:
    """The study a run trains: made now or by another worker, in ``found``'s storage where find_for_run opened it. The
    one that makes it enqueues the baselines (each searched variant's defaults), then writes its StudyRecord; another
    waits for that record. With the sampler and pruner of its definition and its artifact store."""
    storage = found.storage if found is not None else open_storage(settings.storage)
    name = settings.resolved_study_name()
    try:
        study = optuna.create_study(study_name=name, storage=storage, directions=settings.directions)
        records.StudyRecord.claim(study)
    except optuna.exceptions.DuplicatedStudyError:  # another worker made it meanwhile: its definition must be this one
        study = _wait_for_record(optuna.load_study(study_name=name, storage=storage), storage)
        check_stored_settings(storage, settings)
    if records.StudyRecord.read(study) is None:  # made now, or by hand (optuna.create_study) without a record
        if settings.baseline and not study.get_trials(deepcopy=False):  # the first trials, or none
            for params in settings.space().baseline({"epochs": settings.epochs, "batch_size": settings.batch_size}):
                records.TrialStart.enqueue_baseline(study, params)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            study.set_metric_names(settings.metric_names)
        lengths = {label: data.max_length for label, (_, data) in inputs.items()}
        records.StudyRecord(settings=settings.definition(), labels=tuple(next(iter(inputs.values()))[1].labels),
                            fingerprints=fingerprints(settings), artifact_store=settings.artifact_location,
                            max_length=next(iter(lengths.values())) if len(lengths) == 1 else lengths).write(study)
    # The workers and every later command use the store the study was made with, unless told another.
    settings = dataclasses.replace(settings, artifact_store=artifact_location(study, settings))
    return OpenedStudy(storage, study, settings).with_search()


def _wait_for_record(study: optuna.Study, storage: BaseStorage) -> optuna.Study:
    """The study once its maker has written its record; as it is when nobody is making it (made by hand: it has
    trials, or nobody claimed it within CLAIM_WAIT_S)."""
    started = time.monotonic()
    while records.StudyRecord.read(study) is None and time.monotonic() - started < RECORD_WAIT_S:
        waited = time.monotonic() - started
        if not records.StudyRecord.being_made(study) and (study.get_trials(deepcopy=False) or waited > CLAIM_WAIT_S):
            break
        time.sleep(0.2)
        study = optuna.load_study(study_name=study.study_name, storage=storage)
    return study


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
