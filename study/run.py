"""python -m study.run: run (or resume) the Optuna study in persistent storage.

--trials N is the total of finished (complete + pruned) trials the study should hold: a rerun of the same
command continues up to N and does nothing when N are there already.
"""

from __future__ import annotations

import argparse
import shlex
import sys
import time
import warnings
from dataclasses import replace

import optuna
from optuna.trial import TrialState

from study.artifacts import dashboard_command, open_store
from study.cli import add_settings_arguments, configure_logging, run_main, settings_from_args
from study.errors import logged_to
from study.inputs import fingerprints
from study.liveness import recover_dead_trials
from study.progress import Progress, params_text, state_counts, values_text
from study.sampling import make_pruner, make_sampler
from study.settings import StudySettings
from study.storage import open_storage, storage_exists, study_exists
from study.studies import (
    ARTIFACT_STORE_ATTR,
    FINGERPRINTS_ATTR,
    artifact_location,
    check_stored_settings,
    count_finished,
    pareto_front,
    pick_trial,
)
from study.urls import mask_url

# One evaluation on n sentences near 50 % accuracy has a standard error of about 50/sqrt(n) points: 3.5 at 200, where a
# SmolLM2 study's best trial tested no better than the defaults (0.3945 against 0.3955, issue 11); README, Results, has 500.
ADVISED_VALIDATION = 500


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m study.run",
        description="Search learning rate, dropout, LoRA r and weight decay for the head / LoRA / QLoRA variants "
        "in an Optuna study in persistent storage. Rerun the same command to resume.",
        epilog="Browse it with: optuna-dashboard <storage>. Then retrain the best trial: python -m study.final.",
    )
    add_settings_arguments(parser)
    return parser


def optimize(study: optuna.Study, objective, settings: StudySettings) -> None:
    """Run trials until the study holds settings.trials finished ones: here, or in settings.workers processes."""
    from study.trials import run_trials
    from study.workers import run_workers

    deadline = time.time() + settings.timeout if settings.timeout else None
    if settings.workers > 1:
        run_workers(settings, deadline)
    else:
        run_trials(study, objective, settings, [objective.progress] if objective.progress else [], deadline)


def print_summary(study: optuna.Study, settings: StudySettings) -> None:
    """Counts, the best trial (the Pareto front for accuracy,memory) and the commands that come next."""
    print(", ".join(f"{n} {state}" for state, n in state_counts(study).items()))
    if not study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        print("no trial completed")
        return
    chosen = pick_trial(study)
    if settings.multi_objective:
        print("Pareto front (accuracy vs peak memory):")
        for trial in pareto_front(study):
            print(f"  trial {trial.number:>3} {trial.user_attrs.get('variant', '-'):<6} {values_text(trial)} {params_text(trial.params)}")
        print(f"study.final retrains trial {chosen.number}, the front's most accurate (pass --trial N for another)")
    else:
        print(f"best trial {chosen.number}: {values_text(chosen)} peak={chosen.user_attrs.get('peak_memory_mib', '-')} MiB {params_text(chosen.params)}")
    where = f"--storage {mask_url(settings.storage)} --study-name {study.study_name}"
    print(f"dashboard: {dashboard_command(settings.storage, settings.artifact_location, settings.home)}")
    print(f"report:    python -m study.report {where}")
    print(f"final:     python -m study.final {where} --output-dir {settings.output_dir}")


def resume_command(argv: list[str] | None) -> str:
    """The command line that resumes this run, with any storage password masked."""
    args = list(sys.argv[1:] if argv is None else argv)
    return " ".join(["python -m study.run", *(shlex.quote(mask_url(a)) for a in args)])


def create_or_load(storage, settings: StudySettings, labels: tuple[str, ...]) -> optuna.Study:
    study = optuna.create_study(study_name=settings.resolved_study_name(), storage=storage, directions=settings.directions,
                                pruner=make_pruner(settings), load_if_exists=True)
    if "settings" not in study.user_attrs:
        study.set_user_attr(ARTIFACT_STORE_ATTR, settings.artifact_location)
        study.set_user_attr("labels", list(labels))  # the label names the data gave, by id
        study.set_user_attr(FINGERPRINTS_ATTR, fingerprints(settings))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            study.set_metric_names(settings.metric_names)
        # Last: another machine that sees the settings must also see the fingerprints, or it compares its own
        # model and data paths with these and refuses them.
        study.set_user_attr("settings", settings.identity())
    study.sampler = make_sampler(settings)
    return study


def nothing_to_do(settings: StudySettings) -> bool:
    """Whether the study holds its total already; a storage that does not exist yet is not made here."""
    if not storage_exists(settings.storage):
        return False
    storage = open_storage(settings.storage)
    check_stored_settings(storage, settings)
    name = settings.resolved_study_name()
    finished = count_finished(optuna.load_study(study_name=name, storage=storage)) if study_exists(storage, name) else 0
    if finished >= settings.trials:
        print(f"study {name!r} already holds {finished} finished trials (asked for {settings.trials}); nothing to do")
    return finished >= settings.trials


def run_study(settings: StudySettings, argv: list[str] | None) -> int:
    if nothing_to_do(settings):
        return 0
    # The training libraries only now: a rerun with nothing to do, or --help, answers without them.
    from emotion_core.cache import ModelCache
    from study.inputs import prepare_data
    from study.objective import Objective
    from study.trials import TrialsKeepFailing
    tokenizer, data = prepare_data(settings)  # bad data fails here, before the storage or the study is made
    if len(data.validation) < ADVISED_VALIDATION:
        print(f"note: {len(data.validation)} validation sentences: one evaluation's accuracy is uncertain by about "
              f"{50 / len(data.validation) ** 0.5:.1f} points (one standard error), so the best trial may be picked by luck; "
              f"{ADVISED_VALIDATION} or more are advised (README, Results)", flush=True)
    storage = open_storage(settings.storage)
    check_stored_settings(storage, settings)
    study = create_or_load(storage, settings, data.labels)
    # The workers and every later command use the store the study was made with, unless told another.
    settings = replace(settings, artifact_store=artifact_location(study, settings))
    store = open_store(settings.artifact_location)
    print(f"study {study.study_name!r} in {mask_url(settings.storage)}: {count_finished(study)}/{settings.trials} trials finished")
    for number in recover_dead_trials(study):
        print(f"trial {number} was left running by a process that died; it is retried from its last checkpoint")
    progress = Progress(study, settings.trials) if settings.workers <= 1 else None
    try:
        optimize(study, Objective(settings, data, tokenizer, progress, ModelCache(freeze_gc=True), store), settings)
    except KeyboardInterrupt:
        print(f"\ninterrupted: a running trial is marked failed and continues from its last checkpoint "
              f"when you resume with the same command:\n  {resume_command(argv)}", file=sys.stderr, flush=True)
        return 130
    except TrialsKeepFailing as error:
        print(f"error: {error}", file=sys.stderr)
        print_summary(study, settings)
        return 1
    finally:
        if progress is not None:
            progress.close()
    print_summary(study, settings)
    return 0


def main(argv: list[str] | None = None) -> int:
    settings = settings_from_args(build_parser().parse_args(argv))
    configure_logging(settings.verbose)
    with logged_to(settings.study_dir, settings.batch_size):
        return run_study(settings, argv)


if __name__ == "__main__":
    sys.exit(run_main(main))
