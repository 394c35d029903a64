"""Opening Optuna storage: heartbeat and retry for RDB storage, and URLs with their passwords masked."""

from __future__ import annotations

import warnings
from pathlib import Path

import optuna
from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback

from study.cli import UsageError

# A trial whose process died is marked FAILED after GRACE_PERIOD_S without a heartbeat, and retried.
HEARTBEAT_INTERVAL_S = 20
GRACE_PERIOD_S = 60
MAX_RETRY = 3


def mask_url(url: str) -> str:
    """The URL with its password replaced by ***, for anything printed, logged or written."""
    try:
        from sqlalchemy.engine import make_url

        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        return url.split("@")[-1] if "@" in url else url


def open_storage(url: str, *, heartbeat: bool = True) -> optuna.storages.BaseStorage:
    """An RDB storage for ``url`` with heartbeat-based retry of trials whose process died.

    Errors become UsageError with the password masked, so that a CLI exits 2 with a readable line.
    """
    if url.startswith("sqlite:///"):
        path = Path(url.removeprefix("sqlite:///"))
        if path.parent and not path.parent.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            options = {}
            if heartbeat:
                options = dict(
                    heartbeat_interval=HEARTBEAT_INTERVAL_S,
                    grace_period=GRACE_PERIOD_S,
                    heartbeat_stale_trial_callback=RetryHeartbeatStaleTrialCallback(max_retry=MAX_RETRY),
                )
            return RDBStorage(url, **options)
    except Exception as error:
        message = str(error).splitlines()[0][:200].replace(url, mask_url(url))
        raise UsageError(f"cannot open storage {mask_url(url)}: {type(error).__name__}: {message}") from None


def study_exists(storage: optuna.storages.BaseStorage, name: str) -> bool:
    try:
        storage.get_study_id_from_name(name)
        return True
    except KeyError:
        return False
