"""Reading a text-classification data set (hub id or local folder) and tokenizing it once, with an on-disk cache.

A local folder holds one file per split: ``train``, ``validation`` (or ``val``) and ``test``, each as
``.txt`` (the original ``text;label`` lines), ``.csv``, ``.jsonl`` or ``.parquet`` (``text`` and ``label``
columns). Labels may be names or ids. A folder without such files is read by ``datasets.load_dataset``, as a copy of
a hub data set's repository is. The label names come from the data: the data set's ``ClassLabel`` names, or else the
names in the train split (see :func:`label_names`). Every text and label is read through
:func:`emotion_core.text.normalize_text`, whatever its format or line endings. Every problem is a :class:`DataError`
whose message names the file and the line, so that a CLI can print it and exit with code 2.
"""

from __future__ import annotations

import hashlib
import json
import math
import numbers
import os
import shutil
import tempfile
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from datasets import Dataset, DatasetDict, load_from_disk

from emotion_core.errors import InputError, first_line
from emotion_core.labels import LABELS
from emotion_core.sources import local_path, looks_like_path, save_cache
from emotion_core.text import normalize_text

SPLIT_NAMES: dict[str, tuple[str, ...]] = {
    "train": ("train",),
    "validation": ("validation", "val", "valid"),
    "test": ("test",),
}
EXTENSIONS = (".txt", ".csv", ".jsonl", ".parquet")
# The tokens a text keeps when nothing chose another length (the emotion data's longest sentence is 86 GPT-2 tokens).
MAX_LENGTH = 128
# A label that the train split holds fewer times than this, or for less than this share of it, and at most a tenth as
# often as the other labels do (their median), looks like a typo.
RARE_COUNT, RARE_SHARE, RARE_RATIO = 5, 0.001, 10
# --max-length auto keeps this share of the training texts whole.
KEEP_WHOLE = 0.99


class DataError(InputError):
    """The data cannot be read: missing, unreachable or malformed. The message says where and how to fix it."""


@dataclass
class Splits:
    """Raw splits, each a :class:`datasets.Dataset` with a ``text`` (str) and a ``label`` (int id) column, and the
    label names by id."""

    train: Dataset
    validation: Dataset
    test: Dataset
    source: str
    labels: tuple[str, ...]  # the label names, by id: the data's or the user's (--labels)
    notes: tuple[str, ...] = ()  # what looks odd but is allowed (a train label that validation and test lack)

    def items(self) -> list[tuple[str, Dataset]]:
        return [("train", self.train), ("validation", self.validation), ("test", self.test)]

    def fingerprint(self) -> str:
        """A content hash: equal data gives equal fingerprints whatever its file format."""
        digest = hashlib.sha256()
        digest.update(json.dumps(list(self.labels)).encode())  # the same ids under other names are other data
        for name, split in self.items():
            digest.update(name.encode())
            for text, label in zip(split["text"], split["label"]):
                digest.update(f"{label}\t{text}\n".encode())
        return digest.hexdigest()[:16]


Row = tuple[str, str, "int | str"]  # where a user finds it (file and line), the text, the label: an integer id or a name


def label_value(value: object, where: str) -> int | str:
    """A label as written: an integer id (an int, an integral float or a digit string) or a name."""
    if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
        raise DataError(f"{where}: label {value!r} is neither a name nor an integer id")
    if isinstance(value, (numbers.Integral, float)):
        return int(value)
    text = normalize_text(str(value))
    if not text:
        raise DataError(f"{where}: empty label")
    return int(text) if text.isdigit() else text


def label_names(train: list[Row]) -> tuple[str, ...]:
    """The label names, by id, that the train split's rows give; integer ids alone are named by themselves ("0", "1",
    ...), and must then run from 0 without a gap."""
    names = {label for _, _, label in train if isinstance(label, str)}
    if names == set(LABELS):  # exactly the six emotion names: the emotion data set's own order (its ids)
        return LABELS
    if names:
        # Sorted by code point (not by locale, not by first appearance): the same names get the same ids on every
        # machine, whatever the row order or the file format.
        return tuple(sorted(names))
    ids = {label for _, _, label in train}
    gap = min(set(range(max(ids) + 1)) - ids, default=None)
    if gap is not None:
        where, label = next((where, label) for where, _, label in train if label > gap)
        raise DataError(f"{where}: unknown label '{label}': integer labels are ids 0, 1, 2, ...; the train split has no label {gap}: "
                        "write the label names, or name every id in order with --labels")
    return tuple(map(str, sorted(ids)))


