"""emotion-study run (also python -m study.run): run or resume the Optuna study in persistent storage.

--trials N is the total of finished (complete + pruned) trials the study should hold: a rerun of the same command
continues up to N and does nothing when N are there already, or when --patience stopped the study.
"""

from __future__ import annotations

import shlex
import sys
import time
from typing import TYPE_CHECKING

from study import records
from study._command import Command, invocation
from study._errors import logged_to
from study._urls import mask_url
from study.settings import StudySettings

if TYPE_CHECKING:
    from study._opened import OpenedStudy

# One evaluation on n sentences near 50 % accuracy has a standard error of about 50/sqrt(n) points: 3.5 at 200, enough
# for noise to pick the best trial (docs/results.md).
ADVISED_VALIDATION = 500


def optimize(opened: OpenedStudy, inputs, progress) -> str | None:
    """Run trials until the study holds its total of finished ones: here, or in settings.workers processes; returns
    why the stop rule stopped it, if it did."""
    from study._evidence import patience_rule
    from study._trials.workers import run_workers, work

    settings = opened.definition
    deadline = time.time() + settings.timeout if settings.timeout else None
    if settings.workers > 1:
        run_workers(settings, deadline)
        rule = patience_rule(settings.patience)
        return rule(opened.study) if rule is not None else None
    return work(opened, inputs, progress, deadline)


def print_summary(opened: OpenedStudy) -> None:
    """Counts, the best trial (the Pareto front for accuracy,memory), what tuning bought (also the study's note in the
    dashboard), and the commands that come next."""
    import optuna

    from study._backends.artifacts import dashboard_command
    from study._show.progress import outcome_counts, values_text
    from study._show.text import params_text
    from study._studies import pareto_front, pick_trial
    from study._tuning import answer, save_note, summarize

    study, settings = opened.study, opened.definition
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


def nothing_to_do(found: OpenedStudy) -> bool:
    """Whether the study holds its total already, or its stop rule has stopped it."""
    from study._evidence import patience_rule
    from study._studies import count_finished

    settings = found.definition
    finished = count_finished(found.study)
    if finished >= settings.trials:
        print(f"study {found.name!r} already holds {finished} finished trials (asked for {settings.trials}); nothing to do")
        return True
    rule = patience_rule(settings.patience)
    reason = rule(found.study) if rule is not None else None
    if reason is not None:
        print(f"study {found.name!r}: {reason}. {go_on(settings)}")
        return True
    return False


def go_on(settings: StudySettings) -> str:
    return (f"To run on to {settings.trials} trials, pass a larger --patience (this run's: {settings.patience}) or "
            "--patience 0 (no stop rule)")


def stored_definition(settings: StudySettings) -> StudySettings | None:
    """The settings a run of the stored study they name would train with (its stored definition joined with them);
    None when that study does not exist yet."""
    from study._studies import find_for_run

    found = find_for_run(settings)
    return found.settings if found is not None else None


def run_study(settings: StudySettings) -> int:
    with logged_to(settings.study_dir, settings.batch_size):
        return _run_study(settings)


def _run_study(settings: StudySettings) -> int:
    from study._studies import find_for_run

    found = find_for_run(settings)  # a stored study's definition fills in what was not given
    if found is not None and nothing_to_do(found):
        return 0
    # The training libraries only now: a rerun with nothing to do, or --help, answers without them.
    from study._inputs import prepare_inputs
    from study._show.progress import Progress
    from study._studies import count_finished, open_for_run
    from study._trials.liveness import recover_dead_trials
    from study._trials.loop import TrialsKeepFailing

    settings = found.settings if found is not None and found.settings is not None else settings
    inputs = prepare_inputs(settings)  # bad data fails here, before the storage or the study is made
    data = next(iter(inputs.values()))[1]  # the same sentences for every model
    if len(data.validation) < ADVISED_VALIDATION:
        print(f"note: {len(data.validation)} validation sentences: one evaluation's accuracy is uncertain by about "
              f"{50 / len(data.validation) ** 0.5:.1f} points (one standard error), so the best trial may be picked by luck; "
              f"{ADVISED_VALIDATION} or more are advised", flush=True)
    opened = open_for_run(settings, inputs, found)
    settings = opened.definition
    opened.store  # noqa: B018 - a store that cannot be opened fails now, not in the first trial
    print(f"study {opened.name!r} in {mask_url(settings.storage)}: {count_finished(opened.study)}/{settings.trials} trials finished")
    for number in recover_dead_trials(opened):
        print(f"trial {number} was left running by a process that died; it is retried from its last checkpoint")
    progress = Progress(opened.study, settings.trials, evaluation=settings.evaluation) if settings.workers <= 1 else None
    try:
        stopped = optimize(opened, inputs, progress)
    except KeyboardInterrupt:
        print(f"\ninterrupted: a running trial is marked failed and continues from its last checkpoint "
              f"when you resume with the same command:\n  {resume_command()}", file=sys.stderr, flush=True)
        return 130
    except TrialsKeepFailing as error:
        print(f"error: {error}", file=sys.stderr)
        print_summary(opened)
        return 1
    finally:
        if progress is not None:
            progress.close()
    if stopped is not None:
        print(f"{stopped}. {go_on(settings)}")
    print_summary(opened)
    return 0


COMMAND = Command(
    name="run",
    description="Search the learning rate, weight decay and each variant's own parameters (head dropout, LoRA r and dropout), "
    "or the space a study file's search: section gives, for the variants and base models it names, in an Optuna study in "
    "persistent storage. Rerun the same command to resume; --print-config --storage URL --study-name NAME prints a stored "
    "study's definition as a study file.",
    settings=StudySettings,
    execute=run_study,
    stored=stored_definition,
    epilog="Browse it with optuna-dashboard (run prints the command), then retrain the best trial: emotion-study final.",
)
main = COMMAND.main

if __name__ == "__main__":
    sys.exit(main())
