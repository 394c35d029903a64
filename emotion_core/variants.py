"""The model variants: a frozen base with a trained head, LoRA, QLoRA (4-bit NF4 base plus LoRA) and full fine-tuning.

Any model that ``AutoModelForSequenceClassification`` loads works. The classification head is the model's own
(``score`` for decoder LMs such as GPT-2 and Llama, ``classifier`` for encoders); decoder LMs pool the last real
token, which needs a pad token that GPT-2 lacks, so the EOS token serves as pad and ``pad_token_id`` is set.

The base is read from disk once per process (:func:`fresh_base` keeps it and hands out copies), and every copy gets a
head drawn from the trial's seed. In the head variant the frozen base is a fixed feature extractor: it runs in eval
mode (its own dropout off) and dropout applies to the head's input only, so its features can be computed once
(``emotion_core.features``). Where the machine computes in bf16 natively (a GPU, or a CPU with AMX or AVX512-BF16) the
frozen weights are bf16 and the trained ones float32; attention is SDPA, except on a CPU in bf16 (eager, see
:func:`attention_for`).
"""

from __future__ import annotations

import copy
import functools
import gc
import os
from collections import OrderedDict
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
    path = Path(name).expanduser()
    if not path.exists() and (path.is_absolute() or name.startswith((".", "~")) or name.count("/") > 1):
        return ModelLoadError(
            f"{kind} folder {name!r} does not exist; pass a folder written by save_pretrained() or a hub id: --model /path/to/folder"
        )
    where = "local folder" if path.exists() else "Hugging Face hub"
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


PRECISIONS: tuple[str, ...] = ("auto", "bf16", "fp32")
# On a CPU, bf16 pays once matrix products dominate a step. LoRA, 2000 sentences, one epoch, float32 against bf16:
# SmolLM2-135M (576 wide) 182.4 s against 92.8 s; a random GPT-2 256 wide 10.1 s against 7.7 s (first trial), 9.1 s
# against 6.0 s (later ones); 64 wide 1.5 s against 1.4 s once warm, and its first trial lost 1 s to oneDNN building
# bf16 kernels for each new batch shape.
CPU_BF16_MIN_HIDDEN_SIZE = 256


def native_bf16() -> bool:
    """Whether this machine computes in bf16 natively: a GPU that has it, or a CPU with AMX or AVX512-BF16 (elsewhere
    a CPU emulates bf16, slower than float32)."""
    if use_gpu():
        return torch.cuda.is_bf16_supported()
    cpu = torch.cpu
    return any(getattr(cpu, check, lambda: False)() for check in ("_is_amx_tile_supported", "_is_avx512_bf16_supported"))


@functools.cache
def _hidden_size(name: str) -> int:
    from transformers import AutoConfig

    try:
        return int(getattr(AutoConfig.from_pretrained(os.path.expanduser(name)), "hidden_size", 0) or 0)
    except Exception:  # loading the model will say why; float32 meanwhile
        return 0


def base_dtype(name: str, variant: str, precision: str = "auto") -> torch.dtype:
    """The dtype of the frozen weights. ``auto``: bf16 where the machine computes in it natively (:func:`native_bf16`),
    on a CPU only for models of CPU_BF16_MIN_HIDDEN_SIZE and wider; float32 elsewhere. ``bf16`` / ``fp32`` force one.
    Full fine-tuning's weights train and QLoRA's are 4-bit: float32."""
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; choose from {', '.join(PRECISIONS)}")
    if variant not in ("head", "lora") or precision == "fp32":
        return torch.float32
    if precision == "bf16" or (native_bf16() and (use_gpu() or _hidden_size(name) >= CPU_BF16_MIN_HIDDEN_SIZE)):
        return torch.bfloat16
    return torch.float32


def autocast_bf16(name: str, variant: str, precision: str = "auto") -> bool:
    """Whether training runs under bf16 autocast: on a GPU wherever it has bf16 (QLoRA's 4-bit layers compute in bf16
    there too); on a CPU where the frozen weights are bf16 (bitsandbytes computes in float32 there: see
    :func:`qlora_compute_dtype`)."""
    if precision == "fp32":
        return False
    if use_gpu():
        return precision == "bf16" or native_bf16()
    return base_dtype(name, variant, precision) == torch.bfloat16


