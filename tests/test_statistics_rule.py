"""The patch_statistics rule asks for as many threads as its statistics' work is worth (its GPU request:
test_cluster_profile.py); the patch_basis rule starts without torch."""

import ast
import re
import subprocess
import sys
from pathlib import Path

import yaml

from workflow_helpers import TINY_CONFIG, planned_job, snakemake, write_config


def test_statistics_rule_gives_a_cheap_basis_one_thread_once_the_dataset_is_counted(tmp_path):
    zoos = yaml.safe_load(TINY_CONFIG.read_text())["zoos"]
    zoos["tiny"]["preprocessing"]["crop"] = 48  # a fixed image size: the work is known
    config = write_config(tmp_path / "config.yaml", {"zoos": zoos, "analysis": {"statistics_threads": 2}})

    def planned_threads():
        plan = snakemake(tmp_path, "--dry-run", "--cores", "2", config=config).stdout
        found = re.search(r"threads: (\d+)", planned_job(plan, "patch_statistics"))
        return int(found.group(1)) if found else 1  # Snakemake leaves out a job's single thread

    # Until the manifest exists the work is unknown: a dry run shows the configured threads.
    assert planned_threads() == 2
    snakemake(tmp_path, "--cores", "1", "results/datasets/photos/manifest.json", config=config)
    # Three 48x48 photos at 3x3: one thread.
    assert planned_threads() == 1


def test_a_basis_job_imports_no_torch():
    """Hundreds of patch_basis jobs in a zoo: each must start in a fraction of a second, not torch's seconds."""
    script = Path(__file__).resolve().parents[1] / "scripts" / "patch_basis.py"
    modules = [node.module for node in ast.walk(ast.parse(script.read_text())) if isinstance(node, ast.ImportFrom)]
    program = "; ".join([f"import {module}" for module in modules] + ["import sys",
                                                                       "print('torch' in sys.modules)"])
    found = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True, check=True,
                           cwd=script.parent).stdout
    assert "firstlayer_zoo.basis" in modules and found.strip() == "False"
