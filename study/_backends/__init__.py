"""Opening Optuna storage: with a heartbeat and the retry of dead trials (``heartbeat``), its calls retried through
database outages (``retrying``); the artifact store (``artifacts``); storage URLs and folder names (``urls``).

``--storage`` is an SQLAlchemy URL (``sqlite:///…``, ``postgresql://…``, ``mysql+pymysql://…``) or a journal file
(a path ending in ``.journal`` or ``.log``: Optuna's JournalStorage, which takes several writers on one machine).
Either way a running trial records a heartbeat; a trial whose process died is marked FAILED and retried as a new
trial with the same parameters, which continues from the dead trial's last checkpoint.
"""

from __future__ import annotations

import warnings

import optuna
from optuna.storages import BaseStorage, RDBStorage
from sqlalchemy.exc import ArgumentError, OperationalError

from study._backends.heartbeat import GRACE_PERIOD_S, HEARTBEAT_INTERVAL_S, JournalFileStorage, RetryDeadTrial
from study._backends.retrying import RetryingStorage
from study._errors import UsageError
from study._urls import is_journal, is_sqlite, local_file, mask_url, register_secret

# The driver SQLAlchemy picks for a bare scheme, and the one to use instead when only that one is installed.
DRIVER_FALLBACKS = {"postgresql": ("psycopg", "postgresql+psycopg2", "psycopg2"), "mysql": ("MySQLdb", "mysql+pymysql", "pymysql")}


def with_installed_driver(url: str) -> str:
    """``postgresql://`` and ``mysql://`` with whichever of their usual drivers is installed."""
    import importlib.util

    scheme, sep, rest = url.partition("://")
    if scheme in DRIVER_FALLBACKS:
        default, fallback, module = DRIVER_FALLBACKS[scheme]
        if importlib.util.find_spec(default) is None and importlib.util.find_spec(module) is not None:
            return f"{fallback}{sep}{rest}"
    return url


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
    interval = HEARTBEAT_INTERVAL_S if heartbeat else None
    try:
        if "://" not in url and not is_journal(url):
            raise UsageError(
                f"--storage {url!r} is neither a database URL nor a journal file; pass sqlite:///path.db, "
                "postgresql://user@host/db, mysql+pymysql://user@host/db or a journal file path ending in .journal"
            )
        if local_file(url) is not None:
            local_file(url).parent.mkdir(parents=True, exist_ok=True)
        if is_journal(url):
            return JournalFileStorage(str(local_file(url)), interval, GRACE_PERIOD_S, callback)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            inner = RDBStorage(with_installed_driver(url), engine_kwargs=_engine_kwargs(url), heartbeat_interval=interval,
                               grace_period=GRACE_PERIOD_S if heartbeat else None, heartbeat_stale_trial_callback=callback)
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
