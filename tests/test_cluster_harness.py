"""The helpers of tests/cluster.py do what they claim: Machines are apart, the proxy cuts, S3 stores, studies are cleaned up.

Timings are printed (pytest -s shows them): they say how long a client takes to notice each kind of cut.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import threading
import time

import optuna
import psutil
import pytest

from tests import cluster
from tests.cluster import Machine, TcpProxy, delete_studies, postgres_url_or_skip, s3_server, sqlalchemy_url

machines = cluster.machines  # the fixture, for this module's tests

# -- machines ------------------------------------------------------------------------------------------------------

WHO_AM_I = """
import json, os, socket, tempfile
import study
from study._trials.liveness import worker_identity
print(json.dumps({"host": socket.gethostname(), "cwd": os.getcwd(), "study": study.__file__,
                  "tmp": tempfile.gettempdir(), "worker_host": worker_identity().host}))
"""


def test_two_machines_have_their_own_host_name_folder_and_copy_of_the_project(machines):
    here = socket.gethostname()
    alpha, beta = machines("alpha", "beta")
    seen = {}
    for machine in (alpha, beta):
        done = machine.run([sys.executable, "-c", WHO_AM_I], timeout=60)
        assert done.returncode == 0, done.stderr
        seen[machine.name] = json.loads(done.stdout)
    assert seen["alpha"]["host"] == seen["alpha"]["worker_host"] == "alpha"
    assert seen["beta"]["host"] == seen["beta"]["worker_host"] == "beta"
    for machine in (alpha, beta):
        assert seen[machine.name]["cwd"] == str(machine.repo)
        assert seen[machine.name]["study"] == str(machine.repo / "study" / "__init__.py")  # its copy, not the installed one
        assert seen[machine.name]["tmp"] == str(machine.tmp)
    assert seen["alpha"]["cwd"] != seen["beta"]["cwd"]
    assert socket.gethostname() == here  # the test's own host name is untouched


def git(repo, *args):
    subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], cwd=repo, check=True, capture_output=True)


def test_a_machine_gets_uncommitted_and_untracked_files_but_not_ignored_or_deleted_ones(tmp_path):
    source = tmp_path / "source"
    (source / "pkg").mkdir(parents=True)
    for name in ("committed.py", "changed.py", "deleted.py", ".gitignore"):
        (source / name).write_text("*.log\n" if name == ".gitignore" else "old\n")
    git(source, "init", "-q")
    git(source, "add", ".")
    git(source, "commit", "-qm", "first")
    (source / "changed.py").write_text("new\n")
    (source / "pkg" / "untracked.py").write_text("untracked\n")
    (source / "run.log").write_text("ignored\n")
    (source / "deleted.py").unlink()

    repo = Machine("copy", tmp_path / "machines", source=source).repo
    assert sorted(str(p.relative_to(repo)) for p in repo.rglob("*") if p.is_file()) == [
        ".gitignore", "changed.py", "committed.py", "pkg/untracked.py"]
    assert (repo / "changed.py").read_text() == "new\n"


SPAWNS_A_CHILD = """
import subprocess, sys, time
child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
print(child.pid, flush=True)
time.sleep(120)
"""


def wait_for(condition, timeout=10.0, what="the condition"):
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"{what} did not hold within {timeout}s")
        time.sleep(0.02)


def states(pids):
    def state(pid):
        try:
            return psutil.Process(pid).status()
        except psutil.NoSuchProcess:
            return "gone"

    return {state(pid) for pid in pids}


def test_freeze_thaw_and_kill_reach_every_process_of_a_machine(machines):
    (machine,) = machines("gamma")
    parent = machine.popen([sys.executable, "-c", SPAWNS_A_CHILD])
    wait_for(lambda: machine.output(parent)[0].strip(), what="the child's pid on stdout")
    pids = [parent.pid, int(machine.output(parent)[0])]

    machine.freeze()
    wait_for(lambda: states(pids) == {psutil.STATUS_STOPPED}, what="both stopped")
    machine.thaw()
    wait_for(lambda: psutil.STATUS_STOPPED not in states(pids), what="both running again")
    machine.kill()
    assert parent.returncode == -9
    wait_for(lambda: states(pids) <= {"gone", psutil.STATUS_ZOMBIE}, what="both dead")  # the child: killed, not orphaned


# -- the proxy, on an echo server: the TCP behaviour, with no database --------------------------------------------


@pytest.fixture
def echo():
    """An echo server: (its URL, the bytes it has received)."""
    server = socket.create_server(("127.0.0.1", 0))
    received = []

    def echo(conn):
        with conn, contextlib.suppress(OSError):  # a reset cut resets this side too
            while data := conn.recv(65536):
                received.append(data)
                conn.sendall(data)

    def serve():
        with contextlib.suppress(OSError):
            while True:
                threading.Thread(target=echo, args=(server.accept()[0],), daemon=True).start()

    threading.Thread(target=serve, daemon=True).start()
    yield f"tcp://127.0.0.1:{server.getsockname()[1]}", received
    server.shutdown(socket.SHUT_RDWR)
    server.close()


def connect(proxy, timeout=5.0):
    return socket.create_connection(("127.0.0.1", proxy.port), timeout=timeout)


def test_the_proxy_url_is_the_upstream_url_with_the_proxy_address():
    with TcpProxy("postgresql://postgres:pw@127.0.0.1:5432/test?sslmode=disable") as proxy:
        assert proxy.url == f"postgresql://postgres:pw@127.0.0.1:{proxy.port}/test?sslmode=disable"
    with TcpProxy("http://127.0.0.1:9000") as proxy:
        assert proxy.url == f"http://127.0.0.1:{proxy.port}" and proxy.upstream == ("127.0.0.1", 9000)


def test_a_reset_cut_resets_open_connections_and_refuses_new_ones_until_restore(echo):
    with TcpProxy(echo[0]) as proxy:
        client = connect(proxy)
        client.sendall(b"ping")
        assert client.recv(4) == b"ping"
        proxy.cut("reset")
        with pytest.raises(ConnectionResetError):
            client.recv(4)
        with pytest.raises(ConnectionRefusedError):
            connect(proxy)
        proxy.restore()
        again = connect(proxy)
        again.sendall(b"pong")
        assert again.recv(4) == b"pong"


def test_a_silent_cut_answers_nothing_and_restore_delivers_what_was_held(echo):
    with TcpProxy(echo[0]) as proxy:
        client = connect(proxy, timeout=0.5)
        client.sendall(b"one")
        assert client.recv(3) == b"one"
        proxy.cut("silent")
        client.sendall(b"two")  # the proxy's kernel takes it, as a sender's TCP buffers it in a partition
        with pytest.raises(TimeoutError):
            client.recv(3)
        late = connect(proxy, timeout=0.5)  # the handshake completes (the kernel's backlog), then silence
        late.sendall(b"new")
        with pytest.raises(TimeoutError):
            late.recv(3)
        proxy.restore()
        client.settimeout(5)
        late.settimeout(5)
        assert client.recv(3) == b"two" and late.recv(3) == b"new"


def test_a_reset_during_a_silent_cut_loses_what_was_held(echo):
    url, received = echo
    with TcpProxy(url) as proxy:
        client = connect(proxy, timeout=0.5)
        proxy.cut("silent")
        client.sendall(b"held")
        with pytest.raises(TimeoutError):
            client.recv(4)
        proxy.cut("reset")
        client.settimeout(5)
        with pytest.raises(ConnectionResetError):
            client.recv(4)
        assert received == []  # the server never saw it


# -- the proxy in front of PostgreSQL ------------------------------------------------------------------------------


@pytest.fixture
def pg():
    with postgres_url_or_skip() as (url, prefix):
        yield url, prefix


def test_psycopg2_through_the_proxy_fails_at_once_on_a_reset_cut_and_connects_after_restore(pg):
    import psycopg2

    url, _ = pg
    with TcpProxy(url) as proxy:
        conn = psycopg2.connect(proxy.url, connect_timeout=3)
        with conn.cursor() as cursor:
            cursor.execute("SELECT 1")
            assert cursor.fetchone() == (1,)
        proxy.cut("reset")
        start = time.monotonic()
        with pytest.raises(psycopg2.OperationalError), conn.cursor() as cursor:
            cursor.execute("SELECT 1")
        query_failed = time.monotonic() - start
        start = time.monotonic()
        with pytest.raises(psycopg2.OperationalError, match="refused"):
            psycopg2.connect(proxy.url, connect_timeout=3)
        connect_failed = time.monotonic() - start
        print(f"reset cut: open connection's query failed after {query_failed:.3f}s, new connection after {connect_failed:.3f}s")
        assert query_failed < 1 and connect_failed < 1
        proxy.restore()
        with psycopg2.connect(proxy.url, connect_timeout=3) as again, again.cursor() as cursor:
            cursor.execute("SELECT 2")
            assert cursor.fetchone() == (2,)
        again.close()


def test_psycopg2_hangs_on_a_silent_cut_until_connect_timeout_and_its_query_finishes_after_restore(pg):
    import psycopg2

    url, _ = pg
    with TcpProxy(url) as proxy:
        conn = psycopg2.connect(proxy.url, connect_timeout=3)
        proxy.cut("silent")
        result = []
        query = threading.Thread(target=lambda: result.append(run_query(conn, "SELECT 3")), daemon=True)
        query.start()
        start = time.monotonic()
        with pytest.raises(psycopg2.OperationalError, match="timeout"):
            psycopg2.connect(proxy.url, connect_timeout=2)  # libpq's smallest timeout is 2 s
        connect_failed = time.monotonic() - start
        print(f"silent cut: new connection failed after {connect_failed:.2f}s (connect_timeout=2); the open query hangs")
        assert 1.9 < connect_failed < 10
        assert query.is_alive() and not result  # psycopg2 has no client-side query timeout: it waits
        proxy.restore()
        query.join(10)
        assert result == [(3,)]  # the held query reached the server and its answer came back
        conn.close()


def run_query(conn, sql):
    with conn.cursor() as cursor:
        cursor.execute(sql)
        return cursor.fetchone()


def test_sqlalchemy_with_pre_ping_fails_during_a_reset_cut_and_recovers_after_restore(pg):
    import sqlalchemy

    url, _ = pg
    with TcpProxy(url) as proxy:
        engine = sqlalchemy.create_engine(sqlalchemy_url(proxy.url), pool_pre_ping=True, connect_args={"connect_timeout": 3})
        try:
            with engine.connect() as c:
                assert c.execute(sqlalchemy.text("SELECT 1")).scalar() == 1
            proxy.cut("reset")
            start = time.monotonic()
            with pytest.raises(sqlalchemy.exc.OperationalError), engine.connect() as c:
                c.execute(sqlalchemy.text("SELECT 1"))
            print(f"reset cut: SQLAlchemy failed after {time.monotonic() - start:.3f}s")
            proxy.restore()
            with engine.connect() as c:  # the pre-ping drops the pooled connection that the cut broke
                assert c.execute(sqlalchemy.text("SELECT 1")).scalar() == 1
        finally:
            engine.dispose()


def test_an_optuna_storage_through_the_proxy_errs_on_a_cut_and_works_after_restore(pg):
    url, prefix = pg
    with TcpProxy(url) as proxy:
        engine_kwargs = {"pool_pre_ping": True, "connect_args": {"connect_timeout": 3}}
        storage = optuna.storages.RDBStorage(sqlalchemy_url(proxy.url), engine_kwargs=engine_kwargs)
        study = optuna.create_study(study_name=prefix + "through-proxy", storage=storage)
        study.enqueue_trial({"x": 1.0})
        proxy.cut("reset")
        start = time.monotonic()
        with pytest.raises(Exception) as error:  # Optuna wraps some errors in its own types: any error, quickly
            study.ask()
        print(f"reset cut: Optuna's RDBStorage raised {type(error.value).__name__} after {time.monotonic() - start:.3f}s")
        proxy.restore()
        assert study.ask().params == {} and len(study.trials) == 1  # the enqueued trial, asked now; nothing lost
        storage.engine.dispose()


def test_postgres_prefixes_are_unique_and_their_studies_are_deleted_on_exit():
    with postgres_url_or_skip() as (url, first), postgres_url_or_skip() as (_, second):
        assert first != second
        for name in (first + "a", first + "b", second + "a"):
            optuna.create_study(study_name=name, storage=sqlalchemy_url(url))
        storage = optuna.storages.RDBStorage(sqlalchemy_url(url))
        try:
            with postgres_url_or_skip():
                pass  # a prefix with no studies: deleting nothing is fine
            assert {n for n in optuna.get_all_study_names(storage) if n.startswith((first, second))} == {
                first + "a", first + "b", second + "a"}
        finally:
            storage.engine.dispose()
    storage = optuna.storages.RDBStorage(sqlalchemy_url(url))
    try:
        assert not [n for n in optuna.get_all_study_names(storage) if n.startswith((first, second))]
    finally:
        storage.engine.dispose()
    assert delete_studies(url, first) == []


# -- S3 ------------------------------------------------------------------------------------------------------------

DOWNLOAD = """
import sys
from optuna.artifacts import Boto3ArtifactStore, download_artifact
# No endpoint or keys here: boto3 finds them in the environment, as a Machine's command would.
download_artifact(artifact_store=Boto3ArtifactStore(sys.argv[1]), artifact_id=sys.argv[2], file_path=sys.argv[3])
"""


def test_optuna_artifacts_go_to_the_s3_server_and_come_back(tmp_path):
    start = time.monotonic()
    with s3_server() as s3:
        print(f"moto S3 server up, bucket made, in {time.monotonic() - start:.2f}s at {s3.endpoint_url}")
        source = tmp_path / "weights.bin"
        source.write_bytes(os.urandom(100_000))
        study = optuna.create_study()
        trial = study.ask()
        artifact_id = optuna.artifacts.upload_artifact(artifact_store=s3.artifact_store(), file_path=str(source), study_or_trial=trial)
        assert [o["Key"] for o in s3.client().list_objects_v2(Bucket=s3.bucket)["Contents"]] == [artifact_id]

        back = tmp_path / "back.bin"
        optuna.artifacts.download_artifact(artifact_store=s3.artifact_store(), artifact_id=artifact_id, file_path=str(back))
        assert back.read_bytes() == source.read_bytes()

        other = tmp_path / "other.bin"
        env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")} | s3.env
        done = subprocess.run([sys.executable, "-c", DOWNLOAD, s3.bucket, artifact_id, str(other)], env=env, capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
        assert other.read_bytes() == source.read_bytes()
    assert s3.process.poll() is not None  # stopped with the block
