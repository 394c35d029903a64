"""What a study writes that another machine may need, in Optuna's artifact store: each trial's newest checkpoint,
the final model, its report and plots. The store is a folder (a shared filesystem, or a local one by default) or
``s3://bucket/prefix`` (Optuna's Boto3ArtifactStore: any S3-compatible endpoint through the usual AWS variables).

The database says where things are (study.records): a trial's Checkpoint record names its newest checkpoint (a retry
inherits it), a FinalCheckpoint that of a final retraining (its rerun continues from it), and the study's FinalRecord
and StudyRecord name the final model's files and the store itself. Files the dashboard shows (report, plots, the final
weights) are uploaded with Optuna's ``upload_artifact``, so they are listed with the study; checkpoints are written
under ids of our own, since they come and go.
"""

from __future__ import annotations

import io
import os
import shutil
import tarfile
import warnings
from pathlib import Path
from typing import BinaryIO

import optuna
from optuna.artifacts import FileSystemArtifactStore
from optuna.artifacts.exceptions import ArtifactNotFound

from study import records
from study._errors import UsageError


class PrefixedStore:
    """An artifact store whose ids live under ``prefix`` (s3://bucket/prefix): Boto3ArtifactStore has no prefix."""

    def __init__(self, inner, prefix: str):
        self.inner = inner
        self.prefix = prefix.strip("/") + "/"

    def open_reader(self, artifact_id: str) -> BinaryIO:
        return self.inner.open_reader(self.prefix + artifact_id)

    def write(self, artifact_id: str, content_body: BinaryIO) -> None:
        self.inner.write(self.prefix + artifact_id, content_body)

    def remove(self, artifact_id: str) -> None:
        self.inner.remove(self.prefix + artifact_id)


def open_store(location: str):
    """The artifact store at ``location``: a folder (made if missing) or s3://bucket[/prefix]."""
    if location.startswith("s3://"):
        bucket, _, prefix = location.removeprefix("s3://").partition("/")
        if not bucket:
            raise UsageError(f"--artifact-store {location!r} names no bucket; pass s3://bucket or s3://bucket/prefix")
        try:
            import boto3
            from optuna.artifacts import Boto3ArtifactStore
        except ImportError as error:
            raise UsageError("--artifact-store s3://... needs boto3: pip install boto3") from error
        store = Boto3ArtifactStore(bucket, client=boto3.client("s3"))
        return PrefixedStore(store, prefix) if prefix else store
    if "://" in location:
        raise UsageError(f"--artifact-store {location!r}: pass a folder or s3://bucket/prefix")
    folder = Path(location).expanduser()
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise UsageError(f"--artifact-store {location!r}: cannot make the folder ({error})") from error
    return FileSystemArtifactStore(str(folder))


def is_folder(location: str) -> bool:
    return "://" not in location


def _tar(folder: Path) -> io.BytesIO:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        tar.add(folder, arcname=folder.name)
    buffer.seek(0)
    return buffer


def _remove(store, artifact_id: str) -> None:
    try:
        store.remove(artifact_id)
    except (ArtifactNotFound, FileNotFoundError):
        pass


class Checkpoints:
    """A study's trial checkpoints in the artifact store: written after each local save, found again by a retry on any
    machine, removed once the trial (or its retry) is done. Their ids hold the study's storage id, not its name, which
    may hold anything."""

    def __init__(self, store, study_id: int):
        self.store = store
        self.prefix = f"checkpoints-study{study_id}"

    def _id(self, number: int, folder: str) -> str:
        return f"{self.prefix}-trial{number}-{folder}.tar"

    def save(self, trial: optuna.Trial, folder: Path) -> None:
        """Upload the checkpoint ``folder`` (checkpoint-<step>) of ``trial``, point the trial at it, drop the older one."""
        previous = records.Checkpoint.read(trial)
        artifact_id = self._id(trial.number, folder.name)
        self.store.write(artifact_id, _tar(folder))
        records.Checkpoint(artifact_id=artifact_id, folder=folder.name, trial=trial.number).write(trial)
        if previous and previous.artifact_id != artifact_id:
            _remove(self.store, previous.artifact_id)

    def fetch(self, pointer: records.Checkpoint | records.FinalCheckpoint | None, into: Path) -> int | None:
        """Put the checkpoint ``pointer`` names (a trial's own, or its retried predecessor's) under ``into``; returns
        its step, or None when there is none or the store lost it. An archive that cannot be read raises
        tarfile.TarError, with whatever it extracted removed."""
        if pointer is None:
            return None
        try:
            with self.store.open_reader(pointer.artifact_id) as reader:
                data = io.BytesIO(reader.read())
        except (ArtifactNotFound, FileNotFoundError):
            return None
        into.mkdir(parents=True, exist_ok=True)
        try:
            with tarfile.open(fileobj=data) as tar:
                tar.extractall(into, filter="data")
        except (tarfile.TarError, EOFError, OSError):
            shutil.rmtree(into, ignore_errors=True)
            raise
        return pointer.step

    def discard(self, pointer: records.Checkpoint | records.FinalCheckpoint) -> None:
        """Drop a checkpoint that cannot be used (its archive is broken)."""
        _remove(self.store, pointer.artifact_id)

    def remove(self, numbers: list[int], steps: set[int]) -> None:
        """The trial is done: drop every checkpoint that it and the trials it continued could have written (at each
        evaluation step), also one a kill left behind between its upload and the pointer to it."""
        for number in numbers:
            for step in sorted(steps):
                _remove(self.store, self._id(number, f"checkpoint-{step}"))


