"""A real one-node SLURM cluster for the tests: Debian's munge, slurmctld and slurmd, installed when missing and
started from a generated configuration in a temporary directory, or the machine's own cluster when one is running.

Everything this module starts lives in its own directory with its own munge key and socket and free ports, so it
touches no system service and two test processes can each run one; clients reach it through SLURM_CONF and
wrappers first on PATH (Cluster.client_env). `one_node_cluster()` stops what it started: it cancels the jobs left
on the cluster, stops slurmd, slurmctld and munged, in that order, and kills any process still running with the
cluster's configuration.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import shutil
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

PACKAGES = ("slurmctld", "slurmd", "slurm-client", "munge")
PROGRAMS = ("sbatch", "squeue", "sinfo", "scontrol", "scancel", "slurmctld", "slurmd", "munged")
# the client programs of Debian's slurm-client
CLIENTS = ("sacct", "sacctmgr", "salloc", "sattach", "sbatch", "sbcast", "scancel", "scontrol", "sdiag", "sinfo",
           "sprio", "squeue", "sreport", "srun", "sshare", "sstat", "strigger")
# daemons live in sbin directories, which a non-login PATH may lack
SEARCH_PATH = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/sbin", "/usr/local/sbin"])

INSTALL_TIMEOUT_S = 900
START_TIMEOUT_S = 90
STOP_TIMEOUT_S = 60
CLIENT_TIMEOUT_S = 30


class ClusterUnavailable(Exception):
    """No SLURM can be had on this machine (packages missing and not installable); the message says why."""


@dataclass
class Cluster:
    """A running cluster: how to reach it, and how large its node is."""

    env: dict[str, str]  # variables that point SLURM clients at it (SLURM_CONF, PATH), empty for the system's
    cpus_per_node: int
    memory_mb_per_node: int
    root: Path | None = None  # configuration, state and daemon logs of a cluster started here
    daemons: list[subprocess.Popen] = field(default_factory=list)  # what this module started, in start order

    def client_env(self) -> dict[str, str]:
        """This process's environment, pointed at the cluster: for SLURM clients and for Snakemake."""
        return {**os.environ, "PATH": SEARCH_PATH, **self.env}

    def run(self, *args: str, check: bool = True, timeout: float = CLIENT_TIMEOUT_S) -> subprocess.CompletedProcess:
        """A SLURM client command (sinfo, squeue, scancel, ...) against this cluster."""
        result = subprocess.run(list(args), capture_output=True, text=True, timeout=timeout, env=self.client_env())
        if check and result.returncode != 0:
            raise RuntimeError(f"{' '.join(args)} failed ({result.returncode}): {result.stderr.strip()}")
        return result

    def job_ids(self) -> list[str]:
        return self.run("squeue", "--noheader", "--format=%i").stdout.split()

    def log_tail(self, chars: int = 3000) -> str:
        if self.root is None:
            return ""
        return "\n".join(f"--- {log.name}\n{log.read_text(errors='replace')[-chars:]}"
                         for log in sorted([*(self.root / "log").glob("*"), *(self.root / "munge").glob("*.log")]))


def which(program: str) -> str | None:
    return shutil.which(program, path=SEARCH_PATH)


def missing_programs() -> list[str]:
    return [program for program in PROGRAMS if which(program) is None]


@contextlib.contextmanager
def _services_left_stopped():
    """apt would start the munge service it installs: a policy-rc.d that denies every start prevents that (the
    standard way in containers), unless the machine has its own policy already."""
    policy = Path("/usr/sbin/policy-rc.d")
    if policy.exists():
        yield
        return
    policy.write_text("#!/bin/sh\nexit 101\n")
    policy.chmod(0o755)
    try:
        yield
    finally:
        policy.unlink(missing_ok=True)