def bf16_autocast(model: nn.Module):
    """bf16 autocast on the model's device when its frozen weights are bf16 (its trained ones are float32), as in
    training; a no-op context otherwise."""
    device = next(model.parameters()).device
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=any(p.dtype == torch.bfloat16 for p in model.parameters()))


def attention_for(dtype: torch.dtype) -> str:
    # SDPA is the fused kernel on a GPU and the fastest float32 path on a CPU. On a CPU in bf16, SDPA's flash-attention
    # backward is the slow part: 17.5 ms a layer against 1.6 ms in float32 (SmolLM2-135M LoRA, 32 x 22 tokens), where
    # eager attention trains 1.6x faster than SDPA in bf16.
    return "eager" if dtype == torch.bfloat16 and not use_gpu() else "sdpa"


def load_base(name: str, variant: str, pad_token_id: int, precision: str = "auto") -> nn.Module:
    """The pretrained model with a fresh six-way head, read from disk; 4-bit NF4 weights for qlora."""
    from transformers import AutoModelForSequenceClassification

    dtype = base_dtype(name, variant, precision)
    # Models without SDPA fall back to their default attention below.
    kwargs: dict = {"attn_implementation": attention_for(dtype)}
    if variant != "qlora":
        kwargs["dtype"] = dtype
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

    def load(**extra):
        return AutoModelForSequenceClassification.from_pretrained(
            os.path.expanduser(name), num_labels=len(ID2LABEL), id2label=ID2LABEL, label2id=LABEL2ID, **extra
        )

    try:
        try:
            model = load(**kwargs)
        except ValueError as error:  # "does not support ... sdpa": use the model's default attention
            if "sdpa" not in str(error).lower():
                raise
            model = load(**{k: v for k, v in kwargs.items() if k != "attn_implementation"})
    except Exception as error:
        raise _load_error("model", name, error) from None
    if variant == "qlora" and not use_gpu():
        _keep_4bit_layout_trainable(model)
    model.config.pad_token_id = pad_token_id
    # Set now rather than by the first forward pass, which would make torch.compile compile the model twice.
    model.config.problem_type = "single_label_classification"
    return model


def _keep_4bit_layout_trainable(model: nn.Module) -> None:
    """Keep bitsandbytes from repacking 4-bit weights for its CPU inference kernel.

    bitsandbytes >= 0.49 repacks a Linear4bit's weights at its first no-grad forward on a CPU with AVX512-BF16 (an
    evaluation), and from then on computes with a kernel that has no backward: the next training step fails ("a view
    of a leaf Variable that requires grad is being used in an in-place operation"). The repack also fails outright on
    layers narrower than its 64-value blocks. The plain layout (dequantize, then matmul) trains and evaluates."""
    import bitsandbytes as bnb

    for module in model.modules():
        if isinstance(module, bnb.nn.Linear4bit):
            module.support_avx512bf16_for_cpu = False


# Loaded bases, read once per process: (name, quantized, dtype) -> model. Two entries cover --variant all
# (a 4-bit and a full-precision base); each trial trains a deep copy.
_BASES: OrderedDict[tuple, nn.Module] = OrderedDict()
BASE_CACHE_SIZE = 2


def model_key(name: str) -> str:
    """The same model under another spelling of its folder is the same model."""
    path = os.path.expanduser(name)
    return os.path.realpath(path) if os.path.exists(path) else name


