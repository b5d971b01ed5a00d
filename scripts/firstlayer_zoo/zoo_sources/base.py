"""The zoo-source interface and its registry; the sources themselves are the other modules of this package.

A source turns its config entry into CheckpointSpecs at start-up, cheaply and
deterministically; the bytes of a checkpoint are read later, in its own job.
This module imports no source: each source module imports it and registers
its class, and the package's __init__.py imports every source module.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Callable, ClassVar, Mapping

from ..atomic import write_text
from ..paths import StudyPaths
from ..records import CheckpointSpec, check_fields
from ..registry import Registry
from ..stems import Stem
from ..train_runs import TrainRun

ZOO_SOURCES = Registry("zoo")
register = ZOO_SOURCES.register


@functools.lru_cache(maxsize=None)
def name_pattern(key: str, pattern: str):
    """The config's regular expression `pattern` (at config key `key`) for file names, compiled by RE2.

    File names come from anyone, patterns from the config: with Python's backtracking engine a pattern with
    nested quantifiers takes minutes on a long name. RE2 matches in time linear in the name, and refuses what
    it cannot match so (lookarounds, backreferences, possessive quantifiers, counted repetitions over 1000):
    such a pattern is refused at start-up, naming the key.
    """
    import re2  # google-re2; here, not at import: only a config with a pattern needs it

    options = re2.Options()
    options.log_errors = False
    try:
        return re2.compile(pattern, options)
    except re2.error as error:
        reason = error.args[0].decode("utf-8", "replace") if error.args and isinstance(error.args[0], bytes) \
            else str(error)
        raise ValueError(f"{key}: not a regular expression RE2 accepts ({reason}); file-name patterns are matched "
                         "by RE2, in time linear in the name: rewrite it without lookarounds, backreferences, "
                         "possessive quantifiers or counted repetitions over 1000") from None


class GeometryCache:
    """Stem geometry (first_conv, kernel size, channels, stride) by a source-defined key.

    Building a model to read its stem costs seconds; the answer never changes
    for a given key, so it is kept in a JSON file beside the results.
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.entries: dict[str, dict] = json.loads(self.path.read_text()) if self.path.exists() else {}
        self._dirty = False

    def get(self, key: str, compute: Callable[[], dict]) -> dict:
        if key not in self.entries:
            self.entries[key] = compute()
            self._dirty = True
        return self.entries[key]

    def save(self) -> None:
        if self._dirty:
            write_text(self.path, json.dumps(self.entries, indent=1, sort_keys=True))
            self._dirty = False


