"""A study on another data set than emotion: three sentiment labels, from a folder of text;label lines (names sorted)
and from a hub-layout folder (README.md with ClassLabel names in the data set's own order, parquet under split/)."""

import json
from pathlib import Path

import optuna
import pytest

from study import final, predict, run
from tests.conftest import study_dir
from tests.synthetic import SENTIMENT_WORDS, sentences, write_hub_folder, write_txt_folder

SIZES = {"train": (240, 0), "validation": (60, 1), "test": (60, 2)}  # sentences and seed, as write_txt_folder's
FOLDERS = {
    "txt": ["negative", "neutral", "positive"],  # names found in the files: sorted
    "hub": ["positive", "negative", "neutral"],  # the README's ClassLabel: the data set's own order
}


def sentiment_folder(kind: str, folder: Path) -> Path:
    if kind == "txt":
        return write_txt_folder(folder, n_train=240, n_eval=60, words=SENTIMENT_WORDS)
    rows = {split: sentences(n, seed, SENTIMENT_WORDS) for split, (n, seed) in SIZES.items()}
    return write_hub_folder(folder, FOLDERS["hub"], rows)


@pytest.mark.parametrize("kind", FOLDERS)
def test_run_final_and_predict_on_three_labels(kind, study_args, tmp_path, capsys):
    names = FOLDERS[kind]
    args = list(study_args)
    args[args.index("--data") + 1] = str(sentiment_folder(kind, tmp_path / kind))
    storage = args[args.index("--storage") + 1]
    # A learning rate at which the head learns the synthetic task (tests/conftest.py), then one the sampler picks.
    optuna.create_study(study_name="t", storage=storage, direction="maximize").enqueue_trial(
        {"learning_rate": 3e-2, "head_dropout": 0.0, "weight_decay": 0.0}
    )
    assert run.main(["--trials", "2", "--variant", "head", *args]) == 0
    assert optuna.load_study(study_name="t", storage=storage).user_attrs["labels"] == names

    where = ["--storage", storage, "--study-name", "t", "--output-dir", args[args.index("--output-dir") + 1]]
    assert final.main(where) == 0
    report = json.loads((study_dir(args) / "final" / "report.json").read_text())
    assert report["labels"] == names and list(report["per_class"]) == names
    assert len(report["confusion_matrix"]) == 3 and report["n_test"] == 60
    assert report["test_accuracy"] > 0.8  # it learned: ids and names agree from the data to the head
    capsys.readouterr()

    test = sentences(*SIZES["test"], SENTIMENT_WORDS)
    assert predict.main([*where, *(text for text, _ in test)]) == 0
    rows = [line.split("\t") for line in capsys.readouterr().out.splitlines()]
    assert [text for _, _, text in rows] == [text for text, _ in test]
    assert {label for label, _, _ in rows} <= set(names)
    correct = sum(label == truth for (label, _, _), (_, truth) in zip(rows, test))
    # predict names each class as the data did: its accuracy is study.final's, up to a near tie
    assert abs(correct / len(test) - report["test_accuracy"]) <= 1 / len(test) + 1e-9
