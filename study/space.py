"""The search space: learning rate, dropout, LoRA rank and weight decay, and the variant itself with --variant all."""

from __future__ import annotations

from dataclasses import dataclass

import optuna

from study.settings import ALL_VARIANTS


@dataclass(frozen=True)
class SearchSpace:
    learning_rate: tuple[float, float] = (1e-5, 5e-3)  # log scale
    dropout: tuple[float, float] = (0.0, 0.3)
    lora_r: tuple[int, ...] = (4, 8, 16, 32)
    weight_decay: tuple[float, float] = (0.0, 0.1)


DEFAULT_SPACE = SearchSpace()


def suggest(trial: optuna.Trial, variant: str, space: SearchSpace = DEFAULT_SPACE) -> dict:
    """The trial's parameters. With ``variant="all"`` the variant is a parameter too and ``lora_r`` is asked
    only of the LoRA variants, so TPE learns it where it matters."""
    params: dict = {}
    if variant == "all":
        variant = params["variant"] = trial.suggest_categorical("variant", list(ALL_VARIANTS))
    params["learning_rate"] = trial.suggest_float("learning_rate", *space.learning_rate, log=True)
    params["dropout"] = trial.suggest_float("dropout", *space.dropout)
    if variant in ("lora", "qlora"):
        params["lora_r"] = trial.suggest_categorical("lora_r", list(space.lora_r))
    params["weight_decay"] = trial.suggest_float("weight_decay", *space.weight_decay)
    return params
