import dataclasses
import json
import unicodedata

import pandas as pd
import pytest

from emotion_core.data import DataError, load_splits, tokenize_splits
from emotion_core.labels import LABEL2ID, LABELS
from emotion_core.text import normalize_text
from tests.synthetic import SENTIMENT_WORDS, sentences, write_hub_folder, write_txt_folder


def write_format(folder, extension, rows_by_split, label_as_id=False, val_name="validation"):
    folder.mkdir(parents=True, exist_ok=True)
    for split, rows in rows_by_split.items():
        name = val_name if split == "validation" else split
        frame = pd.DataFrame({"text": [t for t, _ in rows], "label": [LABEL2ID[l] if label_as_id else l for _, l in rows]})
        path = folder / f"{name}.{extension}"
        if extension == "csv":
            frame.to_csv(path, index=False)
        elif extension == "jsonl":
            path.write_text("".join(json.dumps(r) + "\n" for r in frame.to_dict("records")))
        else:
            frame.to_parquet(path)
    return folder


ROWS = {"train": sentences(30, 0), "validation": sentences(12, 1), "test": sentences(12, 2)}


@pytest.mark.parametrize("extension,label_as_id,val_name", [("csv", False, "val"), ("jsonl", True, "validation"), ("parquet", True, "val")])
def test_column_formats_read_the_same_as_txt(tmp_path, extension, label_as_id, val_name):
    txt = tmp_path / "txt"
    txt.mkdir()
    for split, rows in ROWS.items():
        (txt / f"{split}.txt").write_text("".join(f"{t};{l}\n" for t, l in rows))
    other = write_format(tmp_path / extension, extension, ROWS, label_as_id, val_name)
    # ids are no names: --labels names them in id order
    a, b = load_splits(str(txt)), load_splits(str(other), labels=LABELS if label_as_id else None)
    assert a.fingerprint() == b.fingerprint()
    assert b.train["label"][:5] == [LABEL2ID[l] for _, l in ROWS["train"][:5]]
    assert len(b.test) == 12 and set(b.train["label"]) == set(range(len(LABELS)))


def test_subsets_are_seeded_and_test_stays_whole(tmp_path):
    folder = write_txt_folder(tmp_path / "d", n_train=100, n_eval=40)
    a = load_splits(str(folder), max_train_samples=30, max_eval_samples=10, seed=1)
    b = load_splits(str(folder), max_train_samples=30, max_eval_samples=10, seed=1)
    assert (len(a.train), len(a.validation), len(a.test)) == (30, 10, 40)
    assert a.train["text"] == b.train["text"]


def bad_folder(tmp_path, **overrides):
    folder = write_txt_folder(tmp_path / "bad", n_train=12, n_eval=6)
    for name, content in overrides.items():
        path = folder / name
        if content is None:
            path.unlink()
        else:
            path.write_text(content)
    return folder


@pytest.mark.parametrize(
    "overrides,expected",
    [
        ({"train.txt": "i feel fine;joy\nno separator here\n"}, "train.txt:2: expected 'text;label'"),
        ({"validation.txt": "i feel fine;joy\ni feel odd;bored\n"}, "validation.txt:2: unknown label 'bored'"),
        ({"test.txt": None}, "missing the test split"),
        ({"train.txt": ""}, "train.txt: the file holds no examples"),
        ({"train.txt": "i feel fine;7\n"}, "train.txt:1: unknown label '7'"),
    ],
)
def test_bad_input_names_file_and_line(tmp_path, overrides, expected):
    folder = bad_folder(tmp_path, **overrides)
    with pytest.raises(DataError, match=expected.replace("(", r"\(")):
        load_splits(str(folder))


def test_bad_csv_and_jsonl_name_the_line(tmp_path):
    folder = write_format(tmp_path / "c", "csv", ROWS)
    (folder / "test.csv").write_text("text,label\ni am fine,joy\ni am odd,meh\n")
    with pytest.raises(DataError, match=r"test.csv line 3: unknown label 'meh'"):
        load_splits(str(folder))
    folder = write_format(tmp_path / "j", "jsonl", ROWS)
    (folder / "train.jsonl").write_text('{"text": "i feel fine", "label": 1}\n{"text": broken\n')
    with pytest.raises(DataError, match=r"train.jsonl:2: not valid JSON"):
        load_splits(str(folder))


