"""Running the workflow as a user would: the snakemake command line, in a scratch folder."""

from __future__ import annotations

import itertools
import os
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
TINY_CONFIG = ROOT / "tests" / "tiny_config.yaml"


def snakemake(workdir: Path, *args: str, config: Path | None = None, timeout: int = 900,
              check: bool = True, env: dict[str, str] | None = None,
              configfile: bool = True) -> subprocess.CompletedProcess:
    """Run snakemake on `config` (tiny_config.yaml by default) as the whole study, as a user's --configfile is.

    configfile=False gives no --configfile: the study is then the workdir's config.yaml.
    """
    command = [
        sys.executable, "-m", "snakemake",
        "--snakefile", str(ROOT / "Snakefile"),
        "--directory", str(workdir),
        *(["--configfile", str(config or TINY_CONFIG)] if configfile else []),
        *args,
    ]
    env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    result = subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=env)
    if check and result.returncode != 0:
        raise AssertionError(f"snakemake {' '.join(args)} failed:\n{result.stdout[-4000:]}\n{result.stderr[-8000:]}")
    return result


def write_config(path: Path, changes: dict, base: Path = TINY_CONFIG) -> Path:
    config = yaml.safe_load(base.read_text())
    config.update(changes)
    path.write_text(yaml.safe_dump(config))
    return path


def planned_job(output: str, rule: str) -> str:
    """A dry run's lines for the first job of `rule`: those indented under its header (jobs follow each other
    without a blank line)."""
    _, *lines = output[output.index(f"rule {rule}:"):].splitlines()
    return "\n".join(itertools.takewhile(lambda line: line.startswith("    "), lines))
