# Config -> paths and parameters. The study (checkpoints, runs, bases) is resolved
# once here by the package; the other .smk files hold rules only.
import json
import sys
from pathlib import Path

from snakemake.utils import validate

sys.path.insert(0, str(Path(workflow.basedir) / "scripts"))

from firstlayer_zoo.plan import Study, refuse_oversized_config, refuse_removed_options  # noqa: E402
from firstlayer_zoo.zoos import ZOO_SOURCES  # noqa: E402

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
OUT = STUDY.outdir
PLOTS = ["profiles", "fits", "fit_quality", "training_time", "whitening", "autocorrelation", "colour",
         "paper_comparison"]
TABLES = ["checkpoints", "profiles", "fits", "consistency", "consistency_summary", "consistency_groups",
          "autocorrelation", "paper_comparison"]


wildcard_constraints:
    dataset=r"[^/]+",
    zoo=r"[^/]+",
    shard=r"\d{4}-of-\d{4}",
    run=r"[^/]+",
    prep=r"[^/]+",


def dataset_manifest(wildcards):
    return f"{OUT}/datasets/{wildcards.dataset}/manifest.json"


def dataset_options(wildcards):
    return STUDY.datasets[wildcards.dataset]


def train_run(wildcards):
    return STUDY.runs[(wildcards.zoo, wildcards.run)]


def train_run_dataset_names(wildcards):
    """The datasets a run reads: what it trains on and, where it has one, its test set."""
    run = train_run(wildcards)
    return [name for name in (run["dataset"], run.get("test_dataset")) if name]


def train_run_dataset_manifests(wildcards):
    return [f"{OUT}/datasets/{name}/manifest.json" for name in train_run_dataset_names(wildcards)]


def train_run_datasets(wildcards):
    """Options of the run's datasets, in the order of its inputs (their manifests)."""
    return {name: STUDY.datasets[name] for name in train_run_dataset_names(wildcards)}


def train_run_gpus(wildcards):
    """One GPU for a run whose zoo asks for cuda; a cluster then gets `--gpus=1` (auto takes what the node has)."""
    return 1 if train_run(wildcards)["device"] == "cuda" else 0


def shard_members(wildcards):
    return STUDY.shards(wildcards.zoo)[wildcards.shard]


def shard_specs(wildcards):
    return [spec.to_dict() for spec in shard_members(wildcards)]


def shard_checkpoint_files(wildcards):
    """The files a shard's stems are read from, where the DAG makes them."""
    if wildcards.zoo in STUDY.dynamic_zoos:
        return [STUDY.dynamic_zoos[wildcards.zoo].index_path]
    files = set()
    for spec in shard_members(wildcards):
        if spec.source == "train":
            files.add(f"{OUT}/zoos/{spec.zoo}/runs/{spec.run}")
        else:
            # Local files are inputs, so replacing one reruns its shard; a missing init is the job's to report.
            files.update(path for path in (spec.uri, spec.init_uri) if path and Path(path).is_file())
    return sorted(files)


def shard_bases(wildcards):
    """The patch bases of a shard's checkpoints by slug; a checkpoint planned without one is skipped, saying why."""
    return {spec.basis.slug: spec.basis.path(OUT) for spec in shard_members(wildcards) if spec.basis is not None}


def shard_basis_files(wildcards):
    return sorted(set(shard_bases(wildcards).values()))


def all_analyses(wildcards=None):
    """Every shard's analyses; an archive zoo's shards are known once its unpack checkpoint has run."""
    files = []
    for zoo in STUDY.config["zoos"]:
        if zoo in STUDY.dynamic_zoos:
            checkpoints.unpack_archive.get(zoo=zoo)
        files += [f"{OUT}/analyses/{zoo}/{shard}.npz" for shard in STUDY.shards(zoo)]
    return files


def basis_preprocessing(wildcards):
    return STUDY.preprocessing[wildcards.prep].to_dict()


def archive_options(wildcards):
    return STUDY.dynamic_zoos[wildcards.zoo].options


def consistency_plots():
    return [f"{OUT}/plots/consistency/{basis.slug}.png" for basis in STUDY.bases]


def filter_plots():
    return [f"{OUT}/plots/filters/{basis.slug}.png" for basis in STUDY.bases]


def study_outputs():
    return (
        [f"{OUT}/tables/{table}.parquet" for table in TABLES]
        + [f"{OUT}/plots/{plot}.png" for plot in PLOTS]
        + consistency_plots()
        + filter_plots()
    )


def statistics_device():
    device = config["analysis"]["device"]
    return None if device == "auto" else device


def statistics_gpus():
    """One GPU for the patch statistics when the config asks for cuda; a cluster then gets `--gpus=1`."""
    return 1 if config["analysis"]["device"] == "cuda" else 0


def remote_inputs():
    """What the study reads over the network: remote datasets, archives, remote checkpoints' weights."""
    local_datasets = ("skimage", "folder")
    return (
        [f"{OUT}/datasets/{name}/manifest.json" for name, options in STUDY.datasets.items()
         if options["source"] not in local_datasets]
        + [zoo.index_path for zoo in STUDY.dynamic_zoos.values()]
        + [f"{OUT}/fetched/{zoo}/{shard}.json" for zoo, options in config["zoos"].items()
           if zoo not in STUDY.dynamic_zoos and ZOO_SOURCES[options["source"]].remote
           for shard in STUDY.shards(zoo)]
    )
