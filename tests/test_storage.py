"""The storage layer on real storages (an SQLite file, a journal file, the test PostgreSQL): a file that is no storage
is refused and never written, the storages pickle and check their heartbeat settings as Optuna's do, and a write whose
reply the database lost is never made twice."""

import contextlib
import os
import pickle
import sqlite3
import subprocess
import sys
import uuid
from pathlib import Path

import optuna
import pytest
from optuna.storages import RDBStorage
from optuna.trial import TrialState
from sqlalchemy import event

from study import records, report, run
from study._backends import open_storage, retrying, with_installed_driver
from study._backends.heartbeat import JournalFileStorage
from study._backends.retrying import RetryingStorage
from study.settings import Storage
from tests.cluster import postgres_url_or_skip

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "HF_HUB_OFFLINE": "1"}

NOT_STORAGE = {
    "one line": b"my notes",
    "several lines": b"groceries\nmilk\n{\"not\": \"a journal record\"}\n",
    "binary": bytes(range(256)) * 8,
}
KINDS = {"journal": ("notes.journal", "{}", "is not an Optuna journal file"),
         "sqlite": ("notes.db", "sqlite:///{}", "is not an SQLite database")}


def objective(trial: optuna.Trial) -> float:
    return trial.suggest_float("x", 0, 1)


