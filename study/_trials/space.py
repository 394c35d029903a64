"""The search space: the optimizer's parameters, and each variant's own (its Params fields), each searched over a range
or among choices, or fixed. The default is OPTIMIZER_SPACE plus each variant's ``space``; a study's search section
(``SearchSpace.from_dict``) changes it key by key:

    learning_rate: {low: 1.0e-4, high: 3.0e-3, log: true}     # a range; ints (lora_r) give ints
    lr_scheduler_type: {choices: [linear, cosine]}            # one of a few values
    weight_decay: 0.0                                         # a fixed value
    lora: {lora_r: {choices: [8, 16]}, lora_alpha_ratio: 2.0} # a variant's own, under its name

Light: no Optuna (a trial is anything with Optuna's ``suggest_*``), so that settings can check a space as they are made.
"""

from __future__ import annotations

import dataclasses
import functools
import operator
import types
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from emotion_core import variants
from emotion_core.training.config import SCHEDULERS, TrainConfig
from emotion_core.variants.base import FRACTION, NON_NEGATIVE, POSITIVE, Choices, Dimension, Fixed, Range, Rule
from study._errors import UsageError


@dataclass(frozen=True)
class Param:
    """What a parameter may be: its type, a rule its values obey, and the only values it takes."""

    kind: Any
    rule: Rule | None = None
    among: tuple | None = None


# The optimizer's parameters, by their TrainConfig field names.
OPTIMIZER = {
    "learning_rate": Param(float, POSITIVE),
    "weight_decay": Param(float, NON_NEGATIVE),
    "warmup_ratio": Param(float, FRACTION),
    "lr_scheduler_type": Param(str, among=SCHEDULERS),
    "epochs": Param(float, POSITIVE),
    "batch_size": Param(int, POSITIVE),
}
OPTIMIZER_SPACE: dict[str, Dimension] = {"learning_rate": Range(1e-5, 5e-3, log=True), "weight_decay": Range(0.0, 0.1)}
RANGE_KEYS = ("low", "high", "log")


def variant_params(name: str) -> dict[str, Param]:
    """A variant's own parameters: its Params fields, typed by their hints."""
    params = variants.get(name).Params
    hints = typing.get_type_hints(params)
    return {f.name: Param(hints[f.name], f.metadata.get("rule")) for f in dataclasses.fields(params)}


