"""Data, models and names as users bring them: nothing silently wrong, nothing written where it does not belong, and
every failure keeps its reason. Real commands on the tiny model, real storage, real files."""

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import optuna
import pytest

from study import compare, final, predict, records, report, run
from study._urls import safe_name
from tests.conftest import study_dir
from tests.synthetic import SENTIMENT_WORDS, build_tokenizer, sentences, write_txt_folder

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}


def flags(args, **changes) -> list[str]:
    """study_args with some flags' values changed."""
    args = list(args)
    for flag, value in changes.items():
        args[args.index(f"--{flag.replace('_', '-')}") + 1] = str(value)
    return args


def value(args, flag):
    return args[args.index(flag) + 1]


def files_under(folder: Path) -> set[Path]:
    return {p for p in folder.rglob("*")} if folder.exists() else set()


# -- names are names -------------------------------------------------------------------------------------------------


def test_a_name_becomes_one_folder_whatever_it_holds():
    for name in ["../../escape", "/etc/passwd", "a\x00b", "x" * 5000, ".", "..", "", "a/b", "a?b", "C:\\temp"]:
        folder = safe_name(name)
        assert "/" not in folder and "\x00" not in folder and "\\" not in folder and folder not in (".", "..")
        assert len(folder) <= 70 and not folder.startswith(".")
    assert safe_name("a/b") != safe_name("a?b") != safe_name("a-b")  # the slug is the same; the hash of the name is not
    assert safe_name("t") == safe_name("t")


@pytest.mark.parametrize("name", ["../../escape", str(Path("/tmp") / "emotion-absolute-escape")])
def test_hostile_study_names_write_nothing_outside_the_output_folder(study_args, tmp_path, name, capsys):
    outside = Path("/tmp/emotion-absolute-escape")
    shutil.rmtree(outside, ignore_errors=True)
    out = Path(value(study_args, "--output-dir"))
    storage_file = tmp_path / "study.db"
    args = flags(study_args, study_name=name)
    before = files_under(tmp_path) - files_under(out)
    assert run.main(["--trials", "2", "--variant", "head", *args]) == 0
    where = ["--storage", value(args, "--storage"), "--study-name", name, "--output-dir", str(out)]
    assert final.main(where) == 0
    assert report.main([*where, "--plots", str(out / "plots")]) == 0
    assert compare.main(["--storage", value(args, "--storage"), "--from-study", name, "--output-dir", str(out), "--variants", "head"]) == 0
    written = files_under(tmp_path) - files_under(out) - before - {storage_file, out}
    assert not written, written  # every file the commands wrote is under --output-dir (the storage aside)
    assert not outside.exists() and not (tmp_path.parent / "escape").exists()
    assert optuna.load_study(study_name=name, storage=value(args, "--storage")).study_name == name  # the name itself unchanged
    assert (study_dir(value(args, "--storage"), str(out), name) / "final" / "report.json").is_file()


def test_two_names_the_slug_makes_alike_keep_their_own_folders(study_args):
    for name in ("a/b", "a?b"):
        assert run.main(["--trials", "1", "--variant", "head", *flags(study_args, study_name=name)]) == 0
    storage, out = value(study_args, "--storage"), value(study_args, "--output-dir")
    folders = {study_dir(storage, out, name) for name in ("a/b", "a?b")}
    assert len(folders) == 2 and all(folder.parent == study_dir(storage, out, "t").parent for folder in folders)


# -- labels ----------------------------------------------------------------------------------------------------------


def misspelled(tmp_path, data_folder) -> Path:
    folder = tmp_path / "misspelled"
    shutil.copytree(data_folder, folder)
    lines = (folder / "train.txt").read_text().splitlines()
    lines[4] = lines[4].rsplit(";", 1)[0] + ";melancholy"
    (folder / "train.txt").write_text("\n".join(lines) + "\n")
    return folder


def test_a_label_misspelled_once_is_refused_at_its_line(study_args, tmp_path, data_folder, capsys):
    args = flags(study_args, data=misspelled(tmp_path, data_folder))
    assert run.main(["--trials", "1", *args]) == 2
    err = capsys.readouterr().err
    assert "train.txt:5: label 'melancholy' occurs 1 time(s) in the 240 training examples" in err and "--labels" in err
    six = "sadness,joy,love,anger,fear,surprise"
    assert run.main(["--trials", "1", "--labels", six, *args]) == 2
    assert "train.txt:5: label 'melancholy' is not one of --labels sadness,joy,love,anger,fear,surprise" in capsys.readouterr().err
    assert not Path(value(args, "--storage").removeprefix("sqlite:///")).exists()  # nothing was written


def test_labels_fix_the_set_and_their_order(study_args, tmp_path, data_folder):
    order = "surprise,fear,anger,love,joy,sadness,melancholy"
    args = flags(study_args, data=misspelled(tmp_path, data_folder))
    assert run.main(["--trials", "1", "--variant", "head", "--labels", order, *args]) == 0  # accepted by naming it
    study = optuna.load_study(study_name="t", storage=value(args, "--storage"))
    assert records.StudyRecord.read(study).labels == tuple(order.split(","))


