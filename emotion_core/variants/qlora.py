"""QLoRA: LoRA over a base quantized to 4-bit NF4 by bitsandbytes (``BitsAndBytesConfig``)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from emotion_core.variants.lora import LoRA, LoraParams

if TYPE_CHECKING:
    from torch import nn


class QLoRA(LoRA):
    name = "qlora"
    summary = "LoRA over a 4-bit NF4 base (bitsandbytes)"
    quantized = True

    def load_options(self) -> dict[str, Any]:
        import torch
        from transformers import BitsAndBytesConfig

        from emotion_core.models import HEAD_NAMES
        from emotion_core.precision import use_gpu
        from emotion_core.quantization import import_bitsandbytes

        import_bitsandbytes()  # deferred until a 4-bit base is loaded (emotion_core.quantization)
        return {
            "quantization_config": BitsAndBytesConfig(
                load_in_4bit=True,
                bnb_4bit_quant_type="nf4",
                bnb_4bit_use_double_quant=True,
                # bitsandbytes' bf16 kernels are about 35x slower than float32 on a CPU.
                bnb_4bit_compute_dtype=torch.bfloat16 if use_gpu() else torch.float32,
                llm_int8_skip_modules=list(HEAD_NAMES),  # the new head trains in full precision
            ),
            "device_map": {"": 0} if use_gpu() else {"": "cpu"},
        }

    def after_load(self, model: nn.Module) -> None:
        """Keep bitsandbytes from repacking 4-bit weights for its CPU inference kernel.

        bitsandbytes >= 0.49 repacks a Linear4bit's weights at its first no-grad forward on a CPU with AVX512-BF16 (an
        evaluation), and from then on computes with a kernel that has no backward: the next training step fails ("a view
        of a leaf Variable that requires grad is being used in an in-place operation"). The repack also fails outright on
        layers narrower than its 64-value blocks. The plain layout (dequantize, then matmul) trains and evaluates."""
        from emotion_core.precision import use_gpu
        from emotion_core.quantization import import_bitsandbytes

        bnb = import_bitsandbytes()

        if use_gpu():
            return
        for module in model.modules():
            if isinstance(module, bnb.nn.Linear4bit):
                module.support_avx512bf16_for_cpu = False

    def apply(self, base: nn.Module, params: LoraParams) -> nn.Module:
        from peft import prepare_model_for_kbit_training

        # Gradient checkpointing would trade time for memory that a model of this size does not need.
        return super().apply(prepare_model_for_kbit_training(base, use_gradient_checkpointing=False), params)

    def standalone_base(self, model: str, pad_token_id: int, labels: Sequence[str] | None = None) -> nn.Module:
        """A full-precision base holding the 4-bit weights the adapter was trained against, dequantized: the merged
        model then computes as the trained one did, and loads without bitsandbytes. (peft's merge into the 4-bit base
        would requantize the sum.)"""
        from transformers.pytorch_utils import Conv1D

        from emotion_core.quantization import import_bitsandbytes

        bnb = import_bitsandbytes()
        quantized = dict(self.load_base(model, pad_token_id, "auto", labels).named_modules())
        base = LoRA().load_base(model, pad_token_id, "fp32", labels)
        for name, module in base.named_modules():
            if isinstance(quantized.get(name), bnb.nn.Linear4bit):
                weight = quantized[name].weight
                full = bnb.functional.dequantize_4bit(weight.data, weight.quant_state).float()  # (out, in), as nn.Linear
                module.weight.data.copy_(full.T if isinstance(module, Conv1D) else full)  # GPT-2's Conv1D stores (in, out)
        return base
