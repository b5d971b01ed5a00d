"""A real single-node SLURM on 127.0.0.1 for tests: Debian's slurm-wlm and munge, started and stopped by PID.

Accounting is off, so job status comes from squeue; MinJobAge keeps finished jobs
visible to squeue for ten minutes, long enough for Snakemake's status checks and
for a test to count what was submitted. Everything the daemons write (key, state,
logs, sockets) lives under one folder. The one thing outside it is a link at
/etc/slurm/slurm.conf, made only where none exists and removed at stop: the SLURM
jobstep plugin clears SLURM_* variables (SLURM_CONF too) before its nested srun,
which then finds its configuration only at the default path.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

PACKAGES = ["slurm-wlm", "munge"]
DEFAULT_CONF = Path("/etc/slurm/slurm.conf")
DAEMONS = ["munged", "slurmctld", "slurmd"]


class SlurmUnavailable(RuntimeError):
    """This machine cannot run a SLURM for the test; the message says why."""


def install_slurm() -> None:
    """Install slurm-wlm and munge from Debian's packages unless their daemons are already there."""
    if all(_daemon(name) for name in DAEMONS):
        return
    if os.geteuid() != 0:
        raise SlurmUnavailable(f"installing {' '.join(PACKAGES)} needs root; run the slurm tests as root")
    if shutil.which("apt-get") is None:
        raise SlurmUnavailable(f"no apt-get: install {' '.join(PACKAGES)} by hand to run the slurm tests")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for command in (["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", *PACKAGES]):
        result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=900)
        if result.returncode != 0:
            raise SlurmUnavailable(f"`{' '.join(command)}` failed:\n{result.stderr[-2000:]}")
    missing = [name for name in DAEMONS if not _daemon(name)]
    if missing:
        raise SlurmUnavailable(f"{' '.join(PACKAGES)} installed, yet {missing} are not on the PATH")


def _daemon(name: str) -> str | None:
    return shutil.which(name) or shutil.which(name, path="/usr/sbin:/sbin")


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@dataclass
class SlurmCluster:
    """The running daemons; `env` points SLURM's commands (sbatch, squeue, ...) at this cluster."""

    root: Path
    env: dict
    processes: list = field(default_factory=list)
    linked_conf: Path | None = None

    def command(self, *args: str) -> str:
        return subprocess.run(list(args), capture_output=True, text=True, env=self.env, check=True,
                              timeout=60).stdout

    def jobs(self) -> list[dict]:
        """Every job squeue still knows (MinJobAge keeps finished ones), one dict of strings each."""
        fields = {"id": "%i", "name": "%j", "state": "%T", "cpus": "%C", "memory": "%m", "time_limit": "%l",
                  "partition": "%P", "comment": "%k"}
        out = self.command("squeue", "--noheader", "--states=all", "--format=" + "|".join(fields.values()))
        return [dict(zip(fields, line.split("|"))) for line in out.splitlines()]

    def log(self, daemon: str) -> str:
        path = self.root / "log" / f"{daemon}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def stop(self) -> None:
        """SIGTERM each daemon we started, by PID, newest first; SIGKILL what outlives a grace period."""
        for process in reversed(self.processes):
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in reversed(self.processes):
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)
        if self.linked_conf is not None and self.linked_conf.is_symlink():
            self.linked_conf.unlink()


SLURM_CONF = """\
ClusterName=firstlayer
SlurmctldHost={host}(127.0.0.1)
SlurmctldPort={ctld_port}
SlurmdPort={slurmd_port}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=socket={root}/munge/munge.socket
CredType=cred/munge
StateSaveLocation={root}/state
SlurmdSpoolDir={root}/spool
SlurmctldPidFile={root}/run/slurmctld.pid
SlurmdPidFile={root}/run/slurmd.pid
SlurmctldLogFile={root}/log/slurmctld.log
SlurmdLogFile={root}/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
MpiDefault=none
ReturnToService=2
MinJobAge=600
SchedulerType=sched/backfill
SlurmdParameters=config_overrides
NodeName={host} NodeAddr=127.0.0.1 CPUs={cpus} RealMemory={mem_mb} State=UNKNOWN
PartitionName=debug Nodes={host} Default=YES MaxTime=INFINITE State=UP
"""