def label_ids(rows: list[Row], names: tuple[str, ...], train: str) -> list[int]:
    """Each row's label as an id into ``names``. A name the train split (``train``) lacks or an id past the names is a
    DataError."""
    index = {name: i for i, name in enumerate(names)}
    ids = []
    for where, _, label in rows:
        if isinstance(label, str) and label not in index:
            raise DataError(
                f"{where}: unknown label {label!r}: the train split ({train}) has no such label; its labels are {', '.join(names)}"
            )
        if isinstance(label, int) and not 0 <= label < len(names):
            raise DataError(
                f"{where}: unknown label '{label}': an integer label is an id, 0-{len(names) - 1} for {', '.join(names)}; "
                "for another data set write the label names"
            )
        ids.append(index[label] if isinstance(label, str) else label)
    return ids


def check_rare_labels(train: list[Row], names: tuple[str, ...]) -> None:
    """A label that the train split holds far less often than the others (fewer than RARE_COUNT times or under
    RARE_SHARE of the split, and at most 1/RARE_RATIO of the others' median) is most likely misspelled: a DataError at
    its first file:line."""
    named = [label for _, _, label in train if isinstance(label, str)]
    counts = Counter(named or [str(label) for _, _, label in train])  # integer ids alone: the ids are the names
    for name, count in sorted(counts.items(), key=lambda item: item[1]):
        others = sorted(c for n, c in counts.items() if n != name)
        few = count < RARE_COUNT or count < RARE_SHARE * len(train)
        if not (few and others and count * RARE_RATIO <= others[len(others) // 2]):
            break
        where = next(w for w, _, label in train if str(label) == name)
        rarest = min((n for n in counts if n != name), key=counts.get)
        raise DataError(
            f"{where}: label {name!r} occurs {count} time(s) in the {len(train)} training examples, the rarest other label "
            f"({rarest!r}) {counts[rarest]} times: a misspelled label? Correct it, or accept it by naming every label in id "
            f"order: --labels {','.join(names)}"
        )


def label_notes(rows: dict[str, list[Row]], names: tuple[str, ...], ids: dict[str, list[int]]) -> tuple[str, ...]:
    """A train label that neither validation nor test holds: allowed, and said."""
    held = set(ids.get("validation", [])) | set(ids.get("test", []))
    missing = [names[i] for i in sorted(set(ids["train"]) - held)]
    if not missing:
        return ()
    return (f"note: label(s) {', '.join(map(repr, missing))} occur in the train split but neither in validation nor in test: "
            "nothing measures how well they are learned",)


def _from_rows(rows: dict[str, list[Row]], train: str, given: tuple[str, ...] | None = None) -> tuple[dict[str, Dataset], tuple[str, ...], tuple[str, ...]]:
    """Datasets of ``text`` and ``label`` ids, the label names and notes, from each split's rows; ``given`` fixes the
    names and their order (--labels), and then any other label is an error."""
    if given is not None:
        names = tuple(given)
        for split_rows in rows.values():
            for where, _, label in split_rows:
                if isinstance(label, str) and label not in names:
                    raise DataError(f"{where}: label {label!r} is not one of --labels {','.join(names)}")
    else:
        names = label_names(rows["train"])
        check_rare_labels(rows["train"], names)
    if len(names) < 2:
        raise DataError(f"{train}: every example has the label {names[0]!r}; a classifier needs two labels or more")
    ids = {split: label_ids(split_rows, names, train) for split, split_rows in rows.items()}
    splits = {split: Dataset.from_dict({"text": [text for _, text, _ in split_rows], "label": ids[split]}) for split, split_rows in rows.items()}
    notes = label_notes(rows, names, ids)
    if given is None and not any(isinstance(label, str) for _, _, label in rows["train"]):
        notes += (f"note: the labels are the integers {', '.join(names)} in the data, without names; to name them, pass "
                  f"--labels {','.join(['NAME'] * len(names))} (one name per id, in id order)",)
    return splits, names, notes


def _read_txt(path: Path) -> list[Row]:
    rows = []
    with path.open(encoding="utf-8-sig") as handle:  # -sig: a byte-order mark is no part of the first line
        for number, line in enumerate(handle, start=1):
            line = normalize_text(line)
            if not line:
                continue
            where = f"{path}:{number}"
            if ";" not in line:
                raise DataError(f"{where}: expected 'text;label', found no ';' in {line[:60]!r}")
            text, label = line.rsplit(";", 1)
            text = normalize_text(text)
            if not text:
                raise DataError(f"{where}: empty text before ';'")
            rows.append((where, text, label_value(label, where)))
    return rows


def _read_records(path: Path) -> list[tuple[str, dict]]:
    """(where, record) pairs for the column formats; `where` is the file and line a user can look at."""
    import pandas as pd

    if path.suffix == ".jsonl":
        records = []
        with path.open(encoding="utf-8-sig") as handle:
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
        frame = pd.read_csv(path, keep_default_na=False, encoding="utf-8-sig") if path.suffix == ".csv" else pd.read_parquet(path)
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


def read_rows(path: Path) -> list[Row]:
    """One split file's rows, labels as written (names or ids)."""
    try:
        if path.suffix == ".txt":
            rows = _read_txt(path)
        else:
            rows = []
            for where, record in _read_records(path):
                text = record.get("text")
                text = normalize_text(text) if isinstance(text, str) else None
                if not text:
                    raise DataError(f"{where}: 'text' is missing or empty")
                if "label" not in record or record["label"] is None:
                    raise DataError(f"{where}: 'label' is missing")
                rows.append((where, text, label_value(record["label"], where)))
    except UnicodeDecodeError as error:
        raise DataError(f"{path}: not UTF-8 text (undecodable byte at offset {error.start}); is it a corrupted or binary file?") from None
    if not rows:
        raise DataError(f"{path}: the file holds no examples")
    return rows


def has_split_files(folder: Path) -> bool:
    """The folder is in our own format: it holds at least one train/validation/test file."""
    return any((folder / f"{stem}{extension}").is_file() for stems in SPLIT_NAMES.values() for stem in stems for extension in EXTENSIONS)


def find_split_file(folder: Path, split: str) -> Path:
    for stem in SPLIT_NAMES[split]:
        for extension in EXTENSIONS:
            candidate = folder / f"{stem}{extension}"
            if candidate.is_file():
                return candidate
    raise DataError(f"{folder}: missing the {split} split; expected one of {_file_names(split)}")


def _file_names(split: str) -> str:
    return ", ".join(f"{stem}{{{','.join(EXTENSIONS)}}}" for stem in SPLIT_NAMES[split])


def _read_folder(folder: Path, given: tuple[str, ...] | None):
    files = {split: find_split_file(folder, split) for split in SPLIT_NAMES}
    return _from_rows({split: read_rows(path) for split, path in files.items()}, str(files["train"]), given)


def _load_hub(source: str) -> DatasetDict:
    from datasets import load_dataset

    try:
        return load_dataset(source)
    except OSError as error:  # unreachable hub, unknown data set (datasets' ConnectionError and DatasetNotFoundError)
        raise DataError(
            f"cannot load the data set {source!r} from the Hugging Face hub ({type(error).__name__}: {first_line(error)}). "
            "If this machine is offline, copy the data set's train/validation/test files (text;label .txt, .csv, .jsonl "
            "or .parquet) or its hub repository (huggingface_hub.snapshot_download) into a folder and pass it: --data /path/to/folder"
        ) from error


def _load_folder(folder: Path) -> DatasetDict:
    """A folder not in our own format, as ``datasets.load_dataset`` reads it: a copy of a hub data set's repository
    (README.md with its configs, and the data files, as ``huggingface_hub.snapshot_download`` writes it), or data
    files whose names say the split."""
    import yaml
    from datasets import load_dataset
    from datasets.exceptions import DatasetsError

    try:
        return load_dataset(str(folder))
    # What datasets raises for a folder it cannot read: its own errors, no data files (OSError), a README whose YAML
    # does not parse, files or configs it rejects (ValueError, pyarrow's ArrowInvalid among them).
    except (DatasetsError, OSError, ValueError, yaml.YAMLError) as error:
        cause = f"; {first_line(error.__cause__)}" if error.__cause__ is not None else ""
        raise DataError(
            f"{folder}: holds no train/validation/test files ({_file_names('train')}, ...) and datasets.load_dataset "
            f"cannot read it ({type(error).__name__}: {first_line(error)}{cause}). Put the three split files there, or a "
            "copy of a hub data set's repository (its README.md and data files, as huggingface_hub.snapshot_download writes it)"
        ) from error


def _normalized(batch: dict) -> dict:
    return {"text": [normalize_text(text) if isinstance(text, str) else text for text in batch["text"]]}


def _from_datasets(loaded: DatasetDict, source: str, given: tuple[str, ...] | None = None):
    """Our three splits, the label names and notes from what ``datasets.load_dataset`` read (a hub id or a folder)."""
    from datasets import ClassLabel

    chosen = {}
    for split, names in SPLIT_NAMES.items():
        name = next((n for n in names if n in loaded), None)
        if name is None:
            raise DataError(f"data set {source!r} has no {split} split (it has {', '.join(loaded)}); it needs train, validation and test")
        dataset = loaded[name]
        if "text" not in dataset.column_names or "label" not in dataset.column_names:
            columns = ", ".join(dataset.column_names)
            raise DataError(f"data set {source!r} split {name!r} lacks 'text' and 'label' columns (it has {columns})")
        chosen[split] = (name, dataset.select_columns(["text", "label"]).map(_normalized, batched=True, keep_in_memory=True,
                                                                              desc=f"reading {name}"))
    feature = chosen["train"][1].features["label"]
    rows: dict[str, list[Row]] = {}
    if isinstance(feature, ClassLabel):  # the data set's own names and ids (dair-ai/emotion: sadness 0 ... surprise 5)
        for name, dataset in chosen.values():
            if min(dataset["label"], default=0) < 0:  # as GLUE's test splits: -1, no label
                raise DataError(f"data set {source!r} split {name!r} has examples without a label (-1); every split needs labels")
        names = tuple(feature.names)
        if given is None or tuple(given) == names:
            splits = {split: dataset for split, (_, dataset) in chosen.items()}
            ids = {split: list(dataset["label"]) for split, dataset in splits.items()}
            return splits, names, label_notes(rows, names, ids)
        # --labels reorders the declared names, or refuses another set: as names, the same rule as our own files.
        for split, (name, dataset) in chosen.items():
            rows[split] = [(f"{source} split {name} row {i}", text, names[label]) for i, (text, label) in
                           enumerate(zip(dataset["text"], dataset["label"]))]
        return _from_rows(rows, f"{source} split {chosen['train'][0]}", given)
    # Plain names or ids: the same rule as our own files.
    for split, (name, dataset) in chosen.items():
        rows[split] = []
        for i, (text, label) in enumerate(zip(dataset["text"], dataset["label"])):
            where = f"{source} split {name} row {i}"
            rows[split].append((where, text, label_value(label, where)))
    return _from_rows(rows, f"{source} split {chosen['train'][0]}", given)


def load_splits(
    source: str,
    *,
    max_train_samples: int | None = None,
    max_eval_samples: int | None = None,
    seed: int = 0,
    labels: Sequence[str] | None = None,
) -> Splits:
    """Read the three splits and the label names from a local folder or a hub id.

    ``labels`` fixes the label names and their ids (their order); a label outside them is a DataError. Without it the
    names come from the data, and a label that looks misspelled (far rarer than the others) is a DataError.
    ``max_train_samples`` and ``max_eval_samples`` take a seeded random subset of train and validation, for budget runs.
    The test split is always whole, so that test accuracy means the same thing in every run.
    """
    folder = local_path(source)
    given = tuple(labels) if labels is not None else None
    if folder.is_dir() and has_split_files(folder):
        splits, names, notes = _read_folder(folder, given)
    elif folder.is_dir():
        splits, names, notes = _from_datasets(_load_folder(folder), source, given)
    elif looks_like_path(source):
        raise DataError(f"data folder {source!r} does not exist; pass a folder with train/validation/test files or a hub id")
    else:
        splits, names, notes = _from_datasets(_load_hub(source), source, given)
    for split, limit in (("train", max_train_samples), ("validation", max_eval_samples)):
        if limit is not None and limit < len(splits[split]):
            splits[split] = splits[split].shuffle(seed=seed).select(range(limit))
    return Splits(source=source, labels=names, notes=notes, **splits)


@dataclass
class TokenizedSplits:
    """Model inputs (``input_ids``, ``attention_mask``, ``label``, ``length``) for each split.

    Validation and test are sorted by length, longest first, so that evaluation batches hold little padding.
    """

    train: Dataset
    validation: Dataset
    test: Dataset
    key: str
    labels: tuple[str, ...]
    max_length: int = MAX_LENGTH  # the tokens a text keeps; longer ones were cut
    # The raw splits' fingerprint: the same sentences tokenized by another model's tokenizer have the same one.
    sentences: str = ""


def in_split_order(values: Sequence, split: Dataset) -> list:
    """``values``, one per row of a tokenized split, put in the order of the raw split (its ``row`` column): what
    runs on the same sentences with different tokenizers can be paired by."""
    ordered = [None] * len(values)
    for row, value in zip(split["row"][:], values):
        ordered[row] = value
    return ordered


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
    def encode(batch, rows):
        encoded = tokenizer(batch["text"], truncation=True, max_length=max_length)
        encoded["length"] = [len(ids) for ids in encoded["input_ids"]]
        encoded["row"] = list(rows)  # the sentence's place in its raw split, whatever order the tokenized split takes
        return encoded

    result = {}
    for name, split in splits.items():
        tokenized = split.map(encode, batched=True, with_indices=True, remove_columns=["text"], desc=f"tokenizing {name}")
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


def token_lengths(splits: Splits, tokenizer, *, cache_dir: str | os.PathLike | None = None) -> dict[str, list[int]]:
    """Each split's texts' lengths in tokens, uncut; kept under ``cache_dir`` by tokenizer and data."""
    key = hashlib.sha256(f"{tokenizer_fingerprint(tokenizer)}|{splits.fingerprint()}|lengths".encode()).hexdigest()[:20]
    path = Path(cache_dir) / f"lengths-{key}.json" if cache_dir is not None else None
    if path is not None and path.is_file():
        return json.loads(path.read_text())
    lengths = {name: [len(ids) for ids in tokenizer(split["text"][:], truncation=False)["input_ids"]] for name, split in splits.items()}
    if path is not None:
        save_cache(path, lengths)
    return lengths


def choose_max_length(train_lengths: Sequence[int], limit: int | None = None, keep: float = KEEP_WHOLE) -> int:
    """The fewest tokens that keep ``keep`` of the training texts whole, at most ``limit`` (the model's maximum)."""
    ordered = sorted(train_lengths)
    if not ordered:
        return limit or MAX_LENGTH
    whole = math.ceil(round(keep * len(ordered), 6))  # texts to keep whole (round: 0.99 * 100 is 99.00000000000001)
    length = ordered[max(whole, 1) - 1]
    return max(1, min(length, limit) if limit else length)


def tokenize_splits(
    splits: Splits, tokenizer, *, cache_dir: str | os.PathLike | None = None, max_length: int = MAX_LENGTH
) -> TokenizedSplits:
    """Tokenize every split once. With ``cache_dir``, the result is kept on disk keyed by tokenizer and data,
    so that another process or a rerun loads it instead of tokenizing again."""
    sentences = splits.fingerprint()
    key = hashlib.sha256(f"{tokenizer_fingerprint(tokenizer)}|{sentences}|{max_length}".encode()).hexdigest()[:20]
    if cache_dir is None:
        tokenized = _tokenize(splits, tokenizer, max_length)
    else:
        path = Path(cache_dir) / f"{key}-rows"  # not the folder of a cache made before splits had their row column
        tokenized = None
        if not (path / "dataset_dict.json").is_file():
            tokenized = _tokenize(splits, tokenizer, max_length)
            staging = None
            try:
                Path(cache_dir).mkdir(parents=True, exist_ok=True)
                # Write beside the target and rename: a parallel worker never sees a half-written cache.
                staging = Path(tempfile.mkdtemp(prefix=f".{key}-", dir=cache_dir))
                tokenized.save_to_disk(str(staging))
                staging.rename(path)  # fails when another process finished first; its copy is identical
            except OSError:  # or the disk is full: the splits stay in memory
                if staging is not None:
                    shutil.rmtree(staging, ignore_errors=True)
        if (path / "dataset_dict.json").is_file():
            tokenized = load_from_disk(str(path))
    return TokenizedSplits(train=tokenized["train"], validation=tokenized["validation"], test=tokenized["test"], key=key, labels=splits.labels,
                           max_length=max_length, sentences=sentences)
