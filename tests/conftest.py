"""Fixtures: a tiny random GPT-2 with a word-level tokenizer, and synthetic data folders. No network, no ../shared."""

from __future__ import annotations

import os

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# One torch thread, here and in the commands the tests start: the models are tiny, and on a busy machine two threads
# spin against each other (a tiny trial took 5 s of CPU with two threads, 0.7 s with one).
os.environ.setdefault("OMP_NUM_THREADS", "1")

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
    from emotion_core.variants import load_tokenizer

    return load_tokenizer(tiny_model)


@pytest.fixture(scope="session")
def tokenized(data_folder, tokenizer):
    from emotion_core.data import load_splits, tokenize_splits

    return tokenize_splits(load_splits(data_folder), tokenizer)


@pytest.fixture
def study_args(tiny_model, data_folder, tmp_path) -> list[str]:
    """Flags of a fast study in a fresh SQLite file; each test adds --trials and what it studies."""
    return [
        "--model", tiny_model, "--data", data_folder, "--epochs", "2", "--batch-size", "16",
        "--storage", f"sqlite:///{tmp_path / 'study.db'}", "--study-name", "t", "--output-dir", str(tmp_path / "out"),
    ]


def pytest_configure(config):
    Path(config.rootpath, "storage").mkdir(exist_ok=True)
