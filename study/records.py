"""Everything emotion-study writes into Optuna storage, as typed records: one reader and one writer each.

A study carries a :class:`StudyRecord` (its settings, label names, the fingerprints of its model and data, its artifact
store), later a :class:`FinalRecord` (the retrained model), a :class:`FinalCheckpoint` per final retraining under way
and a :class:`StopRecord` (why it stopped early). A trial
carries a :class:`TrialStart` (variant, baseline), the :class:`Worker` that runs it, its newest :class:`Checkpoint`, a
:class:`Retry` (the trial it continues), its :class:`TrialResult`, its :class:`Evidence` (which validation sentences it
got right) and, when it did not complete, a :class:`Failure` with its :class:`Outcome` and reason.

Writers take what Optuna writes attrs on (a ``Trial`` or ``Study``, or a :class:`StoredTrial` for a trial another process
runs); readers take what Optuna reads them from (a ``FrozenTrial``, ``Trial``, ``Study`` or study summary). A study made
before ``layout`` was recorded (layout 1) is read through its old keys.
"""

from __future__ import annotations

import base64
import dataclasses
import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, NamedTuple, Protocol

if TYPE_CHECKING:  # both load in a fraction of a second, which --help does not wait for
    import numpy as np
    from optuna.trial import FrozenTrial

LAYOUT = 2  # how this version writes its records; a study without the key was written as layout 1


class _Attrs(Protocol):
    @property
    def user_attrs(self) -> dict[str, Any]: ...


class _Writable(Protocol):
    def set_user_attr(self, key: str, value: Any) -> None: ...


class StoredTrial(NamedTuple):
    """A trial that this process does not run (a dead worker's), addressed in its storage."""

    storage: Any  # an optuna BaseStorage
    trial_id: int

    def set_user_attr(self, key: str, value: Any) -> None:
        self.storage.set_trial_user_attr(self.trial_id, key, value)


def _attrs(source: _Attrs | Mapping[str, Any]) -> Mapping[str, Any]:
    return source if isinstance(source, Mapping) else source.user_attrs


def _write(target: _Writable, values: Mapping[str, Any]) -> None:
    for key, value in values.items():
        target.set_user_attr(key, value)


class _OneAttr:
    """A record kept as one attr: its fields, as a dict, under KEY."""

    KEY: ClassVar[str]

    def write(self, target: _Writable) -> None:
        _write(target, {self.KEY: dataclasses.asdict(self)})

    @classmethod
    def read(cls, source: _Attrs | Mapping[str, Any]):
        attrs = _attrs(source)
        stored = attrs.get(cls.KEY)
        return cls._from(stored, attrs) if stored else None

    @classmethod
    def _from(cls, stored: dict, attrs: Mapping[str, Any]):
        return cls(**stored)


# -- study records ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class StudyRecord:
    """What ``emotion-study run`` stores when it makes a study: the settings that give its trials' values their meaning
    (StudySettings.identity), the label names by id, the model's, tokenizer's and data's fingerprints by content, and the
    artifact store that holds its checkpoints and final model."""

    settings: dict[str, Any]
    labels: tuple[str, ...]
    fingerprints: dict[str, str]
    artifact_store: str
    max_length: int | dict[str, int] | None = None  # the tokens a text keeps, as chosen (--max-length auto) or given; per model's label
    layout: int = LAYOUT

    def write(self, study: _Writable) -> None:
        # The settings last: another machine that sees them must also see the fingerprints, or it compares its own
        # model and data paths with the stored ones and refuses them.
        _write(study, {"layout": self.layout, "artifact_store": self.artifact_store, "labels": list(self.labels),
                       "max_length": self.max_length, "fingerprints": self.fingerprints, "settings": self.settings})

    @staticmethod
    def claim(study: _Writable) -> None:
        """Say that this process makes the study (enqueues its baselines, then writes its record), so that another
        worker that finds it half-made waits for the record instead of making it too."""
        _write(study, {"layout": LAYOUT})

    @staticmethod
    def being_made(study: _Attrs | Mapping[str, Any]) -> bool:
        attrs = _attrs(study)
        return "layout" in attrs and "settings" not in attrs

    @classmethod
    def read(cls, study: _Attrs | Mapping[str, Any]) -> StudyRecord | None:
        """None for a study that ``run`` did not make (no settings stored)."""
        attrs = _attrs(study)
        if "settings" not in attrs:
            return None
        return cls(settings=dict(attrs["settings"]), labels=tuple(attrs.get("labels") or ()),
                   fingerprints=dict(attrs.get("fingerprints") or {}), artifact_store=attrs.get("artifact_store") or "",
                   max_length=attrs.get("max_length"), layout=int(attrs.get("layout", 1)))


