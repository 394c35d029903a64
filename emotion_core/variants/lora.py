"""LoRA: low-rank adapters on a frozen base, plus the trained head (peft's ``LoraConfig``, ``get_peft_model``)."""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from emotion_core.variants.base import FRACTION, POSITIVE, Choices, Range, Variant, VariantParams, ruled, trainables_to_float32

if TYPE_CHECKING:
    from torch import nn

# lora_targets: peft's default targets for the model type (its attention projections: GPT-2's c_attn, Llama's q_proj
# and v_proj), every Linear of each block (peft's "all-linear", which leaves the classification head out), or a list of
# module names (--target-modules).
ATTENTION, ALL_LINEAR = "attention", "all-linear"


@dataclass(frozen=True)
class LoraParams(VariantParams):
    lora_r: int = ruled(8, POSITIVE)
    lora_alpha_ratio: float = ruled(2.0, POSITIVE)  # lora_alpha / lora_r: the adapter's update is scaled by this
    lora_dropout: float = ruled(0.1, FRACTION)
    lora_targets: str | list[str] = ATTENTION


class LoRA(Variant):
    name = "lora"
    summary = "low-rank adapters on the frozen base (peft LoRA)"
    Params = LoraParams
    # lora_alpha_ratio and lora_targets are parameters, not searched: on SmolLM2-135M they explained under 1% of the
    # variance of the accuracy where the learning rate explained 95% (docs/results.md); alpha/r scales the adapter's
    # update much as the learning rate does.
    space = {
        "lora_r": Choices((4, 8, 16, 32)),
        "lora_dropout": Range(0.0, 0.3),
    }
    # LoRA's usual range is 1e-4..1e-3, and a budget run of a few hundred steps wants its top. Its subclasses take
    # the same, so that quantization or the decomposition is the only difference.
    default_learning_rate = 1e-3

    def apply(self, base: nn.Module, params: LoraParams) -> nn.Module:
        from peft import LoraConfig, TaskType, get_peft_model

        from emotion_core.models import ModelLoadError

        targets = params.lora_targets
        config = LoraConfig(
            task_type=TaskType.SEQ_CLS,
            r=params.lora_r,
            lora_alpha=params.lora_alpha_ratio * params.lora_r,
            lora_dropout=params.lora_dropout,
            target_modules=None if targets == ATTENTION else targets,
            **self.config_options(),
            # fan_in_fan_out stays False: peft sets it for GPT-2's Conv1D layers itself (once quantized they are Linear4bit).
        )
        try:
            model = get_peft_model(base, config)
        except ValueError as error:
            if "target_modules" not in str(error):
                raise
            raise ModelLoadError(
                f"peft has no default LoRA target modules for model type {base.config.model_type!r}; "
                "pass them with --target-modules (for example q_proj v_proj)"
            ) from error
        # The Trainer saves checkpoints through save_pretrained, whose default asks the hub (twice a checkpoint, for a hub
        # model) whether the embeddings changed: they never train here.
        model.save_pretrained = functools.partial(model.save_pretrained, save_embedding_layers=False)
        return trainables_to_float32(model)

    def config_options(self) -> dict[str, Any]:
        """More LoraConfig options, for a variant that is LoRA plus one of peft's options."""
        return {}

    def save(self, model: nn.Module, folder: Path) -> Path:
        model.save_pretrained(str(folder))
        return Path(folder) / "adapter_model.safetensors"

    def load_trained(self, base: nn.Module, folder: Path) -> nn.Module:
        from peft import PeftModel

        return PeftModel.from_pretrained(base, str(folder))

    def standalone(self, model: nn.Module) -> nn.Module:
        return model.merge_and_unload()
