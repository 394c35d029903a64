"""A real single-node Slurm for tests (not a test itself; tests/test_slurm.py uses it).

``slurm_cluster()`` starts munge (unless it runs already), ``slurmctld`` and ``slurmd`` from a slurm.conf of its own in a
temp folder (this host as the controller and as the one node, its own ports, state, spool, pid and log files), waits
until ``sinfo`` shows the node idle and yields a :class:`Slurm` whose helpers submit jobs and look at their tasks. On exit
it cancels the jobs it submitted and stops the daemons it started, by their pid files.

It installs nothing. It skips the test, with the reason, where Slurm cannot run here: not Linux, not root (slurmd runs
jobs as their users), a binary missing (Debian: ``apt-get install slurm-wlm munge``), or a daemon that does not come up
(the reason then ends with the tail of its log).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

# Client commands live in /usr/bin, daemons in /usr/sbin, which a non-login shell's PATH may lack.
SEARCH_PATH = os.pathsep.join([os.environ.get("PATH", ""), "/usr/local/sbin", "/usr/sbin", "/sbin"])
DAEMONS = ("slurmctld", "slurmd", "munged")
CLIENTS = ("sbatch", "squeue", "scontrol", "scancel", "sinfo", "munge", "unmunge")
# States in which a job's task will not run again (squeue %T, sacct State's first word).
FINAL_STATES = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "PREEMPTED", "OUT_OF_MEMORY", "BOOT_FAIL",
                "DEADLINE", "SPECIAL_EXIT", "REVOKED"}
MUNGE_RUN = Path("/run/munge")
MUNGE_KEY = Path("/etc/munge/munge.key")
MUNGE_LOG = Path("/var/log/munge/munged.log")
MUNGE_SEED = Path("/var/lib/munge")


def _tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError as error:
        return f"({path}: {error})"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("", 0))
        return sock.getsockname()[1]


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie (an exited daemon that nobody has reaped) counts as gone.
    with contextlib.suppress(OSError):
        if Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z":
            return False
    return True


def stop_by_pid_file(pid_file: Path, timeout: float = 20) -> None:
    """SIGTERM to the daemon named by ``pid_file``, SIGKILL if it is still there after ``timeout`` seconds."""
    try:
        pid = int(pid_file.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while _pid_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.2)
    if _pid_alive(pid):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def write_conf(folder: Path, host: str, cpus: int = 2) -> Path:
    """slurm.conf for one node, ``host``, that is also the controller; everything it writes lies under ``folder``."""
    for sub in ("state", "spool", "log"):
        (folder / sub).mkdir(parents=True, exist_ok=True)
    conf = folder / "slurm.conf"
    conf.write_text(f"""\
