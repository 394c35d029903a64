"""emotion-study run (also python -m study.run): run or resume the Optuna study in persistent storage.

--trials N is the total of finished (complete + pruned) trials the study should hold: a rerun of the same command
continues up to N and does nothing when N are there already, or when --patience stopped the study.
"""

from __future__ import annotations

import shlex
import sys
import time
import warnings
from dataclasses import replace
from typing import TYPE_CHECKING

from study import records
from study._command import Command, invocation
from study._errors import logged_to
from study._urls import mask_url
from study.settings import StudySettings

if TYPE_CHECKING:
    import optuna

# One evaluation on n sentences near 50 % accuracy has a standard error of about 50/sqrt(n) points: 3.5 at 200, enough
# for noise to pick the best trial (docs/results.md).
ADVISED_VALIDATION = 500
RECORD_WAIT_S = 60.0  # how long a worker that did not make the study waits for the maker's StudyRecord
CLAIM_WAIT_S = 2.0  # how long it waits for a study that is not (yet) claimed by its maker


def optimize(storage, study: optuna.Study, settings: StudySettings, data, tokenizer, progress) -> str | None:
    """Run trials until the study holds settings.trials finished ones: here, or in settings.workers processes;
    returns why the stop rule stopped it, if it did."""
    from study._evidence import patience_rule
    from study._trials.workers import run_workers, work

    deadline = time.time() + settings.timeout if settings.timeout else None
    if settings.workers > 1:
        run_workers(settings, deadline)
        rule = patience_rule(settings.patience)
        return rule(study) if rule is not None else None
    return work(storage, study, settings, data, tokenizer, progress, deadline)


def print_summary(study: optuna.Study, settings: StudySettings) -> None:
    """Counts, the best trial (the Pareto front for accuracy,memory), what tuning bought (also the study's note in the
    dashboard), and the commands that come next."""
    import optuna

    from study._backends.artifacts import dashboard_command
    from study._show.progress import outcome_counts, values_text
    from study._show.text import params_text
    from study._studies import pareto_front, pick_trial
    from study._tuning import answer, save_note, summarize

    print(", ".join(f"{n} {kind}" for kind, n in outcome_counts(study).items()))
    if not study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)):
        print("no trial completed")
        return
    chosen = pick_trial(study)
    if settings.multi_objective:
        print("Pareto front (accuracy vs peak memory):")
        for trial in pareto_front(study):
            variant = records.TrialStart.read(trial).variant or "-"
            print(f"  trial {trial.number:>3} {variant:<6} {values_text(trial, settings.evaluation)} {params_text(trial.params)}")
        print(f"final retrains trial {chosen.number}, the front's most accurate (pass --trial N for another)")
    else:
        peak = records.TrialResult.read(chosen).peak_memory_mib
        print(f"best trial {chosen.number}: {values_text(chosen, settings.evaluation)} peak={peak if peak is not None else '-'} MiB "
              f"{params_text(chosen.params)}")
        summary = summarize(study)
        for line in answer(summary):
            print(line)
        if records.FinalRecord.read(study) is None:  # final's note holds its own report, which the summary would replace
            save_note(study, summary=summary)
    where = f"--storage {mask_url(settings.storage)} --study-name {shlex.quote(study.study_name)}"
    print(f"dashboard: {dashboard_command(settings.storage, settings.artifact_location, settings.storage_folder)}")
    print(f"report:    emotion-study report {where}")
    print(f"final:     emotion-study final {where} --output-dir {shlex.quote(settings.output_dir)}")


def resume_command() -> str:
    """The command line that resumes this run, with any storage password masked."""
    return shlex.join(mask_url(a) for a in invocation())


def create_or_load(storage, settings: StudySettings, data) -> optuna.Study:
    """The study, made now or by another worker. The one that makes it enqueues the baselines (each searched
    variant's defaults), then writes its StudyRecord; another waits for that record."""
    import optuna

    from study._inputs import fingerprints
    from study._trials.sampling import make_pruner, make_sampler
    from study._trials.space import baseline_params

    name, pruner = settings.resolved_study_name(), make_pruner(settings)
    try:
        study = optuna.create_study(study_name=name, storage=storage, directions=settings.directions, pruner=pruner)
        records.StudyRecord.claim(study)
    except optuna.exceptions.DuplicatedStudyError:
        study = optuna.load_study(study_name=name, storage=storage, pruner=pruner)
        study = _wait_for_record(study, storage, pruner)
    if records.StudyRecord.read(study) is None:  # made now, or by hand (optuna.create_study) without a record
        if settings.baseline and not study.get_trials(deepcopy=False):  # the first trials, or none
            for params in baseline_params(settings):
                records.TrialStart.enqueue_baseline(study, params)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            study.set_metric_names(settings.metric_names)
        records.StudyRecord(settings=settings.identity(), labels=tuple(data.labels), fingerprints=fingerprints(settings),
                            artifact_store=settings.artifact_location, max_length=data.max_length).write(study)
    study.sampler = make_sampler(settings)
    return study


