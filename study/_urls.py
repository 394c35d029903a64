"""Storage URLs: what kind of storage they name, and their passwords, masked wherever a URL is shown and hidden in
any text this process prints or logs; and the folder names that a storage and a study name become."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

JOURNAL_SUFFIXES = (".journal", ".log")


def is_sqlite(url: str) -> bool:
    return url.startswith("sqlite:")


def is_journal(url: str) -> bool:
    """A journal file (Optuna's JournalStorage): a path, not a URL, ending in .journal or .log."""
    return "://" not in url and url.endswith(JOURNAL_SUFFIXES)


def with_long_scheme(url: str) -> str:
    """``postgres://`` (libpq's and Heroku's spelling) as ``postgresql://``, the only name SQLAlchemy knows; any other
    URL as it is."""
    return "postgresql://" + url.removeprefix("postgres://") if url.startswith("postgres://") else url


def local_file(url: str) -> Path | None:
    """The file of a SQLite or journal storage; None for a database server."""
    if is_sqlite(url):
        return Path(url.removeprefix("sqlite:///")).expanduser()
    return Path(url).expanduser() if is_journal(url) else None


# Passwords of the URLs this process was given: never printed, whatever raised the text.
_SECRETS: set[str] = set()


def _password(url: str) -> str | None:
    if "://" not in url:
        return None
    try:
        from sqlalchemy.engine import make_url

        password = make_url(url).password
    except Exception:  # noqa: BLE001 - an unparsable URL: what sits between user: and @
        head = url.split("://", 1)[1].rsplit("@", 1)
        password = head[0].split(":", 1)[1] if len(head) == 2 and ":" in head[0] else None
    return str(password) if password else None


def mask_url(url: str) -> str:
    """The URL with its password replaced by ***, for anything printed, logged or written."""
    password = _password(url)
    if not password:
        return url
    masked = url.replace(f":{password}@", ":***@")
    if masked == url:  # the URL holds the password %-encoded
        from sqlalchemy.engine import make_url

        masked = make_url(url).render_as_string(hide_password=True)
    return masked


def register_secret(url: str) -> None:
    """Remember the password in a URL, so that :func:`redact` hides it in any message."""
    password = _password(url)
    if password:
        _SECRETS.add(password)


def redact(text: str) -> str:
    for secret in _SECRETS:
        text = text.replace(secret, "***")
    return text


def _slug(text: str, limit: int) -> str:
    """Letters, digits, ``_``, ``.`` and ``-`` only, never leading or trailing ``.`` or ``-``: no path separator, no
    ``..``, no NUL."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", text).strip("-.")[:limit].strip("-.")


def storage_key(url: str) -> str:
    """A folder name for what a storage's studies write, readable and distinct for distinct storages (the same
    study name in two SQLite files, or a SQLite file and a journal, must not share outputs)."""
    path = local_file(url)
    where = str(path.resolve()) if path is not None else mask_url(with_long_scheme(url))  # both spellings: one folder
    readable = path.name if path is not None else re.sub(r"^[^:]+://([^@/]*@)?", "", mask_url(url))
    return f"{_slug(readable, 40) or 'storage'}-{hashlib.sha256(where.encode()).hexdigest()[:6]}"


def safe_name(name: str) -> str:
    """The folder name for a name that comes from a user or a shared database (a study's): a readable slug plus a
    short hash of the exact name, so that it stays one folder inside its parent whatever the name holds (``..``,
    ``/``, an absolute path, NUL, thousands of characters) and two names never share a folder."""
    digest = hashlib.sha256(name.encode("utf-8", "surrogatepass")).hexdigest()[:8]
    return f"{_slug(name, 60) or 'study'}-{digest}"
