"""python -m study.run: run (or resume) the Optuna study in persistent storage.

--trials N is the total of finished (complete + pruned) trials the study should hold: a rerun of the same
command continues up to N and does nothing when N are there already.
"""

from __future__ import annotations

import argparse
import dataclasses
import shlex
import sys
import time
import warnings

import optuna
from optuna.trial import TrialState

from emotion_core.data import TokenizedSplits, load_splits, tokenize_splits
from emotion_core.variants import check_model, load_tokenizer
from study.cli import UsageError, add_settings_arguments, check_positive, configure_logging, run_main, settings_from_args
from study.objective import Objective
from study.progress import Progress, params_text, state_counts, values_text
from study.report import pareto_front, pick_trial
from study.settings import StudySettings
from study.storage import is_sqlite, mask_url, open_storage, recover_dead_trials, study_exists
from study.workers import FINISHED, TrialsKeepFailing, run_trials, run_workers, sampler_seed


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m study.run",
        description="Search learning rate, dropout, LoRA r and weight decay for the head / LoRA / QLoRA variants "
        "in an Optuna study in persistent storage. Rerun the same command to resume.",
        epilog="Browse it with: optuna-dashboard <storage>. Then retrain the best trial: python -m study.final.",
    )
    add_settings_arguments(parser)
    return parser


def validate(settings: StudySettings) -> None:
    for name in ("trials", "epochs", "batch_size", "max_train_samples", "max_eval_samples", "timeout", "workers"):
        check_positive(name, getattr(settings, name))
    if settings.workers > 1 and is_sqlite(settings.storage):
        raise UsageError(
            f"--workers {settings.workers} needs storage that takes several writers, and SQLite takes one at a time "
            "(\"database is locked\"). On this machine use a journal file: --storage storage/emotion.journal; "
            "on one or several machines, PostgreSQL or MySQL: --storage postgresql://user@host/db or mysql+pymysql://user@host/db"
        )


def make_sampler(settings: StudySettings) -> optuna.samplers.BaseSampler:
    if settings.sampler == "random":
        return optuna.samplers.RandomSampler(seed=settings.seed)
    return optuna.samplers.TPESampler(seed=settings.seed)


def make_pruner(settings: StudySettings) -> optuna.pruners.BasePruner:
    if settings.pruner == "none":
        return optuna.pruners.NopPruner()
    if settings.pruner == "hyperband":
        return optuna.pruners.HyperbandPruner()
    if settings.pruner == "halving":
        # Successive halving keeps the best quarter at each rung. It saved the most steps on the bench, but on a real model
        # it pruned the trial that would have been best (see the median below).
        return optuna.pruners.SuccessiveHalvingPruner()
    # The default. Two finished trials give a median; each trial reports three times per epoch, so the first report can
    # already prune. Bench, 12 trials, 2000 sentences, 500 for validation, two reports per epoch: on SmolLM2-135M head
    # studies (seeds 0, 1) it ran 52% and 72% of the unpruned steps and kept the best trial, where successive halving ran
    # 38% and 47% and lost the best by 2 and 3 points (one evaluation of 500 sentences is noisy by about 2 points, so the
    # early order is loose). On a tiny random GPT-2 (LoRA, seeds 0-3) it ran 39-72%, successive halving 36-47%.
    # Three reports per epoch: see TrainConfig.evals_per_epoch.
    return optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=0)


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


def prepare_data(settings: StudySettings) -> tuple[object, TokenizedSplits]:
    """Tokenizer and tokenized splits, once per process (and from the on-disk cache when it has them)."""
    check_model(settings.model)
    tokenizer = load_tokenizer(settings.tokenizer_name)
    splits = load_splits(
        settings.data, max_train_samples=settings.max_train_samples, max_eval_samples=settings.max_eval_samples, seed=settings.seed
    )
    return tokenizer, tokenize_splits(splits, tokenizer, cache_dir=settings.cache_dir)


def count_finished(study: optuna.Study) -> int:
    return len(study.get_trials(deepcopy=False, states=FINISHED))


def optimize(study: optuna.Study, storage, objective: Objective, settings: StudySettings) -> None:
    """Run trials until the study holds settings.trials finished ones: here, or in settings.workers processes."""
    deadline = time.time() + settings.timeout if settings.timeout else None
    if settings.workers > 1:
        run_workers(settings, deadline)
    else:
        run_trials(study, storage, objective, settings, [objective.progress] if objective.progress else [], deadline)


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
    storage = mask_url(settings.storage)
    where = f"--storage {storage} --study-name {study.study_name}"
    print(f"dashboard: optuna-dashboard {storage} --artifact-dir {settings.artifact_dir}")
    print(f"report:    python -m study.report {where}")
    print(f"final:     python -m study.final {where} --output-dir {settings.output_dir}")


def resume_command(argv: list[str] | None) -> str:
    """The command line that resumes this run, with any storage password masked."""
    args = list(sys.argv[1:] if argv is None else argv)
    return " ".join(["python -m study.run", *(shlex.quote(mask_url(a)) for a in args)])


def main(argv: list[str] | None = None) -> int:
    settings = settings_from_args(build_parser().parse_args(argv))
    configure_logging(settings.verbose)
    validate(settings)
    storage = open_storage(settings.storage)
    check_stored_settings(storage, settings)
    name = settings.resolved_study_name()
    if study_exists(storage, name):
        finished = count_finished(optuna.load_study(study_name=name, storage=storage))
        if finished >= settings.trials:
            print(f"study {name!r} already holds {finished} finished trials (asked for {settings.trials}); nothing to do")
            return 0
    tokenizer, data = prepare_data(settings)
    study = optuna.create_study(
        study_name=name,
        storage=storage,
        directions=settings.directions,
        pruner=make_pruner(settings),
        load_if_exists=True,
    )
    if "settings" not in study.user_attrs:
        study.set_user_attr("settings", settings.identity())
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            study.set_metric_names(settings.metric_names)
    study.sampler = make_sampler(dataclasses.replace(settings, seed=sampler_seed(settings.seed, len(study.trials))))
    print(f"study {name!r} in {mask_url(settings.storage)}: {count_finished(study)}/{settings.trials} trials finished")
    for number in recover_dead_trials(study, storage):
        print(f"trial {number} was left running by a process that died; it is retried from its last checkpoint")
    progress = Progress(study, settings.trials) if settings.workers <= 1 else None
    try:
        optimize(study, storage, Objective(settings, data, tokenizer, progress), settings)
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


if __name__ == "__main__":
    sys.exit(run_main(main))
