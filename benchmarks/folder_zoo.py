"""A local `folder` zoo end to end: `snakemake --cores 2` from an empty results folder, then one more checkpoint.

    python benchmarks/folder_zoo.py [--checkpoints 2000] [--repo PATH] [--workdir DIR]

Writes N safetensors files holding a resnet18-shaped stem (64 x 3 x 7 x 7, random,
seeded) plus two larger tensors, and a config measuring them on the embedded
photos; times the whole study (patch basis, every checkpoint, tables and plots),
a dry run of the finished study, then adding one file and running again.
`--repo` runs another checkout's workflow on the same files (a before/after).
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import yaml
from safetensors.torch import save_file

ROOT = Path(__file__).resolve().parents[1]


def write_checkpoint(root: Path, index: int) -> None:
    generator = torch.Generator().manual_seed(index)
    state = {"conv1.weight": torch.randn(64, 3, 7, 7, generator=generator) * 0.1,
             "layer1.0.conv1.weight": torch.randn(64, 64, 3, 3, generator=generator),
             "fc.weight": torch.randn(1000, 512, generator=generator)}
    save_file(state, str(root / f"seed{index:05d}.safetensors"))


def snakemake(repo: Path, workdir: Path, *args: str) -> tuple[float, str]:
    command = [sys.executable, "-m", "snakemake", "--snakefile", str(repo / "Snakefile"), "--directory",
               str(workdir), "--configfile", str(workdir / "config.yaml"), "--cores", "2", *args]
    start = time.perf_counter()
    result = subprocess.run(command, capture_output=True, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    elapsed = time.perf_counter() - start
    if result.returncode != 0:
        raise SystemExit(f"snakemake {' '.join(args)} failed:\n{result.stdout[-3000:]}\n{result.stderr[-5000:]}")
    return elapsed, result.stdout + result.stderr


def jobs(output: str) -> str:
    table = output.split("Job stats:")[1].split("total")[0] if "Job stats:" in output else ""
    counts = re.findall(r"^(\w+)\s+(\d+)$", table, re.MULTILINE)
    return ", ".join(f"{rule} {count}" for rule, count in counts if rule != "all") or "nothing"


def load() -> str:
    return "load average " + " ".join(f"{value:.1f}" for value in os.getloadavg())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--checkpoints", type=int, default=2000)
    parser.add_argument("--repo", type=Path, default=ROOT, help="the workflow checkout to run (default: this one)")
    parser.add_argument("--workdir", type=Path, help="kept afterwards; a temporary folder by default")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        workdir = (args.workdir or Path(scratch)).resolve()
        root = workdir / "zoo"
        root.mkdir(parents=True, exist_ok=True)
        for index in range(args.checkpoints):
            write_checkpoint(root, index)
        config = {"datasets": {"photos": {"source": "skimage"}},
                  "zoos": {"local": {"source": "folder", "dataset": "photos", "root": str(root), "arch": "resnet18",
                                     "stem_key": "conv1.weight", "path_pattern": r"seed(?P<seed>\d+)",
                                     "preprocessing": {"resize": 128}}}}
        (workdir / "config.yaml").write_text(yaml.safe_dump(config))
        print(f"{args.checkpoints} checkpoints, workflow {args.repo}, {load()}", flush=True)
        elapsed, output = snakemake(args.repo, workdir)
        print(f"whole study from an empty results folder: {elapsed:.1f} s ({jobs(output)}), {load()}", flush=True)
        elapsed, output = snakemake(args.repo, workdir, "--dry-run")
        print(f"dry run of the finished study: {elapsed:.1f} s ({jobs(output)})", flush=True)
        write_checkpoint(root, args.checkpoints)
        elapsed, output = snakemake(args.repo, workdir)
        print(f"one checkpoint added, run again: {elapsed:.1f} s ({jobs(output)}), {load()}", flush=True)


if __name__ == "__main__":
    main()
