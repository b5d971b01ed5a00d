"""Tables and plots of a Model-Zoos-sized population: prints the figures docs/benchmarks.md records.

    python benchmarks/aggregate_scale.py [--checkpoints 100000] [--workdir DIR] [--keep]

Writes synthetic shard files (what rule analyse_checkpoints writes) for a
population over two bases (3x3 stems: 27 components; 7x7 stems: 147),
several archs, seeds, label regimes and steps, then runs the aggregate rules
through `snakemake --cores 2` on them, end to end (each rule its own process,
as in a study), and prints each job's wall time, the total, and the peak
resident memory of the largest job.
"""

from __future__ import annotations

import argparse
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))

from firstlayer_zoo.analysis import CheckpointAnalysis  # noqa: E402
from firstlayer_zoo.checkpoint_record import MEASURES  # noqa: E402
from firstlayer_zoo.basis import PatchBasis  # noqa: E402
from firstlayer_zoo.preprocessing import Preprocessing  # noqa: E402
from firstlayer_zoo.paths import TABLES, StudyPaths, checkpoint_file  # noqa: E402
from firstlayer_zoo.profiles import fit_analytic_profile, normalise, pearson, whitening_spreads  # noqa: E402
from firstlayer_zoo.records import CheckpointSpec  # noqa: E402
from firstlayer_zoo.shards import assign_shards, save_analyses  # noqa: E402

ARCHS = {"resnet_a": 3, "resnet_b": 3, "vgg_a": 3, "resnet18_like": 7, "alexnet_like": 7}
ARCHS_TAU = {"resnet_a": 1.0, "resnet_b": 0.8, "vgg_a": 1.2, "resnet18_like": 0.9, "alexnet_like": 1.1}
LABELS = ["true", "random"]


