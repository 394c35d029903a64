"""The model variants: a frozen base with a trained head, LoRA, QLoRA (4-bit NF4 base plus LoRA) and full fine-tuning.

Any model that ``AutoModelForSequenceClassification`` loads works. The classification head is the model's own
(``score`` for decoder LMs such as GPT-2 and Llama, ``classifier`` for encoders); decoder LMs pool the last real
token, which needs a pad token that GPT-2 lacks, so the EOS token serves as pad and ``pad_token_id`` is set.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from emotion_core.labels import ID2LABEL, LABEL2ID

VARIANTS: tuple[str, ...] = ("head", "lora", "qlora", "full")
HEAD_NAMES: tuple[str, ...] = ("score", "classifier")


class ModelLoadError(ValueError):
    """The model or tokenizer cannot be loaded; the message says what to pass instead."""


@dataclass
class ModelParams:
    """What a variant needs besides the base model."""

    dropout: float = 0.1  # LoRA dropout for lora/qlora; dropout on the head's input for head/full
    lora_r: int = 8
    lora_alpha: int | None = None  # None: 2 * lora_r
    target_modules: list[str] | None = field(default=None)  # None: peft's defaults for the model type


def _load_error(kind: str, name: str, error: Exception) -> ModelLoadError:
    where = "local folder" if Path(name).expanduser().exists() else "Hugging Face hub"
    return ModelLoadError(
        f"cannot load the {kind} {name!r} from the {where} ({type(error).__name__}: {(str(error).strip().splitlines() or [''])[0][:200]}). "
        "If this machine is offline, save the model with save_pretrained() on a machine that has it, "
        "copy the folder here and pass it: --model /path/to/folder"
    )


def load_tokenizer(name: str):
    """The model's tokenizer, padding on the right, with the EOS token as pad where it has none (GPT-2)."""
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(os.path.expanduser(name))
    except Exception as error:
        raise _load_error("tokenizer", name, error) from None
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "right"
    return tokenizer


def check_model(name: str) -> None:
    """Fail fast with a clear message when the model's config cannot be had (missing folder, offline hub)."""
    from transformers import AutoConfig

    try:
        AutoConfig.from_pretrained(os.path.expanduser(name))
    except Exception as error:
        raise _load_error("model", name, error) from None


def use_gpu() -> bool:
    return torch.cuda.is_available()


def qlora_compute_dtype() -> torch.dtype:
    # bitsandbytes' bf16 kernels are about 35x slower than float32 on a CPU.
    return torch.bfloat16 if use_gpu() else torch.float32


def head_module(model: nn.Module) -> tuple[str, nn.Module]:
    for name in HEAD_NAMES:
        module = getattr(model, name, None)
        if isinstance(module, nn.Module):
            return name, module
    raise ModelLoadError(f"{type(model).__name__} has no classification head named {' or '.join(HEAD_NAMES)}")


def load_base(name: str, variant: str, pad_token_id: int) -> nn.Module:
    """The pretrained model with a fresh six-way head; 4-bit NF4 weights for qlora."""
    from transformers import AutoModelForSequenceClassification

    kwargs = {}
    if variant == "qlora":
        from transformers import BitsAndBytesConfig

        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=qlora_compute_dtype(),
            llm_int8_skip_modules=list(HEAD_NAMES),  # the new head trains in full precision
        )
        kwargs["device_map"] = {"": 0} if use_gpu() else {"": "cpu"}
    try:
        model = AutoModelForSequenceClassification.from_pretrained(
            os.path.expanduser(name), num_labels=len(ID2LABEL), id2label=ID2LABEL, label2id=LABEL2ID, **kwargs
        )
    except Exception as error:
        raise _load_error("model", name, error) from None
    model.config.pad_token_id = pad_token_id
    return model


def _uses_conv1d(model: nn.Module) -> bool:
    from transformers.pytorch_utils import Conv1D

    return any(isinstance(module, Conv1D) for module in model.modules())


def _add_head_dropout(model: nn.Module, p: float) -> None:
    """Dropout on the head's input, active in training mode only; the head's weights keep their names."""
    if p <= 0:
        return
    _, head = head_module(model)
    head.register_forward_pre_hook(lambda module, args: (nn.functional.dropout(args[0], p, module.training), *args[1:]))


def apply_variant(model: nn.Module, variant: str, params: ModelParams) -> nn.Module:
    """Turn a loaded base (from :func:`load_base`) into the variant to train."""
    if variant not in VARIANTS:
        raise ValueError(f"unknown variant {variant!r}; choose from {', '.join(VARIANTS)}")
    if variant in ("head", "full"):
        trainable_head = variant == "head"
        for parameter in model.parameters():
            parameter.requires_grad = not trainable_head
        for parameter in head_module(model)[1].parameters():
            parameter.requires_grad = True
        _add_head_dropout(model, params.dropout)
        return model

    from peft import LoraConfig, TaskType, get_peft_model, prepare_model_for_kbit_training

    if variant == "qlora":
        # Gradient checkpointing would trade time for memory that a model of this size does not need.
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
    config = LoraConfig(
        task_type=TaskType.SEQ_CLS,
        r=params.lora_r,
        lora_alpha=params.lora_alpha or 2 * params.lora_r,
        lora_dropout=params.dropout,
        target_modules=params.target_modules,
        # GPT-2's Conv1D stores weights transposed; once quantized it is a Linear4bit and is not.
        fan_in_fan_out=_uses_conv1d(model),
    )
    try:
        return get_peft_model(model, config)
    except ValueError as error:
        if "target_modules" in str(error):
            raise ModelLoadError(
                f"peft has no default LoRA target modules for model type {model.config.model_type!r}; "
                "pass them with --target-modules (for example q_proj v_proj)"
            ) from None
        raise


def build_model(name: str, variant: str, params: ModelParams, pad_token_id: int) -> nn.Module:
    return apply_variant(load_base(name, variant, pad_token_id), variant, params)


def count_parameters(model: nn.Module) -> tuple[int, int]:
    """(trainable, total) parameter counts; 4-bit weights count as the parameters they stand for."""
    trainable = total = 0
    for parameter in model.parameters():
        count = parameter.numel()
        if hasattr(parameter, "quant_state"):  # bnb packs two 4-bit values in a byte
            count *= 2
        total += count
        if parameter.requires_grad:
            trainable += count
    return trainable, total


def trainable_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """The trained weights (head or adapter plus head), on the CPU."""
    return {name: p.detach().to("cpu", copy=True) for name, p in model.named_parameters() if p.requires_grad}


def save_trained(model: nn.Module, directory: str | os.PathLike) -> Path:
    """Save what training changed as safetensors: the adapter (peft) or the trainable weights."""
    from safetensors.torch import save_file

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    if hasattr(model, "peft_config"):
        model.save_pretrained(str(directory))
        return directory / "adapter_model.safetensors"
    path = directory / "trained.safetensors"
    save_file({name: t.contiguous() for name, t in trainable_state(model).items()}, str(path))
    return path
