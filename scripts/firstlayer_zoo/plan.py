"""Turn a validated config into the study's checkpoints, runs and bases.

This runs at Snakemake start-up, so it imports no torch: stem geometry comes
from each zoo source's cheap metadata and is cached across invocations.
"""

from __future__ import annotations

import re
from dataclasses import replace
from pathlib import Path

from .dataset_sources import DATASET_SOURCES
from .limits import Limits, applied
from .paths import BASIS_NAME, NAME_LIMIT, StudyPaths, kernel_label, kernel_sizes
from .records import BasisKey, CheckpointSpec
from .settings import AnalysisSettings, ConsistencySettings, PlotSettings
from .shards import assign_shards
from .train_runs import TrainRun
from .zoo_sources.base import GeometryCache, ZooSource
from .zoo_sources import ZOO_SOURCES

# Zoo and dataset names become folders under outdir: no separators, no `.`/`..`, not hidden, not too long.
SAFE_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.+=-]*")


# A config is a few hundred values; YAML aliases can make a short file expand to billions, which validation
# would then walk for minutes.
CONFIG_VALUE_LIMIT = 200_000


def refuse_oversized_config(config: dict) -> None:
    """Count the config's values, aliases expanded, and stop counting past the limit."""
    pending, count = [config], 0
    while pending:
        node = pending.pop()
        count += 1
        if count > CONFIG_VALUE_LIMIT:
            raise ValueError(f"the config expands to more than {CONFIG_VALUE_LIMIT:,} values (YAML aliases "
                             "repeating each other?); write the values out or trim the lists")
        if isinstance(node, dict):
            pending.extend(node.values())
        elif isinstance(node, list):
            pending.extend(node)


def check_name(kind: str, name: str) -> None:
    if not SAFE_NAME.fullmatch(name) or len(name) > NAME_LIMIT:
        raise ValueError(
            f"{kind}: the name {name!r} cannot name a folder under the outdir; use letters, digits and _ . + = - "
            f"(not starting with . or -), at most {NAME_LIMIT} characters")


# Config keys that once existed, with why they went: a config that still sets one is refused
# in one line rather than by the schema's generic "additional properties" message.
REMOVED_OPTIONS = {
    ("analysis", "decode"): (
        "GPU JPEG decoding silently corrupted the patch sums on an H200 "
        "(docs/benchmarks.md); images are always decoded with PIL on the CPU: delete the key"
    ),
}


# Config keys that were renamed, with the new name and what it sets: refused in one line that gives the new name.
RENAMED_OPTIONS = {
    ("analysis", "device"): ("statistics_device", "where the patch statistics run"),
}


def refuse_removed_options(config: dict) -> None:
    for (section, key), why in REMOVED_OPTIONS.items():
        if key in (config.get(section) or {}):
            raise ValueError(f"{section}.{key} was removed: {why}")
    for (section, key), (new, what) in RENAMED_OPTIONS.items():
        if key in (config.get(section) or {}):
            raise ValueError(f"{section}.{key} was renamed {section}.{new} (it sets {what}): rename the key")


def refuse_outdir(outdir: str, roots: dict[str, Path]) -> None:
    """Refuse an outdir that is `/`, the home folder (or holds it), or a folder the study reads (or holds one).

    roots: the folders the study reads, by the config key that names them.
    """
    out = Path(outdir).resolve()
    home = Path.home().resolve()
    fix = "give the results a folder of their own (outdir: results)"
    if out == Path(out.anchor) or out == home or out in home.parents:
        what = "the file system's root" if out == Path(out.anchor) else "your home folder" if out == home else \
            "a folder holding your home folder"
        raise ValueError(f"outdir: {outdir} is {what}; the study would write its results among your files; {fix}")
    for key, root in roots.items():
        root = root.resolve()
        if out == root or out in root.parents:
            raise ValueError(f"outdir: {outdir} {'is' if out == root else 'holds'} the folder of {key} ({root}); the "
                             f"study would write its results among the files it reads; {fix}")


