"""Start-up cost of a `folder` zoo: planning N checkpoint files cold (headers read) and warm (geometry cached).

Usage: python benchmarks/plan_folder.py [N] [--format safetensors|pt]
Prints the seconds each planning took; writes its files under a temporary folder.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch
from safetensors.torch import save_file

from snakemake.utils import validate

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))

from firstlayer_zoo.plan import Study  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("count", type=int, nargs="?", default=1000)
    parser.add_argument("--format", choices=["safetensors", "pt"], default="safetensors")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch) / "zoo"
        root.mkdir()
        # A ResNet-50-like state dict head: the stem plus a few larger tensors the planner must not read.
        state = {"conv1.weight": torch.randn(64, 3, 7, 7), "layer1.0.conv1.weight": torch.randn(64, 64, 1, 1),
                 "fc.weight": torch.randn(1000, 512)}
        for index in range(args.count):
            path = root / f"seed{index:05d}.{args.format}"
            if args.format == "safetensors":
                save_file(state, str(path))
            else:
                torch.save(state, path)
        config = {
            "outdir": str(Path(scratch) / "results"),
            "datasets": {"photos": {"source": "skimage"}},
            "zoos": {"local": {"source": "folder", "dataset": "photos", "root": str(root),
                               "stem_key": "conv1.weight", "preprocessing": {}}},
        }
        validate(config, str(ROOT / "workflow" / "schemas" / "config.schema.yaml"))  # fills in the defaults
        for label in ["cold", "warm"]:
            start = time.perf_counter()
            study = Study(config)
            elapsed = time.perf_counter() - start
            print(f"{args.count} {args.format} files, {label} cache: {elapsed:.2f} s "
                  f"({1000 * elapsed / args.count:.2f} ms a file), {len(study.bases)} basis")


if __name__ == "__main__":
    main()
