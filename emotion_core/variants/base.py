"""What a variant is: how its base is stored, how it becomes what trains, its part of the search space, and how what it
trained is saved and loaded. One subclass per variant, in a file of its own; ``emotion_core.variants`` holds the registry.

This module and the variant modules import no heavy library at import time: a command's ``--help`` lists the variants
without loading torch.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

if TYPE_CHECKING:
    import torch
    from torch import nn


class Trial(Protocol):
    """What a search asks of a trial: Optuna's ``Trial`` (emotion_core does not import Optuna)."""

    def suggest_float(self, name: str, low: float, high: float, *, log: bool = False) -> float: ...

    def suggest_int(self, name: str, low: int, high: int, *, log: bool = False) -> int: ...

    def suggest_categorical(self, name: str, choices: Sequence[Any]) -> Any: ...


def value_text(value: Any) -> str:
    """A parameter's value as a person reads it: 0.0001 as 0.0001, 2.0 as 2, a list of names comma-separated."""
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(map(value_text, value)) + "]"
    return str(value)


@dataclass(frozen=True)
class Range:
    """Numbers from low to high, on a log scale with ``log``: integers where both ends are (lora_r), else floats."""

    low: float
    high: float
    log: bool = False

    def suggest(self, trial: Trial, name: str) -> float:
        if isinstance(self.low, int) and isinstance(self.high, int):
            return trial.suggest_int(name, self.low, self.high, log=self.log)
        return trial.suggest_float(name, self.low, self.high, log=self.log)

    def clip(self, value: Any) -> Any:
        """The value of the range nearest to ``value``."""
        return type(self.low)(min(max(value, self.low), self.high))

    def __str__(self) -> str:
        return f"{value_text(self.low)}..{value_text(self.high)}{' (log)' if self.log else ''}"


@dataclass(frozen=True)
class Choices:
    """One of a few values."""

    values: tuple

    def suggest(self, trial: Trial, name: str) -> Any:
        return trial.suggest_categorical(name, list(self.values))

    def clip(self, value: Any) -> Any:
        """``value`` if it is a choice, else the nearest number among numeric choices, else the first choice."""
        if value in self.values:
            return value
        numbers = [v for v in self.values if isinstance(v, (int, float)) and not isinstance(v, bool)]
        if numbers and isinstance(value, (int, float)) and len(numbers) == len(self.values):
            return min(numbers, key=lambda v: abs(v - value))
        return self.values[0]

    def __str__(self) -> str:
        return "{" + ", ".join(map(value_text, self.values)) + "}"


@dataclass(frozen=True)
class Fixed:
    """One value, not searched."""

    value: Any

    def __str__(self) -> str:
        return f"{value_text(self.value)} (fixed)"


Dimension = Range | Choices | Fixed

# The values a parameter may take, beyond its type: (test, what it says), in the ``rule`` of a Params field's metadata.
Rule = tuple[Callable[[Any], bool], str]
POSITIVE: Rule = (lambda value: value > 0, "positive")
NON_NEGATIVE: Rule = (lambda value: value >= 0, "at least 0")
FRACTION: Rule = (lambda value: 0 <= value < 1, "in [0, 1)")


def ruled(default: Any, rule: Rule) -> Any:
    """A Params field whose values obey ``rule`` (a search that allows others is refused before it starts)."""
    return dataclasses.field(default=default, metadata={"rule": rule})


@dataclass(frozen=True)
class VariantParams:
    """A variant's own parameters. Field names are the search's parameter names, so a trial's params map onto them."""