def stem_misfit(kernel_size: int, in_chans: int, side: int | None, limits: Limits) -> str | None:
    """Why a stem of this declared shape has no patch basis in the data (its images' shorter side `side`, None
    when unknown at planning) within the limits, or None when it fits."""
    if side is not None and kernel_size > side:
        return (f"its stem's {kernel_size}x{kernel_size} kernel is larger than the images it would be profiled on "
                f"({side} pixels on their shorter side after the zoo's preprocessing), so no patch of that size exists")
    dimensions = in_chans * kernel_size * kernel_size
    if dimensions > limits.basis_dimensions:
        return (f"its stem's patches would have {in_chans}x{kernel_size}x{kernel_size} = {dimensions:,} dimensions, "
                f"over the limit of {limits.basis_dimensions:,} (limits.basis_dimensions); raise "
                "limits.basis_dimensions in the config if you trust it")
    return None


class Study:
    """Everything the DAG needs, resolved once from the config."""

    def __init__(self, config: dict, cache_path: str | Path | None = None):
        self.outdir = config["outdir"]
        self.paths = StudyPaths(self.outdir)
        self.datasets: dict[str, dict] = config["datasets"]
        for name in self.datasets:
            check_name("datasets", name)
        self.limits = Limits.from_dict(config.get("limits"))
        # What the jobs are tuned with: the rules read these, never the config.
        self.analysis = AnalysisSettings.from_dict(config.get("analysis"))
        self.consistency = ConsistencySettings.from_dict(config.get("consistency"))
        self.plots = PlotSettings.from_dict(config.get("plots"))
        for dataset_name, options in self.datasets.items():
            DATASET_SOURCES[options["source"]].check_options(dataset_name, options)
        cache = GeometryCache(cache_path or self.paths.geometry_cache)
        self.checkpoints: dict[str, CheckpointSpec] = {}
        self.runs: dict[tuple[str, str], TrainRun] = {}
        self.sources: dict[str, ZooSource] = {}
        self._listed: dict[str, tuple[int, dict[str, list[CheckpointSpec]]]] = {}
        with applied(self.limits):
            self._plan(config["zoos"], cache)
        # Before anything is written under it (the geometry cache, even in a dry run).
        refuse_outdir(self.outdir, self.read_roots())
        cache.save()
        self._shards = {
            zoo: assign_shards([spec for spec in self.checkpoints.values() if spec.zoo == zoo],
                                self.analysis.shard_size)
            for zoo in self.sources if zoo not in self.listed_by_job
        }
        # The patch bases, planned now from what is known (every zoo but those listed by a job, what the config says
        # of those, and the listings already written), and planned again whenever a listing is written or
        # rewritten (_replan): Snakemake asks again after rule list_zoo, so a first run plans and computes the
        # bases of the checkpoints it lists.
        self._listing_stamps: dict[str, int | None] | None = None
        self._bases: list[BasisKey] = []
        self._preprocessing: dict = {}
        self._basis_files: dict[BasisKey, str] = {}
        # The same for the pixel statistics the bases are made from, keyed by BasisKey with the key of a pixel
        # pipeline (Preprocessing.pixels) for the preprocessing.
        self._pixel_files: dict[BasisKey, str] = {}
        self._replan()

    def _plan(self, zoos: dict, cache: GeometryCache) -> None:
        for zoo_name, options in zoos.items():
            check_name("zoos", zoo_name)
            for key in ZOO_SOURCES[options["source"]].dataset_options:
                if key in options and options[key] not in self.datasets:
                    raise ValueError(
                        f"zoos.{zoo_name}.{key}: {options[key]!r} is not a dataset in the config; "
                        f"choose one of {sorted(self.datasets)}"
                    )
            source = ZOO_SOURCES[options["source"]](zoo_name, options, self.outdir, cache)
            self.sources[zoo_name] = source
            if source.listed_by_job:
                for spec in source.planned_specs():
                    self._refuse_planned_misfit(zoo_name, spec)
            for spec in map(source.check_spec, source.checkpoints()):
                if spec.id in self.checkpoints:
                    first = self.checkpoints[spec.id].uri
                    if first != spec.uri:
                        raise ValueError(f"zoos.{zoo_name}: {first} and {spec.uri} both become checkpoint {spec.id}; "
                                         "rename one of them")
                    raise ValueError(f"checkpoint {spec.id} is listed twice in the config")
                self.checkpoints[spec.id] = self._fitted(spec)
            for run_name, run in source.runs().items():
                self.runs[(zoo_name, run_name)] = run

    def image_side(self, spec: CheckpointSpec) -> int | None:
        """The shorter side of the smallest image a checkpoint's basis would be computed on, where known."""
        options = self.datasets[spec.dataset]
        return spec.preprocessing.smallest_side(DATASET_SOURCES[options["source"]].smallest_side(options))

    def _fitted(self, spec: CheckpointSpec) -> CheckpointSpec:
        """The spec, refused when its declared stem cannot fit a basis of its data: one file's claimed shape never
        plans a basis that would fail (or take forever) for the checkpoints that share its shard."""
        if spec.basis is None:
            return spec
        why = stem_misfit(spec.kernel_size, spec.in_chans, self.image_side(spec), self.limits)
        if why is None:
            return spec
        return replace(spec, refused=f"{spec.uri}: {why}; check the file, or remove it from the zoo")

    def _refuse_planned_misfit(self, zoo_name: str, spec: CheckpointSpec) -> None:
        """A zoo whose stem geometry the config declares for every checkpoint is refused when it cannot fit."""
        why = spec.basis and stem_misfit(spec.kernel_size, spec.in_chans, self.image_side(spec), self.limits)
        if why:
            raise ValueError(f"zoos.{zoo_name}: {why}; fix kernel_size and in_chans, or the zoo's preprocessing")

    def read_roots(self) -> dict[str, Path]:
        """The folders the study reads (zoo roots, image folders), by the config key that names them."""
        roots = {f"zoos.{name}": root for name, source in self.sources.items() for root in source.read_roots()}
        for name, options in self.datasets.items():
            roots.update({f"datasets.{name}": root
                          for root in DATASET_SOURCES[options["source"]](name, options).read_roots()})
        return roots

    @property
    def listed_by_job(self) -> dict[str, ZooSource]:
        """The zoos whose checkpoints are known only once a job has listed them (rule list_zoo, a Snakemake
        checkpoint)."""
        return {zoo: source for zoo, source in self.sources.items() if source.listed_by_job}

    def listed(self, zoo: str) -> bool:
        """Whether a zoo listed by a job has its listing."""
        return Path(self.sources[zoo].listing_path).is_file()

    def _listed_shards(self, zoo: str) -> dict[str, list[CheckpointSpec]]:
        """A zoo's checkpoints by shard, from the listing its job wrote; declared stems that cannot fit the data
        are refused as at planning."""
        # Keyed by the listing's mtime: a rerun of the job in the same invocation rewrites it.
        stamp = Path(self.sources[zoo].listing_path).stat().st_mtime_ns
        if zoo not in self._listed or self._listed[zoo][0] != stamp:
            specs = [self._fitted(spec) for spec in self.sources[zoo].listed_checkpoints()]
            self._listed[zoo] = (stamp, assign_shards(specs, self.analysis.shard_size))
        return self._listed[zoo][1]

    def shards(self, zoo: str) -> dict[str, list[CheckpointSpec]]:
        """A zoo's checkpoints by shard (one listed by a job only once its listing exists)."""
        return self._listed_shards(zoo) if self.sources[zoo].listed_by_job else self._shards[zoo]

    def shard_input_files(self, zoo: str, shard: str) -> list[str]:
        """The files one shard's job depends on, as its zoo's source says, and the listing of a zoo listed by a
        job (unless the listing pins its checkpoints: then the shard's specs, a param of its job, stand for it)."""
        source = self.sources[zoo]
        files = source.input_files(self.shards(zoo)[shard])
        return [source.listing_path, *files] if source.listed_by_job and not source.pinned_listing else files

    def shard_bases(self, zoo: str, shard: str) -> dict[str, str]:
        """The patch bases of a shard's checkpoints by slug (a checkpoint without one is skipped, saying why)."""
        files = self.basis_files
        return {spec.basis.slug: files[spec.basis] for spec in self.shards(zoo)[shard] if spec.basis in files}

    def _listing_stamp(self, zoo: str) -> int | None:
        path = Path(self.sources[zoo].listing_path)
        return path.stat().st_mtime_ns if path.is_file() else None

    def _replan(self) -> None:
        """Plan the bases again if a listing was written or rewritten since they were last planned.

        A basis keeps the file it was given for the rest of the process (jobs planned before a listing read it);
        the bases a listing adds get files of their own, or those on disk that hold them.
        """
        stamps = {zoo: self._listing_stamp(zoo) for zoo in self.listed_by_job}
        if stamps == self._listing_stamps:
            return
        planned = [*self.checkpoints.values(),
                   *(spec for source in self.listed_by_job.values() for spec in source.planned_specs()),
                   *(spec for zoo, stamp in stamps.items() if stamp is not None
                     for specs in self.shards(zoo).values() for spec in specs)]
        self._preprocessing = {**self._preprocessing,
                               **{spec.preprocessing.key: spec.preprocessing for spec in planned}}
        self._bases = sorted({spec.basis for spec in planned if spec.basis is not None}, key=lambda key: key.slug)
        self._basis_files.update(self._files_of([key for key in self._bases if key not in self._basis_files],
                                                self.paths.existing_bases, self.paths.basis))
        pixel_keys = {self.pixel_key(key) for key in self._bases}
        self._preprocessing.update({self._preprocessing[key.preprocessing].pixels.key:
                                    self._preprocessing[key.preprocessing].pixels for key in self._bases})
        self._pixel_files.update(self._files_of(sorted(pixel_keys - self._pixel_files.keys(), key=lambda k: k.slug),
                                                self.paths.existing_pixel_statistics, self.paths.pixel_statistics))
        self._listing_stamps = stamps

    @property
    def bases(self) -> list[BasisKey]:
        """Every patch basis the study needs, by slug (those of listed zoos once their listing exists)."""
        self._replan()
        return self._bases

    @property
    def basis_files(self) -> dict[BasisKey, str]:
        """The file each basis of `bases` is read from."""
        self._replan()
        return {key: self._basis_files[key] for key in self._bases}

    @property
    def preprocessing(self) -> dict:
        """Every preprocessing a basis is computed with, and every pixel pipeline (Preprocessing.pixels) its
        statistics are measured under, by its key."""
        self._replan()
        return self._preprocessing

    def pixel_key(self, basis: BasisKey) -> BasisKey:
        """The pixel statistics a basis is made from: its key with its preprocessing's pixel pipeline."""
        return replace(basis, preprocessing=self._preprocessing[basis.preprocessing].pixels.key)

    def basis_inputs(self, dataset: str, preprocessing: str, kernel_sizes: tuple[int, ...], in_chans: int) -> list[str]:
        """The pixel statistics files one basis file is made from (one a kernel size, most often one in all)."""
        self._replan()
        return sorted({self._pixel_files[self.pixel_key(BasisKey(dataset, preprocessing, size, in_chans))]
                       for size in kernel_sizes})

    @property
    def pixel_statistics_jobs(self) -> dict[str, tuple[str, str, tuple[int, ...], int]]:
        """Every pixel statistics file the study's bases read (one patch_statistics job each), as (dataset, pixel
        pipeline, the kernel sizes it holds, channels)."""
        self._replan()
        jobs = {}
        for basis in self._bases:
            key = self.pixel_key(basis)
            file = self._pixel_files[key]
            sizes = kernel_sizes(BASIS_NAME.fullmatch(Path(file).name)["kernels"])
            jobs[file] = (key.dataset, key.preprocessing, sizes, key.in_chans)
        return jobs

    def _files_of(self, keys: list[BasisKey], existing_of, path_of) -> dict[BasisKey, str]:
        """The file each of these bases (or pixel statistics) is read from.

        Those of one (dataset, preprocessing) are computed together, in one reading of its images, into
        one file named by their kernel sizes (path_of). A kernel size that a file on disk already holds
        (existing_of) is read from that file: adding a kernel size to a known preprocessing computes only the
        new one (Snakemake keeps every such file up to date like any output, so reading it is always right).
        """
        by_preprocessing: dict[tuple[str, str, int], list[BasisKey]] = {}
        for key in keys:
            by_preprocessing.setdefault((key.dataset, key.preprocessing, key.in_chans), []).append(key)
        files = {}
        for (dataset, preprocessing, in_chans), keys in by_preprocessing.items():
            existing = existing_of(dataset, preprocessing, in_chans)
            missing = []
            for key in keys:
                found = [path for path, sizes in existing.items() if key.kernel_size in sizes]
                if found:
                    files[key] = found[0]
                else:
                    missing.append(key)
            label = kernel_label(key.kernel_size for key in missing)
            files.update({key: path_of(dataset, preprocessing, label, in_chans) for key in missing})
        return files
