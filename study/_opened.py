"""An opened study: the storage opened once, the Optuna study in it, the definition it was made with (its stored
settings, with this machine's paths and outputs), its sampler and pruner, and its artifact store. What the commands,
the objective and the workers take, instead of a storage and a study side by side.

``study._studies`` makes one: ``open_for_run`` (checks the stored definition, or makes the study) and
``open_stored`` (a study to read, retrain or predict with).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

import optuna
from optuna.storages import BaseStorage
from optuna.trial import FrozenTrial, TrialState

from study.settings import StudySettings


@dataclass
class OpenedStudy:
    """``storage``, ``study`` (one of its studies) and ``settings``: the study's definition as this machine runs it
    (None for a study that emotion-study run did not make, which stores none)."""

    storage: BaseStorage
    study: optuna.Study
    settings: StudySettings | None

    @property
    def name(self) -> str:
        return self.study.study_name

    @functools.cached_property
    def study_id(self) -> int:
        return self.storage.get_study_id_from_name(self.name)

    @property
    def definition(self) -> StudySettings:
        """The settings, for commands that need the definition (a study made by hand has none)."""
        from study._errors import UsageError

        if self.settings is None:
            raise UsageError(f"study {self.name!r} was not made by emotion-study run: it stores no settings")
        return self.settings

    @functools.cached_property
    def store(self) -> Any:
        """The study's artifact store (checkpoints, final models, reports), opened on first use."""
        from study._backends.artifacts import open_store

        return open_store(self.definition.artifact_location)

    def trial_id(self, number: int) -> int:
        """The storage's id of trial ``number`` (what storage calls take)."""
        return self.storage.get_trial_id_from_study_id_trial_number(self.study_id, number)

    def stored_trial(self, number: int) -> FrozenTrial:
        """Trial ``number`` as the storage holds it now (not a cached copy)."""
        return self.storage.get_trial(self.trial_id(number))

    def trials(self, *states: TrialState) -> list[FrozenTrial]:
        return self.study.get_trials(deepcopy=False, states=states or None)

    def with_search(self) -> OpenedStudy:
        """The study with the sampler and pruner its definition names, for trials to run."""
        from study._trials.sampling import make_pruner, make_sampler

        self.study.pruner = make_pruner(self.definition)
        self.study.sampler = make_sampler(self.definition)
        return self
