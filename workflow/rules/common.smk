# Config -> paths and parameters. The study (checkpoints, runs, bases) is resolved
# once here by the package; the other .smk files hold rules only.
import json
import sys
from pathlib import Path

from snakemake.utils import validate

sys.path.insert(0, str(Path(workflow.basedir) / "scripts"))

from firstlayer_zoo.plan import Study, refuse_removed_options  # noqa: E402

try:
    refuse_removed_options(config)
except ValueError as error:
    raise WorkflowError(f"config: {error}") from None
validate(config, workflow.source_path("../schemas/config.schema.yaml"))
try:
    STUDY = Study(config)
except ValueError as error:
    raise WorkflowError(f"config: {error}") from None
OUT = STUDY.outdir
PLOTS = ["profiles", "fits", "fit_quality", "training_time", "whitening", "autocorrelation", "colour"]
TABLES = ["checkpoints", "profiles", "fits", "consistency", "consistency_summary", "autocorrelation"]


wildcard_constraints:
    dataset=r"[^/]+",
    zoo=r"[^/]+",
    name=r"[^/]+",
    run=r"[^/]+",
    prep=r"[^/]+",
    basis=r"[^/]+",


def dataset_manifest(wildcards):
    return f"{OUT}/datasets/{wildcards.dataset}/manifest.json"


def dataset_options(wildcards):
    return STUDY.datasets[wildcards.dataset]


def train_run(wildcards):
    return STUDY.runs[(wildcards.zoo, wildcards.run)]


def train_run_dataset_manifest(wildcards):
    dataset = train_run(wildcards)["dataset"]
    return f"{OUT}/datasets/{dataset}/manifest.json"


def checkpoint_spec(wildcards):
    return STUDY.checkpoint(wildcards.zoo, wildcards.name).to_dict()


def checkpoint_files(wildcards):
    """The files a checkpoint's stem is read from, where the DAG makes them."""
    if wildcards.zoo in STUDY.dynamic_zoos:
        return [STUDY.dynamic_zoos[wildcards.zoo].index_path]
    spec = STUDY.checkpoint(wildcards.zoo, wildcards.name)
    if spec.source == "train":
        return [f"{OUT}/zoos/{spec.zoo}/runs/{spec.run}"]
    # Local files are inputs, so replacing one reruns its jobs; a missing init is the job's to report.
    return [path for path in (spec.uri, spec.init_uri) if path and Path(path).is_file()]


def basis_file(wildcards):
    """The checkpoint's patch basis; none where no basis fits (its profile job says why)."""
    basis = STUDY.checkpoint(wildcards.zoo, wildcards.name).basis
    return [basis.path(OUT)] if basis is not None else []


def basis_preprocessing(wildcards):
    return STUDY.preprocessing[wildcards.prep].to_dict()


def all_profiles(wildcards=None):
    """Every checkpoint's profile; an archive zoo's are listed once its unpack checkpoint has run."""
    specs = list(STUDY.checkpoints.values())
    for zoo in STUDY.dynamic_zoos:
        checkpoints.unpack_archive.get(zoo=zoo)
        specs += STUDY.indexed_checkpoints(zoo).values()
    return [f"{OUT}/profiles/{spec.zoo}/{spec.name}.npz" for spec in specs]


def basis_profiles(wildcards):
    """The profiles of the checkpoints measured in one basis (by its slug): what a per-basis plot reads."""
    specs = list(STUDY.checkpoints.values())
    for zoo in STUDY.dynamic_zoos:
        checkpoints.unpack_archive.get(zoo=zoo)
        specs += STUDY.indexed_checkpoints(zoo).values()
    return [f"{OUT}/profiles/{spec.zoo}/{spec.name}.npz" for spec in specs
            if spec.basis is not None and spec.basis.slug == wildcards.basis]


def archive_options(wildcards):
    return STUDY.dynamic_zoos[wildcards.zoo].options


def consistency_plots():
    return [f"{OUT}/plots/consistency/{basis.slug}.png" for basis in STUDY.bases]


def filter_plots():
    return [f"{OUT}/plots/filters/{basis.slug}.png" for basis in STUDY.bases]


def basis_of_slug(wildcards):
    """The basis file a per-basis plot draws from, by the slug in its path."""
    return next(basis.path(OUT) for basis in STUDY.bases if basis.slug == wildcards.basis)


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