def integer_labels(folder: Path) -> Path:
    """Binary sentiment as many data sets ship it: JSONL whose labels are the integers 0 and 1."""
    words = {0: SENTIMENT_WORDS["negative"], 1: SENTIMENT_WORDS["positive"]}
    folder.mkdir()
    for split, n in (("train", 120), ("validation", 30), ("test", 30)):
        rows = sentences(n, seed=len(split), words=words)
        (folder / f"{split}.jsonl").write_text("".join(json.dumps({"text": text, "label": label}) + "\n" for text, label in rows))
    return folder


@pytest.mark.parametrize("given,names", [(None, ["0", "1"]), ("neg,pos", ["neg", "pos"])])
def test_integer_labels_are_no_emotions(study_args, tmp_path, capsys, given, names):
    args = flags(study_args, data=integer_labels(tmp_path / "binary"))
    assert run.main(["--trials", "1", "--variant", "head", *(["--labels", given] if given else []), *args]) == 0
    note = "note: the labels are the integers 0, 1 in the data, without names; to name them, pass --labels NAME,NAME"
    assert (note in capsys.readouterr().out) == (given is None)
    where = ["--storage", value(args, "--storage"), "--study-name", "t", "--output-dir", value(args, "--output-dir")]
    assert final.main(where) == 0
    report_json = json.loads((study_dir(args) / "final" / "report.json").read_text())
    assert report_json["labels"] == names and list(report_json["per_class"]) == names
    capsys.readouterr()
    assert predict.main([*where, "the party was wonderful", "the news was awful", "i feel sad"]) == 0
    assert {line.split("\t")[0] for line in capsys.readouterr().out.splitlines()} <= set(names)
    standalone = study_dir(args) / "final" / "standalone"
    assert json.loads((standalone / "config.json").read_text())["id2label"] == {"0": names[0], "1": names[1]}


# -- a head of another size ------------------------------------------------------------------------------------------


def six_label_classifier(folder: Path) -> Path:
    """A tiny GPT-2 saved as a classifier of the six emotion labels (its head is 6 x 32)."""
    import torch
    from transformers import GPT2Config, GPT2ForSequenceClassification

    tokenizer = build_tokenizer(folder)
    torch.manual_seed(0)
    names = ["sadness", "joy", "love", "anger", "fear", "surprise"]
    config = GPT2Config(vocab_size=len(tokenizer), n_positions=64, n_embd=32, n_layer=2, n_head=2, num_labels=6,
                        id2label=dict(enumerate(names)), label2id={n: i for i, n in enumerate(names)},
                        pad_token_id=tokenizer.eos_token_id, eos_token_id=tokenizer.eos_token_id)
    GPT2ForSequenceClassification(config).save_pretrained(str(folder))
    return folder


def test_a_classifier_of_six_labels_studies_finals_and_predicts_three(study_args, tmp_path, capsys):
    model = six_label_classifier(tmp_path / "six")
    data = write_txt_folder(tmp_path / "sentiment", n_train=150, n_eval=30, words=SENTIMENT_WORDS)
    args = flags(study_args, model=model, data=data)
    assert run.main(["--trials", "1", "--variant", "lora", *args]) == 0
    out = capsys.readouterr().out
    assert "the model's classification head (6 labels: sadness, joy, love, anger, fear, surprise) is replaced by a fresh one for the " \
           "data's 3 labels (negative, neutral, positive)" in out
    where = ["--storage", value(args, "--storage"), "--study-name", "t", "--output-dir", value(args, "--output-dir")]
    assert final.main(where) == 0
    assert predict.main([*where, "the party was wonderful", "the news was awful"]) == 0
    labels = [line.split("\t")[0] for line in capsys.readouterr().out.strip().splitlines()[-2:]]
    assert set(labels) <= {"negative", "neutral", "positive"}
    standalone = study_dir(value(args, "--storage"), value(args, "--output-dir")) / "final" / "standalone"
    assert json.loads((standalone / "config.json").read_text())["id2label"] == {"0": "negative", "1": "neutral", "2": "positive"}


def test_a_model_without_a_classification_head_is_refused_by_its_class(study_args, tmp_path, tiny_model, capsys):
    from transformers import ViTConfig

    ViTConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32).save_pretrained(str(tmp_path / "vit"))
    args = flags(study_args, model=tmp_path / "vit")
    assert run.main(["--trials", "1", "--tokenizer", tiny_model, *args]) == 2
    err = capsys.readouterr().err
    assert "cannot take a text classification head" in err and "'vit'" in err


# -- length from the data --------------------------------------------------------------------------------------------


def long_texts(folder: Path) -> Path:
    """Sentences of 4 to 60 words, each ending in its label's word."""
    import random

    rng = random.Random(0)
    folder.mkdir(parents=True)
    for split, n in (("train", 120), ("validation", 30), ("test", 30)):
        rows = []
        for text, label in sentences(n, seed=len(split)):
            filler = " ".join(rng.choice(["the", "weather", "news", "party", "job", "trip"]) for _ in range(rng.randint(0, 56)))
            rows.append(f"{filler} {text};{label}")
        (folder / f"{split}.txt").write_text("\n".join(rows) + "\n")
    return folder


