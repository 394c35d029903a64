"""A trained model on sentences: logits over a tokenized split, labels and probabilities for raw text."""

from __future__ import annotations

import numpy as np
import torch

from emotion_core.data import MAX_LENGTH, padding_collator
from emotion_core.precision import bf16_autocast


def evaluate_logits(model, dataset, tokenizer, batch_size: int = 128) -> np.ndarray:
    """Logits of ``model`` on a tokenized dataset, in its order."""
    collator = padding_collator(tokenizer)
    device = next(model.parameters()).device
    model.eval()
    outputs = []
    columns = [c for c in ("input_ids", "attention_mask") if c in dataset.column_names]
    with torch.no_grad(), bf16_autocast(model):
        for start in range(0, len(dataset), batch_size):
            batch = collator([{c: row[c] for c in columns} for row in dataset.select(range(start, min(start + batch_size, len(dataset))))])
            outputs.append(model(**{k: v.to(device) for k, v in batch.items()}).logits.float().cpu().numpy())
    return np.concatenate(outputs) if outputs else np.zeros((0, model.config.num_labels))


def classify(model, tokenizer, texts: list[str]) -> list[tuple[str, float]]:
    """(label, probability) for each text, in order; the label names are the model's (its config's id2label). A text
    keeps the tokenizer's model_max_length tokens (what it was trained with)."""
    from datasets import Dataset

    length = min(tokenizer.model_max_length, MAX_LENGTH * 64)  # a tokenizer without a maximum says 1e30
    encoded = Dataset.from_dict({"text": texts}).map(
        lambda batch: tokenizer(batch["text"], truncation=True, max_length=length), batched=True, remove_columns=["text"]
    )
    probabilities = torch.softmax(torch.from_numpy(evaluate_logits(model, encoded, tokenizer)), dim=-1)
    best = probabilities.max(dim=-1)
    names = model.config.id2label
    return [(names[int(i)], float(p)) for p, i in zip(best.values, best.indices)]


def load_trained(config, folder, tokenizer, labels, cache=None):
    """``config``'s base model (a fresh copy from ``cache``, an emotion_core.cache.ModelCache, when given) with the
    weights that ``train(config, ..., save_to=folder)`` saved, ready to evaluate."""
    from emotion_core import variants
    from emotion_core.precision import use_gpu

    variant = variants.get(config.variant)
    if cache is not None:
        base = cache.fresh_base(config.model, variant, tokenizer.pad_token_id, precision=config.precision, labels=labels)
    else:
        base = variant.load_base(config.model, tokenizer.pad_token_id, config.precision, labels)
    model = variant.load_trained(base, folder)
    if use_gpu() and not variant.quantized:  # a 4-bit model is placed when it is loaded
        model = model.to("cuda")
    return model.eval()


def predict_split(model, dataset, tokenizer, batch_size: int = 128, on_batch=None) -> list[int]:
    """The predicted label id of each row of a tokenized split, in its order; ``on_batch(k, n)`` after each batch."""
    collator = padding_collator(tokenizer)
    device = next(model.parameters()).device
    columns = [c for c in ("input_ids", "attention_mask") if c in dataset.column_names]
    batches = (len(dataset) + batch_size - 1) // batch_size
    predicted: list[int] = []
    with torch.no_grad(), bf16_autocast(model):
        for k, start in enumerate(range(0, len(dataset), batch_size), start=1):
            rows = dataset.select(range(start, min(start + batch_size, len(dataset)))).select_columns(columns).to_list()
            logits = model(**{key: value.to(device) for key, value in collator(rows).items()}).logits
            predicted += logits.float().argmax(dim=-1).cpu().tolist()
            if on_batch is not None:
                on_batch(k, batches)
    return predicted
