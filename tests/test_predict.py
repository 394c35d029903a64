"""study.predict loads a final model (base model plus saved head or adapter) and classifies sentences."""

import io
import json
from pathlib import Path

import pytest

from emotion_core.labels import LABELS
from study import final, predict
from tests.conftest import study_dir


def predictions(capsys, args) -> list[tuple[str, float, str]]:
    assert predict.main(args) == 0
    rows = [line.split("\t") for line in capsys.readouterr().out.splitlines()]
    return [(label, float(probability), text) for label, probability, text in rows]


@pytest.mark.parametrize("number,variant", [(0, "head"), (1, "lora"), (2, "qlora")])
def test_predict_reproduces_the_final_test_accuracy(copy_study, data_folder, capsys, number, variant):
    where = ["--storage", copy_study["storage"], "--study-name", copy_study["name"], "--output-dir", copy_study["output_dir"]]
    assert final.main(["--trial", str(number), *where]) == 0
    report = json.loads((study_dir(copy_study["storage"], copy_study["output_dir"], "done") / "final" / "report.json").read_text())
    assert report["variant"] == variant and report["best_trial"] == number
    capsys.readouterr()

    lines = (Path(data_folder) / "test.txt").read_text().splitlines()
    texts = [line.rsplit(";", 1)[0] for line in lines]
    rows = predictions(capsys, [*where, *texts])
    assert [text for _, _, text in rows] == texts
    assert all(label in LABELS and 1 / len(LABELS) <= p <= 1 for label, p, _ in rows)
    correct = sum(label == line.rsplit(";", 1)[1] for (label, _, _), line in zip(rows, lines))
    # The model that predict loads is the one study.final tested: the same predictions, up to a near tie.
    assert abs(correct / len(lines) - report["test_accuracy"]) <= 1 / len(lines) + 1e-9

    # The standalone folder is a plain transformers model: pipeline loads it as it is and predicts as study.predict does.
    from transformers import pipeline

    folder = study_dir(copy_study["storage"], copy_study["output_dir"], "done") / "final" / "standalone"
    standalone = [row["label"] for row in pipeline("text-classification", model=str(folder))(texts)]
    assert standalone == [label for label, _, _ in rows]


def test_predict_reads_stdin(finished_study, capsys, monkeypatch):
    monkeypatch.setattr("sys.stdin", io.StringIO("i feel happy\n\nthe exam made me feel scared\n"))
    rows = predictions(capsys, ["--storage", finished_study["storage"], "--study-name", "done", "--output-dir", finished_study["output_dir"]])
    assert [text for _, _, text in rows] == ["i feel happy", "the exam made me feel scared"]


def test_windows_line_endings_and_a_bom_change_no_prediction(finished_study, capsys, monkeypatch):
    where = ["--storage", finished_study["storage"], "--study-name", "done", "--output-dir", finished_study["output_dir"]]
    lines = ["i feel happy", "the exam made me feel scared", "since the trip i have been lonely"]
    answers = []
    for stdin in ("\n".join(lines) + "\n", "\r\n".join(lines) + "\r\n", "\ufeff" + "\r\n".join(lines) + "\r\n"):
        monkeypatch.setattr("sys.stdin", io.StringIO(stdin, newline=""))  # newline="": the \r reaches predict, as from a pipe
        answers.append(predictions(capsys, where))
    answers.append(predictions(capsys, [*where, *(f"{line}\r" for line in lines)]))
    assert [text for _, _, text in answers[0]] == lines  # printed as given, without a \r or a BOM
    assert all(answer == answers[0] for answer in answers)


def test_predict_without_a_final_model_exits_2(tmp_path, capsys):
    storage = f"sqlite:///{tmp_path / 's.db'}"
    assert predict.main(["--storage", storage, "--output-dir", str(tmp_path), "i feel fine"]) == 2
    assert "no storage at" in capsys.readouterr().err
    import optuna

    optuna.create_study(study_name="nothing", storage=storage)
    assert predict.main(["--storage", storage, "--output-dir", str(tmp_path), "i feel fine"]) == 2
    assert "no final model for study 'nothing'" in capsys.readouterr().err
