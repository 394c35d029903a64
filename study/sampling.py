"""How a study proposes parameters (sampler) and stops bad trials early (pruner)."""

from __future__ import annotations

import numpy as np
import optuna

from study.settings import StudySettings


def make_sampler(settings: StudySettings, seed: int | None = None) -> optuna.samplers.BaseSampler:
    seed = settings.seed if seed is None else seed
    if settings.sampler == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    return optuna.samplers.TPESampler(seed=seed)


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


def sampler_seed(seed: int, trials_so_far: int, worker: int = 0) -> int:
    """The sampler's seed for a worker joining a study: --seed itself for the first worker of a new study, else one
    derived from it, so that a resumed study or a second worker does not propose the same parameters again."""
    if trials_so_far == 0 and worker == 0:
        return seed
    return int(np.random.SeedSequence([seed, trials_so_far, worker]).generate_state(1)[0])
