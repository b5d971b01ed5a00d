"""The tiny study submitted through profiles/slurm to a real single-node SLURM that the test starts.

The executor plugin (requirements-slurm.txt) goes into an overlay folder on
PYTHONPATH for these snakemake runs only: with slurm-wlm installed and no
controller up, an importable plugin costs every other snakemake start ~9 s.
"""

import os
import re
import signal
import subprocess
import sys

import pytest

import workflow_checks
from slurm_cluster import SlurmUnavailable, install_slurm, start_slurm
from workflow_helpers import ROOT, write_config

pytestmark = [pytest.mark.slurm, pytest.mark.slow]

PROFILE = ROOT / "profiles" / "slurm"
# 1 arch x 2 seeds x 2 label regimes x 2 kept steps, analysed in shards of 2 on average (2 non-empty shards).
SHARD_SIZE = 2


@pytest.fixture(scope="module")
def slurm_plugin(tmp_path_factory):
    overlay = tmp_path_factory.mktemp("slurm-plugin")
    result = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--target", str(overlay),
         "-r", str(ROOT / "requirements-slurm.txt")],
        capture_output=True, text=True, timeout=600,
    )
    if result.returncode != 0:
        pytest.skip(f"cannot install the SLURM executor plugin (requirements-slurm.txt):\n{result.stderr[-2000:]}")
    return overlay


@pytest.fixture(scope="module")
def slurm(tmp_path_factory):
    try:
        install_slurm()
        cluster = start_slurm(tmp_path_factory.mktemp("slurm"))
    except SlurmUnavailable as why:
        pytest.skip(f"no SLURM on this machine: {why}")
    yield cluster
    cluster.stop()


@pytest.fixture(scope="module")
def slurm_run(tmp_path_factory, slurm, slurm_plugin):
    workdir = tmp_path_factory.mktemp("tiny-slurm")
    env = {
        **slurm.env,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(slurm_plugin), os.environ.get("PYTHONPATH")])),
        "PYTHONUNBUFFERED": "1",
        "FIRSTLAYER_SLURM_PARTITION": "debug",
        "FIRSTLAYER_SLURM_ACCOUNT": "firstlayer",
    }
    command = [
        sys.executable, "-m", "snakemake",
        "--snakefile", str(ROOT / "Snakefile"),
        "--directory", str(workdir),
        "--configfile", str(write_config(workdir / "config.yaml", {"analysis": {"shard_size": SHARD_SIZE}})),
        "--profile", str(PROFILE),
        # The profile waits 40 s before its first status check, as suits a real queue.
        "--slurm-init-seconds-before-status-checks", "5",
    ]
    log = workdir / "snakemake.log"
    with open(log, "w") as out:
        process = subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        returncode = process.wait(timeout=900)
    except subprocess.TimeoutExpired:
        returncode = "still running after 900 s"
    finally:
        _stop(process)
    assert returncode == 0, f"snakemake through SLURM failed ({returncode}):\n{log.read_text()[-6000:]}"
    return workdir


def _stop(process: subprocess.Popen) -> None:
    """SIGTERM, then SIGKILL: Snakemake waits for ever on SLURM jobs that were cancelled under it."""
    if process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=15)


@pytest.mark.parametrize("check", workflow_checks.TINY_RUN_CHECKS, ids=lambda check: check.__name__)
def test_slurm_run_makes_the_same_tables_as_a_local_run(slurm_run, check):
    check(slurm_run)


def test_slurm_jobs_got_the_resources_their_rules_declare(slurm, slurm_run):
    jobs = slurm.jobs()
    assert jobs and {job["state"] for job in jobs} == {"COMPLETED"}
    by_rule = {}
    for job in jobs:
        by_rule.setdefault(job["comment"].split("_wildcards_")[0], []).append(job)
    # patch_statistics declares 2 threads, 8000 MB and 240 minutes; each train_run is a job of its own.
    statistics = by_rule["rule_patch_statistics"]
    assert [(job["cpus"], job["memory"], job["time_limit"]) for job in statistics] == [("2", "8000M", "4:00:00")]
    assert len(by_rule["rule_train_run"]) == 4
    assert all(job["partition"] == "debug" for job in jobs)


def test_per_checkpoint_work_reaches_slurm_as_one_submission_per_shard(slurm, slurm_run):
    jobs = slurm.jobs()
    shards = sorted(path.stem for path in (slurm_run / "results" / "analyses" / "tiny").glob("*.npz"))
    assert len(shards) >= 2
    submitted = sorted(job["comment"].split("_wildcards_tiny_")[1] for job in jobs
                       if job["comment"].startswith("rule_analyse_checkpoints"))
    assert submitted == shards
    # Every job is a submission of its own; only `all` runs in Snakemake itself.
    steps = int(re.findall(r"(\d+) of (\d+) steps", (slurm_run / "snakemake.log").read_text())[-1][1])
    assert len(jobs) == steps - 1
