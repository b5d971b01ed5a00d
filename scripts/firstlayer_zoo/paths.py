"""Every file the workflow writes under the outdir, and the committed resources it reads, spelled once.

For the rules and for the Python alike. Called without arguments, a
StudyPaths method returns the rule's pattern with Snakemake wildcards
(`{dataset}`, `{zoo}`, ...); called with values, the path of one file. The
notebook API's cache (firstlayer_zoo.analyse) is laid out as an outdir too.
Imports nothing heavy: Snakemake start-up reads it.
"""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path

# The study's tables (each `tables/<name>.parquet`, columns in tables.SCHEMAS) and study-wide figures.
TABLES = ("checkpoints", "profiles", "fits", "consistency", "consistency_summary", "consistency_groups",
          "autocorrelation", "paper_comparison")
PLOTS = ("profiles", "fits", "fit_quality", "training_time", "whitening", "autocorrelation", "colour",
         "paper_comparison")
# The per-basis figures: a folder of each kind, a file a basis in it (StudyPaths.basis_plot).
BASIS_PLOTS = ("consistency", "filters")
# Zoo, dataset and run names each become one folder name under the outdir, beside hidden temporaries with a
# prefix and a suffix; file systems allow 255 bytes a name. Checkpoint names (paths under a root) are held to it too.
NAME_LIMIT = 200
RESOURCES = Path(__file__).resolve().parents[2] / "workflow" / "resources"
# The committed stem table of timm's pretrained tags (scripts/dev/build_timm_stem_table.py writes it).
TIMM_STEM_TABLE = RESOURCES / "timm_stems.csv"
# Hub repositories in the transformers and OpenCLIP formats: the stem of each model type, and how each image
# processor's preprocessor_config.json gives the eval preprocessing (hf_table.py reads both).
HF_STEM_TABLE = RESOURCES / "hf_stems.csv"
HF_PROCESSOR_TABLE = RESOURCES / "hf_image_processors.csv"
# The numbers the paper reports, each with the table or passage it comes from (paper_comparison reads it).
PAPER_VALUES = RESOURCES / "paper_values.csv"


# A basis file's name: the kernel sizes it holds (kernel_label) and the channels.
BASIS_NAME = re.compile(r"k(?P<kernels>\d+(?:-\d+)*)_c(?P<c>\d+)\.npz")


def basis_plot_in(folder: str | Path, basis_slug: str) -> str:
    """A basis' figure in the folder of its kind (rule plot_bases writes into the folders it is given)."""
    return f"{folder}/{basis_slug}.png"


def kernel_label(sizes) -> str:
    """Kernel sizes as a basis file names them: 3-7-14."""
    return "-".join(str(size) for size in sorted(set(sizes)))


def kernel_sizes(label: str) -> tuple[int, ...]:
    return tuple(int(size) for size in label.split("-"))


def checkpoint_stem(unit: str, position: int) -> str:
    """How a training run's checkpoint after `position` steps or epochs (its `unit`) ends its file and its name."""
    return f"{unit}{position:06d}"


def checkpoint_file(run_dir: str | Path, unit: str, position: int) -> str:
    """A training run's checkpoint after `position` optimiser steps or epochs (its `unit`); 0 is the initialisation."""
    return f"{run_dir}/{checkpoint_stem(unit, position)}.safetensors"


def notebook_cache() -> Path:
    """Where firstlayer_zoo.analyse keeps what it computed, unless given a cache_dir: an outdir of StudyPaths."""
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "firstlayer-zoo"


