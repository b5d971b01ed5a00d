"""Planning at 2,000 checkpoints: prints the figures docs/benchmarks.md records.

    python benchmarks/scale.py [--seeds 100] [--steps 10] [--workdir DIR]

A `train` zoo of 1 arch x SEEDS seeds x 2 label regimes x STEPS kept steps is
planned (nothing is trained) and dry-run through Snakemake. Aggregation at
scale is benchmarks/aggregate_scale.py.
"""

from __future__ import annotations

import argparse
import re
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml
from snakemake.utils import validate

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))

from firstlayer_zoo.plan import Study  # noqa: E402


def scale_config(seeds: int, steps: int, outdir: str) -> dict:
    return {
        "outdir": outdir,
        "datasets": {"photos": {"source": "skimage", "images": ["astronaut", "coffee", "chelsea"]}},
        "zoos": {"scale": {
            "source": "train",
            "dataset": "photos",
            "archs": [{"arch": "test_resnet"}],
            "seeds": list(range(seeds)),
            "labels": ["true", "random"],
            "steps": [4 * (i + 1) for i in range(steps)],
            "preprocessing": {"resize": 48},
            "training": {"crop_size": 24, "n_samples": 64, "batch_size": 16},
        }},
    }


def report(label: str, wall: float, cpu: float) -> None:
    print(f"{label:<46} {wall:7.2f} s wall {cpu:7.2f} s CPU", flush=True)


def timed(label: str, action):
    """Run `action`, print its wall-clock and CPU time (CPU time is steadier on a shared machine)."""
    wall, cpu = time.perf_counter(), time.process_time()
    result = action()
    report(label, time.perf_counter() - wall, time.process_time() - cpu)
    return result


def dry_run(workdir: Path, config_path: Path) -> None:
    command = [sys.executable, "-m", "snakemake", "--snakefile", str(ROOT / "Snakefile"), "--directory",
               str(workdir), "--configfile", str(config_path), "--cores", "2", "--dry-run", "--quiet", "rules"]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    result = subprocess.run(command, capture_output=True, text=True)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if result.returncode != 0:
        raise SystemExit(f"dry run failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    jobs = re.search(r"^total\s+(\d+)", result.stdout, re.M)
    cpu = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
    report(f"snakemake --dry-run, fresh process ({jobs.group(1) if jobs else '?'} jobs)", wall, cpu)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, default=100)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--workdir", type=Path, help="kept afterwards; a temporary folder by default")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        workdir = args.workdir or Path(scratch)
        workdir.mkdir(parents=True, exist_ok=True)
        config = scale_config(args.seeds, args.steps, "results")
        config_path = workdir / "scale_config.yaml"
        config_path.write_text(yaml.safe_dump(config))
        # Study plans relative to the working directory, as under Snakemake.
        config["outdir"] = str(workdir / "results")
        validate(config, str(ROOT / "workflow" / "schemas" / "config.schema.yaml"))
        study = timed("plan the study (first: stem geometry from timm)", lambda: Study(config))
        print(f"  {len(study.checkpoints)} checkpoints in {len(study.runs)} runs, {len(study.bases)} basis")
        timed("plan the study again (geometry cached)", lambda: Study(config))
        dry_run(workdir, config_path)


if __name__ == "__main__":
    main()
