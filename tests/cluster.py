"""Helpers for tests of "many machines, one study" (not tests themselves; tests/test_cluster_harness.py tests them).

- ``Machine``: a separate machine stand-in: its own copy of the project, its own host name, its own output and temp folders.
- ``TcpProxy``: a TCP proxy in front of PostgreSQL (or any TCP service) whose ``cut()`` makes the service unreachable for the
  clients that go through it, as a network partition would, and ``restore()`` heals it.
- ``s3_server()``: an S3-compatible server (moto) on 127.0.0.1 with a bucket, for Optuna's Boto3ArtifactStore.
- ``postgres_url_or_skip()``: the test PostgreSQL and a study-name prefix of its own; its studies are deleted afterwards.

Each helper skips the test, with the reason, where what it needs (PostgreSQL, moto, ``unshare``) is missing.
"""

from __future__ import annotations

import contextlib
import os
import re
import select
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest

ROOT = Path(__file__).resolve().parents[1]
POSTGRES = os.environ.get("EMOTION_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")


# -- machines ------------------------------------------------------------------------------------------------------


@cache
def unshare_prefix() -> tuple[str, ...]:
    """The command prefix that gives a process a host name of its own (a UTS namespace), or a skip that says why.

    As root ``unshare --uts`` does it; an unprivileged user gets the same inside a user namespace of its own, where it is
    root (``--map-root-user``). Neither forks: the command keeps the PID that Popen returns, so signals reach it directly.
    The probe also needs the ``hostname`` command (Debian: package hostname), which Machine.command runs."""
    if not shutil.which("unshare"):
        pytest.skip("unshare (util-linux) is not installed: a Machine cannot have a host name of its own")
    tried = []
    for prefix in (("unshare", "--uts"), ("unshare", "--user", "--map-root-user", "--uts")):
        probe = subprocess.run([*prefix, "hostname", "probe"], capture_output=True, text=True)
        if probe.returncode == 0:
            return prefix
        tried.append(f"{' '.join(prefix)}: {probe.stderr.strip()}")
    pytest.skip(f"no UTS namespace for a Machine's host name ({'; '.join(tried)})")


