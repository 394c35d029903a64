"""The model's tokenizer and the tokenized data of a study, read once per process (tokenized splits from the on-disk
cache when it has them)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from emotion_core.sources import fingerprint
from study.settings import StudySettings

if TYPE_CHECKING:
    from emotion_core.data import TokenizedSplits


def fingerprints(settings: StudySettings) -> dict[str, str]:
    """What the study's model, tokenizer and data are, by content (emotion_core.sources.fingerprint)."""
    sources = {"model": settings.model, "tokenizer": settings.tokenizer_name, "data": settings.data}
    return {key: fingerprint(source, settings.fingerprint_cache) for key, source in sources.items()}


def prepare_data(settings: StudySettings) -> tuple[object, TokenizedSplits]:
    """Tokenizer and tokenized splits. A missing model or data set fails here, before anything is written."""
    from emotion_core.data import MAX_LENGTH, load_splits, tokenize_splits
    from emotion_core.models import check_model, load_tokenizer
    from study._command import quiet_imported_libraries

    quiet_imported_libraries()  # the training libraries are imported now (commands import them after parsing)
    check_model(settings.model)
    tokenizer = load_tokenizer(settings.tokenizer_name)
    splits = load_splits(
        settings.data, max_train_samples=settings.max_train_samples, max_eval_samples=settings.max_eval_samples, seed=settings.seed
    )
    return tokenizer, tokenize_splits(splits, tokenizer, cache_dir=settings.cache_dir, max_length=settings.max_length or MAX_LENGTH)
