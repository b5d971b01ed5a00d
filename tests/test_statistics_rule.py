"""The patch_statistics rule declares a GPU to the scheduler exactly when the config asks for cuda, and as many
threads as its bases' work is worth."""

import re

import pytest
import yaml

from workflow_helpers import TINY_CONFIG, snakemake, write_config


@pytest.mark.parametrize("device,gpus", [("cuda", 1), ("auto", 0), ("cpu", 0)])
def test_statistics_rule_declares_a_gpu_only_for_cuda(tmp_path, device, gpus):
    config = write_config(tmp_path / "config.yaml", {"analysis": {"statistics_device": device}})
    result = snakemake(tmp_path, "--dry-run", config=config)
    job = result.stdout[result.stdout.index("rule patch_statistics:"):]
    resources = re.search(r"resources: (.*)", job).group(1)
    assert f"gpu={gpus}," in resources


def test_statistics_rule_gives_a_cheap_basis_one_thread_once_the_dataset_is_counted(tmp_path):
    zoos = yaml.safe_load(TINY_CONFIG.read_text())["zoos"]
    zoos["tiny"]["preprocessing"]["crop"] = 48  # a fixed image size: the work is known
    config = write_config(tmp_path / "config.yaml", {"zoos": zoos, "analysis": {"statistics_threads": 2}})

    def planned_threads():
        plan = snakemake(tmp_path, "--dry-run", "--cores", "2", config=config).stdout
        job = plan[plan.index("rule patch_statistics:"):].split("\n\n")[0]
        found = re.search(r"threads: (\d+)", job)
        return int(found.group(1)) if found else 1  # Snakemake leaves out a job's single thread

    # Until the manifest exists the work is unknown: a dry run shows the configured threads.
    assert planned_threads() == 2
    snakemake(tmp_path, "--cores", "1", "results/datasets/photos/manifest.json", config=config)
    # Three 48x48 photos at 3x3: one thread.
    assert planned_threads() == 1