def install_packages() -> None:
    """Debian's SLURM and munge packages, when a program is missing. Raises ClusterUnavailable where that is
    impossible (not root, no apt-get, or apt-get failing)."""
    missing = missing_programs()
    if not missing:
        return
    why = f"SLURM programs missing ({', '.join(missing)})"
    if os.geteuid() != 0:
        raise ClusterUnavailable(f"{why}, and installing {' '.join(PACKAGES)} needs root")
    if which("apt-get") is None:
        raise ClusterUnavailable(f"{why}, and there is no apt-get to install {' '.join(PACKAGES)}")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive", "PATH": SEARCH_PATH}
    with _services_left_stopped():
        for command in (["apt-get", "update"],
                        ["apt-get", "install", "-y", "--no-install-recommends", *PACKAGES]):
            try:
                result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=INSTALL_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                raise ClusterUnavailable(f"{why}; {' '.join(command)} took over {INSTALL_TIMEOUT_S} s") from None
            if result.returncode != 0:
                raise ClusterUnavailable(f"{why}; {' '.join(command)} failed: {result.stderr.strip()[-1500:]}")
    still_missing = missing_programs()
    if still_missing:
        raise ClusterUnavailable(f"installed {' '.join(PACKAGES)}, yet {', '.join(still_missing)} not found")


def node_size(env: dict[str, str] | None = None) -> tuple[int, int]:
    """(CPUs, memory in MB) of the largest node of the cluster the environment points at."""
    out = subprocess.run(["sinfo", "--noheader", "--Node", "--format=%c %m"], capture_output=True, text=True,
                         check=True, timeout=CLIENT_TIMEOUT_S, env=env).stdout
    sizes = [tuple(int(value.rstrip("+")) for value in line.split()) for line in out.splitlines() if line.strip()]
    if not sizes:
        raise RuntimeError("sinfo lists no node")
    return max(sizes)


def system_cluster() -> Cluster | None:
    """The machine's own cluster, when its controller answers (then nothing is started or stopped here)."""
    if which("scontrol") is None:
        return None
    env = {**os.environ, "PATH": SEARCH_PATH}
    try:
        ping = subprocess.run(["scontrol", "ping"], capture_output=True, text=True, timeout=CLIENT_TIMEOUT_S, env=env)
        if ping.returncode != 0 or " is UP" not in ping.stdout:
            return None
        cpus, memory = node_size(env)
    except (subprocess.SubprocessError, RuntimeError, ValueError):
        return None
    return Cluster(env={}, cpus_per_node=cpus, memory_mb_per_node=memory)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _hardware_line() -> dict[str, str]:
    """slurmd's own view of this machine (`slurmd -C`): NodeName, CPUs, sockets, cores, threads, RealMemory."""
    out = subprocess.run([which("slurmd"), "-C"], capture_output=True, text=True, check=True,
                         timeout=CLIENT_TIMEOUT_S).stdout
    first = next(line for line in out.splitlines() if line.startswith("NodeName="))
    return dict(item.split("=", 1) for item in first.split())


def write_config(root: Path, hardware: dict[str, str]) -> Path:
    """slurm.conf of a one-node cluster on loopback: this machine is controller and node. No job accounting (so
    `sacct` has nothing to ask: status comes from squeue) and no cgroups (proctrack/linuxproc, task/none), which
    a container lacks."""
    node = hardware["NodeName"]
    lines = [
        "ClusterName=hcmitest",
        f"SlurmctldHost={node}(127.0.0.1)",
        f"SlurmctldPort={_free_port()}",
        f"SlurmdPort={_free_port()}",
        "SlurmUser=root",
        "SlurmdUser=root",
        "AuthType=auth/munge",
        "CredType=cred/munge",
        f"AuthInfo=socket={root / 'munge/munge.socket'}",
        f"StateSaveLocation={root / 'state'}",
        f"SlurmdSpoolDir={root / 'spool'}",
        f"SlurmctldPidFile={root / 'slurmctld.pid'}",
        f"SlurmdPidFile={root / 'slurmd.pid'}",
        f"SlurmctldLogFile={root / 'log/slurmctld.log'}",
        f"SlurmdLogFile={root / 'log/slurmd.log'}",
        "ProctrackType=proctrack/linuxproc",
        "TaskPlugin=task/none",
        "AccountingStorageType=accounting_storage/none",
        "JobAcctGatherType=jobacct_gather/none",
        "JobCompType=jobcomp/none",
        "SchedulerType=sched/backfill",
        "SelectType=select/cons_tres",
        "SelectTypeParameters=CR_Core",
        "MpiDefault=none",
        "ReturnToService=2",
        # a cancelled job's processes get SIGKILL 2 s after SIGTERM (default 30 s)
        "KillWait=2",
        # finished jobs stay visible to squeue for 5 minutes, which status polling by squeue relies on
        "MinJobAge=300",
        "SlurmctldTimeout=30",
        "SlurmdTimeout=30",
        "NodeName={} NodeAddr=127.0.0.1 {} State=UNKNOWN".format(
            node, " ".join(f"{key}={hardware[key]}" for key in
                           ("CPUs", "Boards", "SocketsPerBoard", "CoresPerSocket", "ThreadsPerCore", "RealMemory")
                           if key in hardware)),
        "PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP",
    ]
    conf = root / "slurm.conf"
    conf.write_text("\n".join(lines) + "\n")
    return conf