@dataclass(frozen=True)
class SearchSpace:
    """The optimizer's dimensions, and each variant's own: ``searched`` are the study's variants (several make the
    variant a parameter too); ``own`` also holds any other variant that the search section names."""

    searched: tuple[str, ...]
    optimizer: dict[str, Dimension]
    own: dict[str, dict[str, Dimension]]
    models: tuple[str, ...] = ()  # the labels of the study's base models where it searches several (a parameter too)

    @classmethod
    def default(cls, searched: Sequence[str]) -> SearchSpace:
        return cls(tuple(searched), dict(OPTIMIZER_SPACE), {name: dict(variants.get(name).space) for name in searched})

    @classmethod
    def from_dict(cls, section: Mapping[str, Any] | None, searched: Sequence[str],
                  flags: Mapping[str, tuple[str, Any]] | None = None) -> SearchSpace:
        """The default space changed by ``section`` (a study's ``search:``, as YAML gives it), with the values that
        ``flags`` fix (parameter -> (flag, value): lora_targets by --target-modules) in each searched variant that takes
        them. A mistake raises UsageError naming its key path."""
        space = cls.default(searched)
        section = _mapping(section or {}, "search")
        for key, value in section.items():
            if key in OPTIMIZER:
                space.optimizer[key] = dimension(value, OPTIMIZER[key], f"search.{key}")
            elif key in variants.REGISTRY:
                own = space.own.setdefault(key, dict(variants.get(key).space))
                takes = variant_params(key)
                for name, given in _mapping(value, f"search.{key}").items():
                    if name not in takes:
                        raise UsageError(f"search.{key}.{name}: unknown parameter of variant {key}; it takes {', '.join(takes)}")
                    own[name] = dimension(given, takes[name], f"search.{key}.{name}")
            else:
                raise UsageError(f"search.{key}: unknown parameter; the search takes {', '.join(OPTIMIZER)}, and a variant's own "
                                 f"under its name ({', '.join(variants.names())})")
        for name, (flag, value) in (flags or {}).items():
            for variant in searched:
                if name in variant_params(variant):
                    given = space.own[variant].get(name)
                    if given is not None and given != Fixed(value):
                        raise UsageError(f"search.{variant}.{name} and {flag} both set {name}: give one of them")
                    space.own[variant][name] = Fixed(value)
        space._check_shared()
        return space

    def _check_shared(self) -> None:
        """Variants searched together share a parameter's name, and so must share what it is searched over (Optuna
        keeps one distribution per name in a study)."""
        seen: dict[str, tuple[str, Dimension]] = {}
        for variant in self.searched:
            for name, dim in self.own[variant].items():
                if isinstance(dim, Fixed):
                    continue
                first, other = seen.setdefault(name, (variant, dim))
                if dim != other:
                    raise UsageError(f"search.{variant}.{name}: {dim}, but search.{first}.{name}: {other}; variants searched "
                                     f"together search a parameter alike (fix it in one of them, or give both the same)")

    def dimensions(self, variant: str) -> dict[str, Dimension]:
        """The optimizer's dimensions and the variant's (its default ones for a variant the space does not hold), in
        the order they are suggested."""
        return {**self.optimizer, **self.own.get(variant, variants.get(variant).space)}

    def suggest(self, trial: variants.Trial) -> dict[str, Any]:
        """The trial's parameters. With several variants the variant is a parameter too, and each variant's own
        parameters are asked only of its trials, so that TPE learns them where they matter."""
        params: dict[str, Any] = {}
        if len(self.models) > 1:
            params["model"] = trial.suggest_categorical("model", list(self.models))
        if len(self.searched) > 1:
            params["variant"] = trial.suggest_categorical("variant", list(self.searched))
        variant = params.get("variant", self.searched[0])
        for name, dim in self.dimensions(variant).items():
            if not isinstance(dim, Fixed):
                params[name] = dim.suggest(trial, name)
        return params

    def fixed(self, variant: str) -> dict[str, Any]:
        """The values the space fixes for the variant's trials."""
        return {name: dim.value for name, dim in self.dimensions(variant).items() if isinstance(dim, Fixed)}

    def baseline(self, budget: Mapping[str, Any]) -> list[dict[str, Any]]:
        """Each searched variant's default parameters (its learning rate and own, TrainConfig's for the rest, ``budget``'s
        epochs and batch size), each brought into the space: the trials that a new study enqueues first, what tuning is
        measured against; one per model where several are searched. Only searched parameters: the fixed ones are the
        space's."""
        configured = {f.name: f.default for f in dataclasses.fields(TrainConfig) if f.name in OPTIMIZER}
        baselines = []
        for model in self.models or (None,):
            for variant in self.searched:
                defaults = {**configured, **budget, **variants.get(variant).default_params()}
                params = {name: dim.clip(defaults[name]) for name, dim in self.dimensions(variant).items() if not isinstance(dim, Fixed)}
                params = {"variant": variant, **params} if len(self.searched) > 1 else params
                baselines.append({"model": model, **params} if len(self.models) > 1 else params)
        return baselines

    def describe(self) -> list[str]:
        """One line per parameter of the study: ``learning_rate: 1e-05..0.005 (log)``, ``lora.lora_r: {4, 8, 16, 32}``,
        ``lora.lora_alpha_ratio: 2 (fixed)``."""
        lines = [f"{name}: {{{', '.join(among)}}}" for name, among in (("model", self.models), ("variant", self.searched)) if len(among) > 1]
        lines += [f"{name}: {dim}" for name, dim in self.optimizer.items()]
        return lines + [f"{variant}.{name}: {dim}" for variant in self.searched for name, dim in self.own[variant].items()]

    def to_dict(self) -> dict[str, Any]:
        """The space as a search section: what differs from the default space, as plain values (YAML, JSON), empty for
        the default space. ``SearchSpace.from_dict(space.to_dict(), space.searched, flags) == space`` for the flags
        the space was made with."""
        default = SearchSpace.default(self.searched)
        section: dict[str, Any] = {name: _plain(dim) for name, dim in self.optimizer.items() if default.optimizer.get(name) != dim}
        for variant, own in self.own.items():
            before = default.own.get(variant, variants.get(variant).space)
            changed = {name: _plain(dim) for name, dim in own.items() if before.get(name) != dim}
            if changed or variant not in default.own:
                section[variant] = changed
        return section


