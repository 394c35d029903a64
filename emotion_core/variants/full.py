"""Full fine-tuning: every weight trains (opt-in; not part of ``--variant all``)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from emotion_core.variants.base import trainables_to_float32
from emotion_core.variants.head import Head, HeadParams, add_head_dropout

if TYPE_CHECKING:
    from torch import nn


class Full(Head):
    """The head variant's parameters and saving, with the whole model trained (so its weights stay float32)."""

    name = "full"
    summary = "every weight of the model trains"
    trains_base = True
    trains_on_features = False
    default_learning_rate = 5e-5  # every pretrained weight moves: the customary fine-tuning rate

    def apply(self, base: nn.Module, params: HeadParams) -> nn.Module:
        for parameter in base.parameters():
            parameter.requires_grad = True
        add_head_dropout(base, params.head_dropout)
        return trainables_to_float32(base)
