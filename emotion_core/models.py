"""Loading a pretrained model with a fresh classification head, and its tokenizer.

Any model that ``AutoModelForSequenceClassification`` loads works. The classification head is the model's own
(``score`` for decoder LMs such as GPT-2 and Llama, ``classifier`` for encoders); decoder LMs pool the last real
token, which needs a pad token that GPT-2 lacks, so the EOS token serves as pad and ``pad_token_id`` is set.
How the weights are stored (dtype, 4-bit) is the variant's to say (``emotion_core.variants``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from emotion_core.errors import InputError, first_line
from emotion_core.labels import LABELS
from emotion_core.precision import attention_for
from emotion_core.sources import local_path, missing_folder

HEAD_NAMES: tuple[str, ...] = ("score", "classifier")


class ModelLoadError(InputError):
    """The model or tokenizer cannot be loaded; the message says what to pass instead."""


# What a folder needs to give a tokenizer, and what to pass where it lacks it.
_TOKENIZER_FILES = "tokenizer files (tokenizer.json, or vocab.json and merges.txt)"
_PASS_A_TOKENIZER = "Pass a folder or hub id that has them: --tokenizer /path/to/folder"


def _load_error(kind: str, name: str, error: Exception) -> ModelLoadError:
    if missing_folder(name):
        return ModelLoadError(
            f"{kind} folder {name!r} does not exist; pass a folder written by save_pretrained() or a hub id: --model /path/to/folder"
        )
    local = local_path(name).exists()
    where = "local folder" if local else "Hugging Face hub"
    if kind == "tokenizer" and local:  # the model's own files may be there and its tokenizer's not
        hint = f"does it hold {_TOKENIZER_FILES}? {_PASS_A_TOKENIZER}"
    else:
        hint = ("If this machine is offline, save the model with save_pretrained() on a machine that has it, "
                f"copy the folder here and pass it: --{kind} /path/to/folder")
    return ModelLoadError(f"cannot load the {kind} {name!r} from the {where} ({type(error).__name__}: {first_line(error)}); {hint}")


# What a user's model name can fail with while its config or tokenizer is read: OSError for a missing folder or file
# and an unreachable hub, ValueError for a folder that holds no model ("Unrecognized model").
_LOAD_ERRORS = (OSError, ValueError)
# A text that every usable tokenizer turns into tokens.
PROBE = "hello world"


def load_tokenizer(name: str):
    """The model's tokenizer, padding on the right, with the EOS token as pad where it has none (GPT-2). One that
    cannot tokenize is a ModelLoadError: transformers makes a tokenizer of one token, which turns every text into no
    token at all, from a model folder without tokenizer files."""
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(local_path(name))
    except _LOAD_ERRORS as error:
        raise _load_error("tokenizer", name, error) from error
    tokens = tokenizer(PROBE, add_special_tokens=False)["input_ids"]
    if len(tokenizer) < 2 or not tokens:
        raise ModelLoadError(
            f"the tokenizer of {name!r} cannot tokenize: its vocabulary holds {len(tokenizer)} token(s) and {PROBE!r} becomes "
            f"{len(tokens)} tokens; are its {_TOKENIZER_FILES} missing? {_PASS_A_TOKENIZER}"
        )
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "right"
    return tokenizer


def check_model(name: str, labels: Sequence[str] | None = None) -> str | None:
    """Fail fast with a clear message when the model's config cannot be had (missing folder, offline hub) or the model
    takes no classification head. Once it can, an error while loading the weights is not the user's input (out of
    memory, a broken file) and keeps its type.

    Returns a note when the model is a classifier already whose labels differ from ``labels`` (count or names): its
    head is then replaced by a fresh one over ``labels`` (see load_base)."""
    from transformers import AutoConfig
    from transformers.models.auto.modeling_auto import MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING_NAMES

    try:
        config = AutoConfig.from_pretrained(local_path(name))
    except _LOAD_ERRORS as error:
        raise _load_error("model", name, error) from error
    if config.model_type not in MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING_NAMES:
        kind = (config.architectures or [type(config).__name__])[0]
        raise ModelLoadError(f"model {name!r} ({kind}, model type {config.model_type!r}) cannot take a text classification head: "
                             "transformers has no AutoModelForSequenceClassification for it; pass a decoder or encoder language model")
    theirs = [config.id2label[i] for i in sorted(config.id2label)] if any("SequenceClassification" in a for a in config.architectures or ()) else None
    if labels is not None and theirs is not None and list(theirs) != list(labels):
        return (f"the model's classification head ({len(theirs)} labels: {', '.join(map(str, theirs))}) is replaced by a fresh one "
                f"for the data's {len(labels)} labels ({', '.join(labels)})")
    return None


def max_positions(name: str) -> int | None:
    """The longest input the model takes, in tokens (None when its config does not say)."""
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(local_path(name))
    return next((int(v) for v in (getattr(config, k, None) for k in ("max_position_embeddings", "n_positions")) if v), None)


def load_base(name: str, pad_token_id: int, labels: Sequence[str] = LABELS, dtype: torch.dtype = torch.float32, **options: Any) -> nn.Module:
    """The pretrained model with a fresh head over ``labels``, read from disk with its weights in ``dtype``; ``options``
    go to ``from_pretrained`` (a variant's quantization: see Variant.load_base)."""
    from transformers import AutoModelForSequenceClassification

    check_model(name)
    options = {"attn_implementation": attention_for(dtype), "dtype": dtype, **options}

    def load(**extra):
        # ignore_mismatched_sizes: a classifier saved with another label count gets a fresh head of the right size
        # (check_model says so); the head is drawn anew for every run anyway.
        return AutoModelForSequenceClassification.from_pretrained(
            local_path(name), num_labels=len(labels), id2label=dict(enumerate(labels)), label2id={n: i for i, n in enumerate(labels)},
            ignore_mismatched_sizes=True, **extra
        )

    try:
        model = load(**options)
    except ValueError as error:  # "does not support ... sdpa": the model's default attention then
        if "sdpa" not in str(error).lower():
            raise
        model = load(**{k: v for k, v in options.items() if k != "attn_implementation"})
    model.config.pad_token_id = pad_token_id
    # Set now rather than by the first forward pass, which would make torch.compile compile the model twice.
    model.config.problem_type = "single_label_classification"
    return model


def head_module(model: nn.Module) -> tuple[str, nn.Module]:
    for name in HEAD_NAMES:
        module = getattr(model, name, None)
        if isinstance(module, nn.Module):
            return name, module
    raise ModelLoadError(f"{type(model).__name__} has no classification head named {' or '.join(HEAD_NAMES)}")


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


def count_parameters(model: nn.Module) -> tuple[int, int]:
    """(trainable, total) parameters, 4-bit weights counted as the parameters they stand for: peft's count for an
    adapter model, transformers' for a plain one, a plain sum for a module of ours (the head on cached features)."""
    if hasattr(model, "get_nb_trainable_parameters"):
        return model.get_nb_trainable_parameters()
    if hasattr(model, "num_parameters"):
        return model.num_parameters(only_trainable=True), model.num_parameters()
    return sum(p.numel() for p in model.parameters() if p.requires_grad), sum(p.numel() for p in model.parameters())