def test_the_length_comes_from_the_data_and_the_cut_texts_are_counted(study_args, tmp_path, capsys):
    args = flags(study_args, data=long_texts(tmp_path / "long"))
    assert run.main(["--trials", "1", "--variant", "head", *args]) == 0
    auto = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("max length"))
    assert "(auto: the fewest that keep 99% of the training texts whole" in auto
    chosen = int(auto.split()[2])
    cut_train = int(auto.split("texts cut to it: ")[1].split(" of ")[0])
    assert chosen > 32 and cut_train <= 2  # at most 1% of the 120 training texts
    assert records.StudyRecord.read(optuna.load_study(study_name="t", storage=value(args, "--storage"))).max_length == chosen

    shorter = flags(args, study_name="short")
    assert run.main(["--trials", "1", "--variant", "head", "--max-length", "32", *shorter]) == 0
    fixed = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("max length"))
    assert fixed.startswith("max length 32 tokens (--max-length)") and int(fixed.split("texts cut to it: ")[1].split(" of ")[0]) > cut_train
    # Another length is another study setting.
    assert run.main(["--trials", "2", "--variant", "head", "--max-length", "24", *shorter]) == 2
    assert "--max-length: stored 32, given 24" in capsys.readouterr().err


def test_predict_refuses_an_empty_sentence(finished_study, capsys):
    where = ["--storage", finished_study["storage"], "--study-name", "done", "--output-dir", finished_study["output_dir"]]
    assert predict.main([*where, "i feel fine", "  "]) == 2
    assert "sentence 2 of the arguments is empty" in capsys.readouterr().err


# -- every failure keeps its reason ---------------------------------------------------------------------------------


@pytest.fixture
def full_disk(tmp_path):
    """A folder on a filesystem of a few MiB (tmpfs, as root); filled() fills what is left."""
    folder = tmp_path / "small-disk"
    folder.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(folder)], capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here ({mounted.stderr.strip() or 'not root'}): no full disk to test on")

    def fill() -> None:
        with open(folder / "filler", "wb") as out:
            try:
                while True:
                    out.write(b"\0" * (1 << 16))
                    out.flush()
            except OSError:
                pass

    try:
        yield folder, fill
    finally:
        subprocess.run(["umount", "-l", str(folder)], capture_output=True)


def test_a_full_disk_gives_every_failed_trial_its_reason_and_keeps_the_final_model(study_args, full_disk, capsys):
    folder, fill = full_disk
    args = flags(study_args, output_dir=folder / "out")
    where = ["--storage", value(args, "--storage"), "--study-name", "t", "--output-dir", str(folder / "out")]
    assert run.main(["--trials", "1", "--variant", "lora", *args]) == 0
    assert final.main(where) == 0
    study = optuna.load_study(study_name="t", storage=value(args, "--storage"))
    before = records.FinalRecord.read(study)
    report_json = (study_dir(value(args, "--storage"), str(folder / "out")) / "final" / "report.json").read_text()
    capsys.readouterr()
    fill()
    assert run.main(["--trials", "4", "--variant", "lora", *args]) == 1
    captured = capsys.readouterr()
    failed = [t for t in optuna.load_study(study_name="t", storage=value(args, "--storage")).trials if t.state.name == "FAIL"]
    assert len(failed) == 3 and all("No space left on device" in records.fail_reason(t) for t in failed), [records.fail_reason(t) for t in failed]
    assert "3 trials in a row failed; the last one: " in captured.err and "No space left on device" in captured.err.splitlines()[-1] + captured.err

    assert final.main(where) == 1  # the retraining cannot write its files
    study = optuna.load_study(study_name="t", storage=value(args, "--storage"))
    assert records.FinalRecord.read(study) == before  # the previous final model stays recorded
    final_dir = study_dir(value(args, "--storage"), str(folder / "out")) / "final"
    assert (final_dir / "report.json").read_text() == report_json and not list(final_dir.parent.glob(".final-staging-*"))
    (folder / "filler").unlink()
    assert predict.main([*where, "i feel happy"]) == 0  # and it still loads


def test_a_killed_final_leaves_the_previous_final_model_loadable(finished_study, copy_study, capsys):
    where = ["--storage", copy_study["storage"], "--study-name", "done", "--output-dir", copy_study["output_dir"]]
    study = optuna.load_study(study_name="done", storage=copy_study["storage"])
    before = records.FinalRecord.read(study)
    process = subprocess.Popen([sys.executable, "-m", "study.final", *where, "--seeds", "3"], cwd=ROOT, env=ENV,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    for line in process.stdout:  # killed while it retrains
        if "seed 2" in line:
            process.send_signal(signal.SIGKILL)
            break
    process.wait(timeout=120)
    assert records.FinalRecord.read(optuna.load_study(study_name="done", storage=copy_study["storage"])) == before
    assert predict.main([*where, "i feel happy"]) == 0
    assert final.main([*where]) == 0  # a later final clears what the killed one left
    folder = study_dir(copy_study["storage"], copy_study["output_dir"], "done")
    assert not list(folder.glob(".final-staging-*"))
