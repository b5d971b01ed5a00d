"""Planning and aggregation at 2,000 checkpoints: prints the figures docs/benchmarks.md records.

    python benchmarks/scale.py [--seeds 100] [--steps 10] [--workdir DIR]

A `train` zoo of 1 arch x SEEDS seeds x 2 label regimes x STEPS kept steps is
planned (nothing is trained) and dry-run through Snakemake; then one synthetic
analysis file per checkpoint is written with CheckpointAnalysis.save and the
aggregate step (what rules build_tables and plot_* do) is timed in-process,
one stage at a time.
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

import numpy as np
import yaml
from snakemake.utils import validate

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))

from firstlayer_zoo.analysis import CheckpointAnalysis  # noqa: E402
from firstlayer_zoo.plan import Study  # noqa: E402
from firstlayer_zoo.profiles import fit_analytic_profile, normalise, whitening_spreads  # noqa: E402


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


def synthetic_analyses(study: Study, profiles_dir: Path, seed: int = 0) -> list[Path]:
    """One saved analysis per checkpoint: a power-law basis and noisy decaying energy profiles."""
    rng = np.random.default_rng(seed)
    eigenvalues = np.logspace(0, -4, 27)
    paths = []
    for spec in study.checkpoints.values():
        energy = normalise(eigenvalues ** rng.uniform(0.1, 0.5) * rng.lognormal(0, 0.2, eigenvalues.size))
        energy_init = normalise(rng.uniform(0.5, 1.0, eigenvalues.size))
        analysis = CheckpointAnalysis(
            spec=spec.to_dict(), status="ok", out_channels=16, stride=2, init_known=True, init_subtracted=True,
            eigenvalues=eigenvalues, energy=energy, energy_init=energy_init,
            fit=fit_analytic_profile(energy, eigenvalues), whitening=whitening_spreads(energy, eigenvalues),
        )
        path = profiles_dir / spec.zoo / f"{spec.name}.npz"
        path.parent.mkdir(parents=True, exist_ok=True)
        analysis.save(path)
        paths.append(path)
    return paths


def aggregate(paths: list[Path], study: Study, out: Path) -> None:
    from firstlayer_zoo import plots
    from firstlayer_zoo.tables import build_tables, read_table, write_table

    def tables():
        analyses = [CheckpointAnalysis.load(path) for path in paths]
        for name, frame in build_tables(analyses).items():
            write_table(frame, name, out / f"{name}.parquet")

    total, total_cpu = time.perf_counter(), time.process_time()
    timed("build_tables (load + build + write)", tables)
    checkpoints, profiles, fits, consistency = (read_table(out / f"{name}.parquet")
                                                for name in ["checkpoints", "profiles", "fits", "consistency"])
    print(f"  rows: {len(checkpoints)} checkpoints, {len(profiles)} profile points, {len(consistency)} pairs")
    timed("plot_profiles", lambda: plots.plot_profiles(checkpoints, profiles, out / "profiles.png"))
    for basis in study.bases:
        timed(f"plot_consistency ({basis.slug})",
              lambda: plots.plot_consistency(checkpoints, consistency, basis.slug, out / "consistency.png"))
    timed("plot_fits", lambda: (plots.plot_fit_examples(checkpoints, profiles, fits, 6, out / "fits.png"),
                                plots.plot_fit_quality(checkpoints, fits, out / "fit_quality.png")))
    timed("plot_training_time", lambda: plots.plot_training_time(checkpoints, fits, out / "training_time.png"))
    timed("plot_whitening", lambda: plots.plot_whitening(checkpoints, fits, out / "whitening.png"))
    report("aggregate step, total", time.perf_counter() - total, time.process_time() - total_cpu)


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
        paths = timed("write synthetic analyses (setup, not timed)",
                      lambda: synthetic_analyses(study, workdir / "results" / "profiles"))
        aggregate(paths, study, workdir / "results" / "aggregate")


if __name__ == "__main__":
    main()
