"""The models' tokenizers and the tokenized data of a study, read once per process (tokenized splits from the on-disk
cache when it has them): one tokenizer and one tokenized copy of the data per searched model."""

from __future__ import annotations

from typing import TYPE_CHECKING

from emotion_core.sources import fingerprint
from study.settings import StudySettings

if TYPE_CHECKING:
    from emotion_core.data import TokenizedSplits

# Per searched model's label: its tokenizer and the data as it tokenizes it.
Inputs = dict[str, "tuple[object, TokenizedSplits]"]


def fingerprints(settings: StudySettings) -> dict[str, str]:
    """What the study's models, tokenizers and data are, by content (emotion_core.sources.fingerprint); several
    models' (and their tokenizers') comma-separated, in order."""
    models = settings.searched_models()
    tokenizers = [settings.for_model(model).tokenizer_name for model in models]

    def of(sources) -> str:
        return ",".join(fingerprint(source, settings.fingerprint_cache) for source in sources)

    return {"model": of(models), "tokenizer": of(tokenizers), "data": of([settings.data])}


def prepare_inputs(settings: StudySettings, say=print) -> Inputs:
    """Each searched model's tokenizer and tokenized splits (prepare_data), by its label; each line said is prefixed
    with the model's label when there are several."""
    labels = settings.model_labels()
    if len(labels) == 1:
        return {labels[0]: prepare_data(settings, say)}
    return {label: prepare_data(settings.for_model(model), lambda line, label=label: say(f"{label}: {line}"))
            for label, model in zip(labels, settings.searched_models())}


def prepare_data(settings: StudySettings, say=print, length_from: str = "--max-length") -> tuple[object, TokenizedSplits]:
    """Tokenizer and tokenized splits of a one-model study, saying what the data gave (the length kept, the texts cut, a
    replaced head) and where a given max_length comes from (``length_from``). A missing model or data set, or bad data,
    fails here, before anything is written."""
    from emotion_core.data import choose_max_length, load_splits, token_lengths, tokenize_splits
    from emotion_core.models import check_model, load_tokenizer, max_positions
    from study._command import quiet_imported_libraries
    from study._errors import UsageError

    quiet_imported_libraries()  # the training libraries are imported now (commands import them after parsing)
    check_model(settings.model)
    tokenizer = load_tokenizer(settings.tokenizer_name)
    splits = load_splits(settings.data, max_train_samples=settings.max_train_samples, max_eval_samples=settings.max_eval_samples,
                         seed=settings.seed, labels=settings.labels)
    for note in splits.notes:
        say(note)
    head = check_model(settings.model, splits.labels)
    if head is not None:
        say(f"note: {head}")
    lengths = token_lengths(splits, tokenizer, cache_dir=settings.cache_dir)
    if not any(lengths["train"]):
        raise UsageError(f"the tokenizer of {settings.tokenizer_name!r} turns every training text into no token at all; pass the "
                         "model's own tokenizer: --tokenizer /path/to/folder")
    limit = max_positions(settings.model)
    chosen = min(settings.max_length, limit) if settings.max_length and limit else settings.max_length
    max_length = chosen or choose_max_length(lengths["train"], limit)
    how = length_from if settings.max_length else "auto: the fewest that keep 99% of the training texts whole"
    cut = ", ".join(f"{sum(n > max_length for n in lengths[name])} of {len(lengths[name])} {name}" for name in ("train", "validation", "test"))
    say(f"max length {max_length} tokens ({how}{f', at most the model maximum {limit}' if limit and max_length == limit else ''}); "
        f"texts cut to it: {cut}")
    return tokenizer, tokenize_splits(splits, tokenizer, cache_dir=settings.cache_dir, max_length=max_length)