@pytest.mark.parametrize("content", NOT_STORAGE)
@pytest.mark.parametrize("kind", KINDS)
def test_a_file_that_is_no_storage_of_its_kind_is_refused_and_never_written(kind, content, study_args, tmp_path, capsys):
    name, url, message = KINDS[kind]
    path = tmp_path / name
    path.write_bytes(NOT_STORAGE[content])
    assert run.main(["--trials", "2", *study_args, "--storage", url.format(path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and len(err.strip().splitlines()) == 1, err
    assert f"{path} {message}" in err, err
    assert path.read_bytes() == NOT_STORAGE[content]


def test_a_one_line_text_file_given_as_a_journal_to_the_shell_command_is_left_as_it_was(study_args, tmp_path):
    path = tmp_path / "notes.journal"
    path.write_bytes(b"my notes")
    result = subprocess.run([sys.executable, "-m", "study.run", "--trials", "2", *study_args, "--storage", str(path)],
                            cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=300)
    assert result.returncode == 2, result.stderr
    assert f"{path} is not an Optuna journal file" in result.stderr
    assert path.read_bytes() == b"my notes"


def test_an_sqlite_database_of_another_program_is_refused_and_an_empty_file_is_a_new_storage(tmp_path, capsys):
    other = tmp_path / "contacts.db"
    with sqlite3.connect(other) as db:
        db.execute("CREATE TABLE contacts (name TEXT)")
    before = other.read_bytes()
    assert report.main(["--storage", f"sqlite:///{other}"]) == 2
    assert f"{other} is an SQLite database without Optuna's tables (it holds contacts)" in capsys.readouterr().err
    assert other.read_bytes() == before
    for url in (f"sqlite:///{tmp_path / 'empty.db'}", str(tmp_path / "empty.journal")):
        Path(url.removeprefix("sqlite:///")).touch()
        optuna.create_study(storage=open_storage(url, heartbeat=False), study_name="s").optimize(objective, n_trials=1)
        assert len(optuna.load_study(study_name="s", storage=open_storage(url, heartbeat=False)).trials) == 1


def test_a_postgres_url_opens_the_postgresql_study_and_writes_to_its_folder():
    with postgres_url_or_skip() as (url, prefix):
        assert url.startswith("postgresql://")
        name = f"{prefix}alias"
        optuna.create_study(storage=open_storage(url, heartbeat=False), study_name=name).optimize(objective, n_trials=2)
        short = "postgres://" + url.removeprefix("postgresql://")  # libpq's and Heroku's spelling
        assert len(optuna.load_study(study_name=name, storage=open_storage(short)).trials) == 2
        assert Storage(storage=short).storage_folder == Storage(storage=url).storage_folder


@pytest.mark.parametrize("kind", ["sqlite", "journal", "postgresql"])
def test_every_storage_pickles_and_so_does_a_study_opened_through_it(kind, tmp_path):
    """As Optuna's storages do: joblib and multiprocessing pickle a study with its storage."""
    with postgres_url_or_skip() if kind == "postgresql" else contextlib.nullcontext((None, "")) as (url, prefix):
        url = {"sqlite": f"sqlite:///{tmp_path / 's.db'}", "journal": str(tmp_path / "s.journal")}.get(kind, url)
        storage = open_storage(url)
        study = optuna.create_study(storage=storage, study_name=f"{prefix}pickled")
        study.optimize(objective, n_trials=2)
        copy = pickle.loads(pickle.dumps(storage))
        assert type(copy) is type(storage) and len(copy.get_all_trials(copy.get_study_id_from_name(study.study_name))) == 2
        restored = pickle.loads(pickle.dumps(study))
        assert [t.params for t in restored.trials] == [t.params for t in study.trials]
        restored.optimize(objective, n_trials=1)
        assert len(study.trials) == 3


@pytest.mark.parametrize("interval,grace", [(-20, 60), (0, 60), (20, -60), (20, 0)])
def test_the_journal_refuses_a_heartbeat_interval_or_grace_period_that_optuna_refuses(interval, grace, tmp_path):
    with pytest.raises(ValueError) as optunas:
        RDBStorage(f"sqlite:///{tmp_path / 'o.db'}", heartbeat_interval=interval, grace_period=grace)
    with pytest.raises(ValueError) as ours:
        JournalFileStorage(str(tmp_path / "j.journal"), interval, grace, None)
    assert str(ours.value) == str(optunas.value)
    assert not (tmp_path / "j.journal").exists()


@pytest.mark.parametrize("value", ["-5", "0", "ten"])
@pytest.mark.parametrize("variable", ["EMOTION_STUDY_HEARTBEAT_S", "EMOTION_STUDY_GRACE_PERIOD_S"])
def test_a_heartbeat_variable_that_is_no_positive_number_of_seconds_is_named(variable, value, study_args, monkeypatch, capsys):
    storage = study_args[study_args.index("--storage") + 1]
    optuna.create_study(storage=storage, study_name="t")
    monkeypatch.setenv(variable, value)
    assert run.main(["--trials", "2", *study_args]) == 2
    assert f"error: {variable}='{value}': give a positive whole number of seconds" in capsys.readouterr().err


class LostReplies:
    """A real database fault, at the driver's commit: the commit of the ``at``-th insert (0 first) into each table
    goes through and then the connection drops before the reply (the driver's disconnect error), and the next
    ``refused`` commits of any kind fail without reaching the database, as while it is down."""

    DISCONNECT = {"sqlite": "cannot operate on a closed database", "postgresql": "server closed the connection unexpectedly"}

    def __init__(self, rdb: RDBStorage, at: dict[str, set[int]], refused: int):
        self.dialect, self.at, self.refused = rdb.engine.dialect, at, refused
        self.inserts = dict.fromkeys(at, 0)
        self.pending: dict[int, set[str]] = {}  # a connection's tables with an insert since its last commit
        self.down = self.lost = 0
        self.commit = self.dialect.do_commit
        self.dialect.do_commit = self.do_commit
        event.listen(rdb.engine, "before_cursor_execute", self.executing)

    def executing(self, connection, cursor, statement, *rest) -> None:
        words = statement.split()
        if words[:2] == ["INSERT", "INTO"] and words[2] in self.at:
            self.pending.setdefault(id(connection.connection.dbapi_connection), set()).add(words[2])

    def disconnect(self) -> Exception:
        return self.dialect.loaded_dbapi.OperationalError(self.DISCONNECT[self.dialect.name])

    def do_commit(self, connection) -> None:
        tables = self.pending.pop(id(connection.dbapi_connection), set())
        if self.down:
            self.down -= 1
            raise self.disconnect()
        self.commit(connection)
        for table in tables:
            self.inserts[table] += 1
            if self.inserts[table] - 1 in self.at[table]:
                self.lost += 1
                self.down = self.refused
                raise self.disconnect()


@pytest.mark.parametrize("kind", ["sqlite", "postgresql"])
@pytest.mark.parametrize("refused", [0, 6], ids=["brief outage", "long outage"])
def test_a_write_whose_reply_was_lost_is_not_made_twice(kind, refused, tmp_path, monkeypatch):
    """The study's creation and trials 1 and 3 lose their reply. A brief outage is ridden out by Optuna's own retry of
    trial creation (inside RDBStorage), which makes a second trial: the first is failed as surplus. A long one reaches
    RetryingStorage, whose retry finds the trial the lost attempt made. Either way the study holds exactly its 5
    trials and nothing stays running."""
    monkeypatch.setattr(retrying, "BACKOFF_S", (0.05, 0.2))
    with postgres_url_or_skip() if kind == "postgresql" else contextlib.nullcontext((None, "")) as (url, prefix):
        rdb = RDBStorage(with_installed_driver(url or f"sqlite:///{tmp_path / 'lost.db'}"))
        faults = LostReplies(rdb, {"studies": {0}, "trials": {1, 3}}, refused)
        storage = RetryingStorage(optuna.storages.get_storage(rdb), retry_for_s=60, log=lambda message: None)
        study = optuna.create_study(storage=storage, study_name=f"{prefix}lost-{uuid.uuid4().hex[:8]}")
        study.optimize(objective, n_trials=5)
        assert faults.lost == 3
        trials = study.get_trials()
        assert [t.state for t in trials].count(TrialState.COMPLETE) == 5
        assert not study.get_trials(states=(TrialState.RUNNING, TrialState.WAITING))
        surplus = [t for t in trials if t.state == TrialState.FAIL]
        assert all(records.outcome(t) == records.Outcome.SURPLUS and "reply to its creation was lost" in records.fail_reason(t)
                   for t in surplus)
        assert len(surplus) == (2 if refused == 0 else 0)
        assert optuna.get_all_study_names(storage).count(study.study_name) == 1
