"""A run killed with SIGKILL in the middle of a rule resumes with --rerun-incomplete and loses no finished work."""

import os
import signal
import subprocess
import sys
import time

import pandas as pd
import pytest

from firstlayer_zoo.atomic import atomic_path
from workflow_helpers import ROOT, snakemake, write_config


def test_atomic_path_leaves_nothing_behind_on_failure(tmp_path):
    target = tmp_path / "table.parquet"
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half a table")
            raise RuntimeError("killed half-way")
    assert list(tmp_path.iterdir()) == []


def wait_for(condition, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up after {timeout} s waiting for {what}")
        time.sleep(0.2)


@pytest.mark.slow
def test_sigkill_mid_rule_then_rerun_incomplete_keeps_finished_work(tmp_path):
    # Long enough runs that the kill lands inside a train_run job, after it saved its init.
    config = write_config(tmp_path / "config.yaml", {"zoos": {"tiny": {
        "source": "train", "dataset": "photos", "archs": [{"arch": "test_resnet"}], "seeds": [0, 1],
        "labels": ["true"], "steps": [4, 400], "preprocessing": {"resize": 48},
        "training": {"crop_size": 24, "n_samples": 64, "batch_size": 16}}}})
    runs = tmp_path / "results" / "zoos" / "tiny" / "runs"
    first, second = runs / "test_resnet-s0-true", runs / "test_resnet-s1-true"
    command = [sys.executable, "-m", "snakemake", "--snakefile", str(ROOT / "Snakefile"),
               "--directory", str(tmp_path), "--configfile", str(config), "--cores", "1"]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        def one_run_done_and_the_other_started():
            done = [run for run in (first, second) if (run / "step000400.safetensors").is_file()]
            started = [run for run in (first, second) if (run / "step000000.safetensors").is_file()]
            return len(done) == 1 and len(started) == 2

        wait_for(one_run_done_and_the_other_started, 600, "one finished train_run and one half-way")
    finally:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    finished, killed = (first, second) if (first / "step000400.safetensors").is_file() else (second, first)
    assert not (killed / "step000400.safetensors").exists()
    results = tmp_path / "results"
    # Everything but the killed job's outputs and log (and hidden bookkeeping) must survive untouched.
    kept = {path: path.stat().st_mtime_ns for path in results.rglob("*")
            if path.is_file() and killed.name not in str(path)
            and not any(part.startswith(".") for part in path.relative_to(results).parts)}
    assert finished / "step000400.safetensors" in kept

    refused = snakemake(tmp_path, "--cores", "1", "--dry-run", config=config, check=False)
    assert refused.returncode != 0  # locked and incomplete: snakemake will not trust the killed job's output
    snakemake(tmp_path, "--unlock", config=config)
    snakemake(tmp_path, "--cores", "2", "--rerun-incomplete", config=config)

    for path, mtime in kept.items():
        assert path.stat().st_mtime_ns == mtime, f"{path} was redone although its job had finished"
    table = pd.read_parquet(tmp_path / "results" / "tables" / "checkpoints.parquet")
    assert len(table) == 4 and set(table["status"]) == {"ok"}
    assert sorted(p.name for p in killed.glob("*.safetensors")) == [
        "step000000.safetensors", "step000004.safetensors", "step000400.safetensors"]
    assert not list(tmp_path.joinpath("results", "tables").glob(".*partial"))