def population(count: int) -> list[CheckpointSpec]:
    """`count` checkpoints: archs x seeds x labels x 20 steps, seeds as many as it takes."""
    steps = [50 * (i + 1) for i in range(20)]
    seeds = -(-count // (len(ARCHS) * len(LABELS) * len(steps)))
    prep = Preprocessing(resize=48)
    specs = []
    for arch, kernel in ARCHS.items():
        for seed in range(seeds):
            for labels in LABELS:
                run = f"{arch}-s{seed}-{labels}"
                for step in steps:
                    specs.append(CheckpointSpec(
                        zoo="zoo", name=f"{run}-step{step:06d}", source="train", arch=arch,
                        locator=checkpoint_file(StudyPaths("results").run_dir("zoo", run), "step", step),
                        first_conv="stem", kernel_size=kernel, in_chans=3, dataset="photos", preprocessing=prep,
                        step=step, seed=seed, labels=labels, run=run))
    return specs[:count]


def write_shards(specs: list[CheckpointSpec], outdir: Path, shard_size: int) -> list[str]:
    """Shard files of synthetic analyses: power-law spectra, profiles along the analytic family plus noise.

    Fits take milliseconds each, too slow for setting up 100,000: one fit per
    (arch, step), of the noiseless profile, stands for its checkpoints.
    """
    rng = np.random.default_rng(0)
    spectra = {k: np.logspace(0, -4, 3 * k * k) for k in (3, 7)}
    fits = {}
    paths = []
    for shard, members in assign_shards(specs, shard_size).items():
        analyses = []
        for spec in members:
            eigenvalues = spectra[spec.kernel_size]
            tau = 10 ** (spec.step / 250 * ARCHS_TAU[spec.arch])
            clean = normalise((1 - np.exp(-tau * eigenvalues)) / np.sqrt(eigenvalues))
            energy = normalise(clean * rng.lognormal(0, 0.15, eigenvalues.size))
            energy_init = normalise(rng.uniform(0.5, 1.0, eigenvalues.size))
            if (spec.arch, spec.step) not in fits:
                fits[spec.arch, spec.step] = fit_analytic_profile(clean, eigenvalues)
            fit, whitening = fits[spec.arch, spec.step], whitening_spreads(energy, eigenvalues)
            # The measures a profile gives (no image-space ones: the synthetic bases have no offsets).
            measures = {**dict.fromkeys(measure.name for measure in MEASURES), **vars(fit), **vars(whitening),
                        "r_init": pearson(energy, energy_init)}
            analyses.append(CheckpointAnalysis(
                checkpoint=spec, status="ok", out_channels=64, stride=2, init_known=True,
                init_subtracted=True, eigenvalues=eigenvalues, energy=energy, energy_init=energy_init,
                measures=measures))
        path = StudyPaths(str(outdir)).analyses("zoo", shard)
        save_analyses(path, analyses)
        paths.append(str(path))
    return paths


def synthetic_basis(key) -> PatchBasis:
    """A basis with the spectrum the synthetic profiles were made in and random orthonormal components."""
    p = key.in_chans * key.kernel_size**2
    eigenvectors, _ = np.linalg.qr(np.random.default_rng(p).normal(size=(p, p)))
    eigenvalues = np.logspace(0, -4, p)
    return PatchBasis(kernel_size=key.kernel_size, in_chans=key.in_chans, mean=np.zeros(p),
                      covariance=(eigenvectors * eigenvalues) @ eigenvectors.T, eigenvalues=eigenvalues,
                      eigenvectors=eigenvectors, n_patches=10**6, n_images=1000)


AGGREGATE_SNAKEFILE = """
import sys
from types import SimpleNamespace

sys.path.insert(0, {scripts!r})
from firstlayer_zoo.paths import BASIS_PLOTS, PLOTS, TABLES, StudyPaths
from firstlayer_zoo.records import BasisKey
from firstlayer_zoo.settings import ConsistencySettings, PlotSettings

configfile: {config!r}
PATHS = StudyPaths(config["outdir"])
# What the aggregate rules read of the Study.
STUDY = SimpleNamespace(bases=[BasisKey(*key) for key in {basis_keys!r}], datasets=config["datasets"],
                        consistency=ConsistencySettings.from_dict(config["consistency"]),
                        plots=PlotSettings.from_dict(config["plots"]))


def all_analyses(wildcards=None):
    return {shards!r}


def study_basis_files(wildcards=None):
    return [PATHS.basis(key.dataset, key.preprocessing, key.kernel_size, key.in_chans) for key in STUDY.bases]


def basis_slugs(wildcards=None):
    return [key.slug for key in STUDY.bases]


def basis_kernel_sizes_by_slug(wildcards=None):
    return [key.kernel_size for key in STUDY.bases]


include: {aggregate!r}


rule all:
    input:
        [PATHS.table(table) for table in TABLES],
        [PATHS.plot(plot) for plot in PLOTS],
        [PATHS.basis_plots(kind) for kind in BASIS_PLOTS],
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--checkpoints", type=int, default=100_000)
    parser.add_argument("--shard-size", type=int, default=128)
    parser.add_argument("--workdir", type=Path, help="kept afterwards; a temporary folder by default")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        workdir = (args.workdir or Path(scratch)).resolve()
        outdir = workdir / "results"
        specs = population(args.checkpoints)
        start = time.perf_counter()
        shards = write_shards(specs, outdir, args.shard_size)
        print(f"setup (not timed): {len(specs)} synthetic analyses in {len(shards)} shard files, "
              f"{time.perf_counter() - start:.0f} s", flush=True)
        config = {"outdir": str(outdir), "datasets": {"photos": {"source": "skimage"}},
                  "consistency": {"max_pairs": 2_000_000, "sample_pairs": 20_000, "neighbours": 0, "max_groups": 200,
                                  "seed": 0},
                  "plots": {"fit_examples": 6, "heatmap_checkpoints": 300, "filter_checkpoints": 4}}
        (workdir / "config.yaml").write_text(yaml.safe_dump(config))
        bases = sorted({spec.basis for spec in specs}, key=lambda key: key.slug)
        for key in bases:
            synthetic_basis(key).save(StudyPaths(str(outdir)).basis(key.dataset, key.preprocessing, key.kernel_size,
                                                                   key.in_chans))
        snakefile = workdir / "Snakefile"
        # The workflow's own aggregate rules; only the list of shard files is given here, not planned.
        snakefile.write_text(AGGREGATE_SNAKEFILE.format(
            scripts=str(ROOT / "scripts"), config=str(workdir / "config.yaml"), shards=shards,
            basis_keys=[(key.dataset, key.preprocessing, key.kernel_size, key.in_chans) for key in bases],
            aggregate=str(ROOT / "workflow" / "rules" / "aggregate.smk")))
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        start = time.perf_counter()
        result = subprocess.run([sys.executable, "-m", "snakemake", "--snakefile", str(snakefile), "--directory",
                                 str(workdir), "--cores", "2", "--quiet", "rules"], capture_output=True, text=True)
        wall = time.perf_counter() - start
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        if result.returncode != 0:
            raise SystemExit(f"aggregate run failed:\n{result.stdout[-3000:]}\n{result.stderr[-5000:]}")
        paths = StudyPaths(str(outdir))
        logs = Path(paths.logs)
        for log in sorted(logs.rglob("*.log")):
            text = log.read_text()
            print(f"  {log.relative_to(logs)}: {text.strip().splitlines()[-1] if text.strip() else ''}")
        cpu = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
        print(f"tables and plots of {len(specs)} checkpoints: {wall:.1f} s wall, {cpu:.1f} s CPU "
              f"(snakemake --cores 2), peak memory of the largest job {after.ru_maxrss / 2**20:.2f} GiB")
        sizes = {name: Path(paths.table(name)).stat().st_size for name in TABLES}
        print("  table sizes: " + ", ".join(f"{name}.parquet {size / 2**20:.1f} MiB"
                                             for name, size in sorted(sizes.items())))


if __name__ == "__main__":
    main()