def _wait_for_record(study: optuna.Study, storage, pruner) -> optuna.Study:
    """The study once its maker has written its record; as it is when nobody is making it (made by hand: it has
    trials, or nobody claimed it within CLAIM_WAIT_S)."""
    import optuna

    started = time.monotonic()
    while records.StudyRecord.read(study) is None and time.monotonic() - started < RECORD_WAIT_S:
        waited = time.monotonic() - started
        if not records.StudyRecord.being_made(study) and (study.get_trials(deepcopy=False) or waited > CLAIM_WAIT_S):
            break
        time.sleep(0.2)
        study = optuna.load_study(study_name=study.study_name, storage=storage, pruner=pruner)
    return study


def nothing_to_do(settings: StudySettings) -> bool:
    """Whether the study holds its total already, or its stop rule has stopped it; a storage that does not exist
    yet is not made here."""
    import optuna

    from study._backends import open_storage, storage_exists, study_exists
    from study._evidence import patience_rule
    from study._studies import check_stored_settings, count_finished

    if not storage_exists(settings.storage):
        return False
    storage = open_storage(settings.storage)
    check_stored_settings(storage, settings)
    name = settings.resolved_study_name()
    if not study_exists(storage, name):
        return False
    study = optuna.load_study(study_name=name, storage=storage)
    finished = count_finished(study)
    if finished >= settings.trials:
        print(f"study {name!r} already holds {finished} finished trials (asked for {settings.trials}); nothing to do")
        return True
    rule = patience_rule(settings.patience)
    reason = rule(study) if rule is not None else None
    if reason is not None:
        print(f"study {name!r}: {reason}. {go_on(settings)}")
        return True
    return False


def go_on(settings: StudySettings) -> str:
    return (f"To run on to {settings.trials} trials, pass a larger --patience (this run's: {settings.patience}) or "
            "--patience 0 (no stop rule)")


def run_study(settings: StudySettings) -> int:
    with logged_to(settings.study_dir, settings.batch_size):
        return _run_study(settings)


def _run_study(settings: StudySettings) -> int:
    if nothing_to_do(settings):
        return 0
    # The training libraries only now: a rerun with nothing to do, or --help, answers without them.
    from study._backends import open_storage
    from study._backends.artifacts import open_store
    from study._inputs import prepare_data
    from study._show.progress import Progress
    from study._studies import artifact_location, check_stored_settings, count_finished
    from study._trials.liveness import recover_dead_trials
    from study._trials.loop import TrialsKeepFailing

    tokenizer, data = prepare_data(settings)  # bad data fails here, before the storage or the study is made
    if len(data.validation) < ADVISED_VALIDATION:
        print(f"note: {len(data.validation)} validation sentences: one evaluation's accuracy is uncertain by about "
              f"{50 / len(data.validation) ** 0.5:.1f} points (one standard error), so the best trial may be picked by luck; "
              f"{ADVISED_VALIDATION} or more are advised", flush=True)
    storage = open_storage(settings.storage)
    check_stored_settings(storage, settings)
    study = create_or_load(storage, settings, data)
    # The workers and every later command use the store the study was made with, unless told another.
    settings = replace(settings, artifact_store=artifact_location(study, settings))
    open_store(settings.artifact_location)
    print(f"study {study.study_name!r} in {mask_url(settings.storage)}: {count_finished(study)}/{settings.trials} trials finished")
    for number in recover_dead_trials(storage, study):
        print(f"trial {number} was left running by a process that died; it is retried from its last checkpoint")
    progress = Progress(study, settings.trials, evaluation=settings.evaluation) if settings.workers <= 1 else None
    try:
        stopped = optimize(storage, study, settings, data, tokenizer, progress)
    except KeyboardInterrupt:
        print(f"\ninterrupted: a running trial is marked failed and continues from its last checkpoint "
              f"when you resume with the same command:\n  {resume_command()}", file=sys.stderr, flush=True)
        return 130
    except TrialsKeepFailing as error:
        print(f"error: {error}", file=sys.stderr)
        print_summary(study, settings)
        return 1
    finally:
        if progress is not None:
            progress.close()
    if stopped is not None:
        print(f"{stopped}. {go_on(settings)}")
    print_summary(study, settings)
    return 0


COMMAND = Command(
    name="run",
    summary="run or resume a study (rerun the same command to resume)",
    description="Search learning rate, weight decay and each variant's own parameters (head dropout, LoRA r and dropout) for "
    "the variants that --variant names, in an Optuna study in persistent storage. Rerun the same command to resume.",
    settings=StudySettings,
    execute=run_study,
    epilog="Browse it with optuna-dashboard (run prints the command), then retrain the best trial: emotion-study final.",
)
main = COMMAND.main

if __name__ == "__main__":
    sys.exit(main())
