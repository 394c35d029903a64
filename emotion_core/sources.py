"""Where a model or data set comes from: a local folder or a Hugging Face hub id."""

from __future__ import annotations

import os
from pathlib import Path


def looks_like_path(source: str) -> bool:
    """A folder path rather than a hub id (``owner/name`` has one slash and no leading ``.``, ``~`` or ``/``)."""
    return os.path.isabs(source) or source.startswith((".", "~")) or os.path.exists(source) or source.count("/") > 1


def local_path(source: str) -> Path:
    return Path(source).expanduser()


def missing_folder(source: str) -> bool:
    """A path that names no existing folder: a user's typo, not a hub id to look up."""
    return looks_like_path(source) and not local_path(source).exists()


def model_key(source: str) -> str:
    """The same model under another spelling of its folder is the same model."""
    path = local_path(source)
    return os.path.realpath(path) if path.exists() else source


def fingerprint(source: str, cache_file: Path | None = None) -> str:
    """What a model or data set is, wherever it lies: a hub id as itself; a local folder (or file) as a hash of its
    files' names and contents, so that the same model copied to another path on another machine is the same model.

    Hashing a 500 MB model takes about a second; ``cache_file`` keeps each file's hash by path, size and modification
    time, so a rerun hashes only what changed."""
    import hashlib
    import json

    path = local_path(source)
    if not path.exists():
        return source
    files = [path] if path.is_file() else sorted(
        p for p in path.rglob("*") if p.is_file() and not any(part.startswith(".") for part in p.relative_to(path).parts)
    )
    known = json.loads(cache_file.read_text()) if cache_file is not None and cache_file.is_file() else {}
    digest = hashlib.sha256()
    for file in files:
        stat = file.stat()
        key = f"{file.resolve()}:{stat.st_size}:{stat.st_mtime_ns}"
        if key not in known:
            with file.open("rb") as handle:
                known[key] = hashlib.file_digest(handle, "sha256").hexdigest()
        digest.update(f"{file.relative_to(path) if file != path else file.name}:{known[key]}\n".encode())
    if cache_file is not None:
        save_cache(cache_file, known)
    return "sha256:" + digest.hexdigest()[:20]


def save_cache(path: Path, value) -> None:
    """``value`` as JSON at ``path``, written beside it and renamed (a reader never sees half a file). A cache that
    cannot be written (a full disk) only costs the next run the work it would have saved: nothing is raised."""
    import json

    staging = path.with_name(f".{path.name}.{os.getpid()}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        staging.write_text(json.dumps(value))
        os.replace(staging, path)
    except OSError:
        staging.unlink(missing_ok=True)
