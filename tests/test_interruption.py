"""A run killed with SIGKILL in the middle of a rule resumes with --rerun-incomplete and loses no finished work."""

import os
import re
import signal
import subprocess
import sys
import threading
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


def _identity(path):
    status = path.stat()
    return status.st_ino, status.st_mtime_ns


class SnakemakeLog:
    """Snakemake's log, read line by line as it is written: the test waits on the lines, not on a clock."""

    def __init__(self, stream):
        self.lines: list[str] = []
        self.ended = False
        self.changed = threading.Condition()
        self.reader = threading.Thread(target=self._read, args=(stream,), daemon=True)
        self.reader.start()

    def _read(self, stream) -> None:
        for line in stream:
            with self.changed:
                self.lines.append(line)
                self.changed.notify_all()
        with self.changed:
            self.ended = True
            self.changed.notify_all()

    def count(self, pattern: str) -> int:
        return sum(bool(re.match(pattern, line)) for line in self.lines)

    def wait(self, condition, timeout: float, what: str) -> None:
        """Block until `condition(self)` holds after a new line; fail if the log ends or the hang guard passes."""
        with self.changed:
            if not self.changed.wait_for(lambda: condition(self) or self.ended, timeout) or not condition(self):
                raise AssertionError(f"snakemake's log never showed {what}; its end:\n{''.join(self.lines[-30:])}")


# Snakemake logs a job's start as "rule NAME:" and, once its outputs are recorded as complete,
# "Finished jobid: N (Rule: NAME)".
STARTED = r"(local)?rule train_run:"
FINISHED = r"Finished jobid: \d+ \(Rule: train_run\)"


def one_run_recorded_and_the_other_running(log: SnakemakeLog) -> bool:
    return log.count(FINISHED) == 1 and log.count(STARTED) == 2


@pytest.mark.slow
def test_sigkill_mid_rule_then_rerun_incomplete_keeps_finished_work(tmp_path):
    # Long enough runs (400 steps) that the kill lands inside the second train_run job.
    config = write_config(tmp_path / "config.yaml", {"zoos": {"tiny": {
        "source": "train", "dataset": "photos", "archs": [{"arch": "test_resnet"}], "seeds": [0, 1],
        "labels": ["true"], "steps": [4, 400], "preprocessing": {"resize": 48},
        "training": {"crop_size": 24, "n_samples": 64, "batch_size": 16}}}})
    runs = tmp_path / "results" / "zoos" / "tiny" / "runs"
    first, second = runs / "test_resnet-s0-true", runs / "test_resnet-s1-true"
    command = [sys.executable, "-m", "snakemake", "--snakefile", str(ROOT / "Snakefile"),
               "--directory", str(tmp_path), "--configfile", str(config), "--cores", "1"]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                               start_new_session=True)
    try:
        log = SnakemakeLog(process.stderr)
        # With one core the second train_run starts only after the first is recorded as finished.
        log.wait(one_run_recorded_and_the_other_running, 1800, "one train_run finished and the other started")
        # The kill must leave an output behind (the run's folder with its init) for snakemake to distrust;
        # the init is saved first, hundreds of training steps before the run could finish.
        both_inits = [run / "step000000.safetensors" for run in (first, second)]
        deadline = time.monotonic() + 600  # a hang guard: the init comes within seconds of the job's start
        while not all(path.is_file() for path in both_inits):
            assert time.monotonic() < deadline, "the second train_run never saved its init"
            time.sleep(0.05)
    finally:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    finished, killed = (first, second) if (first / "step000400.safetensors").is_file() else (second, first)
    assert not (killed / "step000400.safetensors").exists()
    results = tmp_path / "results"
    # Everything but the killed job's outputs and log (and hidden bookkeeping) must survive untouched.
    # A redone file is written anew under its name (atomically): a new inode, a new mtime.
    kept = {path: _identity(path) for path in results.rglob("*")
            if path.is_file() and killed.name not in str(path)
            and not any(part.startswith(".") for part in path.relative_to(results).parts)}
    assert finished / "step000400.safetensors" in kept

    refused = snakemake(tmp_path, "--cores", "1", "--dry-run", config=config, check=False)
    assert refused.returncode != 0  # locked and incomplete: snakemake will not trust the killed job's output
    snakemake(tmp_path, "--unlock", config=config)
    snakemake(tmp_path, "--cores", "2", "--rerun-incomplete", config=config)

    for path, identity in kept.items():
        assert _identity(path) == identity, f"{path} was redone although its job had finished"
    table = pd.read_parquet(tmp_path / "results" / "tables" / "checkpoints.parquet")
    assert len(table) == 4 and set(table["status"]) == {"ok"}
    assert sorted(p.name for p in killed.glob("*.safetensors")) == [
        "step000000.safetensors", "step000004.safetensors", "step000400.safetensors"]
    assert not list(tmp_path.joinpath("results", "tables").glob(".*partial"))
