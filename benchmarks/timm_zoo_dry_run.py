"""How long Snakemake takes to plan a study of timm's whole pretrained zoo, with no network.

Writes a config whose timm zoo lists every pretrained tag by name, then times
`snakemake --dry-run` on it in a scratch folder (HF_HUB_OFFLINE=1, HF_ENDPOINT
pointed at a closed local port: planning must not touch the Hub).

    python benchmarks/timm_zoo_dry_run.py
"""

from __future__ import annotations

import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))


def main() -> None:
    import timm

    tags = timm.list_models(pretrained=True)
    config = {
        "datasets": {"photos": {"source": "skimage"}},
        "zoos": {"timm": {"source": "timm", "dataset": "photos", "models": tags}},
    }
    with tempfile.TemporaryDirectory() as scratch:
        workdir = Path(scratch)
        config_path = workdir / "config.yaml"
        config_path.write_text(yaml.safe_dump(config))
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_ENDPOINT": "http://127.0.0.1:9"}
        started = time.perf_counter()
        result = subprocess.run(
            [sys.executable, "-m", "snakemake", "--snakefile", str(ROOT / "Snakefile"), "--directory", scratch,
             "--configfile", str(config_path), "--dry-run", "--quiet", "rules", "--cores", "1"],
            capture_output=True, text=True, env=env)
        dry_run_s = time.perf_counter() - started
        if result.returncode != 0:
            raise SystemExit(result.stderr[-4000:])
        jobs = re.search(r"^total\s+(\d+)", result.stdout + result.stderr, re.MULTILINE)

        from snakemake.utils import validate

        from firstlayer_zoo.plan import Study

        validate(config, str(ROOT / "workflow" / "schemas" / "config.schema.yaml"))
        config["outdir"] = str(workdir / "results")
        started = time.perf_counter()
        study = Study(config)
        plan_s = time.perf_counter() - started
    print(f"timm {timm.__version__}: {len(tags)} tags listed, {len(study.checkpoints)} planned, "
          f"{len(study.bases)} patch bases, {jobs.group(1) if jobs else '?'} jobs")
    print(f"Study(config) (reads the stem table): {plan_s:.2f} s")
    print(f"snakemake --dry-run, start to end: {dry_run_s:.1f} s")
    print(f"machine: {platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}")


if __name__ == "__main__":
    main()
