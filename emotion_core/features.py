"""The head variant's fast path: the frozen base's pooled features, computed once and kept in a ModelCache, and a head
trained on them.

A head trial over a frozen base spends nearly all its time in the base's forward pass, which gives the same output every
epoch and every trial (the base runs in eval mode: see ``variants.head``). So the base runs once per cache over each split,
the model's own pooling (last real token) picks one feature vector per sentence, and each trial trains a
:class:`FeatureHead` on those vectors: dropout, then a Linear of the model's head shape. The head's weights keep the
model's names (``score.weight``), so that they load into the full model (``final``, ``predict``).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch
from datasets import Dataset
from torch import nn

from emotion_core.cache import ModelCache
from emotion_core.data import TokenizedSplits, padding_collator
from emotion_core.memory import MIB
from emotion_core.models import count_parameters, draw_linear, head_module
from emotion_core.precision import bf16_autocast
from emotion_core.sources import model_key
from emotion_core.variants import Variant


class FeatureHead(nn.Module):
    """Dropout on the pooled features, then the model's head; ``forward`` takes what the feature datasets hold."""

    def __init__(self, head_name: str, in_features: int, out_features: int, bias: bool, dropout: float):
        super().__init__()
        self.head_name = head_name
        self.dropout = dropout
        self.add_module(head_name, nn.Linear(in_features, out_features, bias=bias))

    @property
    def head(self) -> nn.Linear:
        return getattr(self, self.head_name)

    def forward(self, features: torch.Tensor, labels: torch.Tensor | None = None):
        from transformers.modeling_outputs import SequenceClassifierOutput

        logits = self.head(nn.functional.dropout(features, self.dropout, self.training))
        loss = nn.functional.cross_entropy(logits, labels) if labels is not None else None
        return SequenceClassifierOutput(loss=loss, logits=logits)


def supports_features(model: nn.Module) -> bool:
    """True when the head is a single Linear on the pooled hidden state (decoder LMs' ``score``)."""
    return isinstance(head_module(model)[1], nn.Linear)


@torch.no_grad()
def pooled_features(model: nn.Module, dataset: Dataset, tokenizer, batch_size: int) -> np.ndarray:
    """The input of ``model``'s head for each row of ``dataset``, pooled as the model pools, in the dataset's order.

    The head is swapped for an identity, so the model's own pooling picks the vector; batches go longest first."""
    name, head = head_module(model)
    setattr(model, name, nn.Identity())
    try:
        model.eval()
        device = next(model.parameters()).device
        collator = padding_collator(tokenizer)
        order = np.argsort(-np.asarray(dataset["length"]), kind="stable")
        columns = dataset.select_columns(["input_ids", "attention_mask"])
        out = np.zeros((len(dataset), head.in_features), dtype=np.float32)
        for start in range(0, len(order), batch_size):
            rows = order[start : start + batch_size]
            batch = collator(columns.select(rows).to_list())
            with bf16_autocast(model):
                pooled = model(**{k: v.to(device) for k, v in batch.items()}).logits
            out[rows] = pooled.float().cpu().numpy()
        return out
    finally:
        setattr(model, name, head)


@dataclass
class HeadShape:
    """The model's head, as the FeatureHead copies it, and the full model's size for the trial's record."""

    name: str
    in_features: int
    out_features: int
    bias: bool
    initializer_range: float
    total_params: int
    weights_mib: float  # the full model's get_memory_footprint()

    def build(self, dropout: float, seed: int) -> FeatureHead:
        """The head to train, drawn from ``seed`` exactly as :func:`models.reset_head` draws the model's."""
        module = FeatureHead(self.name, self.in_features, self.out_features, self.bias, dropout)
        draw_linear(module.head, seed, self.initializer_range)
        return module


@dataclass
class FeatureSplits:
    """Pooled features of each split; ``test`` only when asked for."""

    train: FeatureDataset
    validation: FeatureDataset
    test: FeatureDataset | None
    head: HeadShape
    seconds: float  # spent computing them now (0 when all came from this process's cache)


class FeatureDataset(torch.utils.data.Dataset):
    """Pooled features and labels as tensors in memory: rows are tensor slices, not Arrow reads (a head step takes
    about a millisecond, so reading rows from Arrow would take most of it)."""

    def __init__(self, features: np.ndarray, split: Dataset):
        self.features = torch.from_numpy(features)
        self.labels = torch.tensor(split["label"][:], dtype=torch.long)
        self.lengths = list(split["length"][:])  # the samplers group and order rows as they do for token rows

    def select(self, rows: list[int]) -> FeatureDataset:
        """These rows only, in this order (as datasets.Dataset.select)."""
        subset = FeatureDataset.__new__(FeatureDataset)
        subset.features, subset.labels = self.features[rows], self.labels[rows]
        subset.lengths = [self.lengths[i] for i in rows]
        return subset

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> dict:
        return {"features": self.features[index], "labels": self.labels[index]}

    def __getitems__(self, indices: list[int]) -> list[dict]:
        return [{"features": self.features[i], "labels": self.labels[i]} for i in indices]


def feature_splits(
    model_name: str, variant: Variant, data: TokenizedSplits, tokenizer, cache: ModelCache, *, with_test: bool = False,
    batch_size: int = 128, precision: str = "auto",
) -> FeatureSplits | None:
    """The pooled features of train and validation (and test), from ``cache`` or computed now and kept there.

    None when the model's head is not a single Linear on a pooled vector: then the head variant trains on tokens."""
    key = (model_key(model_name), data.key, variant.frozen_dtype(model_name, precision))
    store = cache.features
    wanted = ("train", "validation", "test") if with_test else ("train", "validation")
    missing = [split for split in wanted if (*key, split) not in store]
    started = time.perf_counter()
    if key in store and store[key] is None:
        return None
    if missing:
        model = cache.fresh_base(model_name, variant, tokenizer.pad_token_id, precision=precision, labels=data.labels)
        name, head = head_module(model)
        if not supports_features(model):
            store[key] = None
            return None
        store[key] = HeadShape(
            name=name, in_features=head.in_features, out_features=head.out_features, bias=head.bias is not None,
            initializer_range=getattr(model.config, "initializer_range", 0.02), total_params=count_parameters(model)[1],
            weights_mib=model.get_memory_footprint() / MIB,
        )
        if torch.cuda.is_available():
            model.to("cuda")
        for split in missing:
            dataset = getattr(data, split)
            store[(*key, split)] = FeatureDataset(pooled_features(model, dataset, tokenizer, batch_size), dataset)
        del model
    return FeatureSplits(
        train=store[(*key, "train")],
        validation=store[(*key, "validation")],
        test=store.get((*key, "test")),
        head=store[key],
        seconds=time.perf_counter() - started if missing else 0.0,
    )