def dimension(value: Any, param: Param, path: str) -> Dimension:
    """The dimension that a search section's value gives: ``{low, high, log}``, ``{choices: [...]}``, or a value."""
    if not isinstance(value, Mapping):
        return Fixed(conform(value, param, path))
    if "choices" in value:
        if len(value) > 1:
            raise UsageError(f"{path}: choices take no other key, not {', '.join(k for k in value if k != 'choices')}")
        given = value["choices"]
        if not isinstance(given, list) or not given:
            raise UsageError(f"{path}.choices: give a list of one or more values, not {given!r}")
        choice = Param(_choice_kind(param.kind), param.rule, param.among)
        return Choices(tuple(conform(v, choice, f"{path}.choices[{i}]") for i, v in enumerate(given)))
    extra = [k for k in value if k not in RANGE_KEYS]
    if extra or "low" not in value or "high" not in value:
        raise UsageError(f"{path}: a range takes low, high and log (or give choices, or a value), not {dict(value)!r}")
    if param.kind not in (int, float):
        raise UsageError(f"{path}: a range needs a numeric parameter, and this one is {_kind_text(param.kind)}: give choices or a value")
    low, high = conform(value["low"], param, f"{path}.low"), conform(value["high"], param, f"{path}.high")
    log = value.get("log", False)
    if not isinstance(log, bool):
        raise UsageError(f"{path}.log: true or false, not {log!r}")
    if low > high:
        raise UsageError(f"{path}: low {low!r} is above high {high!r}")
    if log and low <= 0:
        raise UsageError(f"{path}.low: a log range needs low above 0, not {low!r}")
    return Range(low, high, log)


def conform(value: Any, param: Param, path: str) -> Any:
    """``value`` as the parameter takes it (an int as a float for a float parameter), or UsageError saying why not."""
    value = _typed(value, param.kind, path)
    if param.among is not None and value not in param.among:
        raise UsageError(f"{path}: {value!r} is not one of {', '.join(map(str, param.among))}")
    if param.rule is not None and not param.rule[0](value):
        raise UsageError(f"{path}: {value!r} is not {param.rule[1]}")
    return value


def _typed(value: Any, kind: Any, path: str) -> Any:
    if isinstance(kind, types.UnionType):
        for arm in typing.get_args(kind):
            try:
                return _typed(value, arm, path)
            except UsageError:
                pass
    elif typing.get_origin(kind) is list:
        if isinstance(value, list):
            return [_typed(item, typing.get_args(kind)[0], f"{path}[{i}]") for i, item in enumerate(value)]
    elif kind is float and isinstance(value, (int, str)) and not isinstance(value, bool):
        try:  # PyYAML reads 1e-4 (no dot) as a string
            return float(value)
        except ValueError:
            pass
    elif isinstance(value, kind) and (kind is bool or not isinstance(value, bool)):
        return value
    raise UsageError(f"{path}: {value!r} is not {_kind_text(kind)}")


def _choice_kind(kind: Any) -> Any:
    """What a choice may be: Optuna stores a choice as a number, a string or a bool, so lora_targets (a name or a list
    of module names) chooses among names."""
    if isinstance(kind, types.UnionType):
        return functools.reduce(operator.or_, [arm for arm in typing.get_args(kind) if typing.get_origin(arm) is not list])
    return kind


def _kind_text(kind: Any) -> str:
    if isinstance(kind, types.UnionType):
        return " or ".join(map(_kind_text, typing.get_args(kind)))
    if typing.get_origin(kind) is list:
        return f"a list of {_kind_text(typing.get_args(kind)[0]).split(' ', 1)[1]}s"
    return {int: "an int", float: "a number", str: "a string", bool: "true or false"}.get(kind, f"a {kind.__name__}")


def _mapping(value: Any, path: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise UsageError(f"{path}: give a mapping of parameters, not {value!r}")
    return value


def _plain(dim: Dimension) -> Any:
    if isinstance(dim, Range):
        return {"low": dim.low, "high": dim.high, "log": dim.log}
    if isinstance(dim, Choices):
        return {"choices": list(dim.values)}
    return dim.value
