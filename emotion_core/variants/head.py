"""The head alone: a frozen base, a trained classification head (the write-up's first experiment).

The frozen base is a fixed feature extractor: it runs in eval mode (its own dropout off) and dropout applies to the
head's input only, so its pooled features can be computed once per process (``emotion_core.features``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from emotion_core.variants.base import FRACTION, Range, Variant, VariantParams, ruled, trainables_to_float32

if TYPE_CHECKING:
    from torch import nn

WEIGHTS_FILE = "trained.safetensors"


@dataclass(frozen=True)
class HeadParams(VariantParams):
    head_dropout: float = ruled(0.1, FRACTION)  # dropout on the head's input, in training only


class Head(Variant):
    name = "head"
    summary = "a classification head on the frozen base"
    Params = HeadParams
    space = {"head_dropout": Range(0.0, 0.3)}
    trains_on_features = True
    default_learning_rate = 2e-3  # a fresh labels x hidden matrix on frozen features takes a large step

    def apply(self, base: nn.Module, params: HeadParams) -> nn.Module:
        self._train_only_the_head(base)
        _keep_base_in_eval(base)
        add_head_dropout(base, params.head_dropout)
        return trainables_to_float32(base)

    @staticmethod
    def _train_only_the_head(model: nn.Module) -> None:
        from emotion_core.models import head_module

        for parameter in model.parameters():
            parameter.requires_grad = False
        for parameter in head_module(model)[1].parameters():
            parameter.requires_grad = True

    def save(self, model: nn.Module, folder: Path) -> Path:
        from emotion_core.weights import save_state, trainable_state

        return save_state(trainable_state(model), Path(folder) / WEIGHTS_FILE)

    def load_trained(self, base: nn.Module, folder: Path) -> nn.Module:
        from emotion_core.models import ModelLoadError
        from emotion_core.weights import load_state

        unexpected = base.load_state_dict(load_state(Path(folder) / WEIGHTS_FILE), strict=False).unexpected_keys
        if unexpected:
            raise ModelLoadError(f"{folder} holds weights that the base model lacks: {unexpected[:3]}")
        return base


def add_head_dropout(model: nn.Module, p: float) -> None:
    """Dropout on the head's input, active in training mode only; the head's weights keep their names."""
    from torch import nn

    from emotion_core.models import head_module

    if p <= 0:
        return
    _, head = head_module(model)
    head.register_forward_pre_hook(lambda module, args: (nn.functional.dropout(args[0], p, module.training), *args[1:]))


def _keep_base_in_eval(model: nn.Module) -> None:
    """Eval mode for the frozen base (no dropout) even while the head trains: its features stay fixed."""
    body = getattr(model, "base_model", model)
    if body is model:
        return

    def to_eval(module: nn.Module, args) -> None:
        if module.training:
            module.eval()

    body.register_forward_pre_hook(to_eval)
