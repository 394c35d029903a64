"""Fine-tuning a decoder LM for emotion classification, with no Optuna in sight.

    from emotion_core import ModelCache, TrainConfig, load_splits, load_tokenizer, tokenize_splits, train
    tokenizer = load_tokenizer("gpt2")
    data = tokenize_splits(load_splits("dair-ai/emotion"), tokenizer)
    result = train(TrainConfig(model="gpt2", variant="lora", variant_params={"lora_r": 16}), data, tokenizer, evaluate_test=True)

The names below load their module on first use, so that importing a light part (the variant registry, TrainConfig)
does not import torch.
"""

from importlib import import_module

_EXPORTS = {
    "DataError": "emotion_core.data", "Splits": "emotion_core.data", "TokenizedSplits": "emotion_core.data",
    "load_splits": "emotion_core.data", "tokenize_splits": "emotion_core.data",
    "InputError": "emotion_core.errors", "LABELS": "emotion_core.labels",
    "ModelCache": "emotion_core.cache", "ModelLoadError": "emotion_core.models", "load_tokenizer": "emotion_core.models",
    "classification_metrics": "emotion_core.metrics", "classify": "emotion_core.inference",
    "Evaluation": "emotion_core.training", "Result": "emotion_core.training", "TrainConfig": "emotion_core.training",
    "train": "emotion_core.training", "release_memory": "emotion_core.training",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'emotion_core' has no attribute {name!r}")
