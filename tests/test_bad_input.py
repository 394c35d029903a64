"""Bad input: one clear line, exit code 2, and the study as it was. Passwords in storage URLs are never shown."""

import os
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
from optuna.distributions import FloatDistribution

from study import run
from study._command import settings_from
from study.settings import StudySettings

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def stored(study_args):
    """study_args' study, holding one finished trial; each case then asks for more trials of it or of a new study."""
    storage = study_args[study_args.index("--storage") + 1]
    study = optuna.create_study(study_name="t", storage=storage, direction="maximize")
    study.set_user_attr("settings", settings_from(StudySettings, run.COMMAND.parser().parse_args(study_args)).identity())
    distribution = FloatDistribution(1e-5, 5e-3, log=True)
    study.add_trial(optuna.trial.create_trial(value=0.5, params={"learning_rate": 1e-3}, distributions={"learning_rate": distribution}))
    return storage


def corrupt(tmp_path: Path, data_folder: str, name: str, content: bytes) -> str:
    folder = tmp_path / "corrupt"
    folder.mkdir()
    for split in ("train", "validation", "test"):
        (folder / f"{split}.txt").write_bytes((Path(data_folder) / f"{split}.txt").read_bytes())
    (folder / "train.txt").unlink()
    (folder / name).write_bytes(content)
    return str(folder)


CASES = {
    "missing model folder": (["--model", "/nowhere/model"], ["model folder '/nowhere/model' does not exist", "--model /path/to/folder"]),
    "model hub unreachable": (["--model", "emotion-study-tests/absent"], ["Hugging Face hub", "--model /path/to/folder"]),
    "missing data folder": (["--data", "/nowhere/data"], ["data folder '/nowhere/data' does not exist"]),
    "data hub unreachable": (["--data", "emotion-study-tests/absent"], ["from the Hugging Face hub", "--data /path/to/folder"]),
    "zero trials": (["--trials", "0"], ["--trials must be positive"]),
    "negative trials": (["--trials", "-3"], ["--trials must be positive"]),
    "zero workers": (["--workers", "0"], ["--workers must be positive"]),
    "workers on sqlite": (["--workers", "2"], ["SQLite", "--storage storage/emotion.journal", "postgresql://"]),
    "other variant, same name": (["--variant", "head", "--study-name", "t"], ["--variant: stored 'lora', given 'head'"]),
    "other model, same name": (["--model", "/nowhere/model", "--study-name", "t"], ["--model: stored"]),
    "storage not a URL": (["--storage", "emotion.db"], ["neither a database URL nor a journal file"]),
    "storage driver unknown": (["--storage", "nosuchdb://host/db"], ["cannot open storage nosuchdb://host/db"]),
    "storage folder cannot be made": (["--storage", "sqlite:////proc/no/study.db"], ["cannot open storage sqlite:////proc/no/study.db"]),
}


@pytest.mark.parametrize("case", CASES)
def test_bad_input_exits_2_and_leaves_the_study_as_it_was(case, study_args, stored, capsys):
    flags, messages = CASES[case]
    # A new study name unless the case says otherwise: a bad run must not create one either.
    assert run.main(["--trials", "3", *study_args, "--study-name", "new", *flags]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and len(err.strip().splitlines()) == 1, err
    for message in messages:
        assert message in err, err
    assert optuna.get_all_study_names(stored) == ["t"]
    assert len(optuna.load_study(study_name="t", storage=stored).trials) == 1


@pytest.mark.parametrize(
    "name,content,message",
    [
        ("train.txt", bytes(range(128, 256)) * 4, "train.txt: not UTF-8 text"),
        ("train.parquet", b"PAR1 this is not parquet", "train.parquet: cannot be read as parquet"),
    ],
)
def test_a_corrupted_data_file_exits_2(name, content, message, study_args, data_folder, tmp_path, stored, capsys):
    args = ["--trials", "3", *study_args, "--study-name", "new", "--data", corrupt(tmp_path, data_folder, name, content)]
    assert run.main(args) == 2
    assert message in capsys.readouterr().err
    assert optuna.get_all_study_names(stored) == ["t"]


@pytest.mark.parametrize("architecture", ["gpt2", "llama"])
def test_a_model_folder_without_tokenizer_files_exits_2_before_the_study_is_made(architecture, study_args, tiny_model, tmp_path):
    """From such a folder transformers makes a GPT-2 tokenizer of one token, which turns every text into no token at
    all, and refuses a Llama one with its own words: either way the line names the folder and --tokenizer."""
    bare = tmp_path / "no-tokenizer"
    bare.mkdir()
    if architecture == "llama":
        from transformers import LlamaConfig, LlamaForCausalLM

        config = LlamaConfig(vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2)
        LlamaForCausalLM(config).save_pretrained(str(bare))
    for file in Path(tiny_model).iterdir():
        if architecture == "gpt2" and not file.name.startswith(("tokenizer", "vocab", "merges", "special_tokens")):
            (bare / file.name).write_bytes(file.read_bytes())
    args = [*study_args, "--model", str(bare), "--variant", "head", "--trials", "2"]
    result = subprocess.run([sys.executable, "-m", "study.run", *args], cwd=ROOT, env={**os.environ, "HF_HUB_OFFLINE": "1"},
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 2, result.stderr
    error = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(error) == 1 and str(bare) in error[0] and "--tokenizer" in error[0], result.stderr
    assert not (tmp_path / "study.db").exists()  # no study, no trial


def test_a_tokenizer_that_turns_every_text_into_nothing_exits_2(study_args, tmp_path, capsys):
    """Latin letters and no unknown token: Greek sentences lose every character."""
    import string

    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    backend = Tokenizer(models.BPE(vocab={c: i for i, c in enumerate(["<|endoftext|>", *string.ascii_lowercase])}, merges=[]))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    PreTrainedTokenizerFast(tokenizer_object=backend, eos_token="<|endoftext|>").save_pretrained(str(tmp_path / "latin"))
    greek = tmp_path / "greek"
    greek.mkdir()
    for split in ("train", "validation", "test"):
        (greek / f"{split}.txt").write_text("είμαι χαρούμενος;χαρά\nείμαι λυπημένος;λύπη\n" * 10)
    assert run.main(["--trials", "2", *study_args, "--data", str(greek), "--tokenizer", str(tmp_path / "latin")]) == 2
    err = capsys.readouterr().err
    assert f"the tokenizer of '{tmp_path / 'latin'}' turns every training text into no token at all" in err and "--tokenizer" in err
    assert not (tmp_path / "study.db").exists()


def test_a_storage_password_is_never_printed(study_args):
    """From a real shell command: a storage that cannot be opened is named, with its password masked."""
    url = "postgresql://someone:s3cret-pw@127.0.0.1:1/nowhere"
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    result = subprocess.run(
        [sys.executable, "-m", "study.run", "--trials", "2", *study_args, "--storage", url],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 2
    assert "s3cret-pw" not in result.stdout + result.stderr
    assert "cannot open storage postgresql://someone:***@127.0.0.1:1/nowhere" in result.stderr
