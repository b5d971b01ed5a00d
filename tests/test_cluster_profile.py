"""What a cluster needs from the rules and from profiles/slurm, checked without a cluster.

tests/test_slurm.py proves the profile on a real SLURM; these checks are quick and
catch a new rule that would reach the cluster without its resources or its group.
"""

import re
from pathlib import Path

import pytest
import yaml

from firstlayer_zoo.paths import StudyPaths
from test_envs import RULES, pinned
from workflow_helpers import ROOT, planned_job, snakemake, write_config

PROFILE = yaml.safe_load((ROOT / "profiles" / "slurm" / "config.yaml").read_text())


def rule_bodies() -> dict[str, str]:
    bodies = {}
    for smk in RULES:
        for match in re.finditer(r"^(?:rule|checkpoint) (\w+):\n((?:[ \t]+.*\n|\n)*)", smk.read_text(), re.M):
            bodies[match.group(1)] = match.group(2)
    return bodies


def section(body: str, name: str) -> str:
    """The text of one directive (`resources:`, `output:`, ...) of a rule body."""
    match = re.search(rf"^    {name}:(.*?)(?=^    \w+:|\Z)", body, re.M | re.S)
    return match.group(1) if match else ""


def test_every_rule_declares_threads_memory_and_runtime():
    bodies = rule_bodies()
    assert len(bodies) >= 10
    for rule, body in bodies.items():
        if not re.search(r"^    (script|shell|run):", body, re.M):
            continue  # a target like `all`: no job runs
        assert re.search(r"^    threads: \S", body, re.M), f"rule {rule} declares no threads"
        resources = section(body, "resources")
        for key in ["mem_mb", "runtime"]:
            assert re.search(rf"\b{key}=", resources), f"rule {rule} declares no {key} under resources"


def output_patterns(body: str) -> list[str]:
    """A rule's output patterns with wildcards: the StudyPaths calls (paths.py) in its `output:` section that
    take no argument or literal ones (the others name files already expanded, such as one per basis)."""
    paths = StudyPaths("out")
    return [getattr(paths, method)(*re.findall(r'"([^"]*)"', arguments))
            for method, arguments in re.findall(r'PATHS\.(\w+)\(((?:"[^"]*"(?:, )?)*)\)', section(body, "output"))]


def test_no_rule_has_one_job_per_checkpoint_and_the_profile_groups_nothing():
    """Per-checkpoint work runs in shards; a rule with an output per checkpoint would pay start-up per checkpoint."""
    bodies = rule_bodies()
    for rule, body in bodies.items():
        assert not any("{name}" in pattern for pattern in output_patterns(body)), \
            f"rule {rule} makes one job per checkpoint"
    assert any("{shard}" in pattern for pattern in output_patterns(bodies["analyse_checkpoints"]))
    assert "groups" not in PROFILE and "group-components" not in PROFILE


def test_slurm_profile_works_without_accounting():
    assert PROFILE["executor"] == "slurm"
    assert PROFILE["slurm-status-command"] == "squeue"
    # An account given (from the environment) keeps the plugin from guessing one through sacct.
    assert "$FIRSTLAYER_SLURM_ACCOUNT" in PROFILE["default-resources"]["slurm_account"]
    assert "$FIRSTLAYER_SLURM_PARTITION" in PROFILE["default-resources"]["slurm_partition"]


def test_slurm_plugin_is_pinned_apart_from_the_runtime_requirements():
    slurm = pinned((ROOT / "requirements-slurm.txt").read_text().splitlines())
    assert slurm["snakemake-executor-plugin-slurm"] == "2.8.0"
    runtime = pinned((ROOT / "requirements.txt").read_text().splitlines())
    assert not set(slurm) & set(runtime)


@pytest.fixture(scope="module")
def dry_run_dir(tmp_path_factory) -> Path:
    """One folder for the dry runs below, so that they share the planner's stem-geometry cache."""
    return tmp_path_factory.mktemp("dry-run")


@pytest.mark.parametrize(("device", "gpus"), [("cuda", "1"), ("cpu", "0"), ("auto", "0")])
def test_patch_statistics_asks_for_a_gpu_when_the_config_wants_cuda(dry_run_dir: Path, device, gpus):
    config = write_config(dry_run_dir / f"{device}.yaml", {"analysis": {"statistics_device": device}})
    result = snakemake(dry_run_dir, "--dry-run", "--cores", "2", config=config)
    job = planned_job(result.stdout + result.stderr, "patch_statistics")
    assert re.search(r"resources: .*\bgpu=(\d+)", job).group(1) == gpus


@pytest.mark.parametrize(("shard_size", "jobs"), [(8, 1), (3, 4), (1, 8)])
def test_checkpoints_are_planned_in_shards(dry_run_dir: Path, shard_size, jobs):
    """The tiny study's 8 checkpoints in shards of `shard_size` on average: every checkpoint in exactly one job."""
    config = write_config(dry_run_dir / f"shards{shard_size}.yaml", {"analysis": {"shard_size": shard_size}})
    result = snakemake(dry_run_dir, "--dry-run", "--cores", "2", "--printshellcmds", config=config)
    output = result.stdout + result.stderr
    planned = re.findall(r"rule analyse_checkpoints:\n.*?output: (\S+)", output, re.S)
    assert len(planned) <= jobs and len(set(planned)) == len(planned)
    assert all(re.search(rf"/analyses/tiny/\d{{4}}-of-{jobs:04d}\.npz$", path) for path in planned)