def copy_working_tree(source: Path, destination: Path) -> None:
    """Copy the files of ``source``'s git working tree, uncommitted changes and untracked files included, ignored ones
    (.venv, storage, caches) left out: what a developer would rsync to another machine, and what the tests must run."""
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"], cwd=source, capture_output=True, check=True
    ).stdout.decode()
    for name in filter(None, listed.split("\0")):
        path = source / name
        if not os.path.lexists(path):  # tracked but deleted in the working tree
            continue
        (destination / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(path, destination / name, follow_symlinks=False)


class Machine:
    """A stand-in for another machine: its own copy of the project (``repo``, the cwd and ``PYTHONPATH`` of its commands),
    its own host name, ``output_dir`` and ``TMPDIR``; no disk is shared with the test or other Machines except what the
    test passes on purpose. Shared with the test: the Python (sys.executable and its packages), HOME, a literal /tmp
    and the PID namespace (the product tells machines apart by host name and PID namespace: the host name differs).

    Each command starts in a process group of its own (its workers too), so ``kill``/``freeze``/``thaw`` reach all of them."""

    def __init__(self, name: str, root: Path, source: Path = ROOT):
        if not re.fullmatch(r"[a-z0-9][a-z0-9-]{0,62}", name):
            raise ValueError(f"{name!r} is not a host name")
        self.name = name
        self.home = Path(root) / name
        self.repo, self.output_dir, self.tmp, self.logs = (self.home / d for d in ("repo", "out", "tmp", "logs"))
        for folder in (self.repo, self.output_dir, self.tmp, self.logs):
            folder.mkdir(parents=True)
        copy_working_tree(Path(source), self.repo)
        self.processes: list[subprocess.Popen] = []
        self._log_paths: dict[int, tuple[Path, Path]] = {}

    def env(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        """The test's environment with this machine's project first on the path, offline hubs and its own TMPDIR."""
        offline = {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
        return {**os.environ, **offline, "PYTHONPATH": str(self.repo), "TMPDIR": str(self.tmp), **(extra or {})}

    def command(self, args: list[str]) -> list[str]:
        # The host name is set inside the new namespace, then exec: the command is the process that Popen started.
        return [*unshare_prefix(), "sh", "-c", 'hostname "$0" && exec "$@"', self.name, *map(str, args)]

    def popen(self, args: list[str], env: dict[str, str] | None = None, **kwargs) -> subprocess.Popen:
        """Start ``args`` on this machine. Its stdout and stderr go to files under ``logs`` unless kwargs say otherwise
        (a pipe that nobody reads stalls a long run): ``output(process)`` reads them."""
        n = len(self.processes)
        out, err = self.logs / f"{n}.out", self.logs / f"{n}.err"
        with open(out, "w") as stdout, open(err, "w") as stderr:
            options = {"stdout": stdout, "stderr": stderr, "text": True, **kwargs}
            process = subprocess.Popen(self.command(args), cwd=self.repo, env=self.env(env), start_new_session=True, **options)
        self.processes.append(process)
        self._log_paths[process.pid] = (out, err)
        return process

    def run(self, args: list[str], env: dict[str, str] | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
        """Run ``args`` on this machine to the end; its output is captured (text)."""
        process = self.popen(args, env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            out, err = process.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.signal(signal.SIGKILL, process)
            out, err = process.communicate()
            pytest.fail(f"{self.name}: {args} ran over {timeout}s\n{out}\n{err}")
        return subprocess.CompletedProcess(process.args, process.returncode, out, err)

    def output(self, process: subprocess.Popen) -> tuple[str, str]:
        """The stdout and stderr that a ``popen`` process has written so far."""
        out, err = self._log_paths[process.pid]
        return out.read_text(), err.read_text()

    def signal(self, sig: int, process: subprocess.Popen | None = None) -> None:
        """Send ``sig`` to the process group of ``process``, or of every command started here."""
        for each in [process] if process else self.processes:
            with contextlib.suppress(ProcessLookupError):  # the group has already ended
                os.killpg(each.pid, sig)

    def kill(self) -> None:
        """The machine dies: SIGKILL to all its processes (a stopped one too)."""
        self.signal(signal.SIGKILL)
        for process in self.processes:
            process.wait()

    def freeze(self) -> None:
        """The machine hangs (SIGSTOP): its processes hold their connections and locks but do nothing."""
        self.signal(signal.SIGSTOP)

    def thaw(self) -> None:
        self.signal(signal.SIGCONT)

    def close(self) -> None:
        """Kill whatever still runs here; a test that fails must not leave stopped workers holding the database."""
        self.kill()
        for process in self.processes:
            for stream in (process.stdout, process.stderr):
                if stream:
                    stream.close()

    def __enter__(self) -> Machine:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


@pytest.fixture
def machines(tmp_path) -> Iterator:
    """``machines("a", "b")`` -> Machines under tmp_path, closed (their processes killed) when the test ends.
    A test module that uses it names it at its top: ``machines = cluster.machines``."""
    made: list[Machine] = []

    def make(*names: str) -> list[Machine]:
        made.extend(Machine(name, tmp_path) for name in names)
        return made[-len(names):]

    yield make
    for machine in made:
        machine.close()


# -- network partitions ---------------------------------------------------------------------------------------------


def _abort(sock: socket.socket) -> None:
    """Wake the threads blocked on ``sock`` and make its close send RST (SO_LINGER 0), not FIN: a connection reset."""
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        sock.shutdown(socket.SHUT_RD)  # on Linux this wakes a blocked recv (it returns b"") and sends nothing


def _aborted(sock: socket.socket) -> bool:
    try:
        return struct.unpack("ii", sock.getsockopt(socket.SOL_SOCKET, socket.SO_LINGER, 8)) == (1, 0)
    except OSError:
        return True


class TcpProxy:
    """A TCP proxy on 127.0.0.1 (a free port) in front of ``upstream`` (a URL with host and port), in threads of this
    process. ``url`` is ``upstream`` with the proxy's address; the clients that use it can be cut off:

    - ``cut("reset")``: open connections get RST, new ones are refused: the server crashed, or a firewall rejects.
    - ``cut("silent")``: nothing passes either way and nothing is closed; new connections are accepted by the kernel and
      then hear nothing: packets dropped. Clients hang unless they have timeouts of their own. Unlike a real partition the
      proxy's kernel still ACKs, so TCP keepalives and tcp_user_timeout do not notice; only application timeouts do.
      Bytes sent meanwhile are held and delivered on ``restore()``, as TCP retransmission would after the network heals.
    - ``restore()``: traffic flows again; after "reset", new connections are accepted again (open ones stay broken).

    One proxy per Machine partitions one machine from the database while the others keep it."""

    def __init__(self, upstream: str = POSTGRES):
        self._upstream_url = urlsplit(upstream)
        self.upstream = (self._upstream_url.hostname, self._upstream_url.port or 5432)
        self._lock = threading.Lock()
        self._flowing = threading.Event()  # cleared while silently cut: every pump and the acceptor wait on it
        self._flowing.set()
        self._sockets: set[socket.socket] = set()
        self._listener: socket.socket | None = None
        self.port = 0
        self.mode: str | None = None  # None while traffic flows, else the cut's mode
        self._listen()

    @property
    def url(self) -> str:
        netloc = self._upstream_url.netloc.rsplit("@", 1)
        address = f"127.0.0.1:{self.port}"
        return urlunsplit(self._upstream_url._replace(netloc=f"{netloc[0]}@{address}" if len(netloc) == 2 else address))

    def _listen(self) -> None:
        # The same port again after a reset cut, so that the clients' URL stays valid.
        self._listener = socket.create_server(("127.0.0.1", self.port))
        self.port = self._listener.getsockname()[1]
        threading.Thread(target=self._accept, args=(self._listener,), daemon=True, name=f"proxy-{self.port}-accept").start()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:  # the listener was shut by a reset cut or close()
                return
            self._flowing.wait()  # silent: the client's startup bytes wait in its socket, unanswered
            try:
                server = socket.create_connection(self.upstream, timeout=10)
                server.settimeout(None)
            except OSError:
                _abort(client)
                client.close()
                continue
            with self._lock:
                if self.mode == "reset":  # cut while this connection was being made: it is reset like the others
                    for sock in (client, server):
                        _abort(sock)
                        sock.close()
                    continue
                self._sockets |= {client, server}
            for src, dst in ((client, server), (server, client)):
                threading.Thread(target=self._pump, args=(src, dst), daemon=True, name=f"proxy-{self.port}-pump").start()

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        """One direction of one connection; a thread each, so that a client stopped with SIGSTOP stalls only its own."""
        try:
            while True:
                self._flowing.wait()
                data = src.recv(65536)
                if not data:
                    break
                self._flowing.wait()  # cut silently while this chunk was in hand: hold it until restore()
                if _aborted(dst):  # a reset cut came while it was held: it is lost, as the connection is
                    break
                dst.sendall(data)
        except OSError:
            pass
        finally:
            # One side ended or was aborted: end the other too. After _abort, close() sends RST.
            with self._lock:
                self._sockets -= {src, dst}
            for sock in (src, dst):
                if not _aborted(sock):
                    with contextlib.suppress(OSError):
                        sock.shutdown(socket.SHUT_RDWR)  # FIN to the peer; wakes the other direction's pump
                sock.close()

    def cut(self, mode: str = "reset") -> None:
        if mode not in ("reset", "silent"):
            raise ValueError(f"mode is 'reset' or 'silent', not {mode!r}")
        if mode == "silent":
            self.mode = mode
            self._flowing.clear()
            return
        self._close_listener()  # new connections: ECONNREFUSED at once
        with self._lock:
            self.mode = mode
            for sock in self._sockets:
                _abort(sock)
        self._flowing.set()  # a pump held by an earlier silent cut wakes to find its sockets reset

    def restore(self) -> None:
        with self._lock:
            self.mode = None
        if self._listener is None:
            self._listen()
        self._flowing.set()

    def _close_listener(self) -> None:
        if self._listener is not None:
            with contextlib.suppress(OSError):
                self._listener.shutdown(socket.SHUT_RDWR)  # wakes the blocked accept(); close() alone would not
            self._listener.close()
            self._listener = None

    def close(self) -> None:
        self.cut("reset")

    def __enter__(self) -> TcpProxy:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


# -- object storage ------------------------------------------------------------------------------------------------

# Run in a child process so that a test can kill the server (an S3 outage) and moto's imports stay out of the tests'.
_MOTO = """
import sys
from moto.server import ThreadedMotoServer
server = ThreadedMotoServer("127.0.0.1", 0, verbose=False)
server.start()
print(server.get_host_and_port()[1], flush=True)
sys.stdin.read()  # until the test closes stdin or kills this process
"""


@dataclass
class S3:
    endpoint_url: str
    bucket: str
    process: subprocess.Popen
    env: dict[str, str] = field(default_factory=dict)  # for the commands a Machine runs: boto3 reads these

    def client(self):
        import boto3

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint_url,
            region_name=self.env["AWS_DEFAULT_REGION"],
            aws_access_key_id=self.env["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=self.env["AWS_SECRET_ACCESS_KEY"],
        )

    def artifact_store(self):
        from optuna.artifacts import Boto3ArtifactStore

        return Boto3ArtifactStore(self.bucket, client=self.client())


@contextlib.contextmanager
def s3_server(bucket: str = "emotion-artifacts", timeout: float = 60) -> Iterator[S3]:
    """An S3-compatible server (moto) on a free 127.0.0.1 port with ``bucket`` created; stopped on exit. Skips where
    moto or boto3 is missing. Its state is in memory: each server starts empty."""
    for module in ("boto3", "moto.server", "flask"):  # flask: moto's server extra
        try:
            __import__(module)
        except ImportError as error:
            pytest.skip(f"no S3 server: {error} (pip install 'moto[server]' boto3, the 'test' extra)")
    # stderr to a file: moto logs every request there, and a pipe nobody reads would fill up and stall the server.
    log = tempfile.TemporaryFile("w+")
    process = subprocess.Popen(
        [sys.executable, "-c", _MOTO], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log, text=True, start_new_session=True
    )
    try:
        ready, _, _ = select.select([process.stdout], [], [], timeout)
        line = process.stdout.readline() if ready else ""
        if not line.strip().isdigit():
            log.seek(0)
            pytest.fail(f"the moto server did not start within {timeout}s: {line}{log.read()[-2000:]}")
        url = f"http://127.0.0.1:{int(line)}"
        keys = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}
        s3 = S3(url, bucket, process, {"AWS_ENDPOINT_URL": url, **keys})  # moto takes any keys
        s3.client().create_bucket(Bucket=bucket)
        yield s3
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.communicate()
        log.close()


# -- the shared database -------------------------------------------------------------------------------------------


@contextlib.contextmanager
def postgres_url_or_skip(url: str = POSTGRES) -> Iterator[tuple[str, str]]:
    """(url, prefix): the test PostgreSQL (EMOTION_TEST_POSTGRES) and a study-name prefix that no other test or run uses.
    On exit every study whose name starts with the prefix is deleted. Skips, saying why, where PostgreSQL does not answer."""
    try:
        import psycopg2

        psycopg2.connect(url, connect_timeout=3).close()
    except Exception as error:  # ImportError, or OperationalError: not running, refused, no database
        pytest.skip(f"PostgreSQL is not reachable at {url} ({' '.join(str(error).split())}); start it to run this test")
    prefix = f"cluster-{uuid.uuid4().hex[:10]}-"
    try:
        yield url, prefix
    finally:
        delete_studies(url, prefix)


def sqlalchemy_url(url: str) -> str:
    """``url`` for SQLAlchemy and Optuna: SQLAlchemy 2.1 reads a bare ``postgresql://`` as psycopg 3, and the test extra
    installs psycopg2. (psycopg2.connect takes the bare URL as it is.)"""
    import importlib.util

    if url.startswith("postgresql://") and importlib.util.find_spec("psycopg") is None:
        return "postgresql+psycopg2://" + url.removeprefix("postgresql://")
    return url


def delete_studies(url: str, prefix: str) -> list[str]:
    """Delete the studies named ``prefix...`` from the storage at ``url``; their names."""
    import optuna

    storage = optuna.storages.RDBStorage(sqlalchemy_url(url), engine_kwargs={"connect_args": {"connect_timeout": 5}})
    try:
        names = [name for name in optuna.get_all_study_names(storage) if name.startswith(prefix)]
        for name in names:
            optuna.delete_study(study_name=name, storage=storage)
        return names
    finally:
        storage.engine.dispose()
