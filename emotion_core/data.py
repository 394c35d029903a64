"""Reading the emotion data (hub id or local folder) and tokenizing it once, with an on-disk cache.

A local folder holds one file per split: ``train``, ``validation`` (or ``val``) and ``test``, each as
``.txt`` (the original ``text;label`` lines), ``.csv``, ``.jsonl`` or ``.parquet`` (``text`` and ``label``
columns). Labels may be names or ids. Every problem is a :class:`DataError` whose message names the file
and the line, so that a CLI can print it and exit with code 2.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from datasets import Dataset, DatasetDict, load_from_disk

from emotion_core.errors import InputError, first_line
from emotion_core.labels import ID2LABEL, LABEL2ID, LABELS
from emotion_core.sources import local_path, looks_like_path

SPLIT_NAMES: dict[str, tuple[str, ...]] = {
    "train": ("train",),
    "validation": ("validation", "val", "valid"),
    "test": ("test",),
}
EXTENSIONS = (".txt", ".csv", ".jsonl", ".parquet")
# The longest sentence of the data set is 86 GPT-2 tokens: 128 truncates nothing real.
MAX_LENGTH = 128


class DataError(InputError):
    """The data cannot be read: missing, unreachable or malformed. The message says where and how to fix it."""


@dataclass
class Splits:
    """Raw splits, each a :class:`datasets.Dataset` with a ``text`` (str) and a ``label`` (int id) column."""

    train: Dataset
    validation: Dataset
    test: Dataset
    source: str
    labels: tuple[str, ...] = LABELS  # the label names, by id

    def items(self) -> list[tuple[str, Dataset]]:
        return [("train", self.train), ("validation", self.validation), ("test", self.test)]

    def fingerprint(self) -> str:
        """A content hash: equal data gives equal fingerprints whatever its file format."""
        digest = hashlib.sha256()
        for name, split in self.items():
            digest.update(name.encode())
            for text, label in zip(split["text"], split["label"]):
                digest.update(f"{label}\t{text}\n".encode())
        return digest.hexdigest()[:16]


def parse_label(value: object, where: str) -> int:
    """A label name (any case) or id (int or digit string) as its id."""
    if isinstance(value, bool):
        raise DataError(f"{where}: label {value!r} is neither a name nor an id; expected one of {', '.join(LABELS)} or 0-5")
    if isinstance(value, int) and value in ID2LABEL:
        return value
    if isinstance(value, float) and value.is_integer() and int(value) in ID2LABEL:
        return int(value)
    text = str(value).strip()
    if text.lower() in LABEL2ID:
        return LABEL2ID[text.lower()]
    if text.isdigit() and int(text) in ID2LABEL:
        return int(text)
    raise DataError(f"{where}: unknown label {text!r}; expected one of {', '.join(LABELS)} or an id 0-5")


def _read_txt(path: Path) -> tuple[list[str], list[int]]:
    texts, labels = [], []
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            line = line.rstrip("\r\n")
            if not line.strip():
                continue
            where = f"{path}:{number}"
            if ";" not in line:
                raise DataError(f"{where}: expected 'text;label', found no ';' in {line[:60]!r}")
            text, label = line.rsplit(";", 1)
            if not text.strip():
                raise DataError(f"{where}: empty text before ';'")
            texts.append(text)
            labels.append(parse_label(label, where))
    return texts, labels


def _read_records(path: Path) -> list[tuple[str, dict]]:
    """(where, record) pairs for the column formats; `where` is the file and line a user can look at."""
    import pandas as pd

    if path.suffix == ".jsonl":
        records = []
        with path.open(encoding="utf-8") as handle:
            for number, line in enumerate(handle, start=1):
                if not line.strip():
                    continue
                try:
                    record = json.loads(line)
                except json.JSONDecodeError as error:
                    raise DataError(f"{path}:{number}: not valid JSON ({error.msg})") from None
                if not isinstance(record, dict):
                    raise DataError(f"{path}:{number}: expected a JSON object with 'text' and 'label'")
                records.append((f"{path}:{number}", record))
        return records
    try:
        frame = pd.read_csv(path, keep_default_na=False) if path.suffix == ".csv" else pd.read_parquet(path)
    except pd.errors.EmptyDataError:
        return []
    except Exception as error:  # pandas and pyarrow raise many types for a corrupt file
        raise DataError(f"{path}: cannot be read as {path.suffix[1:]} ({type(error).__name__}: {error})") from None
    missing = {"text", "label"} - set(frame.columns)
    if missing:
        raise DataError(f"{path}: missing column(s) {', '.join(sorted(missing))}; found {', '.join(map(str, frame.columns))}")
    # csv line numbers count the header; parquet has rows, not lines
    first = 2 if path.suffix == ".csv" else 0
    unit = "line" if path.suffix == ".csv" else "row"
    return [(f"{path} {unit} {i + first}", row) for i, row in enumerate(frame[["text", "label"]].to_dict("records"))]


def read_split_file(path: Path) -> Dataset:
    """One split file as a Dataset of ``text`` and ``label`` ids."""
    try:
        records = _read_txt(path) if path.suffix == ".txt" else _read_records(path)
    except UnicodeDecodeError as error:
        raise DataError(f"{path}: not UTF-8 text (undecodable byte at offset {error.start}); is it a corrupted or binary file?") from None
    if path.suffix == ".txt":
        texts, labels = records
    else:
        texts, labels = [], []
        for where, record in records:
            text = record.get("text")
            if not isinstance(text, str) or not text.strip():
                raise DataError(f"{where}: 'text' is missing or empty")
            if "label" not in record or record["label"] is None:
                raise DataError(f"{where}: 'label' is missing")
            texts.append(text)
            labels.append(parse_label(record["label"], where))
    if not texts:
        raise DataError(f"{path}: the file holds no examples")
    return Dataset.from_dict({"text": texts, "label": labels})


def find_split_file(folder: Path, split: str) -> Path:
    for stem in SPLIT_NAMES[split]:
        for extension in EXTENSIONS:
            candidate = folder / f"{stem}{extension}"
            if candidate.is_file():
                return candidate
    names = ", ".join(f"{stem}{{{','.join(EXTENSIONS)}}}" for stem in SPLIT_NAMES[split])
    raise DataError(f"{folder}: missing the {split} split; expected one of {names}")


def _load_hub(source: str) -> dict[str, Dataset]:
    from datasets import load_dataset

    try:
        loaded = load_dataset(source)
    except OSError as error:  # unreachable hub, unknown data set (datasets' ConnectionError and DatasetNotFoundError)
        raise DataError(
            f"cannot load the data set {source!r} from the Hugging Face hub ({type(error).__name__}: {first_line(error)}). "
            "If this machine is offline, copy the data set's train/validation/test files (text;label .txt, .csv, .jsonl "
            "or .parquet) into a folder and pass it: --data /path/to/folder"
        ) from error
    result = {}
    for split, names in SPLIT_NAMES.items():
        name = next((n for n in names if n in loaded), None)
        if name is None:
            raise DataError(f"hub data set {source!r} has no {split} split (it has {', '.join(loaded)})")
        dataset = loaded[name]
        if "text" not in dataset.column_names or "label" not in dataset.column_names:
            raise DataError(f"hub data set {source!r} split {name!r} lacks 'text' and 'label' columns")
        result[split] = dataset.select_columns(["text", "label"])
    return result


def load_splits(
    source: str,
    *,
    max_train_samples: int | None = None,
    max_eval_samples: int | None = None,
    seed: int = 0,
) -> Splits:
    """Read the three splits from a local folder or a hub id.

    ``max_train_samples`` and ``max_eval_samples`` take a seeded random subset of train and validation, for
    budget runs. The test split is always whole, so that test accuracy means the same thing in every run.
    """
    folder = local_path(source)
    if folder.is_dir():
        splits = {split: read_split_file(find_split_file(folder, split)) for split in SPLIT_NAMES}
    elif looks_like_path(source):
        raise DataError(f"data folder {source!r} does not exist; pass a folder with train/validation/test files or a hub id")
    else:
        splits = _load_hub(source)
    for split, limit in (("train", max_train_samples), ("validation", max_eval_samples)):
        if limit is not None and limit < len(splits[split]):
            splits[split] = splits[split].shuffle(seed=seed).select(range(limit))
    return Splits(source=source, **splits)


@dataclass
class TokenizedSplits:
    """Model inputs (``input_ids``, ``attention_mask``, ``label``, ``length``) for each split.

    Validation and test are sorted by length, longest first, so that evaluation batches hold little padding.
    """

    train: Dataset
    validation: Dataset
    test: Dataset
    key: str
    labels: tuple[str, ...] = LABELS


def tokenizer_fingerprint(tokenizer) -> str:
    """What decides the tokens: vocabulary, merges, normalizer, special tokens. Not the truncation and padding that
    the backend keeps from its last call, which would give one tokenizer another key after it first tokenizes."""
    digest = hashlib.sha256()
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        state = json.loads(backend.to_str())
        state.pop("truncation", None)
        state.pop("padding", None)
        digest.update(json.dumps(state, sort_keys=True).encode())
    else:
        digest.update(repr(sorted(tokenizer.get_vocab().items())).encode())
    digest.update(f"{tokenizer.pad_token}|{tokenizer.padding_side}|{type(tokenizer).__name__}".encode())
    return digest.hexdigest()[:16]


def _tokenize(splits: Splits, tokenizer, max_length: int) -> DatasetDict:
    def encode(batch):
        encoded = tokenizer(batch["text"], truncation=True, max_length=max_length)
        encoded["length"] = [len(ids) for ids in encoded["input_ids"]]
        return encoded

    result = {}
    for name, split in splits.items():
        tokenized = split.map(encode, batched=True, remove_columns=["text"], desc=f"tokenizing {name}")
        if name != "train":
            tokenized = tokenized.sort("length", reverse=True)
        result[name] = tokenized
    return DatasetDict(result)


def padding_collator(tokenizer):
    """Pads each batch to its longest sentence: to a multiple of 8 on a GPU (tensor-core tiles, and fewer shapes for
    torch.compile), exactly on a CPU, where the rounding would only add work (about 15% more tokens on this data)."""
    import torch
    from transformers import DataCollatorWithPadding

    return DataCollatorWithPadding(tokenizer, pad_to_multiple_of=8 if torch.cuda.is_available() else None)


def tokenize_splits(
    splits: Splits, tokenizer, *, cache_dir: str | os.PathLike | None = None, max_length: int = MAX_LENGTH
) -> TokenizedSplits:
    """Tokenize every split once. With ``cache_dir``, the result is kept on disk keyed by tokenizer and data,
    so that another process or a rerun loads it instead of tokenizing again."""
    key = hashlib.sha256(f"{tokenizer_fingerprint(tokenizer)}|{splits.fingerprint()}|{max_length}".encode()).hexdigest()[:20]
    if cache_dir is None:
        tokenized = _tokenize(splits, tokenizer, max_length)
    else:
        path = Path(cache_dir) / key
        if not (path / "dataset_dict.json").is_file():
            Path(cache_dir).mkdir(parents=True, exist_ok=True)
            # Write beside the target and rename: a parallel worker never sees a half-written cache.
            staging = Path(tempfile.mkdtemp(prefix=f".{key}-", dir=cache_dir))
            _tokenize(splits, tokenizer, max_length).save_to_disk(str(staging))
            try:
                staging.rename(path)
            except OSError:  # another process finished first; its copy is identical
                shutil.rmtree(staging, ignore_errors=True)
        tokenized = load_from_disk(str(path))
    return TokenizedSplits(train=tokenized["train"], validation=tokenized["validation"], test=tokenized["test"], key=key, labels=splits.labels)