@dataclass(frozen=True)
class FinalRecord(_OneAttr):
    """The study's final model (``emotion-study final``): the trial it retrained (None: the variant's default parameters,
    kept with --keep defaults where no baseline trial holds them), its files' artifact ids, when, and its test accuracy
    over seeds."""

    trial: int | None
    files: dict[str, str]
    time: str
    test_accuracy: float | None = None
    test_accuracy_ci95: list[float] | None = None
    test_macro_f1: float | None = None
    seeds: list[int] = field(default_factory=list)
    KEY: ClassVar[str] = "final"

    @classmethod
    def _from(cls, stored: dict, attrs: Mapping[str, Any]) -> FinalRecord:
        # Layout 1 kept the test numbers as study attrs of their own.
        legacy = {key: attrs[key] for key in ("test_accuracy", "test_accuracy_ci95", "test_macro_f1", "seeds") if key in attrs}
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{**legacy, **{k: v for k, v in stored.items() if k in known}})


@dataclass(frozen=True)
class FinalCheckpoint:
    """The newest checkpoint, in the artifact store, of one final retraining, under the study attr that its ``key``
    names (its trial, seed and budget): the same final command, rerun on any machine, continues from it."""

    key: str
    artifact_id: str
    folder: str  # checkpoint-<step>
    PREFIX: ClassVar[str] = "final_checkpoint:"

    @property
    def step(self) -> int:
        return int(self.folder.rsplit("-", 1)[1])

    def write(self, study: _Writable) -> None:
        _write(study, {self.PREFIX + self.key: {"artifact_id": self.artifact_id, "folder": self.folder}})

    @classmethod
    def clear(cls, study: _Writable, key: str) -> None:
        """The retraining is done: no checkpoint to continue from (Optuna keeps an attr once set, so it becomes null)."""
        _write(study, {cls.PREFIX + key: None})

    @classmethod
    def read(cls, study: _Attrs | Mapping[str, Any], key: str) -> FinalCheckpoint | None:
        stored = _attrs(study).get(cls.PREFIX + key)
        return cls(key=key, **stored) if stored else None


@dataclass(frozen=True)
class StopRecord(_OneAttr):
    """Why the study stopped starting trials before --trials: ``patience`` trials in a row finished without a
    significant new best; ``finished`` trials had finished then, the best being trial ``best_trial``."""

    patience: int
    finished: int
    best_trial: int | None
    time: str
    KEY: ClassVar[str] = "stop"


# -- trial records ---------------------------------------------------------------------------------------------------


class Outcome(enum.Enum):
    """How a trial ended (or where it stands). A failed trial is one of failed, interrupted (Ctrl-C, SIGTERM), died
    (its process was gone or sent no heartbeat) or surplus (one more than the study needed); interrupted and died ones
    were retried. A pruned trial whose loss was no longer finite is diverged."""

    COMPLETE = "complete"
    PRUNED = "pruned"
    DIVERGED = "diverged"
    FAILED = "failed"
    INTERRUPTED = "interrupted"
    DIED = "died"
    SURPLUS = "surplus"
    RUNNING = "running"
    WAITING = "waiting"

    @property
    def retried(self) -> bool:
        return self in (Outcome.INTERRUPTED, Outcome.DIED)


@dataclass(frozen=True)
class TrialStart:
    """What a trial is: its variant, and whether it is a baseline (a searched variant's default parameters, enqueued
    first by a new study, never pruned)."""

    variant: str | None
    baseline: bool = False

    def write(self, trial: _Writable) -> None:
        _write(trial, {"variant": self.variant, "baseline": self.baseline})

    @staticmethod
    def enqueue_baseline(study, params: dict[str, Any]) -> None:
        """Queue a baseline trial with ``params`` (Optuna's enqueue_trial; not again if one with them exists)."""
        study.enqueue_trial(params, user_attrs={"baseline": True}, skip_if_exists=True)

    @classmethod
    def read(cls, trial: _Attrs | Mapping[str, Any]) -> TrialStart:
        attrs = _attrs(trial)
        return cls(variant=attrs.get("variant"), baseline=bool(attrs.get("baseline", False)))


