"""Opening Optuna storage: with a heartbeat and the retry of dead trials (``heartbeat``), its calls retried through
database outages (``retrying``); the artifact store (``artifacts``); storage URLs and folder names (``urls``).

``--storage`` is an SQLAlchemy URL (``sqlite:///…``, ``postgresql://…``, ``mysql+pymysql://…``) or a journal file
(a path ending in ``.journal`` or ``.log``: Optuna's JournalStorage, which takes several writers on one machine).
Either way a running trial records a heartbeat; a trial whose process died is marked FAILED and retried as a new
trial with the same parameters, which continues from the dead trial's last checkpoint.
"""

from __future__ import annotations

import json
import sqlite3
import warnings
from contextlib import closing
from pathlib import Path

import optuna
from optuna.storages import BaseStorage, RDBStorage
from sqlalchemy.exc import ArgumentError, OperationalError

from study._backends.heartbeat import JournalFileStorage, RetryDeadTrial, grace_period_s, heartbeat_interval_s
from study._backends.retrying import RetryingStorage
from study._errors import UsageError
from study._urls import is_journal, is_sqlite, local_file, mask_url, register_secret, with_long_scheme

# The driver SQLAlchemy picks for a bare scheme, and the one to use instead when only that one is installed.
DRIVER_FALLBACKS = {"postgresql": ("psycopg", "postgresql+psycopg2", "psycopg2"), "mysql": ("MySQLdb", "mysql+pymysql", "pymysql")}
SQLITE_HEADER = b"SQLite format 3\x00"
OPTUNA_TABLES = {"studies", "version_info"}


def with_installed_driver(url: str) -> str:
    """``postgresql://`` (or libpq's and Heroku's ``postgres://``) and ``mysql://`` with whichever of their usual
    drivers is installed."""
    import importlib.util

    scheme, sep, rest = with_long_scheme(url).partition("://")
    if scheme in DRIVER_FALLBACKS:
        default, fallback, module = DRIVER_FALLBACKS[scheme]
        if importlib.util.find_spec(default) is None and importlib.util.find_spec(module) is not None:
            return f"{fallback}{sep}{rest}"
    return f"{scheme}{sep}{rest}"


def _journal_record(line: bytes) -> bool:
    """Whether ``line`` is a record of Optuna's journal (a JSON object with an op_code), or the start of one that a
    writer is appending right now."""
    if not line.endswith(b"\n"):
        return line.startswith(b'{"op_code":')
    try:
        record = json.loads(line)
    except ValueError:
        return False
    return isinstance(record, dict) and "op_code" in record


def _sqlite_tables(path: Path) -> set[str]:
    with closing(sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, timeout=60)) as db:  # reads only
        return {name for (name,) in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}


def check_storage_file(url: str) -> None:
    """Refuse a file storage's existing file that is not a storage of its kind (a user's notes, another program's
    database), before Optuna appends a journal record or creates its tables in it. An empty file is a new storage."""
    path = local_file(url)
    if path is None or not path.is_file() or path.stat().st_size == 0:
        return
    with path.open("rb") as file:
        head = file.readline(1 << 16)
    if is_journal(url):
        if not _journal_record(head):
            raise UsageError(f"--storage {url}: {path} is not an Optuna journal file (its first line is no journal "
                             "record); pass a new file or an existing journal")
        return
    if not head.startswith(SQLITE_HEADER):
        raise UsageError(f"--storage {url}: {path} is not an SQLite database; pass a new file or an Optuna SQLite storage")
    try:
        tables = _sqlite_tables(path)
    except sqlite3.Error as error:
        raise UsageError(f"--storage {url}: cannot read {path} as an SQLite database ({error})") from error
    if tables and not OPTUNA_TABLES <= tables:
        raise UsageError(f"--storage {url}: {path} is an SQLite database without Optuna's tables (it holds "
                         f"{', '.join(sorted(tables)[:5])}); pass a new file or an Optuna SQLite storage")


def _engine_kwargs(url: str) -> dict:
    if is_sqlite(url):
        # Wait for a lock instead of failing at once, should two commands share one SQLite file.
        return {"connect_args": {"timeout": 60}}
    # A server that does not answer fails in seconds; connections dropped during an hour-long trial are renewed.
    return {"connect_args": {"connect_timeout": 10}, "pool_pre_ping": True}


def open_storage(url: str, *, heartbeat: bool = True) -> BaseStorage:
    """The storage for ``url``: with heartbeat-based retry of trials whose process died, and its calls retried through
    database outages.

    What a user can fix (a bad URL, an unknown or missing driver, a server that does not answer, a file that cannot be
    made) becomes a UsageError with the password masked; anything else keeps its type.
    """
    register_secret(url)
    callback = RetryDeadTrial() if heartbeat else None
    interval = heartbeat_interval_s() if heartbeat else None
    grace = grace_period_s() if heartbeat else None
    try:
        if "://" not in url and not is_journal(url):
            raise UsageError(
                f"--storage {url!r} is neither a database URL nor a journal file; pass sqlite:///path.db, "
                "postgresql://user@host/db, mysql+pymysql://user@host/db or a journal file path ending in .journal"
            )
        check_storage_file(url)
        if local_file(url) is not None:
            local_file(url).parent.mkdir(parents=True, exist_ok=True)
        if is_journal(url):
            return JournalFileStorage(str(local_file(url)), interval, grace, callback)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            inner = RDBStorage(with_installed_driver(url), engine_kwargs=_engine_kwargs(url), heartbeat_interval=interval,
                               grace_period=grace, heartbeat_stale_trial_callback=callback)
        return RetryingStorage(optuna.storages.get_storage(inner))
    except (ArgumentError, OperationalError, ImportError, OSError) as error:
        message = " ".join(str(error).split())[:300].replace(url, mask_url(url))
        raise UsageError(f"cannot open storage {mask_url(url)}: {type(error).__name__}: {message}") from error


def storage_exists(url: str) -> bool:
    """Whether a file storage's file is there already (a database server's storage always counts as there)."""
    path = local_file(url)
    return path is None or path.exists()


def study_exists(storage: BaseStorage, name: str) -> bool:
    try:
        storage.get_study_id_from_name(name)
        return True
    except KeyError:
        return False
