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
