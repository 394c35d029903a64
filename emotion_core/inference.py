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
    """(label, probability) for each text, in order; the label names are the model's (its config's id2label)."""
    from datasets import Dataset

    encoded = Dataset.from_dict({"text": texts}).map(
        lambda batch: tokenizer(batch["text"], truncation=True, max_length=MAX_LENGTH), batched=True, remove_columns=["text"]
    )
    probabilities = torch.softmax(torch.from_numpy(evaluate_logits(model, encoded, tokenizer)), dim=-1)
    best = probabilities.max(dim=-1)
    names = model.config.id2label
    return [(names[int(i)], float(p)) for p, i in zip(best.values, best.indices)]
