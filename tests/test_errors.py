"""Errors tell the truth: only what a user can fix exits 2; anything else keeps its type, and its traceback goes to
the study's errors.log, whose path the one-line message names."""


import optuna
import pytest
import torch

from study import _errors as errors
from study import final, run
from study._command import Command
from study.settings import Verbosity
from tests.conftest import study_dir
from tests.synthetic import build_tiny_gpt2


def one_line(text: str) -> str:
    lines = [line for line in text.splitlines() if line.strip()]
    assert len(lines) == 1, text
    return lines[0]


def test_a_broken_model_file_is_not_called_an_offline_hub(study_args, tmp_path, capsys):
    model = build_tiny_gpt2(tmp_path / "model")
    args = list(study_args)
    args[args.index("--model") + 1] = str(model)
    assert run.main(["--trials", "1", "--variant", "head", *args]) == 0
    weights = model / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])  # a copy cut short: the config reads, the weights do not
    where = ["--storage", args[args.index("--storage") + 1], "--study-name", "t", "--output-dir", str(tmp_path / "out")]
    capsys.readouterr()

    assert final.main(where) == 1
    line = one_line(capsys.readouterr().err)
    log = study_dir(where[1], where[5]) / errors.LOG_NAME
    assert line.startswith("error: SafetensorError: ") and f"traceback in {log}" in line and "--verbose prints it" in line
    assert "offline" not in line and "--model /path/to/folder" not in line
    text = log.read_text()
    assert "emotion-study final --storage" in text.splitlines()[0]  # the command that failed heads its entry
    assert "Traceback (most recent call last)" in text and "SafetensorError: Error while deserializing header" in text

    assert final.main([*where, "--verbose"]) == 1
    err = capsys.readouterr().err
    assert "Traceback (most recent call last)" in err and err.rstrip().splitlines()[-1].startswith("error: SafetensorError")


def test_out_of_memory_is_named_with_the_batch_size_to_try(tmp_path, capsys):
    with pytest.raises(RuntimeError) as cpu:
        torch.empty(2**62, dtype=torch.uint8)  # a real allocation failure of torch's CPU allocator
    assert errors.describe(cpu.value, 32).startswith("out of CPU memory at batch size 32; try --batch-size 16 (RuntimeError: ")
    gpu = torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
    assert errors.describe(gpu, 64).startswith("out of GPU memory at batch size 64; try --batch-size 32")
    assert errors.describe(ValueError("bad\nvalue")) == "ValueError: bad value"

    def allocate(settings):
        with errors.logged_to(tmp_path, batch_size=8):
            torch.empty(2**62, dtype=torch.uint8)

    assert Command("allocate", "", Verbosity, allocate).main([]) == 1
    line = one_line(capsys.readouterr().err)
    assert line.startswith("error: out of CPU memory at batch size 8; try --batch-size 4") and str(tmp_path / errors.LOG_NAME) in line


def test_a_failed_trial_keeps_its_error_type_and_message_and_logs_the_traceback(study_args):
    storage = study_args[study_args.index("--storage") + 1]
    study = optuna.create_study(study_name="t", storage=storage, direction="maximize")
    study.enqueue_trial({"lora_dropout": 1.5})  # torch refuses it while the model is built
    assert run.main(["--trials", "1", "--max-train-samples", "32", "--max-eval-samples", "12", *study_args]) == 0
    failed = optuna.load_study(study_name="t", storage=storage).trials[0]
    assert failed.user_attrs["fail_reason"] == "ValueError: dropout probability has to be between 0 and 1, but got 1.5"
    text = (study_dir(study_args) / errors.LOG_NAME).read_text()
    assert "trial 0 failed: ValueError: dropout probability" in text and "Traceback (most recent call last)" in text
