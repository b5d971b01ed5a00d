"""A `train` zoo grows: adding a seed trains only the new runs; the checkpoints already trained are kept."""

import re

import pandas as pd
import pytest
import yaml

from workflow_helpers import TINY_CONFIG, snakemake

pytestmark = pytest.mark.slow


def planned(output: str, rule: str) -> list[str]:
    blocks = re.findall(rf"rule {rule}:\n(.*?)(?:\n\n|\n\[|\Z)", output, re.DOTALL)
    return sorted(re.search(r"run=([^,\s]+)", block).group(1) for block in blocks)


def test_adding_a_seed_trains_only_its_runs_and_keeps_every_trained_checkpoint(tmp_path):
    config = yaml.safe_load(TINY_CONFIG.read_text())
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    snakemake(tmp_path, "--cores", "2", config=path)
    runs = tmp_path / "results" / "zoos" / "tiny" / "runs"
    trained = {file: file.stat().st_mtime_ns for file in runs.rglob("*.safetensors")}
    assert len(trained) == 4 * 3  # 4 runs x (init + 2 steps)

    config["zoos"]["tiny"]["seeds"].append(2)
    path.write_text(yaml.safe_dump(config))
    plan = snakemake(tmp_path, "--dry-run", config=path)
    assert planned(plan.stdout, "train_run") == ["test_resnet-s2-random", "test_resnet-s2-true"]

    snakemake(tmp_path, "--cores", "2", config=path)
    assert {file: file.stat().st_mtime_ns for file in trained} == trained  # nothing retrained
    table = pd.read_parquet(tmp_path / "results" / "tables" / "checkpoints.parquet")
    assert sorted(set(table["seed"])) == [0, 1, 2] and len(table) == 12 and set(table["status"]) == {"ok"}