class ZooSource:
    """One config entry under `zoos:`; a subclass per `source`, registered with `@register`."""

    source: ClassVar[str]
    # The fields it writes, with their types: in each CheckpointSpec's `extra` at planning (spec_fields), in each
    # Stem's `meta` when its reader reads one (stem_fields). A field named like a provenance column
    # (checkpoint_record.PROVENANCE: dataset_tag, bytes_fetched, ...) fills that column of checkpoints.parquet;
    # the others stay in the shard files. Writing a field it does not declare fails the job (records.FieldError).
    spec_fields: ClassVar[Mapping[str, type]] = {}
    stem_fields: ClassVar[Mapping[str, type]] = {}
    remote: ClassVar[bool] = False  # its checkpoints are read over the network (see fetch)
    # Its checkpoints are known only once a job has listed them (a download, an unpack, a Hub listing). Rule
    # list_zoo (a Snakemake checkpoint, zoos.smk) runs list_checkpoints() for any such source, keeping its entries
    # in the zoo's listing; the planner then makes each entry a spec (listed_spec) and plans the patch bases of the
    # listed checkpoints in the same run (Snakemake asks again once the listing is written). Such a source lists
    # nothing in checkpoints().
    listed_by_job: ClassVar[bool] = False
    # Its listing's entries pin each checkpoint's bytes (a Hub commit), so a shard's job depends on its members'
    # entries (its specs), not on the listing file: a new listing reruns only the shards whose members changed.
    # Otherwise (an archive unpacked again) every shard of the zoo depends on the listing.
    pinned_listing: ClassVar[bool] = False
    # Its config keys that name a dataset of the config (the planner checks each one it is given).
    dataset_options: ClassVar[tuple[str, ...]] = ("dataset",)

    def __init__(self, name: str, options: dict, outdir: str, cache: GeometryCache):
        self.name = name
        self.options = options
        self.outdir = outdir
        self.paths = StudyPaths(outdir)
        self.cache = cache

    def checkpoints(self) -> list[CheckpointSpec]:
        raise NotImplementedError

    def read_roots(self) -> list[Path]:
        """The user's folders this zoo reads (never writes): the outdir may be none of them, nor hold one."""
        return []

    def runs(self) -> dict[str, TrainRun]:
        """Training runs this source performs itself, by name; most sources have none."""
        return {}

    def input_files(self, specs: list[CheckpointSpec]) -> list[str]:
        """The files the job reading `specs` depends on: replacing one reruns it, a rule that makes one runs first.

        By default the checkpoint files (and inits) that exist on disk; a missing init is the job's to report.
        A remote source's locators (Hub ids, URLs, hub entries) name no local file, whatever lies on disk; a source
        listed by a job has none either: the job's listing, which the shard's job depends on, stands for them.
        """
        if self.remote or self.listed_by_job:
            return []
        return sorted({path for spec in specs for path in (spec.locator, spec.init_locator)
                       if path and Path(path).is_file()})

    # Sources listed by a job (listed_by_job) implement the first two; planned_specs is optional.

    def list_checkpoints(self) -> list[dict]:
        """Rule list_zoo's work: fetch whatever says which checkpoints there are (keeping the files they are read
        from under listed_files), and return one entry (a JSON object) per checkpoint."""
        raise NotImplementedError

    def listed_spec(self, entry: dict) -> CheckpointSpec:
        """The spec of one entry of list_checkpoints, with what the config says of it now."""
        raise NotImplementedError

    def planned_specs(self) -> list[CheckpointSpec]:
        """What the config says of the checkpoints before they are listed, where it says their stems' geometry: a
        spec per patch basis they need. Those bases are planned at start-up, so they are computed while the listing
        job runs, and a config whose stems cannot fit the data is refused before any job. None by default: the
        bases are then planned from the listing once it is written, in the same run."""
        return []

    @property
    def lists_every_run(self) -> bool:
        """Whether its listing job runs again on every run (the Hub source's `refresh: true`), not only when the
        zoo's config changes."""
        return False

    @property
    def listing_path(self) -> str:
        """Where rule list_zoo keeps the entries (sources listed by a job)."""
        return self.paths.zoo_listing(self.name)

    @property
    def listed_files(self) -> Path:
        """The folder rule list_zoo gives the source for the files its checkpoints are read from."""
        return Path(self.paths.zoo_listed_files(self.name))

    def write_listing(self, entries: list[dict]) -> None:
        write_text(self.listing_path, json.dumps(entries, indent=1))

    def listed_checkpoints(self) -> list[CheckpointSpec]:
        """The checkpoints rule list_zoo listed (only once it has run)."""
        return [self.check_spec(self.listed_spec(entry)) for entry in json.loads(Path(self.listing_path).read_text())]

    @classmethod
    def load_stem(cls, spec: CheckpointSpec) -> Stem:
        """Read the stem (and its init, where known) of one checkpoint; raise StemError if unusable."""
        raise NotImplementedError

    @classmethod
    def check_spec(cls, spec: CheckpointSpec) -> CheckpointSpec:
        """The spec, once its `extra` holds only the fields this source declares (records.FieldError otherwise)."""
        check_fields(f"zoo source {cls.source!r} (checkpoint {spec.id})", cls.spec_fields, spec.extra)
        return spec

    @classmethod
    def check_stem(cls, spec: CheckpointSpec, stem: Stem) -> Stem:
        """The stem, once its `meta` holds only the fields this source declares (records.FieldError otherwise)."""
        check_fields(f"zoo source {cls.source!r} reading {spec.id}", cls.stem_fields, stem.meta)
        return stem

    @classmethod
    def fetch(cls, spec: CheckpointSpec) -> dict:
        """Put what load_stem reads over the network into its local cache, so it can run without one later."""
        return {"fetched": None, "why": "a local source"}
