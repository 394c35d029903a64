"""Fixtures: a tiny random GPT-2 with a word-level tokenizer, and synthetic data folders. No network, no ../shared."""

from __future__ import annotations

import os
import tempfile

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# One torch thread, here and in the commands the tests start: the models are tiny, and on a busy machine two threads
# spin against each other (a tiny trial took 5 s of CPU with two threads, 0.7 s with one).
os.environ.setdefault("OMP_NUM_THREADS", "1")
# datasets.load_dataset converts a folder's files into its cache: a temporary one (removed at exit), not ~/.cache.
_DATASETS_CACHE = tempfile.TemporaryDirectory(prefix="hf-datasets-")
os.environ.setdefault("HF_DATASETS_CACHE", _DATASETS_CACHE.name)

import time  # noqa: E402
from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

from tests.synthetic import build_tiny_gpt2, write_txt_folder  # noqa: E402


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> str:
    return str(build_tiny_gpt2(tmp_path_factory.mktemp("tiny-gpt2")))


@pytest.fixture(scope="session")
def data_folder(tmp_path_factory) -> str:
    return str(write_txt_folder(tmp_path_factory.mktemp("emotion-data"), n_train=240, n_eval=60))


@pytest.fixture(scope="session")
def tokenizer(tiny_model):
    from emotion_core.models import load_tokenizer

    return load_tokenizer(tiny_model)


@pytest.fixture(scope="session")
def tokenized(data_folder, tokenizer):
    from emotion_core.data import load_splits, tokenize_splits

    return tokenize_splits(load_splits(data_folder), tokenizer)


@pytest.fixture
def study_args(tiny_model, data_folder, tmp_path) -> list[str]:
    """Flags of a fast study in a fresh SQLite file; each test adds --trials and what it studies."""
    return [
        "--model", tiny_model, "--data", data_folder, "--epochs", "2", "--batch-size", "16", "--patience", "0",
        "--storage", f"sqlite:///{tmp_path / 'study.db'}", "--study-name", "t", "--output-dir", str(tmp_path / "out"),
    ]


def study_dir(args_or_storage, output_dir: str | None = None, name: str = "t") -> Path:
    """Where a study's outputs go on this machine (<output-dir>/<storage>/<study>), from a test's study flags or from
    storage, output folder and name."""
    from study.settings import StudySettings

    if isinstance(args_or_storage, list):
        args = args_or_storage
        args_or_storage, output_dir = args[args.index("--storage") + 1], args[args.index("--output-dir") + 1]
        name = args[args.index("--study-name") + 1] if "--study-name" in args else name
    return StudySettings(storage=args_or_storage, output_dir=output_dir, study_name=name).study_dir


def wait_while_running(process, ready, timeout: float, what: str) -> None:
    """Until ``ready()`` holds; the test fails when ``process`` ends first, or after ``timeout`` seconds (killing it)."""
    deadline = time.monotonic() + timeout
    while not ready():
        if process.poll() is not None:
            pytest.fail(f"the command ended before {what}: {process.communicate()}")
        if time.monotonic() > deadline:
            process.kill()
            pytest.fail(f"{what} did not happen within {timeout}s")
        time.sleep(0.02)


def pytest_configure(config):
    Path(config.rootpath, "storage").mkdir(exist_ok=True)


@pytest.fixture(scope="session")
def finished_study(tiny_model, data_folder, tmp_path_factory):
    """A study made by study.run (one head, one LoRA and one QLoRA trial) and retrained by study.final.

    Its storage URL, name and output dir; tests that change it work on a copy (copy_study)."""
    import optuna

    from study import final, run

    root = tmp_path_factory.mktemp("finished-study")
    storage, out = f"sqlite:///{root / 'study.db'}", str(root / "out")
    study = optuna.create_study(study_name="done", storage=storage, direction="maximize")
    # Learning rates at which each variant learns the synthetic task (tests/test_train.py).
    lora = {"lora_dropout": 0.0, "lora_r": 8, "weight_decay": 0.0}
    study.enqueue_trial({"variant": "head", "learning_rate": 3e-2, "head_dropout": 0.0, "weight_decay": 0.0})
    study.enqueue_trial({"variant": "lora", "learning_rate": 1e-2, **lora})
    study.enqueue_trial({"variant": "qlora", "learning_rate": 1e-2, **lora})
    common = ["--storage", storage, "--study-name", "done", "--output-dir", out]
    flags = ["--model", tiny_model, "--data", data_folder, "--epochs", "2", "--batch-size", "16", "--variant", "all", "--pruner", "none"]
    assert run.main(["--trials", "3", *flags, *common]) == 0
    assert final.main(common) == 0
    return {"storage": storage, "name": "done", "output_dir": out, "db": root / "study.db"}


@pytest.fixture
def copy_study(finished_study, tmp_path):
    """A copy of finished_study's storage and outputs that a test may change."""
    import shutil

    shutil.copy(finished_study["db"], tmp_path / "study.db")
    shutil.copytree(finished_study["output_dir"], tmp_path / "out")
    return {**finished_study, "storage": f"sqlite:///{tmp_path / 'study.db'}", "output_dir": str(tmp_path / "out"), "db": tmp_path / "study.db"}