def fresh_base(name: str, variant: str, pad_token_id: int, seed: int = 0, precision: str = "auto") -> nn.Module:
    """A fresh copy of the pretrained model for one trial, with a new head drawn from ``seed``.

    The first call reads the model from disk; later ones copy it in memory (bitsandbytes' 4-bit weights copy too).
    """
    key = (model_key(name), variant == "qlora", base_dtype(name, variant, precision))
    if key in _BASES:
        _BASES.move_to_end(key)
    else:
        _BASES[key] = load_base(name, variant, pad_token_id, precision)
        while len(_BASES) > BASE_CACHE_SIZE:
            _BASES.popitem(last=False)
        # What is alive now (the libraries, the data, this base) lives as long as the process: out of the collector's
        # sight, the collections after each trial take milliseconds instead of a third of a second.
        gc.collect()
        gc.freeze()
    model = copy.deepcopy(_BASES[key])
    model.config.pad_token_id = pad_token_id
    reset_head(model, seed)
    return model


def clear_base_cache() -> None:
    """Forget the loaded bases (their memory goes with the next garbage collection)."""
    _BASES.clear()


def reset_head(model: nn.Module, seed: int) -> None:
    """Draw the head's weights as the model's own init does, from ``seed`` (see :func:`draw_linear`)."""
    draw_linear(head_module(model)[1], seed, getattr(model.config, "initializer_range", 0.02))


def draw_linear(head: nn.Module, seed: int, std: float) -> None:
    """Normal weights of standard deviation ``std`` and zero biases for the Linear layers of ``head``.

    Its own generator: the same seed gives the same head whatever ran before, in this process or another."""
    generator = torch.Generator().manual_seed(seed)
    for module in head.modules():
        if isinstance(module, nn.Linear):
            with torch.no_grad():
                module.weight.copy_((torch.randn(module.weight.shape, generator=generator) * std).to(module.weight.dtype))
                if module.bias is not None:
                    module.bias.zero_()


def _uses_conv1d(model: nn.Module) -> bool:
    from transformers.pytorch_utils import Conv1D

    return any(isinstance(module, Conv1D) for module in model.modules())


def _add_head_dropout(model: nn.Module, p: float) -> None:
    """Dropout on the head's input, active in training mode only; the head's weights keep their names."""
    if p <= 0:
        return
    _, head = head_module(model)
    head.register_forward_pre_hook(lambda module, args: (nn.functional.dropout(args[0], p, module.training), *args[1:]))


def _keep_base_in_eval(model: nn.Module) -> None:
    """The frozen base of the head variant is a fixed feature extractor: eval mode (no dropout) even while the head trains."""
    body = getattr(model, "base_model", model)
    if body is model:
        return

    def to_eval(module: nn.Module, args) -> None:
        if module.training:
            module.eval()

    body.register_forward_pre_hook(to_eval)


def _trainables_to_float32(model: nn.Module) -> nn.Module:
    """Trained weights stay float32 over a bf16 base: AdamW's small updates vanish in bf16's 8-bit mantissa."""
    for parameter in model.parameters():
        if parameter.requires_grad and parameter.dtype != torch.float32:
            parameter.data = parameter.data.float()
    return model


def apply_variant(model: nn.Module, variant: str, params: ModelParams) -> nn.Module:
    """Turn a loaded base (from :func:`fresh_base` or :func:`load_base`) into the variant to train."""
    if variant not in VARIANTS:
        raise ValueError(f"unknown variant {variant!r}; choose from {', '.join(VARIANTS)}")
    if variant in ("head", "full"):
        trainable_head = variant == "head"
        for parameter in model.parameters():
            parameter.requires_grad = not trainable_head
        for parameter in head_module(model)[1].parameters():
            parameter.requires_grad = True
        if trainable_head:
            _keep_base_in_eval(model)
        _add_head_dropout(model, params.dropout)
        return _trainables_to_float32(model)

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
        return _trainables_to_float32(get_peft_model(model, config))
    except ValueError as error:
        if "target_modules" in str(error):
            raise ModelLoadError(
                f"peft has no default LoRA target modules for model type {model.config.model_type!r}; "
                "pass them with --target-modules (for example q_proj v_proj)"
            ) from None
        raise


def build_model(name: str, variant: str, params: ModelParams, pad_token_id: int, seed: int = 0, precision: str = "auto") -> nn.Module:
    return apply_variant(fresh_base(name, variant, pad_token_id, seed, precision), variant, params)


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