@dataclass(frozen=True)
class Worker(_OneAttr):
    """The process that runs a trial: enough to tell, from another process, whether it is still alive (boot id and PID
    namespace say whether this machine can see it; the PID and its start time whether it is gone or was reused)."""

    host: str
    kernel: str | None
    pid_namespace: str | None
    pid: int
    started: float
    trial: int | None  # a retry inherits its origin's attrs: the trial number says whose identity this is
    KEY: ClassVar[str] = "worker"

    @classmethod
    def _from(cls, stored: dict, attrs: Mapping[str, Any]) -> Worker | None:
        return cls(**{f.name: stored.get(f.name) for f in dataclasses.fields(cls)}) if isinstance(stored, dict) else None

    def where(self) -> str:
        return f"host {self.host} pid {self.pid}"


@dataclass(frozen=True)
class Checkpoint(_OneAttr):
    """A trial's newest checkpoint in the artifact store (a retry inherits the pointer and continues from it)."""

    artifact_id: str
    folder: str  # checkpoint-<step>
    trial: int

    KEY: ClassVar[str] = "checkpoint"

    @property
    def step(self) -> int:
        return int(self.folder.rsplit("-", 1)[1])


@dataclass(frozen=True)
class Retry(_OneAttr):
    """The trial this one continues (``of``), the whole chain of trials before it, oldest first, and why."""

    of: int
    history: list[int]
    reason: str | None = None
    KEY: ClassVar[str] = "retry"

    @classmethod
    def read(cls, trial: _Attrs | Mapping[str, Any]) -> Retry | None:
        attrs = _attrs(trial)
        if attrs.get(cls.KEY):
            return cls(**attrs[cls.KEY])
        if "retry_of" in attrs:  # layout 1
            return cls(of=attrs["retry_of"], history=[attrs["retry_of"]], reason=attrs.get("retried_because"))
        return None


# Layout 1 told a failed trial's outcome by its reason's words; layout 2 stores the outcome.
_LEGACY_OUTCOMES = {"interrupted (Ctrl-C": Outcome.INTERRUPTED, "taken for dead": Outcome.DIED, "not needed": Outcome.SURPLUS}


@dataclass(frozen=True)
class Failure:
    """Why a trial did not complete: its outcome and a one-line reason (a failed trial's error type and message)."""

    outcome: Outcome
    reason: str

    def write(self, trial: _Writable) -> None:
        # The reason is never empty: a reader must always be able to say why.
        _write(trial, {"outcome": self.outcome.value, "fail_reason": self.reason or f"{self.outcome.value} (no message)"})

    @classmethod
    def read(cls, trial: _Attrs | Mapping[str, Any]) -> Failure | None:
        attrs = _attrs(trial)
        reason = attrs.get("fail_reason")
        if "outcome" in attrs:
            return cls(Outcome(attrs["outcome"]), str(reason or ""))
        if reason is None:
            return None
        kind = next((outcome for mark, outcome in _LEGACY_OUTCOMES.items() if mark in str(reason)), Outcome.FAILED)
        return cls(kind, str(reason))


def outcome(trial: FrozenTrial) -> Outcome:
    """How ``trial`` ended, or where it stands."""
    from optuna.trial import TrialState

    failure = Failure.read(trial)
    if trial.state == TrialState.FAIL:
        return failure.outcome if failure is not None else Outcome.FAILED
    if trial.state == TrialState.PRUNED and failure is not None and failure.outcome == Outcome.DIVERGED:
        return Outcome.DIVERGED
    return Outcome(trial.state.name.lower())


def fail_reason(trial: FrozenTrial) -> str | None:
    failure = Failure.read(trial)
    return failure.reason if failure is not None else None


@dataclass(frozen=True)
class TrialResult:
    """What training measured, beside the trial's value (each its own attr, so that the dashboard shows it as a column)."""

    trainable_params: int | None = None
    total_params: int | None = None
    peak_memory_mib: float | None = None
    peak_memory_note: str | None = None
    peak_rss_mib: float | None = None
    weights_mib: float | None = None
    train_seconds: float | None = None
    train_samples_per_second: float | None = None
    optimizer_steps: int | None = None
    n_train: int | None = None
    n_validation: int | None = None
    epoch_val_accuracy: list[float] = field(default_factory=list)
    resumed_from_step: int = 0

    def write(self, trial: _Writable) -> None:
        _write(trial, {k: v for k, v in dataclasses.asdict(self).items() if v is not None and not (k == "resumed_from_step" and not v)})

    @classmethod
    def from_summary(cls, summary: Mapping[str, Any], resumed_from_step: int = 0) -> TrialResult:
        """From emotion_core's Result.summary()."""
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in summary.items() if k in known}, resumed_from_step=resumed_from_step)

    @classmethod
    def read(cls, trial: _Attrs | Mapping[str, Any]) -> TrialResult:
        attrs = _attrs(trial)
        return cls(**{f.name: attrs[f.name] for f in dataclasses.fields(cls) if f.name in attrs})


