"""How a study proposes parameters (sampler) and stops bad trials early (pruner)."""

from __future__ import annotations

import warnings

import numpy as np
import optuna
from optuna.trial import FrozenTrial

from study.settings import StudySettings


class PerTrialSeed(optuna.samplers.BaseSampler):
    """A sampler seeded anew for each trial from (--seed, trial number).

    Workers on one machine or many share nothing but the storage, which hands each trial a distinct number: so they
    draw distinct parameters even when they start at the same instant, while a one-worker study stays reproducible
    from --seed (and a resumed study draws new ones, its trials having new numbers)."""

    def __init__(self, settings: StudySettings, seed: int):
        self.settings = settings
        self.seed = seed
        self._sampler = self._for(0)

    def _for(self, number: int) -> optuna.samplers.BaseSampler:
        seed = int(np.random.SeedSequence([self.seed, number]).generate_state(1)[0])
        if self.settings.sampler == "random":
            return optuna.samplers.RandomSampler(seed=seed)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            # constant_liar: once past its random start, TPE counts the trials running elsewhere as bad, so that
            # workers do not all propose the region the finished trials point at.
            return optuna.samplers.TPESampler(seed=seed, constant_liar=True)

    def before_trial(self, study: optuna.Study, trial: FrozenTrial) -> None:
        self._sampler = self._for(trial.number)
        self._sampler.before_trial(study, trial)

    def infer_relative_search_space(self, study, trial):
        return self._sampler.infer_relative_search_space(study, trial)

    def sample_relative(self, study, trial, search_space):
        return self._sampler.sample_relative(study, trial, search_space)

    def sample_independent(self, study, trial, param_name, param_distribution):
        return self._sampler.sample_independent(study, trial, param_name, param_distribution)

    def after_trial(self, study, trial, state, values):
        self._sampler.after_trial(study, trial, state, values)


def make_sampler(settings: StudySettings) -> optuna.samplers.BaseSampler:
    return PerTrialSeed(settings, settings.seed)


def make_pruner(settings: StudySettings) -> optuna.pruners.BasePruner:
    if settings.pruner == "none":
        return optuna.pruners.NopPruner()
    if settings.pruner == "hyperband":
        return optuna.pruners.HyperbandPruner()
    if settings.pruner == "halving":
        # Successive halving keeps the best quarter at each rung: the most steps saved, and the most risk of pruning the
        # trial that would have been best (docs/speed.md).
        return optuna.pruners.SuccessiveHalvingPruner()
    # The default. Pruning waits for 5 completed trials, and a step needs 5 reports before it can prune: so a study keeps
    # enough completed trials for TPE and the importances, with several workers too (they count completed trials);
    # docs/speed.md has the bench's numbers behind it. Each trial reports three times per epoch.
    return optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=0, n_min_trials=5)