def start_slurm(root: Path, cpus: int = 16, mem_mb: int = 64000, timeout: float = 60) -> SlurmCluster:
    """Start munged, slurmctld and slurmd under `root` and wait until the node is idle.

    The node declares more CPUs and memory than the machine has (config_overrides),
    as a real cluster node would: Snakemake submits a group of N single-thread jobs
    as one job asking for N CPUs, which a 2-CPU node would leave pending for ever.
    """
    for sub in ["munge", "state", "spool", "run", "log"]:
        (root / sub).mkdir(parents=True, exist_ok=True)
    (root / "munge").chmod(0o700)
    key = root / "munge" / "munge.key"
    key.write_bytes(os.urandom(1024))
    key.chmod(0o400)
    host = socket.gethostname().split(".")[0]
    conf = root / "slurm.conf"
    conf.write_text(SLURM_CONF.format(host=host, root=root, cpus=cpus, mem_mb=mem_mb,
                                      ctld_port=_free_port(), slurmd_port=_free_port()))
    if DEFAULT_CONF.is_symlink() and not DEFAULT_CONF.exists():
        DEFAULT_CONF.unlink()  # left by a test run that was killed: its folder is gone
    if DEFAULT_CONF.exists() or DEFAULT_CONF.is_symlink():
        raise SlurmUnavailable(f"{DEFAULT_CONF} exists: this machine has its own SLURM configuration, "
                               "which the test will not replace; run the slurm tests on a machine without one")
    DEFAULT_CONF.parent.mkdir(parents=True, exist_ok=True)
    DEFAULT_CONF.symlink_to(conf)
    env = {**os.environ, "SLURM_CONF": str(conf)}
    cluster = SlurmCluster(root=root, env=env, linked_conf=DEFAULT_CONF)
    launches = [
        [_daemon("munged"), "--foreground", "--force", f"--socket={root}/munge/munge.socket",
         f"--key-file={key}", f"--pid-file={root}/run/munged.pid", f"--log-file={root}/log/munged.log",
         f"--seed-file={root}/munge/munged.seed"],
        [_daemon("slurmctld"), "-D", "-i", "-f", str(conf)],
        [_daemon("slurmd"), "-D", "-f", str(conf)],
    ]
    try:
        for argv in launches:
            daemon = Path(argv[0]).name
            with open(root / "log" / f"{daemon}.out", "w") as out:
                cluster.processes.append(subprocess.Popen(argv, env=env, stdout=out, stderr=subprocess.STDOUT,
                                                          start_new_session=True))
            time.sleep(1)
            if cluster.processes[-1].poll() is not None:
                raise SlurmUnavailable(f"{daemon} exited at start:\n"
                                       f"{(root / 'log' / f'{daemon}.out').read_text()[-2000:]}\n"
                                       f"{cluster.log(daemon)[-2000:]}")
        _wait_for_idle_node(cluster, timeout)
    except BaseException:
        cluster.stop()
        raise
    return cluster


def _wait_for_idle_node(cluster: SlurmCluster, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    state = ""
    while time.monotonic() < deadline:
        result = subprocess.run(["sinfo", "--noheader", "--format=%T"], capture_output=True, text=True,
                                env=cluster.env, timeout=30)
        state = result.stdout.strip() or result.stderr.strip()
        if state == "idle":
            return
        time.sleep(1)
    raise SlurmUnavailable(f"the SLURM node is not idle after {timeout:.0f} s (sinfo: {state!r});\n"
                           f"slurmctld log:\n{cluster.log('slurmctld')[-2000:]}\n"
                           f"slurmd log:\n{cluster.log('slurmd')[-2000:]}")
