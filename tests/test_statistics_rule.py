"""The patch_statistics rule declares a GPU to the scheduler exactly when the config asks for cuda."""

import re

import pytest

from workflow_helpers import snakemake, write_config


@pytest.mark.parametrize("device,gpus", [("cuda", 1), ("auto", 0), ("cpu", 0)])
def test_statistics_rule_declares_a_gpu_only_for_cuda(tmp_path, device, gpus):
    config = write_config(tmp_path / "config.yaml", {"analysis": {"statistics_device": device}})
    result = snakemake(tmp_path, "--dry-run", config=config)
    job = result.stdout[result.stdout.index("rule patch_statistics:"):]
    resources = re.search(r"resources: (.*)", job).group(1)
    assert f"gpu={gpus}," in resources

