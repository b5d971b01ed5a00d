# Config -> paths and parameters. The study (checkpoints, runs, bases) is resolved
# once here by the package; the other .smk files hold rules only.
import functools
import os
import sys
import time
from pathlib import Path

from snakemake.utils import validate

sys.path.insert(0, str(Path(workflow.basedir) / "scripts"))

from firstlayer_zoo.paths import BASIS_PLOTS, PLOTS, TABLES, kernel_sizes  # noqa: E402
from firstlayer_zoo.plan import Study, refuse_oversized_config, refuse_removed_options  # noqa: E402
from firstlayer_zoo.dataset_sources import DATASET_SOURCES  # noqa: E402
from firstlayer_zoo.shards import SHARD_LAYOUT  # noqa: E402

try:
    refuse_oversized_config(config)
    refuse_removed_options(config)
except ValueError as error:
    raise WorkflowError(f"config: {error}") from None
validate(config, workflow.source_path("../schemas/config.schema.yaml"))
try:
    STUDY = Study(config)
except ValueError as error:
    raise WorkflowError(f"config: {error}") from None
PATHS = STUDY.paths


wildcard_constraints:
    dataset=r"[^/]+",
    zoo=r"[^/]+",
    shard=r"\d{4}-of-\d{4}",
    run=r"[^/]+",
    prep=r"[^/]+",
    pixels=r"[^/]+",
    kernels=r"\d+(-\d+)*",
    c=r"\d+",


def dataset_manifest(wildcards):
    return PATHS.manifest(wildcards.dataset)


def dataset_root(wildcards):
    return PATHS.dataset_root(wildcards.dataset)


def dataset_options(wildcards):
    return STUDY.datasets[wildcards.dataset]


def train_run(wildcards):
    return STUDY.runs[(wildcards.zoo, wildcards.run)]


def train_run_dataset_names(wildcards):
    """The datasets a run reads: what it trains on and, where it has one, its test set."""
    run = train_run(wildcards)
    return [name for name in (run.dataset, run.test_dataset) if name]


def train_run_dataset_manifests(wildcards):
    return [PATHS.manifest(name) for name in train_run_dataset_names(wildcards)]


def train_run_datasets(wildcards):
    """Options, root and manifest of each dataset the run reads (the manifests are also the rule's inputs)."""
    return {name: {"options": STUDY.datasets[name], "root": PATHS.dataset_root(name), "manifest": PATHS.manifest(name)}
            for name in train_run_dataset_names(wildcards)}


def train_run_gpus(wildcards):
    """One GPU for a run whose zoo asks for cuda; a cluster then gets `--gpus=1` (auto takes what the node has)."""
    return 1 if train_run(wildcards).device == "cuda" else 0


def shard_members(wildcards):
    return STUDY.shards(wildcards.zoo)[wildcards.shard]


def shard_specs(wildcards):
    return [spec.to_dict() for spec in shard_members(wildcards)]


def shard_checkpoint_files(wildcards):
    """The files a shard's stems are read from, as its zoo's source says."""
    return STUDY.shard_input_files(wildcards.zoo, wildcards.shard)


def shard_bases(wildcards):
    """The planned patch bases of a shard's checkpoints by slug; a checkpoint without one is skipped, saying why."""
    return STUDY.shard_bases(wildcards.zoo, wildcards.shard)


def shard_basis_files(wildcards):
    return sorted(set(shard_bases(wildcards).values()))


def listed(zoo):
    """Wait for the listing of a zoo listed by a job: Snakemake runs checkpoint list_zoo, then asks again."""
    if zoo in STUDY.listed_by_job:
        checkpoints.list_zoo.get(zoo=zoo)


def all_analyses(wildcards=None):
    """Every shard's analyses; a zoo listed by a job has its shards once its listing exists."""
    files = []
    for zoo in STUDY.sources:
        listed(zoo)
        files += [PATHS.analyses(zoo, shard) for shard in STUDY.shards(zoo)]
    return files


def basis_preprocessing(wildcards):
    return STUDY.preprocessing[wildcards.prep].to_dict()


def pixel_preprocessing(wildcards):
    return STUDY.preprocessing[wildcards.pixels].to_dict()