@dataclass(frozen=True)
class Evidence:
    """Which validation sentences a trial got right at the evaluation that gave its value, a bit per sentence, in the
    order of the tokenized validation split ``data`` (its cache key): two trials with the same ``data`` can be compared
    sentence by sentence (McNemar's test, a paired bootstrap)."""

    correct: np.ndarray  # bool, one per validation sentence
    data: str

    def write(self, trial: _Writable) -> None:
        import numpy as np

        bits = base64.b64encode(np.packbits(np.asarray(self.correct, dtype=bool)).tobytes()).decode("ascii")
        _write(trial, {"evidence": {"n": int(len(self.correct)), "bits": bits, "data": self.data}})

    @classmethod
    def read(cls, trial: _Attrs | Mapping[str, Any]) -> Evidence | None:
        import numpy as np

        stored = _attrs(trial).get("evidence")
        if not stored:
            return None
        packed = np.frombuffer(base64.b64decode(stored["bits"]), dtype=np.uint8)
        return cls(correct=np.unpackbits(packed, count=stored["n"]).astype(bool), data=stored["data"])

    @property
    def accuracy(self) -> float:
        return float(self.correct.mean()) if len(self.correct) else 0.0


def retry_attrs(trial: FrozenTrial, reason: str | None) -> dict[str, Any]:
    """The user attrs of the retry of ``trial``: what it is and where it continues from, plus a Retry record; not how
    its origin ended, which process ran it, or what it measured."""
    attrs = trial.user_attrs
    kept = {key: attrs[key] for key in ("variant", "baseline", "checkpoint") if key in attrs}
    before = Retry.read(trial)
    retry = Retry(of=trial.number, history=[*(before.history if before else []), trial.number], reason=reason)
    return {**kept, Retry.KEY: dataclasses.asdict(retry)}


def as_retry(trial: FrozenTrial, reason: str | None) -> FrozenTrial:
    """A copy of ``trial`` whose user attrs are its retry's (what Optuna's RetryHeartbeatStaleTrialCallback copies)."""
    import copy

    retry = copy.deepcopy(trial)
    retry.user_attrs = retry_attrs(trial, reason)
    return retry


# -- system attrs ----------------------------------------------------------------------------------------------------


def _heartbeat_key(trial_id: int) -> str:
    # Keyed by the trial's id: a retry inherits its origin's system attrs, its stale heartbeat included.
    return f"heartbeat:{trial_id}"


def write_heartbeat(storage, trial_id: int, when: float) -> None:
    """A journal-file trial's heartbeat, as a system attr of the trial (RDBStorage keeps its own table)."""
    storage.set_trial_system_attr(trial_id, _heartbeat_key(trial_id), when)


def last_heartbeat(trial: FrozenTrial, trial_id: int) -> float | None:
    return trial.system_attrs.get(_heartbeat_key(trial_id))


_CREATION_KEY = "creation"  # a trial's system attr: the one create_new_trial call that made it


def tagged_template(template: FrozenTrial | None, tag: str) -> FrozenTrial:
    """The template of a new trial, carrying ``tag``: a copy of ``template``, or what RDBStorage makes without one (a
    running trial that holds nothing yet). A copied trial's own tag is replaced."""
    import copy
    import datetime

    from optuna.trial import FrozenTrial, TrialState

    if template is None:
        template = FrozenTrial(number=-1, state=TrialState.RUNNING, value=None, datetime_start=datetime.datetime.now(),
                               datetime_complete=None, params={}, distributions={}, user_attrs={}, system_attrs={},
                               intermediate_values={}, trial_id=-1)
    tagged = copy.copy(template)
    tagged.system_attrs = {**template.system_attrs, _CREATION_KEY: tag}
    return tagged


def creation_tag(trial: FrozenTrial) -> str | None:
    return trial.system_attrs.get(_CREATION_KEY)
