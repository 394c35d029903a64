"""The search space: which variant (when several are searched), the optimizer's learning rate and weight decay, and
the chosen variant's own parameters (its ``space`` in emotion_core.variants: lora_r, head_dropout, ...)."""

from __future__ import annotations

from typing import Any

from emotion_core import variants
from emotion_core.variants import Uniform
from study.settings import StudySettings

OPTIMIZER_SPACE = {"learning_rate": Uniform(1e-5, 5e-3, log=True), "weight_decay": Uniform(0.0, 0.1)}


def suggest(trial: variants.Trial, settings: StudySettings) -> dict[str, Any]:
    """The trial's parameters. With several variants the variant is a parameter too, and each variant's own parameters
    are asked only of its trials, so that TPE learns them where they matter."""
    searched = settings.searched_variants()
    params: dict[str, Any] = {}
    if len(settings.model_labels()) > 1:
        params["model"] = trial.suggest_categorical("model", list(settings.model_labels()))
    if len(searched) > 1:
        params["variant"] = trial.suggest_categorical("variant", list(searched))
    variant = variants.get(params.get("variant", searched[0]))
    params.update(variants.suggest(OPTIMIZER_SPACE, trial))
    params.update(variant.search(trial, settings.fixed_params()))
    return params


def baseline_params(settings: StudySettings) -> list[dict[str, Any]]:
    """Each searched variant's default parameters (learning rate, weight decay and its own), as the trial that a new
    study enqueues first: what tuning is measured against; one per model where several are searched."""
    searched = settings.searched_variants()
    fixed = settings.fixed_params()
    labels = settings.model_labels()
    baselines = []
    for label in labels:
        for name in searched:
            variant = variants.get(name)
            asked = (set(OPTIMIZER_SPACE) | set(variant.space)) - set(fixed)
            params = {key: value for key, value in variant.default_params().items() if key in asked}
            params = {"variant": name, **params} if len(searched) > 1 else params
            baselines.append({"model": label, **params} if len(labels) > 1 else params)
    return baselines