class FinalCheckpoints:
    """The checkpoints of one final retraining, named by ``key`` (its trial, seed and budget): uploaded after each local
    save and pointed to from the study (records.FinalCheckpoint), so that the same final command, rerun on any machine,
    continues from the newest; removed once the final model is written. Another budget is another key: it starts anew."""

    def __init__(self, store, study: optuna.Study, study_id: int, key: str):
        self.checkpoints = Checkpoints(store, study_id)
        self.study = study
        self.key = key

    def _id(self, folder: str) -> str:
        return f"{self.checkpoints.prefix}-{self.key}-{folder}.tar"

    def pointer(self) -> records.FinalCheckpoint | None:
        return records.FinalCheckpoint.read(self.study, self.key)

    def save(self, folder: Path) -> None:
        """Upload the checkpoint ``folder`` (checkpoint-<step>), point the study at it, drop the older one."""
        previous = self.pointer()
        artifact_id = self._id(folder.name)
        self.checkpoints.store.write(artifact_id, _tar(folder))
        records.FinalCheckpoint(key=self.key, artifact_id=artifact_id, folder=folder.name).write(self.study)
        if previous and previous.artifact_id != artifact_id:
            _remove(self.checkpoints.store, previous.artifact_id)

    def fetch(self, into: Path) -> int | None:
        """Put the newest checkpoint under ``into``; its step, or None (see Checkpoints.fetch)."""
        return self.checkpoints.fetch(self.pointer(), into)

    def discard(self) -> None:
        pointer = self.pointer()
        if pointer is not None:
            self.checkpoints.discard(pointer)
        records.FinalCheckpoint.clear(self.study, self.key)

    def remove(self, steps: set[int]) -> None:
        """The retraining is done: drop every checkpoint it could have written (at each evaluation step), also one a kill
        left behind between its upload and the pointer to it."""
        for step in sorted(steps):
            _remove(self.checkpoints.store, self._id(f"checkpoint-{step}"))
        records.FinalCheckpoint.clear(self.study, self.key)


def upload(store, study_or_trial, path: Path) -> str:
    """A file the dashboard lists with the study (Optuna's upload_artifact); its artifact id."""
    from optuna.artifacts import upload_artifact

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return upload_artifact(artifact_store=store, file_path=str(path), study_or_trial=study_or_trial)


def download(store, artifact_id: str, path: Path) -> Path:
    """Copy an artifact to ``path`` (written beside it and renamed: a reader never sees half a file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = path.with_name(f".{path.name}.{os.getpid()}")
    with store.open_reader(artifact_id) as reader, staging.open("wb") as out:
        while chunk := reader.read(1 << 20):
            out.write(chunk)
    os.replace(staging, path)
    return path


def dashboard_command(storage_url: str, location: str, home: Path) -> str:
    """The optuna-dashboard command that serves the storage's studies with their artifacts. For an S3 store it writes
    <home>/dashboard.toml, since the dashboard takes a bucket only from a config file (and reads at the bucket's root:
    an s3://bucket/prefix store's files are listed, not served)."""
    from study._backends import with_installed_driver
    from study._urls import mask_url

    storage = mask_url(with_installed_driver(storage_url))  # the dashboard takes a bare postgresql:// as psycopg 3's
    if is_folder(location):
        return f"optuna-dashboard {storage} --artifact-dir {location}"
    bucket = location.removeprefix("s3://").partition("/")[0]
    config = home / "dashboard.toml"
    config.parent.mkdir(parents=True, exist_ok=True)
    config.write_text(f'[artifact_store.boto3]\nbucket_name = "{bucket}"\n')
    return f"optuna-dashboard {storage} --from-config {config}"
