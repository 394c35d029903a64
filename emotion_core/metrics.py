"""Classification metrics, computed offline with scikit-learn (what evaluate's accuracy and F1 scripts wrap)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from sklearn.metrics import accuracy_score, confusion_matrix, f1_score, precision_recall_fscore_support

from emotion_core.labels import LABELS


def accuracy(labels: Sequence[int], predictions: Sequence[int]) -> float:
    return float(accuracy_score(labels, predictions))


def macro_f1(labels: Sequence[int], predictions: Sequence[int], n_labels: int) -> float:
    return float(f1_score(labels, predictions, labels=list(range(n_labels)), average="macro", zero_division=0))


def classification_metrics(labels: Sequence[int], predictions: Sequence[int], names: Sequence[str] = LABELS) -> dict:
    """Accuracy, macro F1, per-class precision/recall/F1/support and the confusion matrix (rows: true labels)."""
    ids = list(range(len(names)))
    precision, recall, f1, support = precision_recall_fscore_support(labels, predictions, labels=ids, zero_division=0)
    return {
        "accuracy": accuracy(labels, predictions),
        "macro_f1": macro_f1(labels, predictions, len(names)),
        "n": int(len(labels)),
        "per_class": {
            name: {"precision": float(precision[i]), "recall": float(recall[i]), "f1": float(f1[i]), "support": int(support[i])}
            for i, name in enumerate(names)
        },
        "confusion_matrix": confusion_matrix(labels, predictions, labels=ids).tolist(),
    }


def predictions_from_logits(logits: np.ndarray) -> np.ndarray:
    return np.asarray(logits).argmax(axis=-1)


def trainer_accuracy(prediction) -> dict:
    """``compute_metrics`` for the HF Trainer: validation accuracy from an EvalPrediction."""
    return {"accuracy": accuracy(prediction.label_ids, predictions_from_logits(prediction.predictions))}