class StudyPaths:
    """The layout under one outdir."""

    def __init__(self, outdir: str):
        self.outdir = outdir

    def dataset_root(self, dataset: str = "{dataset}") -> str:
        """Where a dataset source keeps its files (downloads, unpacked archives)."""
        return f"{self.outdir}/datasets/{dataset}"

    def manifest(self, dataset: str = "{dataset}") -> str:
        return f"{self.dataset_root(dataset)}/manifest.json"

    def basis(self, dataset: str = "{dataset}", preprocessing: str = "{prep}", kernel_sizes="{kernels}",
              in_chans="{c}") -> str:
        """Patch bases of one (dataset, preprocessing), one per kernel size of `kernel_sizes` (kernel_label)."""
        return f"{self.outdir}/bases/{dataset}/{preprocessing}/k{kernel_sizes}_c{in_chans}.npz"

    def pixel_statistics(self, dataset: str = "{dataset}", pixels: str = "{pixels}", kernel_sizes="{kernels}",
                         in_chans="{c}") -> str:
        """Pixel statistics of one (dataset, pixel pipeline: Preprocessing.pixels' key), one per kernel size of
        `kernel_sizes` (kernel_label)."""
        return f"{self.outdir}/patch_statistics/{dataset}/{pixels}/k{kernel_sizes}_c{in_chans}.npz"

    def existing_bases(self, dataset: str, preprocessing: str, in_chans: int) -> dict[str, tuple[int, ...]]:
        """The basis files of one (dataset, preprocessing) already on disk, with the kernel sizes each holds."""
        return self._existing(self.basis, dataset, preprocessing, in_chans)

    def existing_pixel_statistics(self, dataset: str, pixels: str, in_chans: int) -> dict[str, tuple[int, ...]]:
        """The pixel statistics files of one (dataset, pixel pipeline) already on disk, with their kernel sizes."""
        return self._existing(self.pixel_statistics, dataset, pixels, in_chans)

    @staticmethod
    def _existing(path_of, dataset: str, key: str, in_chans: int) -> dict[str, tuple[int, ...]]:
        found = {}
        for path in sorted(Path(path_of(dataset, key, "0", in_chans)).parent.glob(f"k*_c{in_chans}.npz")):
            match = BASIS_NAME.fullmatch(path.name)
            if match:
                found[str(Path(path_of(dataset, key, match["kernels"], in_chans)))] = kernel_sizes(match["kernels"])
        return found

    def cached_basis(self, key: str) -> str:
        """A basis the notebook API computed, by the SHA-1 of `key` (all the basis depends on)."""
        return f"{self.outdir}/bases/{hashlib.sha1(key.encode()).hexdigest()}.npz"

    def run_dir(self, zoo: str = "{zoo}", run: str = "{run}") -> str:
        """A `train` zoo's run: its checkpoint files (checkpoint_file)."""
        return f"{self.outdir}/zoos/{zoo}/runs/{run}"

    def zoo_listing(self, zoo: str = "{zoo}") -> str:
        """The checkpoints of a zoo listed by a job (rule list_zoo), one JSON entry each, as the job found them."""
        return f"{self.outdir}/zoos/{zoo}/listing.json"

    def zoo_listed_files(self, zoo: str = "{zoo}") -> str:
        """What the listing job keeps for its checkpoints to be read from (an `archive` zoo's unpacked archive)."""
        return f"{self.outdir}/zoos/{zoo}/listed"

    def hub_index(self, zoo: str = "{zoo}") -> str:
        """A `hf` zoo's pinned index: every repository's commit, stem and preprocessing, or why it is
        skipped (written by its listing job, and kept: the next listing starts from it)."""
        return f"{self.outdir}/zoos/{zoo}/hub_index.json"

    def archive_download(self, zoo: str = "{zoo}") -> str:
        """An `archive` zoo's downloaded archive (kept across runs: a partial download resumes)."""
        return f"{self.outdir}/zoos/{zoo}/download"

    def analyses(self, zoo: str = "{zoo}", shard: str = "{shard}") -> str:
        return f"{self.outdir}/analyses/{zoo}/{shard}.npz"

    def fetched(self, zoo: str = "{zoo}", shard: str = "{shard}") -> str:
        return f"{self.outdir}/fetched/{zoo}/{shard}.json"

    def table(self, name: str) -> str:
        return f"{self.outdir}/tables/{name}.parquet"

    @property
    def summary(self) -> str:
        return f"{self.outdir}/tables/summary.txt"

    def plot(self, name: str) -> str:
        return f"{self.outdir}/plots/{name}.png"

    def basis_plots(self, kind: str) -> str:
        """The folder of one kind of per-basis figure (BASIS_PLOTS), one file a basis (basis_plot)."""
        return f"{self.outdir}/plots/{kind}"

    def basis_plot(self, kind: str, basis_slug: str) -> str:
        """A per-basis figure: `consistency` (the heatmap) or `filters`."""
        return basis_plot_in(self.basis_plots(kind), basis_slug)

    @property
    def logs(self) -> str:
        return f"{self.outdir}/logs"

    def log(self, rule: str, *wildcards: str) -> str:
        """A job's log: logs/<rule>.log, or logs/<rule>/<wildcard>/.../<last>.log."""
        return f"{self.logs}/{'/'.join((rule, *wildcards))}.log"

    @property
    def geometry_cache(self) -> str:
        """Stem geometry kept across invocations (zoo_sources.base.GeometryCache)."""
        return f"{self.outdir}/.plan/stem_geometry.json"