class Variant:
    """Base of every variant. Subclasses set the class attributes and implement :meth:`apply`, :meth:`save` and
    :meth:`load_trained`."""

    name: ClassVar[str]
    summary: ClassVar[str]  # one line for --help and the README
    Params: ClassVar[type[VariantParams]] = VariantParams
    # Its part of the default search space, by the Params field each sets; a study's search section may search or fix any
    # other field too.
    space: ClassVar[Mapping[str, Dimension]] = {}
    quantized: ClassVar[bool] = False  # the frozen base is 4-bit
    trains_base: ClassVar[bool] = False  # every weight trains (so none is kept in bf16)
    trains_on_features: ClassVar[bool] = False  # only a Linear head on the frozen base's pooled features trains
    # A learning rate fixed before any test result was seen, from common practice rather than tuning: the one home of the
    # variant's default (TrainConfig's, study.compare's and the bench's, and the first trial of a study).
    default_learning_rate: ClassVar[float] = 1e-3

    # -- parameters

    def params(self, values: Mapping[str, Any] | None = None) -> VariantParams:
        """The variant's Params from a trial's (or a config's) values; missing ones take their defaults."""
        values = dict(values or {})
        known = {f.name for f in dataclasses.fields(self.Params)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"variant {self.name!r} takes {', '.join(sorted(known)) or 'no parameters'}; not {', '.join(unknown)}")
        return self.Params(**values)

    def params_of(self, values: Mapping[str, Any]) -> dict[str, Any]:
        """Those of ``values`` (a trial's flat params) that are this variant's."""
        known = {f.name for f in dataclasses.fields(self.Params)}
        return {k: v for k, v in values.items() if k in known}

    def default_params(self) -> dict[str, Any]:
        """Learning rate, weight decay and the variant's own parameters at their defaults, as a trial's flat params."""
        return {"learning_rate": self.default_learning_rate, "weight_decay": 0.0, **dataclasses.asdict(self.params())}

    # -- the base

    def frozen_dtype(self, model: str, precision: str = "auto") -> torch.dtype:
        """The dtype of the base's full-precision weights (emotion_core.precision); float32 where they train, and beside
        4-bit weights (bitsandbytes computes in float32 on a CPU, see QLoRA)."""
        import torch

        from emotion_core.precision import check_precision, frozen_dtype

        check_precision(precision)
        return torch.float32 if self.trains_base or self.quantized else frozen_dtype(model, precision)

    def autocast_bf16(self, model: str, precision: str = "auto") -> bool:
        """Whether training runs under bf16 autocast: on a GPU wherever it has bf16, on a CPU where the frozen
        weights are bf16."""
        import torch

        from emotion_core.precision import native_bf16, use_gpu

        if precision == "fp32":
            return False
        if use_gpu():
            return precision == "bf16" or native_bf16()
        return self.frozen_dtype(model, precision) == torch.bfloat16

    def load_options(self) -> dict[str, Any]:
        """``from_pretrained`` options beyond dtype and attention (a quantization config)."""
        return {}

    def after_load(self, model: nn.Module) -> None:
        """Adjust a base just read from disk."""

    def load_base(self, model: str, pad_token_id: int, precision: str = "auto", labels: Sequence[str] | None = None) -> nn.Module:
        """The pretrained model with a fresh head, its weights stored as this variant keeps them."""
        from emotion_core.labels import LABELS
        from emotion_core.models import load_base

        base = load_base(model, pad_token_id, labels or LABELS, self.frozen_dtype(model, precision), **self.load_options())
        self.after_load(base)
        return base

    # -- training and its results

    def apply(self, base: nn.Module, params: VariantParams) -> nn.Module:
        """Turn a loaded base into the model to train: freeze, add an adapter, and so on."""
        raise NotImplementedError

    def save(self, model: nn.Module, folder: Path) -> Path:
        """Save what training changed into ``folder``; returns the main file."""
        raise NotImplementedError

    def load_trained(self, base: nn.Module, folder: Path) -> nn.Module:
        """A base (from :func:`emotion_core.models.load_base`) with what :meth:`save` wrote."""
        raise NotImplementedError

    def standalone_base(self, model: str, pad_token_id: int, labels: Sequence[str] | None = None) -> nn.Module:
        """The base that a standalone model is made from: load_trained, then standalone."""
        return self.load_base(model, pad_token_id, "auto", labels)

    def standalone(self, model: nn.Module) -> nn.Module:
        """A plain transformers model that holds what was trained, for use without this project (pipeline)."""
        return model


def trainables_to_float32(model: nn.Module) -> nn.Module:
    """Trained weights stay float32 over a bf16 base: AdamW's small updates vanish in bf16's 8-bit mantissa."""
    for parameter in model.parameters():
        if parameter.requires_grad and parameter.dtype.is_floating_point and parameter.element_size() < 4:
            parameter.data = parameter.data.float()
    return model
