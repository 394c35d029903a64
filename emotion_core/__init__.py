"""Fine-tuning a decoder LM for six-way emotion classification, with no Optuna in sight.

    from emotion_core import TrainConfig, load_splits, load_tokenizer, tokenize_splits, train
    tokenizer = load_tokenizer("gpt2")
    data = tokenize_splits(load_splits("dair-ai/emotion"), tokenizer)
    result = train(TrainConfig(model="gpt2", variant="lora"), data, tokenizer, evaluate_test=True)
"""

from emotion_core.data import DataError, Splits, TokenizedSplits, load_splits, tokenize_splits
from emotion_core.labels import ID2LABEL, LABEL2ID, LABELS
from emotion_core.metrics import classification_metrics
from emotion_core.train import Evaluation, Result, TrainConfig, release_memory, train
from emotion_core.variants import VARIANTS, ModelLoadError, ModelParams, build_model, load_tokenizer

__all__ = [
    "DataError", "Evaluation", "ID2LABEL", "LABEL2ID", "LABELS", "ModelLoadError", "ModelParams", "Result", "Splits",
    "TokenizedSplits", "TrainConfig", "VARIANTS", "build_model", "classification_metrics", "load_splits",
    "load_tokenizer", "release_memory", "tokenize_splits", "train",
]