def basis_kernel_sizes(wildcards):
    return list(kernel_sizes(wildcards.kernels))


def basis_pixel_statistics(wildcards):
    """The pixel statistics files a basis file is made from."""
    return STUDY.basis_inputs(wildcards.dataset, wildcards.prep, kernel_sizes(wildcards.kernels), int(wildcards.c))


def statistics_threads(wildcards, input):
    """A job's share of the configured threads by its share of its dataset's patch statistics work
    (firstlayer_zoo.patchstats.statistics_threads). A real run calls this once the dataset's manifest exists; a
    dry run may call it before, and is then told the configured threads."""
    most = STUDY.analysis.statistics_threads
    if not Path(input[0]).exists():
        return most
    # Imports torch: here only when a patch_statistics job is about to run, never when planning.
    from firstlayer_zoo.dataset_sources.base import prepared_indices
    from firstlayer_zoo.patchstats import statistics_threads, statistics_work

    n_images = len(prepared_indices(input[0]))
    offsets = tuple(STUDY.analysis.autocorrelation_offsets)
    jobs = tuple((pixels, sizes) for dataset, pixels, sizes, _ in STUDY.pixel_statistics_jobs.values()
                 if dataset == wildcards.dataset)
    this = statistics_work(STUDY.preprocessing[wildcards.pixels], kernel_sizes(wildcards.kernels), n_images, offsets)
    return statistics_threads(this, dataset_statistics_work(jobs, n_images, offsets), most)


@functools.cache
def dataset_statistics_work(jobs, n_images, offsets):
    """The work of these (pixel pipeline, kernel sizes) jobs on one dataset, None where one's is unknown: once per
    dataset, not once per job (a whole timm zoo has 113)."""
    from firstlayer_zoo.patchstats import statistics_work

    work = [statistics_work(STUDY.preprocessing[pixels], sizes, n_images, offsets) for pixels, sizes in jobs]
    return None if None in work else sum(work)


def all_listed():
    """Wait for every zoo listed by a job: the bases its checkpoints need are planned from its listing."""
    for zoo in STUDY.listed_by_job:
        listed(zoo)


def study_basis_files(wildcards=None):
    """The file of every basis, in STUDY.bases' order (with those of listed zoos: asked again after list_zoo)."""
    all_listed()
    files = STUDY.basis_files
    return [files[basis] for basis in STUDY.bases]


def basis_slugs(wildcards=None):
    return [basis.slug for basis in STUDY.bases]


def basis_kernel_sizes_by_slug(wildcards=None):
    return [basis.kernel_size for basis in STUDY.bases]


def zoo_options(wildcards):
    return STUDY.sources[wildcards.zoo].options


# Differs in every invocation of snakemake: a param of rule list_zoo for the zoos that list again on every run.
INVOCATION = f"{time.time_ns()}-{os.getpid()}"


def listing_refresh(wildcards):
    return INVOCATION if STUDY.sources[wildcards.zoo].lists_every_run else None


def study_outputs():
    # The per-basis figures are two folders (plots/consistency/<basis>.png, plots/filters/<basis>.png): the
    # bases of a zoo listed by a job are known only once it has run.
    # The listings too: Snakemake runs no checkpoint whose consumers' outputs exist, so without them a new zoo
    # listed by a job, in an outdir holding another study's tables, would never be listed (nothing to be done).
    return (
        [PATHS.table(table) for table in TABLES]
        + [PATHS.plot(plot) for plot in PLOTS]
        + [PATHS.basis_plots(kind) for kind in BASIS_PLOTS]
        + [PATHS.zoo_listing(zoo) for zoo in STUDY.listed_by_job]
    )


def remote_inputs(wildcards):
    """What the study reads over the network: remote datasets, the listings of zoos listed by a job (a download,
    a Hub listing), and the weights of remote checkpoints (those of a listed zoo once it is listed)."""
    files = [PATHS.manifest(name) for name, options in STUDY.datasets.items()
             if DATASET_SOURCES[options["source"]].remote]
    for zoo, source in STUDY.sources.items():
        listed(zoo)
        files += [source.listing_path] if source.listed_by_job else []
        files += [PATHS.fetched(zoo, shard) for shard in STUDY.shards(zoo)] if source.remote else []
    return files