# A one-node test cluster: this host is the controller and the only compute node.
ClusterName=emotiontest
SlurmctldHost={host}
SlurmUser=root
SlurmctldPort={_free_port()}
SlurmdPort={_free_port()}
AuthType=auth/munge
# No cgroups: processes are tracked through /proc, tasks are not bound to CPUs.
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
# CPUs are what jobs consume; memory is not (the node's RealMemory is left at its default of 1 MB).
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
# A requeued job may start again cred_expire (+1) seconds later (default 120): 10 keeps the tests short.
AuthInfo=cred_expire=10
# Schedule every second or two: a requeued task is started by a scheduler pass, not by an event.
SchedulerType=sched/backfill
SchedulerParameters=bf_interval=1,sched_interval=2
# Finished jobs stay visible to squeue/scontrol for 10 minutes (there is no accounting database for sacct).
MinJobAge=600
KillWait=10
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
MpiDefault=none
ReturnToService=2
# The node may have other CPU counts than declared here.
SlurmdParameters=config_overrides
StateSaveLocation={folder / 'state'}
SlurmdSpoolDir={folder / 'spool'}
SlurmctldPidFile={folder / 'slurmctld.pid'}
SlurmdPidFile={folder / 'slurmd.pid'}
SlurmctldLogFile={folder / 'log' / 'slurmctld.log'}
SlurmdLogFile={folder / 'log' / 'slurmd.log'}
NodeName={host} CPUs={cpus} State=UNKNOWN
# Two jobs per CPU: the array tasks of a test run side by side.
PartitionName=test Nodes={host} Default=YES MaxTime=INFINITE State=UP OverSubscribe=FORCE:2
""")
    return conf


class Slurm:
    """The running test cluster: its slurm.conf, the environment its commands need (SLURM_CONF) and helpers."""

    def __init__(self, folder: Path, conf: Path, binaries: dict[str, str]):
        self.folder, self.conf, self.bin = folder, conf, binaries
        self.env = {**os.environ, "SLURM_CONF": str(conf)}
        self.jobs: list[str] = []

    def command(self, name: str, *args: str, timeout: float = 30, check: bool = True) -> subprocess.CompletedProcess:
        """Run a Slurm client command (sbatch, squeue, scontrol, scancel, sinfo) against this cluster."""
        try:
            done = subprocess.run([self.bin[name], *args], check=False, env=self.env, capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            pytest.fail(f"{name} {' '.join(args)} did not answer within {timeout}s")
        if check and done.returncode != 0:
            pytest.fail(f"{name} {' '.join(args)} exited {done.returncode}: {done.stderr.strip()}")
        return done

    def submit(self, script: str | Path, env: dict[str, str] | None = None, array: str | None = "0-1", cwd: str | Path | None = None,
               options: list[str] = ()) -> str:
        """sbatch ``script`` with ``env`` (the job's environment: sbatch passes its own on) from ``cwd``; the job id.
        ``options`` go before the script and override its #SBATCH lines."""
        args = ["--parsable", *([f"--array={array}"] if array is not None else []), *options, str(script)]
        try:
            done = subprocess.run([self.bin["sbatch"], *args], check=False, env={**(env or os.environ), "SLURM_CONF": str(self.conf)},
                                  cwd=cwd, capture_output=True, text=True, timeout=30)
        except subprocess.TimeoutExpired:
            pytest.fail("sbatch did not answer within 30s")
        if done.returncode != 0:
            pytest.fail(f"sbatch {' '.join(args)} exited {done.returncode}: {done.stderr.strip()}")
        job = done.stdout.strip().split(";")[0]
        self.jobs.append(job)
        return job

    def tasks(self, job: str) -> dict[str, str]:
        """{"<job>_<task>": state} for every array task of ``job`` (or {"<job>": state} for a plain job), finished ones too."""
        done = self.command("squeue", "-h", "-r", "--states=all", "-j", job, "-o", "%i %T", check=False)
        states = dict(line.split(maxsplit=1) for line in done.stdout.splitlines() if line.strip())
        sacct = shutil.which("sacct", path=SEARCH_PATH)
        if not states and sacct:  # gone from the controller: accounting may know it
            accounted = subprocess.run([sacct, "-X", "-n", "-P", "-j", job, "-o", "JobID,State"], check=False, env=self.env,
                                       capture_output=True, text=True, timeout=30)
            for line in accounted.stdout.splitlines():
                if "|" in line:
                    task, state = line.split("|", 1)
                    states[task] = state.split()[0]
        return states

    def info(self, job_task: str) -> dict[str, str]:
        """scontrol's fields of one job or array task ("123_0"): JobState, Restarts, ExitCode..."""
        line = self.command("scontrol", "show", "job", "-o", job_task).stdout
        return dict(field.split("=", 1) for field in line.split() if "=" in field)

    def wait_until_done(self, job: str, timeout: float, logs: str | Path | None = None) -> dict[str, str]:
        """Until every task of ``job`` has ended for good (a requeued one must run again first); their states. Fails
        after ``timeout`` seconds with the states and the tails of the logs under ``logs``, after cancelling the job."""
        deadline = time.monotonic() + timeout
        while True:
            states = self.tasks(job)
            if states and all(state in FINAL_STATES for state in states.values()):
                return states
            if time.monotonic() > deadline:
                self.cancel(job)
                tails = "".join(f"\n--- {p}\n{_tail(p, 30)}" for p in sorted(Path(logs).glob("*.out"))) if logs else ""
                pytest.fail(f"job {job} not done after {timeout}s: {states}{tails}")
            time.sleep(1)

    def signal(self, job_task: str, name: str = "TERM") -> None:
        """SIGname to the batch shell of ``job_task`` alone, as --signal=B:name does before a time limit."""
        self.command("scancel", f"--signal={name}", "--batch", job_task)

    def requeue(self, job_task: str) -> None:
        self.command("scontrol", "requeue", job_task)

    def cancel(self, job: str) -> None:
        self.command("scancel", job, check=False)

    def node_state(self) -> str:
        return self.command("sinfo", "-h", "-N", "-o", "%T", check=False, timeout=10).stdout.strip()


def _missing_or_skip() -> dict[str, str]:
    if not sys.platform.startswith("linux"):
        pytest.skip("Slurm's daemons run on Linux only")
    if os.geteuid() != 0:
        pytest.skip("slurmd must run as root to start jobs; run the Slurm tests as root")
    found = {name: shutil.which(name, path=SEARCH_PATH) for name in (*DAEMONS, *CLIENTS)}
    missing = sorted(name for name, path in found.items() if path is None)
    if missing:
        pytest.skip(f"Slurm or munge is not installed (no {', '.join(missing)}): apt-get install slurm-wlm munge")
    return found


def _munge_answers(binaries: dict[str, str]) -> bool:
    try:
        encoded = subprocess.run([binaries["munge"], "-n"], check=False, capture_output=True, timeout=10)
        decoded = subprocess.run([binaries["unmunge"]], input=encoded.stdout, check=False, capture_output=True, timeout=10)
    except subprocess.TimeoutExpired:
        return False
    return encoded.returncode == 0 and decoded.returncode == 0


def _start_munge(binaries: dict[str, str]) -> Path | None:
    """munged as user munge, unless one answers already; the pid file of the one started here, else None."""
    if _munge_answers(binaries):
        return None
    import pwd

    try:
        user = pwd.getpwnam("munge")
    except KeyError:
        pytest.skip("no user 'munge' to run munged as (the munge package makes it)")
    if not MUNGE_KEY.exists():  # the package makes the key on install; a minimal image may lack it
        maker = shutil.which("mungekey", path=SEARCH_PATH)
        made = None
        if maker:
            made = subprocess.run([maker, "--create", "--keyfile", str(MUNGE_KEY)], check=False, capture_output=True, text=True)
        if made is None or made.returncode != 0:
            pytest.skip(f"no munge key at {MUNGE_KEY} and none could be made ({made.stderr.strip() if made else 'no mungekey'})")
        os.chown(MUNGE_KEY, user.pw_uid, user.pw_gid)
        MUNGE_KEY.chmod(0o400)
    # Its socket, log and seed folders, owned by munge as the package makes them (a container's /run starts empty).
    for where in (MUNGE_RUN, MUNGE_LOG.parent, MUNGE_SEED):
        where.mkdir(parents=True, exist_ok=True)
        os.chown(where, user.pw_uid, user.pw_gid)
        where.chmod(0o755 if where == MUNGE_RUN else 0o700)
    log, pid_file = MUNGE_LOG, MUNGE_RUN / "munged.pid"
    started = subprocess.run([binaries["munged"]], user=user.pw_uid, group=user.pw_gid, extra_groups=[], check=False, capture_output=True,
                             text=True, timeout=30, cwd="/")
    deadline = time.monotonic() + 15
    while not _munge_answers(binaries):
        if started.returncode != 0 or time.monotonic() > deadline:
            stop_by_pid_file(pid_file)
            pytest.skip(f"munged did not start (exit {started.returncode}: {started.stderr.strip()})\n{_tail(log)}")
        time.sleep(0.2)
    return pid_file


@contextlib.contextmanager
def slurm_cluster(timeout: float = 60) -> Iterator[Slurm]:
    """A one-node Slurm cluster on this host for the duration of the block (see the module's docstring)."""
    binaries = _missing_or_skip()
    folder = Path(tempfile.mkdtemp(prefix="slurm-test-"))
    host = socket.gethostname().split(".")[0]
    conf = write_conf(folder, host)
    slurm = Slurm(folder, conf, binaries)
    logs = {"slurmctld": folder / "log" / "slurmctld.log", "slurmd": folder / "log" / "slurmd.log"}
    pid_files = [folder / "slurmd.pid", folder / "slurmctld.pid"]  # stopped in this order
    munge_pid = None
    try:
        munge_pid = _start_munge(binaries)
        for daemon in ("slurmctld", "slurmd"):
            # Each forks into the background and returns; a bad conf or a taken port makes it exit non-zero at once.
            started = subprocess.run([binaries[daemon], "-f", str(conf)], check=False, env=slurm.env, capture_output=True, text=True,
                                     timeout=60)
            if started.returncode != 0:
                pytest.skip(f"{daemon} did not start (exit {started.returncode}: {started.stderr.strip()})\n{_tail(logs[daemon])}")
        deadline = time.monotonic() + timeout
        while not slurm.node_state().startswith("idle"):
            if time.monotonic() > deadline:
                pytest.skip(f"the Slurm node is not idle after {timeout}s (sinfo: {slurm.node_state() or 'no answer'})\n"
                            f"--- slurmctld\n{_tail(logs['slurmctld'])}\n--- slurmd\n{_tail(logs['slurmd'])}")
            time.sleep(0.5)
        yield slurm
    finally:
        for job in slurm.jobs:
            with contextlib.suppress(Exception):
                slurm.cancel(job)
        # Give cancelled tasks their KillWait to end before slurmd goes, so that no job step outlives the cluster.
        deadline = time.monotonic() + 20
        while slurm.jobs and time.monotonic() < deadline:
            try:
                if all(all(s in FINAL_STATES for s in slurm.tasks(job).values()) for job in slurm.jobs):
                    break
            except BaseException:  # noqa: BLE001 - a failing squeue at exit must not hide the test's own error
                break
            time.sleep(0.5)
        for pid_file in pid_files:
            stop_by_pid_file(pid_file)
        if munge_pid is not None:
            stop_by_pid_file(munge_pid)
        shutil.rmtree(folder, ignore_errors=True)