def _start_munged(root: Path, log) -> subprocess.Popen:
    """munged refuses to run as root and wants its key and folders owned by its user."""
    import pwd

    munge = pwd.getpwnam("munge")
    folder = root / "munge"
    folder.mkdir(mode=0o755)  # clients must reach the socket in it
    key = folder / "munge.key"
    key.write_bytes(os.urandom(1024))
    key.chmod(0o400)
    for path in (folder, key):
        os.chown(path, munge.pw_uid, munge.pw_gid)
    return subprocess.Popen(
        [which("munged"), "--foreground", f"--socket={folder / 'munge.socket'}", f"--key-file={key}",
         f"--pid-file={folder / 'munged.pid'}", f"--seed-file={folder / 'munged.seed'}",
         f"--log-file={folder / 'munged.log'}"],
        user=munge.pw_uid, group=munge.pw_gid, extra_groups=[], stdout=log, stderr=subprocess.STDOUT,
        start_new_session=True, cwd=folder)


def _wait_for(what: str, ready, cluster: Cluster, processes: list[subprocess.Popen]) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if ready():
            return
        dead = [p.args[0] for p in processes if p.poll() is not None]
        if dead:
            raise RuntimeError(f"{', '.join(map(str, dead))} exited while waiting for {what}\n{cluster.log_tail()}")
        time.sleep(0.3)
    raise RuntimeError(f"no {what} after {START_TIMEOUT_S} s\n{cluster.log_tail()}")


def _node_state(cluster: Cluster) -> str:
    result = cluster.run("sinfo", "--noheader", "--Node", "--format=%T", check=False)
    return result.stdout.strip() if result.returncode == 0 else ""


def write_client_wrappers(root: Path, conf: Path) -> Path:
    """A folder of wrappers that run each SLURM client with SLURM_CONF set to `conf`, to put first on PATH.

    SLURM_CONF alone would not do: inside a job, Snakemake's jobstep executor drops every SLURM_* variable before
    it calls srun, which then looks for /etc/slurm/slurm.conf (where a real cluster keeps its configuration)."""
    folder = root / "bin"
    folder.mkdir()
    for client in CLIENTS:
        program = which(client)
        if program is None:
            continue
        wrapper = folder / client
        wrapper.write_text(f'#!/bin/sh\nSLURM_CONF={shlex.quote(str(conf))} exec {shlex.quote(program)} "$@"\n')
        wrapper.chmod(0o755)
    return folder