def test_missing_folder_and_unreachable_hub(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        load_splits(str(tmp_path / "nowhere"))
    with pytest.raises(DataError, match="--data /path/to/folder"):  # HF_HUB_OFFLINE=1: the hub cannot be reached
        load_splits("dair-ai/emotion")


def test_tokenization_cache_gives_the_same_tokens_and_is_reused(tmp_path, data_folder, tokenizer):
    splits = load_splits(data_folder)
    fresh = tokenize_splits(splits, tokenizer)
    cached = tokenize_splits(splits, tokenizer, cache_dir=tmp_path)
    again = tokenize_splits(load_splits(data_folder), tokenizer, cache_dir=tmp_path)
    for name in ("train", "validation", "test"):
        assert getattr(cached, name)["input_ids"] == getattr(fresh, name)["input_ids"]
        assert getattr(again, name)["input_ids"] == getattr(fresh, name)["input_ids"]
    # the rerun memory-maps the files written by the first call instead of tokenizing again
    assert again.key == cached.key
    assert all(str(tmp_path / cached.key) in f["filename"] for f in again.train.cache_files)
    assert len([p for p in tmp_path.iterdir() if not p.name.startswith(".")]) == 1


def test_eval_splits_are_sorted_by_length(tokenized):
    lengths = tokenized.validation["length"]
    assert lengths == sorted(lengths, reverse=True)
    assert tokenized.train["length"] != sorted(tokenized.train["length"], reverse=True)


SENTIMENT_SIZES = (("train", 30, 0), ("validation", 9, 1), ("test", 12, 2))  # sentences and seed of each split
SENTIMENT_ROWS = {split: sentences(n, seed, SENTIMENT_WORDS) for split, n, seed in SENTIMENT_SIZES}


def write_txt(folder, rows_by_split):
    folder.mkdir(parents=True, exist_ok=True)
    for split, rows in rows_by_split.items():
        (folder / f"{split}.txt").write_text("".join(f"{t};{l}\n" for t, l in rows))
    return folder


def test_hub_layout_folder_loads_offline_with_its_class_names(tmp_path):
    hub = write_hub_folder(tmp_path / "emotion", list(LABELS), ROWS)
    assert {p.name for p in (hub / "split").iterdir()} == {f"{s}-00000-of-00001.parquet" for s in ROWS}
    splits = load_splits(str(hub))  # the tests run with HF_HUB_OFFLINE=1 and HF_DATASETS_OFFLINE=1
    assert splits.labels == LABELS
    # the default config's three splits, not the unsplit config's single one (which holds all 54 rows)
    assert (len(splits.train), len(splits.validation), len(splits.test)) == (30, 12, 12)
    assert splits.fingerprint() == load_splits(str(write_txt(tmp_path / "txt", ROWS))).fingerprint()


def test_hub_layout_folder_with_other_class_names_keeps_its_order(tmp_path):
    names = ["positive", "negative", "neutral"]  # not sorted: the data set's own ids win
    splits = load_splits(str(write_hub_folder(tmp_path / "sentiment", names, SENTIMENT_ROWS)))
    assert splits.labels == tuple(names)
    assert splits.test["label"] == [names.index(label) for _, label in SENTIMENT_ROWS["test"]]
    assert (len(splits.train), len(splits.validation), len(splits.test)) == (30, 9, 12)


@pytest.mark.parametrize(
    "words,expected",
    [
        (SENTIMENT_WORDS, ("negative", "neutral", "positive")),  # names found in the files: sorted
        ({"joy": ["happy"], "sadness": ["sad"]}, ("joy", "sadness")),  # some emotion names, not all six: sorted too
        ({name: ["happy"] for name in reversed(LABELS)}, LABELS),  # exactly the six: the emotion data set's order
    ],
)
def test_label_names_come_from_the_train_split(tmp_path, words, expected):
    rows = {split: sentences(n, seed, words) for split, n, seed in (("train", 18, 0), ("validation", 6, 1), ("test", 6, 2))}
    txt = load_splits(str(write_txt(tmp_path / "txt", rows)))
    assert txt.labels == expected
    assert txt.train["label"] == [expected.index(label) for _, label in rows["train"]]
    # the same data in another format and another row order gives the same names and ids
    shuffled = {split: list(reversed(r)) for split, r in rows.items()}
    jsonl = load_splits(str(write_format(tmp_path / "jsonl", "jsonl", shuffled)))
    assert jsonl.labels == expected
    assert jsonl.train["label"] == list(reversed(txt.train["label"]))


def test_a_label_the_train_split_lacks_is_an_error(tmp_path):
    rows = dict(SENTIMENT_ROWS, test=[*SENTIMENT_ROWS["test"], ("i feel fine", "mixed")])
    folder = write_format(tmp_path / "csv", "csv", rows)
    with pytest.raises(DataError, match=r"test.csv line 14: unknown label 'mixed': the train split \(.*train.csv\) has no such label"):
        load_splits(str(folder))
    rows = dict(SENTIMENT_ROWS, validation=[("i feel fine", "3")])  # an id past the three names
    with pytest.raises(DataError, match=r"validation.txt:1: unknown label '3': an integer label is an id, 0-2"):
        load_splits(str(write_txt(tmp_path / "txt", rows)))
    rows = dict(SENTIMENT_ROWS, train=[("i feel fine", "positive")])
    with pytest.raises(DataError, match=r"train.txt: every example has the label 'positive'"):
        load_splits(str(write_txt(tmp_path / "one", rows)))


BINARY_WORDS = {"0": SENTIMENT_WORDS["negative"], "1": SENTIMENT_WORDS["positive"]}


def binary(folder, extension, words=BINARY_WORDS):
    """Sentiment sentences labelled with the integers of ``words`` (0 and 1), as integers in the file."""
    rows = {split: [(t, int(label)) for t, label in sentences(n, seed, words)] for split, n, seed in SENTIMENT_SIZES}
    return write_format(folder, extension, rows)


@pytest.mark.parametrize("extension", ["csv", "jsonl", "parquet"])
def test_integer_labels_are_named_by_their_ids_unless_labels_names_them(tmp_path, extension):
    folder = binary(tmp_path / "binary", extension)
    splits = load_splits(str(folder))
    assert splits.labels == ("0", "1")
    assert splits.notes == ("note: the labels are the integers 0, 1 in the data, without names; to name them, pass "
                            "--labels NAME,NAME (one name per id, in id order)",)
    named = load_splits(str(folder), labels=["neg", "pos"])
    assert named.labels == ("neg", "pos") and named.train["label"] == splits.train["label"] and not named.notes


def test_integer_labels_with_a_gap_or_a_rare_id_are_refused(tmp_path):
    folder = binary(tmp_path / "gap", "csv", {"0": BINARY_WORDS["0"], "2": BINARY_WORDS["1"]})
    with pytest.raises(DataError, match=r"train.csv line \d+: unknown label '2': integer labels are ids 0, 1, 2, ...; the train split "
                                        r"has no label 1: write the label names, or name every id in order with --labels"):
        load_splits(str(folder))
    assert load_splits(str(folder), labels=["neg", "unused", "pos"]).labels == ("neg", "unused", "pos")
    folder = binary(tmp_path / "stray", "jsonl")
    with (folder / "train.jsonl").open("a") as handle:
        handle.write('{"text": "i feel fine", "label": 2}\n')
    with pytest.raises(DataError, match=r"train.jsonl:31: label '2' occurs 1 time\(s\) .* --labels 0,1,2"):
        load_splits(str(folder))


def test_label_names_are_part_of_the_fingerprint_and_cache_key(tmp_path, data_folder, tokenizer):
    splits = load_splits(data_folder)
    renamed = dataclasses.replace(splits, labels=tuple(name.upper() for name in splits.labels))  # the same ids
    assert renamed.fingerprint() != splits.fingerprint()
    assert tokenize_splits(renamed, tokenizer, cache_dir=tmp_path).key != tokenize_splits(splits, tokenizer, cache_dir=tmp_path).key


def test_a_folder_that_datasets_cannot_read_is_a_data_error(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DataError, match="holds no train/validation/test files .* datasets.load_dataset cannot read it") as error:
        load_splits(str(empty))
    assert isinstance(error.value.__cause__, FileNotFoundError)  # the cause is kept
    hub = write_hub_folder(tmp_path / "corrupt", list(LABELS), ROWS)
    (hub / "split" / "train-00000-of-00001.parquet").write_bytes(b"not parquet")
    with pytest.raises(DataError, match="datasets.load_dataset cannot read it"):
        load_splits(str(hub))
    only_train = tmp_path / "only-train"
    only_train.mkdir()
    pd.DataFrame({"text": ["i feel great", "i feel awful"], "label": ["positive", "negative"]}).to_parquet(only_train / "data.parquet")
    with pytest.raises(DataError, match="has no validation split"):
        load_splits(str(only_train))


# -- one normalisation of every text ---------------------------------------------------------------------------------

ACCENTED = {**ROWS, "train": [*ROWS["train"], ("the café made me feel happy", "joy")]}


def saved(folder, extension, style):
    """ACCENTED saved as ``style``: "lf" (plain UTF-8 and LF), "crlf" (Windows line endings, or a trailing CR where a
    format has no lines) or "bom" (a byte-order mark, CRLF, and accents decomposed, NFD)."""
    crlf = style != "lf"

    def text(value):
        value = unicodedata.normalize("NFD", value) if style == "bom" else value
        return ("\ufeff" if style == "bom" else "") + value + ("\r\n" if crlf else "") if extension in ("parquet", "hub") else value

    rows = {split: [(text(t), label) for t, label in split_rows] for split, split_rows in ACCENTED.items()}
    if extension == "hub":
        return write_hub_folder(folder, list(LABELS), rows)
    folder.mkdir(parents=True)
    for split, split_rows in rows.items():
        path = folder / f"{split}.{extension}"
        if extension == "parquet":
            pd.DataFrame({"text": [t for t, _ in split_rows], "label": [label for _, label in split_rows]}).to_parquet(path)
            continue
        if extension == "txt":
            lines = [f"{t};{label}" for t, label in split_rows]
        elif extension == "csv":
            lines = pd.DataFrame({"text": [t for t, _ in split_rows], "label": [l for _, l in split_rows]}).to_csv(index=False).splitlines()
        else:
            lines = [json.dumps({"text": t, "label": label}, ensure_ascii=False) for t, label in split_rows]
        content = ("\r\n" if crlf else "\n").join(lines) + ("\r\n" if crlf else "\n")
        path.write_bytes((("\ufeff" if style == "bom" else "") + content).encode())
    return folder


@pytest.mark.parametrize("extension", ["txt", "csv", "jsonl", "parquet", "hub"])
def test_windows_line_endings_a_bom_and_decomposed_accents_give_the_same_tokens(tmp_path, tokenizer, extension):
    cache = tmp_path / "cache"
    plain = load_splits(str(saved(tmp_path / "lf", extension, "lf")))
    assert "the café made me feel happy" in plain.train["text"]
    expected = tokenize_splits(plain, tokenizer, cache_dir=cache)
    for style in ("crlf", "bom"):
        splits = load_splits(str(saved(tmp_path / style, extension, style)))
        assert splits.train["text"] == plain.train["text"] and splits.fingerprint() == plain.fingerprint()
        fresh = tokenize_splits(splits, tokenizer)  # tokenized again, not read from the cache
        assert fresh.key == expected.key  # the cache is keyed by the normalised texts: no key holds texts as saved
        for name in ("train", "validation", "test"):
            assert getattr(fresh, name)["input_ids"] == getattr(expected, name)["input_ids"]
    assert len([p for p in cache.iterdir() if not p.name.startswith(".")]) == 1


def test_normalize_text():
    assert normalize_text("\ufeff  cafe\u0301 one\r\ntwo\rthree \r\n") == "café one\ntwo\nthree"