def start_cluster(root: Path) -> Cluster:
    """munged, slurmctld and slurmd in the foreground (so they stop with their process ids), from a configuration
    written under `root`; returns once the node is idle."""
    for sub in ("log", "state", "spool"):
        (root / sub).mkdir(parents=True)
    hardware = _hardware_line()
    conf = write_config(root, hardware)
    clients = write_client_wrappers(root, conf)
    cluster = Cluster(env={"SLURM_CONF": str(conf), "PATH": os.pathsep.join([str(clients), SEARCH_PATH])},
                      cpus_per_node=int(hardware["CPUs"]),
                      memory_mb_per_node=int(hardware.get("RealMemory", 1)), root=root)
    env = cluster.client_env()
    log = open(root / "log/daemons.out", "ab")  # noqa: SIM115  (open as long as the daemons run)
    try:
        cluster.daemons.append(_start_munged(root, log))
        socket_path = root / "munge/munge.socket"
        _wait_for("munge socket", socket_path.exists, cluster, cluster.daemons)
        for daemon in ("slurmctld", "slurmd"):
            cluster.daemons.append(subprocess.Popen([which(daemon), "-D", "-f", str(conf)], env=env, stdout=log,
                                                    stderr=subprocess.STDOUT, start_new_session=True, cwd=root))
            if daemon == "slurmctld":
                _wait_for("answer from slurmctld",
                          lambda: " is UP" in cluster.run("scontrol", "ping", check=False).stdout,
                          cluster, cluster.daemons)
        _wait_for("idle node", lambda: _node_state(cluster) == "idle", cluster, cluster.daemons)
    except BaseException:
        stop_cluster(cluster)
        raise
    finally:
        log.close()
    return cluster


def cancel_all_jobs(cluster: Cluster) -> None:
    """Cancel every job on the cluster and wait until none is left running."""
    deadline = time.monotonic() + STOP_TIMEOUT_S
    while time.monotonic() < deadline:
        active = cluster.run("squeue", "--noheader", "--format=%i", "--states=PENDING,RUNNING,COMPLETING,SUSPENDED",
                             check=False)
        if active.returncode == 0 and not active.stdout.split():
            return
        if active.returncode == 0:
            cluster.run("scancel", *active.stdout.split(), check=False)
        time.sleep(0.5)
    raise RuntimeError(f"jobs still on the cluster after {STOP_TIMEOUT_S} s of scancel\n{cluster.log_tail()}")


def _kill_leftovers(cluster: Cluster) -> None:
    """Whatever still runs with this cluster's configuration (a job's processes, which carry SLURM_CONF, should
    SLURM have failed to end them) once the daemons are gone."""
    import psutil

    conf = cluster.env.get("SLURM_CONF")
    for process in psutil.process_iter():
        try:
            if process.pid != os.getpid() and process.environ().get("SLURM_CONF") == conf:
                process.kill()
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue


def stop_cluster(cluster: Cluster) -> None:
    """Cancel the jobs left on a cluster started here, then stop its daemons (the last started first)."""
    if not cluster.daemons:
        return
    try:
        if all(daemon.poll() is None for daemon in cluster.daemons):
            cancel_all_jobs(cluster)
    finally:
        for daemon in reversed(cluster.daemons):
            if daemon.poll() is None:
                daemon.terminate()
            try:
                daemon.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                daemon.kill()
                daemon.wait(timeout=STOP_TIMEOUT_S)
        cluster.daemons.clear()
        _kill_leftovers(cluster)


@contextlib.contextmanager
def one_node_cluster():
    """The machine's running cluster if there is one; otherwise the packages (installed if missing) started as a
    one-node cluster in a temporary directory, stopped and removed on exit. Raises ClusterUnavailable when SLURM
    can be neither installed nor started here (no apt-get, not root)."""
    existing = system_cluster()
    if existing is not None:
        yield existing
        return
    install_packages()
    if os.geteuid() != 0:
        raise ClusterUnavailable("no SLURM cluster answers, and starting one (munged as the munge user, slurmd as "
                                 "root) needs root")
    # not pytest's tmp_path: munged runs as the munge user and must reach its folder, and pytest's is private
    root = Path(tempfile.mkdtemp(prefix="hcmi-slurm-"))
    root.chmod(0o755)
    try:
        cluster = start_cluster(root)
        try:
            yield cluster
        finally:
            stop_cluster(cluster)
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":  # `python tests/slurm_cluster.py install`: what .ci/run does before the tests
    import sys

    if sys.argv[1:] != ["install"]:
        sys.exit("usage: python tests/slurm_cluster.py install")
    try:
        install_packages()
    except ClusterUnavailable as reason:
        sys.exit(f"cannot install SLURM: {reason}")
